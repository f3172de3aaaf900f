#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# cloudbuild-deploy.sh ENV PROJECT IMAGE_TAG ENDPOINTS_FILE: deploys the five
# Cloud Run services of one environment from one image (FUNCTION_TARGET
# selects the function), lets the push invoker call each, and writes
# "Target=URL,..." to ENDPOINTS_FILE for `backbone provision --endpoints`.
#
# Every service runs as its own service account, refuses unauthenticated
# calls, gets only the secrets its function uses (each pinned to its newest
# enabled version, checked before anything is deployed), and connects to Cloud SQL
# as its own IAM database user. The NetSuite callers are capped so that they
# stay under the NetSuite account's concurrency limit (checked first).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 4 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID IMAGE_TAG ENDPOINTS_FILE"
load "$1" "$2"
check_tag "$3"
image="$(image_ref "$3")"
endpoints_file="$4"

check_netsuite_capacity

# A secret without an enabled version makes the revision fail to start, and
# would do so after the services before it were already replaced: check them
# all first. Each is pinned to its newest enabled version rather than
# "latest", so that every instance of a revision reads the same value and a
# new value takes effect with the next deploy, which records it.
declare -A secret_version=()
missing=()
read -r -a all_vars <<<"$(all_secret_vars)"
for v in "${all_vars[@]}"; do
  name="$(secret_name "$v")"
  version="$(g secrets versions list "$name" --filter=state:ENABLED --sort-by=~createTime --limit=1 \
    --format='value(name.basename())')" || die "cannot list the versions of secret $name"
  if [[ "$version" =~ ^[0-9]+$ ]]; then
    secret_version[$v]="$version"
  else
    missing+=("$name")
  fi
done
if ((${#missing[@]})); then
  die "secrets without an enabled version: ${missing[*]}; add each with" \
    "gcloud secrets versions add NAME --data-file=FILE --project=$PROJECT (nothing was deployed)"
fi

endpoints=()
for t in "${TARGETS[@]}"; do
  svc="$(service_name "$t")"
  env_vars=(
    "BACKBONE_ENV=$ENV_NAME"
    "GCP_PROJECT=$PROJECT"
    "FUNCTION_TARGET=$t"
    "CLOUD_SQL_INSTANCE=$(sql_instance_connection)"
    "DB_USER=$(db_user "$t")"
    "DB_IAM_AUTH=true"
    "DB_PRIVATE_IP=$(private_ip)"
  )
  for v in "${RUNTIME_VARS[@]}"; do
    [[ -n "${!v-}" ]] && env_vars+=("$v=${!v}")
  done
  for kv in "${env_vars[@]}"; do
    # "|" is the list delimiter below, so that values may hold commas
    # (BACKBONE_SOURCES, NETSUITE_RECORD_MAPPING).
    [[ "$kv" != *"|"* ]] || die "${kv%%=*} contains '|', which gcloud cannot be given here"
  done
  joined="$(IFS='|' && echo "${env_vars[*]}")"

  secrets=()
  read -r -a vars <<<"$(secret_vars_for "$t")"
  for v in "${vars[@]}"; do
    secrets+=("$v=$(secret_name "$v"):${secret_version[$v]}")
  done

  args=(run deploy "$svc"
    --image="$image"
    --region="$REGION"
    --service-account="$(sa_email "$t")"
    --no-allow-unauthenticated
    # A soft cap that Cloud Run may briefly exceed: the NetSuite share is
    # enforced in the database (NETSUITE_MAX_CONCURRENCY); this is the second
    # line of defence (lib.sh, check_netsuite_capacity).
    --max-instances="$(max_instances "$t")"
    --concurrency="$(concurrency "$t")"
    --timeout="${REQUEST_TIMEOUT}s"
    --cpu="$SERVICE_CPU"
    --memory="$SERVICE_MEMORY"
    --labels="app=backbone,env=$ENV_NAME,function=$(short_name "$t")"
    "--set-env-vars=^|^$joined"
  )
  if ((${#secrets[@]})); then
    args+=("--set-secrets=$(IFS=',' && echo "${secrets[*]}")")
  else
    args+=(--clear-secrets)
  fi
  case "$ENV_NAME" in
    production)
      # Cloud SQL has only a private IP: egress to it through the VPC.
      args+=(--network="$NETWORK" --subnet="$SUBNET" --vpc-egress=private-ranges-only)
      ;;
    sandbox) ;;
  esac

  echo "== deploy $svc ($t)"
  g "${args[@]}"
  g run services add-iam-policy-binding "$svc" --region="$REGION" \
    --member="serviceAccount:$(invoker_email)" --role=roles/run.invoker --format=none
  url="$(g run services describe "$svc" --region="$REGION" --format='value(status.url)')"
  [[ "$url" == https://* ]] || die "service $svc has no https URL (got '$url')"
  endpoints+=("$t=$url")
done

tmp="$endpoints_file.tmp"
(IFS=',' && echo "${endpoints[*]}") >"$tmp"
mv "$tmp" "$endpoints_file"
echo "endpoints written to $endpoints_file"
