#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# console.sh ENV PROJECT_ID IMAGE_TAG: the operators' web console
# (`backbone console`, served at /console) as its own Cloud Run service,
# --no-allow-unauthenticated: only principals given roles/run.invoker on it
# (CONSOLE_INVOKERS, comma-separated IAM members such as
# group:ops@example.com) reach it. Put IAP in front of it for people's
# identities: the console reads X-Goog-Authenticated-User-Email, and a
# caller without one is read-only. CONSOLE_OPERATORS (comma-separated
# e-mails) may redrive dead letters; everyone else reads.
#
# It runs as Retry's service account and database user: a redrive publishes
# to events.error.{env} and appends audit rows, both of which Retry already
# may. One instance, always on (--min-instances=1, CPU not throttled): its
# confirmation tokens are keyed per process, and its health refresh logs the
# outbox count every minute for the log-based metric (deploy/monitoring.sh).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 3 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID IMAGE_TAG"
load "$1" "$2"
tag="$3"
check_tag "$tag"
operators="${CONSOLE_OPERATORS:-}"
invokers="${CONSOLE_INVOKERS:-}"
[[ "$operators" =~ ^[A-Za-z0-9@._+,-]*$ ]] || usage_error "CONSOLE_OPERATORS '$operators' is not a comma-separated list of e-mails"
[[ "$invokers" =~ ^[A-Za-z0-9@._+:,-]*$ ]] || usage_error "CONSOLE_INVOKERS '$invokers' is not a comma-separated list of IAM members"

svc="backbone-console-$ENV_NAME"
mapfile -t env_vars < <(store_env Retry)
env_vars+=("BACKBONE_CONSOLE_OPERATORS=$operators")
joined="$(IFS='|' && echo "${env_vars[*]}")"

args=(run deploy "$svc"
  --image="$(image_ref "$tag")"
  --region="$REGION"
  --service-account="$(sa_email Retry)"
  --no-allow-unauthenticated
  --command=backbone
  "--args=console,--identity,iap,--refresh,60s"
  --min-instances=1
  --max-instances=1
  --no-cpu-throttling
  --labels="app=backbone,env=$ENV_NAME,function=console"
  "--set-env-vars=^|^$joined"
)
case "$ENV_NAME" in
  production)
    # Cloud SQL has only a private IP: egress to it through the VPC.
    args+=(--network="$NETWORK" --subnet="$SUBNET" --vpc-egress=private-ranges-only)
    ;;
  sandbox) ;;
esac

echo "== deploy $svc"
g "${args[@]}"
IFS=',' read -r -a members <<<"$invokers"
for m in "${members[@]}"; do
  [[ -n "$m" ]] || continue
  g run services add-iam-policy-binding "$svc" --region="$REGION" --member="$m" --role=roles/run.invoker --format=none
done
url="$(g run services describe "$svc" --region="$REGION" --format='value(status.url)')"
echo "console: $url/console/ (invokers: ${invokers:-none yet: set CONSOLE_INVOKERS}; operators: ${operators:-none, read-only})"
