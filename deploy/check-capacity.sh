#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# check-capacity.sh ENV: fails when the NetSuite sink and Retry could together
# open more concurrent requests than the NetSuite account allows (SPEC §7).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || usage_error "usage: $0 sandbox|production"
validate_env "$1"
load_env_file
check_netsuite_capacity
