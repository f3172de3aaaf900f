#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# grant-publishers.sh ENV PROJECT: gives each function's service account
# roles/pubsub.publisher on exactly the topics it publishes to, all of its own
# environment (SPEC §2: a process publishes only to its own environment). Run
# after `backbone provision` has created the topics.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID"
load "$1" "$2"

for t in "${TARGETS[@]}"; do
  read -r -a kinds <<<"$(publishes_to "$t")"
  for kind in "${kinds[@]}"; do
    echo "$(sa_id "$t") publishes to $(topic "$kind")"
    gcloud pubsub topics add-iam-policy-binding "$(topic "$kind")" --project="$PROJECT" --quiet \
      --member="serviceAccount:$(sa_email "$t")" --role=roles/pubsub.publisher --format=none
  done
done
