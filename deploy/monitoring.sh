#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# monitoring.sh ENV PROJECT_ID: Cloud Monitoring as code for one
# environment, from deploy/monitoring/: alert policies for the dead-letter
# subscription's backlog above 0, the oldest unacked message on merge-sub and
# the sink subscriptions above 5 minutes, and the outbox's unprocessed count
# (a log-based metric on the console's structured `outbox backlog` line,
# logged at every health refresh); and a dashboard with those series.
# Idempotent: what exists (by display name, or the metric's name) is updated.
# The rendered files are kept in a temporary folder, printed, for review.
# OUTBOX_MAX (default 0) is the outbox threshold; ALERT_CHANNELS, comma-
# separated notification channel ids, are attached to every policy.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID"
load "$1" "$2"
outbox_max="${OUTBOX_MAX:-0}"
[[ "$outbox_max" =~ ^[0-9]+$ ]] || usage_error "OUTBOX_MAX '$outbox_max' is not a whole number"
channels="${ALERT_CHANNELS:-}"
[[ "$channels" =~ ^[A-Za-z0-9/_,-]*$ ]] || usage_error "ALERT_CHANNELS '$channels' is not a list of channel ids"

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/monitoring"
out="$(mktemp -d "${TMPDIR:-/tmp}/backbone-monitoring-$ENV_NAME.XXXXXX")"
metric="backbone_outbox_unprocessed_$ENV_NAME"
console_service="backbone-console-$ENV_NAME"
render() {
  sed -e "s/DLQ_SUB/$(topic dlq)-sub/g" \
    -e "s/MERGE_SUB/$(topic raw)-merge-sub/g" \
    -e "s/NETSUITE_SUB/$(topic merged)-netsuite-sub/g" \
    -e "s/SUITEX_SUB/$(topic merged)-suitex-sub/g" \
    -e "s/RETRY_SUB/$(topic error)-retry-sub/g" \
    -e "s/OUTBOX_METRIC/$metric/g" \
    -e "s/CONSOLE_SERVICE/$console_service/g" \
    -e "s/OUTBOX_MAX/$outbox_max/g" \
    -e "s/\\bENV\\b/$ENV_NAME/g" "$src/$1" >"$out/$1"
}
for f in dlq-backlog.json oldest-unacked.json outbox.json dashboard.json outbox-metric.yaml; do
  render "$f"
done
# The outbox policy's threshold is OUTBOX_MAX.
sed -i "s/\"thresholdValue\": 0,/\"thresholdValue\": $outbox_max,/" "$out/outbox.json"
echo "== rendered into $out"

echo "== log-based metric $metric"
if g logging metrics describe "$metric" >/dev/null 2>&1; then
  g logging metrics update "$metric" --config-from-file="$out/outbox-metric.yaml"
else
  g logging metrics create "$metric" --config-from-file="$out/outbox-metric.yaml"
fi

channel_args=()
[[ -n "$channels" ]] && channel_args=(--notification-channels="$channels")
for f in dlq-backlog.json oldest-unacked.json outbox.json; do
  name="$(sed -n 's/^  "displayName": "\(.*\)",$/\1/p' "$out/$f")"
  existing="$(g alpha monitoring policies list --filter="displayName=\"$name\"" --format='value(name)' | head -n 1)"
  echo "== alert policy: $name"
  if [[ -n "$existing" ]]; then
    g alpha monitoring policies update "$existing" --policy-from-file="$out/$f" "${channel_args[@]}"
  else
    g alpha monitoring policies create --policy-from-file="$out/$f" "${channel_args[@]}"
  fi
done

board="backbone $ENV_NAME"
existing="$(g monitoring dashboards list --filter="displayName=\"$board\"" --format='value(name)' | head -n 1)"
echo "== dashboard: $board"
if [[ -n "$existing" ]]; then
  # An update needs the current etag; replacing is simpler and loses nothing
  # (the dashboard is code).
  g monitoring dashboards delete "$existing"
fi
g monitoring dashboards create --config-from-file="$out/dashboard.json"
