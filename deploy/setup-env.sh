#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# setup-env.sh ENV PROJECT: creates, or checks, what one environment needs in
# Google Cloud and that has no emulator: the Cloud SQL instance (sandbox:
# ZONAL, public IP; production: REGIONAL, private IP, binary logging), the
# database and its users, one service account per function plus the push
# invoker and the build account, the Secret Manager secrets, the bucket the
# build source is staged in, production's private worker pool, and the IAM
# bindings that do not depend on a deployed service or topic (those are made
# by cloudbuild-deploy.sh and grant-publishers.sh). Run it once per
# environment by hand, and again at will: every resource is looked up first
# and existing ones are kept.
#
# Secret values are never printed and never put on a command line: a secret
# that has no value yet takes it from the environment variable of the same
# name, piped to gcloud on stdin; without one it is reported as still empty.
# (The migrator password is the one exception gcloud forces onto a command
# line: `gcloud sql users create/set-password --password`.)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID"
load "$1" "$2"

# exists ARGS...: the describe command succeeds.
exists() { gcloud "$@" --project="$PROJECT" >/dev/null 2>&1; }
step() { printf '\n== %s\n' "$*"; }

INSTANCE="$SQL_INSTANCE"

step "APIs"
apis=(run.googleapis.com sqladmin.googleapis.com pubsub.googleapis.com secretmanager.googleapis.com
  artifactregistry.googleapis.com iam.googleapis.com cloudbuild.googleapis.com storage.googleapis.com)
case "$ENV_NAME" in
  production) apis+=(compute.googleapis.com servicenetworking.googleapis.com) ;;
  sandbox) ;;
esac
g services enable "${apis[@]}"
# Enabling Pub/Sub does not always create its service agent at once, and the
# bindings below (and backbone provision's dead-letter roles) name it.
g beta services identity create --service=pubsub.googleapis.com --format=none

PROJECT_NUMBER="$(g projects describe "$PROJECT" --format='value(projectNumber)')"
[[ "$PROJECT_NUMBER" =~ ^[0-9]+$ ]] || die "could not read the project number of $PROJECT"
PUBSUB_AGENT="service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"

step "Artifact Registry repository $ARTIFACT_REPO"
if exists artifacts repositories describe "$ARTIFACT_REPO" --location="$REGION"; then
  echo "exists"
else
  g artifacts repositories create "$ARTIFACT_REPO" --location="$REGION" --repository-format=docker \
    --description="backbone images"
fi

# --- Cloud SQL ----------------------------------------------------------------

# The instance's shape follows from the environment alone; there is no
# setting that could give sandbox HA or a private IP, or production a public IP.
# shellcheck disable=SC2054 # the commas are inside one --database-flags value
sql_flags=(
  --database-version="$SQL_DATABASE_VERSION"
  --edition="$SQL_EDITION"
  --tier="$SQL_TIER"
  --region="$REGION"
  --storage-type=SSD
  --storage-auto-increase
  --backup
  --backup-start-time="$SQL_BACKUP_START_TIME"
  # Triggers enforce append-only (SPEC §4); with binary logging on, MySQL
  # refuses to create them without this flag. IAM authentication is how the
  # functions log in (cloudsql_iam_authentication is the MySQL flag;
  # cloudsql.iam_authentication is PostgreSQL's spelling).
  --database-flags=log_bin_trust_function_creators=on,cloudsql_iam_authentication=on
  # Only the Cloud SQL connectors (cloudsqlconn, the Auth Proxy) may connect:
  # nothing reaches the database with a bare TCP connection and a password.
  --connector-enforcement=REQUIRED
  --deletion-protection
)
case "$ENV_NAME" in
  production)
    want_availability=REGIONAL
    want_public=false
    sql_flags+=(--availability-type=REGIONAL --no-assign-ip "--network=projects/$PROJECT/global/networks/$NETWORK"
      --enable-bin-log --retained-transaction-log-days=7)
    ;;
  sandbox)
    want_availability=ZONAL
    want_public=true
    sql_flags+=(--availability-type=ZONAL --assign-ip)
    ;;
