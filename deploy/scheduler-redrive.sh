#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# scheduler-redrive.sh ENV PROJECT IMAGE_TAG: the automatic redrive of
# transient dead letters (SPEC §6). It deploys a Cloud Run job that runs
# `backbone dlq redrive --retryable` from the backbone image, and a Cloud
# Scheduler job that starts it every REDRIVE_SCHEDULE (default every 15
# minutes). The command redrives only failures whose reason was transient
# (target 5xx/429/timeout, store or Pub/Sub unreachable, version gap), never
# a permanent rejection, each at most once, oldest version first, paced at
# REDRIVE_RATE per second (default 5), and only after a health probe of the
# target (SUITEX_BASE_URL, NETSUITE_BASE_URL, or the event store for the
# merge stage); each redrive is audited. A run that holds letters back
# because a target is still down exits 1, so the job's failures show the
# outage; the next run tries again.
#
# The job runs as Retry's service account and database user: it publishes to
# events.error.{env} and appends audit rows, both of which Retry already may.
# The scheduler calls the Cloud Run Admin API as the push invoker account,
# which is given roles/run.invoker on this job only.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 3 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID IMAGE_TAG"
load "$1" "$2"
tag="$3"
check_tag "$tag"
schedule="${REDRIVE_SCHEDULE:-*/15 * * * *}"
rate="${REDRIVE_RATE:-5}"
limit="${REDRIVE_LIMIT:-500}"
[[ "$rate" =~ ^[0-9]+([.][0-9]+)?$ ]] || usage_error "REDRIVE_RATE '$rate' is not a number"
[[ "$limit" =~ ^[1-9][0-9]*$ ]] || usage_error "REDRIVE_LIMIT '$limit' is not a positive integer"

job="backbone-redrive-$ENV_NAME"
mapfile -t env_vars < <(store_env Retry)
# The probes need the targets' base URLs, nothing secret.
for v in NETSUITE_BASE_URL SUITEX_BASE_URL; do
  [[ -n "${!v-}" ]] && env_vars+=("$v=${!v}")
done
joined="$(IFS='|' && echo "${env_vars[*]}")"

args=(run jobs deploy "$job"
  --image="$(image_ref "$tag")"
  --region="$REGION"
  --service-account="$(sa_email Retry)"
  --command=backbone
  "--args=dlq,redrive,--retryable,--rate,$rate,--limit,$limit"
  --max-retries=0
  --task-timeout=900s
  --labels="app=backbone,env=$ENV_NAME,function=redrive"
  "--set-env-vars=^|^$joined"
)
case "$ENV_NAME" in
  production)
    # Cloud SQL has only a private IP: egress to it through the VPC.
    args+=(--network="$NETWORK" --subnet="$SUBNET" --vpc-egress=private-ranges-only)
    ;;
  sandbox) ;;
esac

echo "== deploy job $job"
g "${args[@]}"
g run jobs add-iam-policy-binding "$job" --region="$REGION" \
  --member="serviceAccount:$(invoker_email)" --role=roles/run.invoker --format=none

uri="https://run.googleapis.com/v2/projects/$PROJECT/locations/$REGION/jobs/$job:run"
sched=(--location="$REGION" --schedule="$schedule" --time-zone=UTC --uri="$uri" --http-method=POST
  --oauth-service-account-email="$(invoker_email)"
  --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform)
echo "== schedule $job ($schedule)"
if gcloud scheduler jobs describe "$job" --location="$REGION" --project="$PROJECT" >/dev/null 2>&1; then
  g scheduler jobs update http "$job" "${sched[@]}"
else
  g scheduler jobs create http "$job" "${sched[@]}"
fi
