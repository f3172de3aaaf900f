#!/usr/bin/env bash
# ci-test.sh: Cloud Build's test step. Waits for the MariaDB service container
# named in BACKBONE_TEST_MYSQL_DSN, installs google-cloud-cli when missing,
# runs go vet and the whole test suite against it (the same tests `make test`
# runs: real database, real pstest, real gcloud, no skipping), then builds
# the static backbone binary the later steps run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dsn="${BACKBONE_TEST_MYSQL_DSN:?BACKBONE_TEST_MYSQL_DSN must name the test MariaDB, e.g. root@tcp(backbone-mariadb:3306)/}"
if [[ ! "$dsn" =~ @tcp\(([^:\)]+):([0-9]+)\) ]]; then
  echo "error: BACKBONE_TEST_MYSQL_DSN has no tcp(host:port)" >&2
  exit 1
fi
host="${BASH_REMATCH[1]}"
port="${BASH_REMATCH[2]}"
for i in $(seq 1 90); do
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
    echo "MariaDB answers on $host:$port"
    break
  fi
  if ((i == 90)); then
    echo "error: MariaDB did not answer on $host:$port within 90s" >&2
    exit 1
  fi
  sleep 1
done

# deploy/replay_test.go replays every deploy gcloud call through the real
# CLI, so the suite needs it: the same release the development machines have
# (golang:1.26 is Debian, with curl and gpg).
gcloud_version=528.0.0
if ! command -v gcloud >/dev/null 2>&1; then
  echo "installing google-cloud-cli $gcloud_version for the deploy tests"
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor -o /usr/share/keyrings/cloud.google.gpg
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
    >/etc/apt/sources.list.d/google-cloud-sdk.list
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "google-cloud-cli=$gcloud_version-0" >/dev/null
fi

go vet ./...
go test -race -count=1 -timeout 30m ./...
CGO_ENABLED=0 go build -trimpath -o bin/backbone ./cmd/backbone
