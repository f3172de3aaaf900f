#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# migrate.sh ENV PROJECT BACKBONE_BIN: applies the embedded migrations to the
# environment's Cloud SQL database as the `migrator` user (through
# cloudsqlconn: CLOUD_SQL_INSTANCE), then gives each function's IAM database
# user exactly the sync_worker grant set (`backbone grants --apply`).
# Production has only a private IP: run this from a Cloud Build private pool
# (or a machine) on the VPC.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 3 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID BACKBONE_BIN"
load "$1" "$2"
bin="$3"
[[ -x "$bin" ]] || die "backbone binary $bin is not executable"

# A DSN would win over CLOUD_SQL_INSTANCE (SPEC §2): never inherit one here.
unset EVENT_STORE_DSN
export BACKBONE_ENV="$ENV_NAME" GCP_PROJECT="$PROJECT" DB_NAME
export CLOUD_SQL_INSTANCE
CLOUD_SQL_INSTANCE="$(sql_instance_connection)"
export DB_USER="$MIGRATOR_USER" DB_IAM_AUTH=false
export DB_PRIVATE_IP
DB_PRIVATE_IP="$(private_ip)"
# Read into the environment of the two commands below only; never printed.
export DB_PASSWORD
DB_PASSWORD="$(gcloud secrets versions access latest --secret="$(migrator_secret)" --project="$PROJECT")"
[[ -n "$DB_PASSWORD" ]] || die "secret $(migrator_secret) is empty: run deploy/setup-env.sh $ENV_NAME $PROJECT"

"$bin" migrate up
for t in "${TARGETS[@]}"; do
  "$bin" grants --apply --user "$(db_user "$t")" --host % --database "$DB_NAME"
done
