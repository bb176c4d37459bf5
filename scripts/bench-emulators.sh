#!/usr/bin/env bash
# `regstore bench` on inmemory, filesystem (a temporary directory) and the
# four emulators scripts/backends.sh runs (s3/moto, azure/Azurite,
# gcs/fake-gcs-server, swift/one-node Swift), as the README's plot was
# made. It starts the emulators if they are not running and passes its
# arguments on to `regstore bench`:
#
#   scripts/bench-emulators.sh --json docs/bench.json --plot docs/bench.svg
#   scripts/bench-emulators.sh --only walk --latency 20ms
#
# REGSTORE names the binary (default: the release build in the target
# directory); the REGSTORE_*_ENDPOINT variables of `scripts/backends.sh env`
# point it at emulators elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
regstore=${REGSTORE:-$target/release/regstore}
if [ ! -x "$regstore" ]; then
  echo "building $regstore" >&2
  cargo build --release -p regstore-cli
fi
scripts/backends.sh start s3 azure gcs swift >&2

s3=${REGSTORE_S3_ENDPOINT:-http://127.0.0.1:19000}
azure=${REGSTORE_AZURE_ENDPOINT:-http://127.0.0.1:19010}
gcs=${REGSTORE_GCS_ENDPOINT:-http://127.0.0.1:19020}
swift=${REGSTORE_SWIFT_AUTHURL:-http://127.0.0.1:19030/auth/v1.0}
# The account key every Azurite has (not a secret).
azurite_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
# A fresh root in each bucket, so the non-empty-prefix check passes.
root="/bench-$(date +%s)-$$"
fs=$(mktemp -d)
trap 'rm -rf "$fs"' EXIT

"$regstore" bench \
  --driver inmemory \
  --driver filesystem --param rootdirectory="$fs" \
  --driver s3 --param bucket=regstore --param region=us-east-1 \
    --param regionendpoint="$s3" --param forcepathstyle=true \
    --param accesskey=test --param secretkey=test --param rootdirectory="$root" \
  --driver azure --param accountname=devstoreaccount1 --param accountkey="$azurite_key" \
    --param container=regstore --param serviceurl="${azure%/}/devstoreaccount1" \
    --param rootdirectory="$root" \
  --driver gcs --param bucket=regstore --param endpoint="$gcs" --param noauth=true \
    --param rootdirectory="$root" \
  --driver swift --param authurl="$swift" --param username=test:tester \
    --param password=testing --param container=regstore \
    --param rootdirectory="$root" \
  "$@"