esac

if [[ "$ENV_NAME" == production ]]; then
  step "VPC $NETWORK and private services access"
  exists compute networks describe "$NETWORK" || die "VPC network $NETWORK does not exist: create it (and subnet $SUBNET in $REGION) first"
  exists compute networks subnets describe "$SUBNET" --region="$REGION" ||
    die "subnet $SUBNET does not exist in $REGION: the services egress through it to the private IP"
  psa_range="google-managed-services-$NETWORK"
  if exists compute addresses describe "$psa_range" --global; then
    echo "range $psa_range exists"
  else
    g compute addresses create "$psa_range" --global --purpose=VPC_PEERING --prefix-length=16 --network="$NETWORK"
  fi
  # Listed as services/servicenetworking.googleapis.com (peering
  # servicenetworking-googleapis-com): match either.
  peerings="$(g services vpc-peerings list --network="$NETWORK" --format='value(service,peering)')"
  if grep -q 'servicenetworking' <<<"$peerings"; then
    echo "peering with servicenetworking exists"
  else
    g services vpc-peerings connect --service=servicenetworking.googleapis.com --ranges="$psa_range" --network="$NETWORK"
  fi

  # The migrate step reaches the private IP only from a private pool peered
  # with the VPC (through the same private services access). The pool sets
  # the machine type, so cloudbuild.yaml must not. It keeps public egress:
  # the build pulls images and Go modules.
  pool="$(worker_pool)"
  step "Cloud Build private pool $pool"
  if pool_net="$(gcloud builds worker-pools describe "$pool" --region="$REGION" --project="$PROJECT" \
    --format='value(privatePoolV1Config.networkConfig.peeredNetwork)' 2>/dev/null)"; then
    [[ "$pool_net" == */networks/"$NETWORK" ]] ||
      die "worker pool $pool is peered with '$pool_net', not $NETWORK: the migrate step could not reach Cloud SQL"
    echo "exists, peered with $NETWORK"
  else
    g builds worker-pools create "$pool" --region="$REGION" \
      --peered-network="projects/$PROJECT/global/networks/$NETWORK" --worker-machine-type="$BUILD_MACHINE_TYPE"
  fi
fi

