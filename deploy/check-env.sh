#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# check-env.sh ENV: the first step of every build. Fails unless ENV is
# exactly sandbox or production and its settings file is complete and valid.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || usage_error "usage: $0 sandbox|production"
validate_env "$1"
load_env_file
echo "environment $ENV_NAME: settings in deploy/env/$ENV_NAME.env are complete"
echo "  Cloud SQL $SQL_INSTANCE ($SQL_DATABASE_VERSION, $SQL_TIER) in $REGION, private IP: $(private_ip)"
echo "  topics: $(topic raw) $(topic merged) $(topic error) $(topic dlq)"
