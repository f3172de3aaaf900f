# shellcheck shell=bash disable=SC2034  # the variables here are used by the scripts that source it
# deploy/lib.sh: sourced by every deploy script. It validates the environment
# before anything runs, loads deploy/env/{env}.env, and derives every name
# (topics, services, service accounts, secrets, database users) from the
# environment, so that no environment is ever written into a name by hand.
#
# The V10 script this replaces chose production settings with
# `[[ "$ENV" == "production" || "sandbox" ]]` (always true) and had two
# missing-space syntax errors. Here the environment is validated once, up
# front, and the per-environment choices are `case` branches with no default.

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DEPLOY_DIR

# The five function targets (SPEC §1), in pipeline order. deploy_test.go
# checks that this equals config.Targets.
TARGETS=(Merge NetSuiteSink SuiteXSink Retry DLQArchive)

# Deploy settings every env file defines (the backbone binary never reads
# them). deploy_test.go checks that none of them is a backbone variable.
SETTINGS=(
  REGION
  ARTIFACT_REPO
  SQL_INSTANCE
  SQL_DATABASE_VERSION
  SQL_EDITION
  SQL_TIER
  SQL_BACKUP_START_TIME
  NETWORK
  SUBNET
  BUILD_SUBMITTER
  BUILD_MACHINE_TYPE
  SERVICE_CPU
  SERVICE_MEMORY
  REQUEST_TIMEOUT
  DEFAULT_MAX_INSTANCES
  DEFAULT_CONCURRENCY
  NETSUITE_SINK_MAX_INSTANCES
  NETSUITE_SINK_CONCURRENCY
  RETRY_MAX_INSTANCES
  RETRY_CONCURRENCY
  NETSUITE_ACCOUNT_CONCURRENCY_LIMIT
  NETSUITE_CONCURRENCY_RESERVE
)

# Backbone configuration variables (config.Variables) that env files set and
# every service receives as plain environment variables. Secrets are not
# here: they come from Secret Manager (secret_vars_for). The per-service
# variables (BACKBONE_ENV, FUNCTION_TARGET, DB_USER, ...) are derived by
# cloudbuild-deploy.sh and cannot be set from an env file.
RUNTIME_VARS=(
  DB_NAME
  DB_MAX_OPEN_CONNS
  BACKBONE_SOURCES
  NETSUITE_ACCOUNT_ID
  NETSUITE_BASE_URL
  NETSUITE_AUTH
  NETSUITE_CLIENT_ID
  NETSUITE_CERTIFICATE_ID
  NETSUITE_RECORD_MAPPING
  NETSUITE_TIMEOUT
  SUITEX_BASE_URL
  SUITEX_TIMEOUT
)

# Settings that may be empty in a given environment.
OPTIONAL_SETTINGS=(NETWORK SUBNET)

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

usage_error() {
  printf 'usage error: %s\n' "$*" >&2
  exit 2
}

# validate_env ENV: the only entry point to an environment name. Anything
# but exactly "sandbox" or "production" stops the script before it runs a
# single command.
validate_env() {
  case "${1-}" in
    sandbox | production) ENV_NAME="$1" ;;
    *) usage_error "environment '${1-}' is not valid: it must be sandbox or production" ;;
  esac
  readonly ENV_NAME
}

