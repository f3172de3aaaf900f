#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# build-image.sh ENV PROJECT IMAGE_TAG: builds the one backbone image
# (Dockerfile at the repository root) and pushes it to the environment's
# Artifact Registry repository.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 3 ]] || usage_error "usage: $0 sandbox|production PROJECT_ID IMAGE_TAG"
load "$1" "$2"
check_tag "$3"
image="$(image_ref "$3")"

docker build --tag "$image" --label "backbone.env=$ENV_NAME" "$DEPLOY_DIR/.."
docker push "$image"
echo "pushed $image"