step "Cloud SQL instance $INSTANCE"
if described="$(gcloud sql instances describe "$INSTANCE" --project="$PROJECT" --format=json 2>/dev/null)"; then
  # Existing instance: verify its shape instead of changing it (a patch can
  # restart the database; an operator decides when).
  problems=()
  [[ "$described" =~ \"availabilityType\":[[:space:]]*\"$want_availability\" ]] ||
    problems+=("availability type is not $want_availability (gcloud sql instances patch $INSTANCE --availability-type=$want_availability)")
  [[ "$described" =~ \"ipv4Enabled\":[[:space:]]*$want_public ]] ||
    problems+=("public IP is not $want_public")
  for flag in log_bin_trust_function_creators cloudsql_iam_authentication; do
    [[ "$described" =~ \"name\":[[:space:]]*\"$flag\",[[:space:]]*\"value\":[[:space:]]*\"on\" ]] ||
      problems+=("database flag $flag is not on")
  done
  if [[ "$ENV_NAME" == production ]]; then
    [[ "$described" =~ \"binaryLogEnabled\":[[:space:]]*true ]] || problems+=("binary logging (point-in-time recovery) is off")
  fi
  if ((${#problems[@]})); then
    printf 'error: Cloud SQL instance %s does not have the %s shape:\n' "$INSTANCE" "$ENV_NAME" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
  fi
  echo "exists, $want_availability, public IP $want_public, flags on"
else
  g sql instances create "$INSTANCE" "${sql_flags[@]}"
fi

step "database $DB_NAME"
if exists sql databases describe "$DB_NAME" --instance="$INSTANCE"; then
  echo "exists"
else
  g sql databases create "$DB_NAME" --instance="$INSTANCE" --charset=utf8mb4
fi

# --- service accounts ---------------------------------------------------------

step "service accounts"
ensure_sa() {
  local id="$1" display="$2"
  if exists iam service-accounts describe "$id@$PROJECT.iam.gserviceaccount.com"; then
    echo "$id exists"
  else
    g iam service-accounts create "$id" --display-name="$display"
  fi
}
for t in "${TARGETS[@]}"; do
  ensure_sa "$(sa_id "$t")" "backbone $t ($ENV_NAME)"
done
invoker="$(invoker_email)"
ensure_sa "${invoker%@*}" "backbone Pub/Sub push invoker ($ENV_NAME)"
ensure_sa "$(build_sa_id)" "backbone builds ($ENV_NAME)"

step "build source bucket gs://$(staging_bucket)"
if exists storage buckets describe "gs://$(staging_bucket)"; then
  echo "exists"
else
  g storage buckets create "gs://$(staging_bucket)" --location="$REGION" --uniform-bucket-level-access
fi

# --- secrets ------------------------------------------------------------------

# ensure_secret NAME [VAR]: the secret exists; when it has no enabled version
# and VAR is set in this environment, VAR's value becomes its first version.
# A secret still without one is only a warning here (its value may come
# later); cloudbuild-deploy.sh refuses to deploy until it has one.
ensure_secret() {
  local name="$1" var="${2-}" versions
  if ! exists secrets describe "$name"; then
    g secrets create "$name" --replication-policy=automatic --labels="app=backbone,env=$ENV_NAME"
  fi
  versions="$(g secrets versions list "$name" --filter=state:ENABLED --limit=1 --format='value(name)')"
  if [[ -n "$versions" ]]; then
    echo "$name has a value"
  elif [[ -n "$var" && -n "${!var-}" ]]; then
    printf '%s' "${!var}" | g secrets versions add "$name" --data-file=-
    echo "$name: value added from \$$var"
  else
    echo "warning: $name has no value yet, and the deploy will refuse to run until it has one: add it with" \
      "gcloud secrets versions add $name --data-file=FILE --project=$PROJECT" >&2
  fi
}

step "secrets"
read -r -a secret_vars <<<"$(all_secret_vars)"
for v in "${secret_vars[@]}"; do
  ensure_secret "$(secret_name "$v")" "$v"
done

# --- database users -----------------------------------------------------------

step "database users"
migrator_secret_name="$(migrator_secret)"
new_password=false
if ! exists secrets describe "$migrator_secret_name"; then
  g secrets create "$migrator_secret_name" --replication-policy=automatic --labels="app=backbone,env=$ENV_NAME"
fi
if [[ -z "$(g secrets versions list "$migrator_secret_name" --filter=state:ENABLED --limit=1 --format='value(name)')" ]]; then
  # 32 random bytes; only Secret Manager ever holds it.
  head -c 32 /dev/urandom | base64 | tr -d '\n/+=' | g secrets versions add "$migrator_secret_name" --data-file=-
  new_password=true
  echo "$migrator_secret_name: generated"
fi
users="$(g sql users list --instance="$INSTANCE" --format='value(name)')"
if ! grep -qx "$MIGRATOR_USER" <<<"$users"; then
  password="$(g secrets versions access latest --secret="$migrator_secret_name")"
  g sql users create "$MIGRATOR_USER" --instance="$INSTANCE" --host=% --password="$password"
  unset password
elif [[ "$new_password" == true ]]; then
  password="$(g secrets versions access latest --secret="$migrator_secret_name")"
  g sql users set-password "$MIGRATOR_USER" --instance="$INSTANCE" --host=% --password="$password"
  unset password
else
  echo "$MIGRATOR_USER exists"
fi
# The functions log in as their own service accounts (IAM database
# authentication); `backbone grants --apply` (deploy/migrate.sh) gives each
# exactly the sync_worker privileges.
for t in "${TARGETS[@]}"; do
  if grep -qx "$(db_user "$t")" <<<"$users"; then
    echo "$(db_user "$t") exists"
  else
    g sql users create "$(sa_email "$t")" --instance="$INSTANCE" --type=cloud_iam_service_account
  fi
done

# --- IAM ----------------------------------------------------------------------

step "IAM"
# Cloud SQL access, limited by condition to this environment's instance.
sql_condition="expression=resource.name == 'projects/$PROJECT/instances/$INSTANCE' && resource.type == 'sqladmin.googleapis.com/Instance',title=backbone-$ENV_NAME-sql"
for t in "${TARGETS[@]}"; do
  for role in roles/cloudsql.client roles/cloudsql.instanceUser; do
    g projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$(sa_email "$t")" --role="$role" \
      --condition="$sql_condition" --format=none
  done
  read -r -a vars <<<"$(secret_vars_for "$t")"
  for v in "${vars[@]}"; do
    g secrets add-iam-policy-binding "$(secret_name "$v")" --member="serviceAccount:$(sa_email "$t")" \
      --role=roles/secretmanager.secretAccessor --format=none
  done
done
# Pub/Sub mints the push OIDC tokens as the invoker account.
g iam service-accounts add-iam-policy-binding "$invoker" --member="serviceAccount:$PUBSUB_AGENT" \
  --role=roles/iam.serviceAccountTokenCreator --format=none

# The build account: what cloudbuild.yaml's steps do, and no more. Cloud Run
# services and Pub/Sub topics do not exist before the first deploy, so those
# two roles are project-wide; the rest is bound to the one resource.
build_member="serviceAccount:$(build_sa_email)"
for role in roles/run.admin roles/pubsub.admin roles/logging.logWriter; do
  g projects add-iam-policy-binding "$PROJECT" --member="$build_member" --role="$role" --condition=None --format=none
done
g projects add-iam-policy-binding "$PROJECT" --member="$build_member" --role=roles/cloudsql.client \
  --condition="$sql_condition" --format=none
g artifacts repositories add-iam-policy-binding "$ARTIFACT_REPO" --location="$REGION" --member="$build_member" \
  --role=roles/artifactregistry.writer --format=none
g storage buckets add-iam-policy-binding "gs://$(staging_bucket)" --member="$build_member" \
  --role=roles/storage.objectViewer --format=none
g secrets add-iam-policy-binding "$migrator_secret_name" --member="$build_member" \
  --role=roles/secretmanager.secretAccessor --format=none
# To check, before deploying, that every mounted secret has a version and to
# pin it (viewer lists versions; it cannot read a value).
for v in "${secret_vars[@]}"; do
  g secrets add-iam-policy-binding "$(secret_name "$v")" --member="$build_member" \
    --role=roles/secretmanager.viewer --format=none
done
# To deploy each service as its own account, and to create the OIDC push
# subscriptions (backbone provision) that mint tokens as the invoker.
for t in "${TARGETS[@]}"; do
  g iam service-accounts add-iam-policy-binding "$(sa_email "$t")" --member="$build_member" \
    --role=roles/iam.serviceAccountUser --format=none
done
g iam service-accounts add-iam-policy-binding "$invoker" --member="$build_member" \
  --role=roles/iam.serviceAccountUser --format=none

# The submitter: start builds (and follow their logs) as the build account,
# stage the source (gcloud reads the bucket before uploading), and, in
# production, use the private pool.
submitter_roles=(roles/cloudbuild.builds.editor roles/serviceusage.serviceUsageConsumer roles/logging.viewer)
case "$ENV_NAME" in
  production) submitter_roles+=(roles/cloudbuild.workerPoolUser) ;;
  sandbox) ;;
esac
for role in "${submitter_roles[@]}"; do
  g projects add-iam-policy-binding "$PROJECT" --member="$BUILD_SUBMITTER" --role="$role" --condition=None --format=none
done
g iam service-accounts add-iam-policy-binding "$(build_sa_email)" --member="$BUILD_SUBMITTER" \
  --role=roles/iam.serviceAccountUser --format=none
for role in roles/storage.objectCreator roles/storage.legacyBucketReader; do
  g storage buckets add-iam-policy-binding "gs://$(staging_bucket)" --member="$BUILD_SUBMITTER" --role="$role" --format=none
done

step "done"
echo "environment $ENV_NAME is set up in $PROJECT; deploy from the repository root with:"
echo "  $(submit_command)"