# validate_project PROJECT: a GCP project id (also keeps it safe to splice
# into resource names and IAM conditions).
validate_project() {
  if [[ ! "${1-}" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then
    usage_error "project id '${1-}' is not valid: 6-30 lowercase letters, digits or hyphens, starting with a letter"
  fi
  PROJECT="$1"
  readonly PROJECT
}

is_in() {
  local needle="$1" x
  shift
  for x in "$@"; do
    [[ "$x" == "$needle" ]] && return 0
  done
  return 1
}

# load_env_file: reads deploy/env/$ENV_NAME.env as KEY=VALUE lines (it is
# not sourced: no code runs from it). Unknown keys are errors, so a typo
# cannot silently fall back to a default.
load_env_file() {
  local file="$DEPLOY_DIR/env/$ENV_NAME.env" line key value n=0
  [[ -f "$file" ]] || die "settings file $file is missing"
  while IFS= read -r line || [[ -n "$line" ]]; do
    n=$((n + 1))
    [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
    if [[ ! "$line" =~ ^([A-Z][A-Z0-9_]*)=(.*)$ ]]; then
      die "$file:$n: not a KEY=VALUE line"
    fi
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    if ! is_in "$key" "${SETTINGS[@]}" "${RUNTIME_VARS[@]}"; then
      die "$file:$n: unknown setting $key (deploy settings and runtime variables are listed in deploy/lib.sh)"
    fi
    printf -v "$key" '%s' "$value"
  done <"$file"
  local k
  for k in "${SETTINGS[@]}"; do
    if [[ -z "${!k-}" ]] && ! is_in "$k" "${OPTIONAL_SETTINGS[@]}"; then
      die "$file: $k is not set"
    fi
  done
  [[ -n "${DB_NAME-}" ]] || die "$file: DB_NAME is not set"
  case "${NETSUITE_AUTH:-tba}" in
    tba | oauth2) ;;
    *) die "$file: NETSUITE_AUTH=$NETSUITE_AUTH is not valid: tba or oauth2" ;;
  esac
  # The IAM member who runs `gcloud builds submit` (a user, a group or the
  # account of a trigger); setup-env.sh grants it what submitting needs.
  [[ "$BUILD_SUBMITTER" =~ ^(user|group|serviceAccount):[^@[:space:]]+@[^@[:space:]]+$ ]] ||
    die "$file: BUILD_SUBMITTER=$BUILD_SUBMITTER is not an IAM member (user:, group: or serviceAccount: followed by an email)"
  # One of the machine types `gcloud builds submit --machine-type` takes, so
  # that sandbox (default pool) and production (private pool) build alike.
  case "$BUILD_MACHINE_TYPE" in
    e2-highcpu-8 | e2-highcpu-32 | e2-medium | n1-highcpu-8 | n1-highcpu-32) ;;
    *) die "$file: BUILD_MACHINE_TYPE=$BUILD_MACHINE_TYPE is not a Cloud Build machine type (e2-highcpu-8, e2-highcpu-32, e2-medium, n1-highcpu-8, n1-highcpu-32)" ;;
  esac
  [[ "$SQL_DATABASE_VERSION" =~ ^MYSQL_8_[0-9]+$ ]] || die "$file: SQL_DATABASE_VERSION=$SQL_DATABASE_VERSION: the backbone needs MySQL 8 (MYSQL_8_0 or MYSQL_8_4)"
  case "$ENV_NAME" in
    production)
      [[ -n "$NETWORK" && -n "$SUBNET" ]] || die "$file: production runs on private IP: NETWORK and SUBNET must be set"
      ;;
    sandbox) ;;
  esac
  for k in DEFAULT_MAX_INSTANCES DEFAULT_CONCURRENCY NETSUITE_SINK_MAX_INSTANCES NETSUITE_SINK_CONCURRENCY \
    RETRY_MAX_INSTANCES RETRY_CONCURRENCY NETSUITE_ACCOUNT_CONCURRENCY_LIMIT NETSUITE_CONCURRENCY_RESERVE REQUEST_TIMEOUT; do
    # Checked before any arithmetic: bash evaluates a non-number in $(( ))
    # as an expression.
    [[ "${!k}" =~ ^[1-9][0-9]{0,5}$ ]] || die "$file: $k=${!k} is not a positive integer"
  done
  # It is also the subscriptions' ack deadline (deploy/provision.sh), which
  # Pub/Sub bounds to 10-600 seconds.
  ((REQUEST_TIMEOUT >= 10 && REQUEST_TIMEOUT <= 600)) || die "$file: REQUEST_TIMEOUT=$REQUEST_TIMEOUT: it is also the ack deadline, 10 to 600 seconds"
}

# load ENV PROJECT: validate both, then read the settings.
load() {
  validate_env "${1-}"
  validate_project "${2-}"
  load_env_file
}

