#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# provision.sh ENV PROJECT PROJECT_NUMBER ENDPOINTS_FILE BACKBONE_BIN: runs
# `backbone provision` for the environment with the deployed services' URLs
# (written by cloudbuild-deploy.sh), the push invoker, and the project number
# for the Pub/Sub service agent's dead-letter roles. The ack deadline is the
# services' request timeout, so a push never outlives its request.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 5 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID PROJECT_NUMBER ENDPOINTS_FILE BACKBONE_BIN"
load "$1" "$2"
[[ "$3" =~ ^[0-9]+$ ]] || usage_error "project number '$3' is not valid: digits only"
[[ -s "$4" ]] || die "endpoints file $4 is missing or empty (written by deploy/cloudbuild-deploy.sh)"
[[ -x "$5" ]] || die "backbone binary $5 is not executable"

"$5" provision --env "$ENV_NAME" --project "$PROJECT" --project-number "$3" \
  --endpoints "$(<"$4")" --invoker "$(invoker_email)" --ack-deadline "${REQUEST_TIMEOUT}s"