# check_netsuite_capacity: NetSuite has one account-wide concurrency limit
# (SPEC §7). Both the NetSuite sink and Retry (which re-runs the NetSuite
# stage) call it, so their worst case together must stay below the limit,
# leaving NETSUITE_CONCURRENCY_RESERVE (at least 1) for everything else that
# uses the account.
#
# This is the second line of defence, not the first: Cloud Run's
# --max-instances is a soft cap that a scale-out or a revision roll-out can
# briefly exceed. The backbone's share (NETSUITE_MAX_CONCURRENCY) is enforced
# in the database across every instance and Retry (SPEC §7); these caps only
# keep the number of instances that wait on it small.
check_netsuite_capacity() {
  local sink=$((NETSUITE_SINK_MAX_INSTANCES * NETSUITE_SINK_CONCURRENCY))
  local retry=$((RETRY_MAX_INSTANCES * RETRY_CONCURRENCY))
  local budget=$((NETSUITE_ACCOUNT_CONCURRENCY_LIMIT - NETSUITE_CONCURRENCY_RESERVE))
  if ((sink + retry > budget)); then
    die "NetSuite capacity for $ENV_NAME: sink ${NETSUITE_SINK_MAX_INSTANCES}x${NETSUITE_SINK_CONCURRENCY}=$sink + retry ${RETRY_MAX_INSTANCES}x${RETRY_CONCURRENCY}=$retry = $((sink + retry)) concurrent requests, over the account limit $NETSUITE_ACCOUNT_CONCURRENCY_LIMIT minus the reserve $NETSUITE_CONCURRENCY_RESERVE = $budget: lower the max instances or the concurrency in deploy/env/$ENV_NAME.env"
  fi
  echo "NetSuite capacity for $ENV_NAME: sink $sink + retry $((retry)) = $((sink + retry)) <= $budget (account limit $NETSUITE_ACCOUNT_CONCURRENCY_LIMIT, reserve $NETSUITE_CONCURRENCY_RESERVE)"
}

# g runs gcloud on the loaded project, never prompting.
g() { gcloud "$@" --project="$PROJECT" --quiet; }

# check_tag TAG refuses anything but a valid container image tag.
check_tag() {
  [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || usage_error "image tag '$1' is not a valid tag"
}

# --- names, all derived from ENV_NAME ---------------------------------------

# topic KIND: events.{kind}.{env}
topic() { printf 'events.%s.%s' "$1" "$ENV_NAME"; }

# short_name TARGET: the target's short name in resource names.
short_name() {
  case "$1" in
    Merge) echo merge ;;
    NetSuiteSink) echo netsuite ;;
    SuiteXSink) echo suitex ;;
    Retry) echo retry ;;
    DLQArchive) echo dlq ;;
    *) die "unknown function target $1" ;;
  esac
}

service_name() { echo "backbone-$(short_name "$1")-$ENV_NAME"; }
# Service account ids are at most 30 characters: bb-netsuite-production is 22.
sa_id() { echo "bb-$(short_name "$1")-$ENV_NAME"; }
sa_email() { echo "$(sa_id "$1")@$PROJECT.iam.gserviceaccount.com"; }
# Cloud SQL for MySQL names an IAM service-account user by the email's part
# before the "@".
db_user() { sa_id "$1"; }
invoker_email() { echo "bb-push-$ENV_NAME@$PROJECT.iam.gserviceaccount.com"; }
# The account every build of the environment runs as (gcloud builds submit
# --service-account): setup-env.sh grants it exactly what cloudbuild.yaml's
# steps do.
build_sa_id() { echo "bb-build-$ENV_NAME"; }
build_sa_email() { echo "$(build_sa_id)@$PROJECT.iam.gserviceaccount.com"; }
# Production's private worker pool, peered with the VPC so that the migrate
# step reaches the private IP. Sandbox builds on the default pool.
worker_pool() { echo "backbone-$ENV_NAME"; }
worker_pool_resource() { echo "projects/$PROJECT/locations/$REGION/workerPools/$(worker_pool)"; }
# Where gcloud builds submit stages the source; the build account reads it.
staging_bucket() { echo "${PROJECT}_cloudbuild"; }

# submit_command: the exact command that deploys the environment; README.md
# shows it and deploy_test.go replays it through the real gcloud. A private
# pool sets its machine type on the pool (setup-env.sh), so only the default
# pool is given --machine-type, and --worker-pool needs --region.
submit_command() {
  local cmd=(gcloud builds submit --config=cloudbuild.yaml "--substitutions=_ENV=$ENV_NAME" "--region=$REGION")
  case "$ENV_NAME" in
    production) cmd+=("--worker-pool=$(worker_pool_resource)") ;;
    sandbox) cmd+=("--machine-type=$BUILD_MACHINE_TYPE") ;;
  esac
  cmd+=("--service-account=projects/$PROJECT/serviceAccounts/$(build_sa_email)"
    "--gcs-source-staging-dir=gs://$(staging_bucket)/source" "--project=$PROJECT")
  echo "${cmd[*]}"
}
sql_instance_connection() { echo "$PROJECT:$REGION:$SQL_INSTANCE"; }
image_ref() { echo "$REGION-docker.pkg.dev/$PROJECT/$ARTIFACT_REPO/backbone:$1"; }
# secret_name VAR: backbone-{env}-{var in kebab case}
secret_name() {
  local v="${1,,}"
  echo "backbone-$ENV_NAME-${v//_/-}"
}
MIGRATOR_USER=migrator
migrator_secret() { echo "backbone-$ENV_NAME-migrator-password"; }

# netsuite_secret_vars: the NetSuite credentials of the configured auth mode.
netsuite_secret_vars() {
  case "${NETSUITE_AUTH:-tba}" in
    tba) echo NETSUITE_CONSUMER_KEY NETSUITE_CONSUMER_SECRET NETSUITE_TOKEN_ID NETSUITE_TOKEN_SECRET ;;
    oauth2) echo NETSUITE_PRIVATE_KEY ;;
  esac
}

all_secret_vars() { echo "$(netsuite_secret_vars) SUITEX_SIGNING_SECRET"; }

# secret_vars_for TARGET: the secrets a function is given. Retry re-runs the
# sink stages, so it needs both sinks' credentials.
secret_vars_for() {
  case "$1" in
    NetSuiteSink) netsuite_secret_vars ;;
    SuiteXSink) echo SUITEX_SIGNING_SECRET ;;
    Retry) all_secret_vars ;;
    Merge | DLQArchive) echo ;;
    *) die "unknown function target $1" ;;
  esac
}

# publishes_to TARGET: the topic kinds a function publishes to (least
# privilege: it gets roles/pubsub.publisher on exactly these topics of its
# own environment). Merge publishes merged events and errors; the sinks
# errors; Retry re-runs a stage (merged), reports (error) and sends
# non-retryable errors straight to the dead-letter topic (SPEC §6);
# DLQArchive only stores.
publishes_to() {
  case "$1" in
    Merge) echo merged error ;;
    NetSuiteSink | SuiteXSink) echo error ;;
    Retry) echo merged error dlq ;;
    DLQArchive) echo ;;
    *) die "unknown function target $1" ;;
  esac
}

# max_instances TARGET / concurrency TARGET: the NetSuite callers have their
# own caps (check_netsuite_capacity); the others share the defaults.
max_instances() {
  case "$1" in
    NetSuiteSink) echo "$NETSUITE_SINK_MAX_INSTANCES" ;;
    Retry) echo "$RETRY_MAX_INSTANCES" ;;
    *) echo "$DEFAULT_MAX_INSTANCES" ;;
  esac
}
concurrency() {
  case "$1" in
    NetSuiteSink) echo "$NETSUITE_SINK_CONCURRENCY" ;;
    Retry) echo "$RETRY_CONCURRENCY" ;;
    *) echo "$DEFAULT_CONCURRENCY" ;;
  esac
}

# store_env ROLE: the settings an operator tool running as ROLE's account
# needs to reach this environment's event store, one VAR=value a line (the
# console and the scheduled redrive run as Retry).
store_env() {
  printf '%s\n' \
    "BACKBONE_ENV=$ENV_NAME" \
    "GCP_PROJECT=$PROJECT" \
    "CLOUD_SQL_INSTANCE=$(sql_instance_connection)" \
    "DB_USER=$(db_user "$1")" \
    "DB_IAM_AUTH=true" \
    "DB_PRIVATE_IP=$(private_ip)" \
    "DB_NAME=$DB_NAME"
}

# private_ip: production reaches Cloud SQL on the VPC only; sandbox on its
# public IP (through the connector, never an open port).
private_ip() {
  case "$ENV_NAME" in
    production) echo true ;;
    sandbox) echo false ;;
  esac
}
