#!/usr/bin/env bash
# Counts the fsyncs `regstore serve` (filesystem driver) issues per 4 KiB
# blob push: one push at a time, then 16 at once (where group commit lets
# concurrent pushes share them). Each push is `POST /v2/bench/many/blobs/uploads/`
# then `PUT <location>?digest=` with the body (what docker and server-bench
# do for a small blob). Needs strace and curl.
#
#   scripts/fsyncs.sh [PATH_TO_REGSTORE] [PUSHES]
#
# PATH_TO_REGSTORE defaults to $CARGO_TARGET_DIR/release/regstore (or
# target/release/regstore); PUSHES (default 200) per phase.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-${CARGO_TARGET_DIR:-target}/release/regstore}"
pushes="${2:-200}"
[ -x "$bin" ] || { echo "fsyncs.sh: no regstore binary at $bin (build it: cargo build --release -p regstore-cli)" >&2; exit 1; }
command -v strace >/dev/null || { echo "fsyncs.sh: needs strace (apt-get install strace)" >&2; exit 1; }

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/root
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
base="http://127.0.0.1:$port"

# One push of blob number $1 (4 KiB of distinct bytes).
push() {
  local f="$work/blob.$1"
  head -c 4088 /dev/zero > "$f"
  printf '%08d' "$1" >> "$f"
  local digest="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  local loc
  loc="$(curl -sS -D - -o /dev/null -X POST "$base/v2/bench/many/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')"
  case "$loc" in http*) ;; *) loc="$base$loc" ;; esac
  local sep='?'; case "$loc" in *\?*) sep='&' ;; esac
  local code
  code="$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc${sep}digest=$digest")"
  rm -f "$f"
  [ "$code" = 201 ] || { echo "fsyncs.sh: push $1 answered $code" >&2; return 1; }
}
export -f push
export base work

# Counts fsync-like calls of the server while the pushes $2..$3 run with
# $1 at once; prints the count.
phase() {
  local parallel="$1" from="$2" to="$3" log="$work/strace.$1"
  strace -f -qq -c -e trace=fsync,fdatasync,syncfs -o "$log" -p "$server" &
  local tracer=$!
  sleep 1
  seq "$from" "$to" | xargs -P "$parallel" -I{} bash -c 'push {}'
  sleep 0.5
  kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
  awk '$NF ~ /^(fsync|fdatasync|syncfs)$/ {n += $4} END {print n + 0}' "$log"
}

"$bin" serve --config "$work/config.yml" > "$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 100); do curl -fsS "$base/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$base/v2/" >/dev/null || { cat "$work/serve.log" >&2; exit 1; }
# Warm-up: the repository's directories exist, as in a registry in use.
seq 1 16 | xargs -P 16 -I{} bash -c 'push {}'

one="$(phase 1 1001 $((1000 + pushes)))"
many="$(phase 16 100001 $((100000 + pushes)))"
echo "| pushes at once | pushes | fsync + fdatasync calls | per push |"
echo "|---:|---:|---:|---:|"
awk -v n="$pushes" -v a="$one" -v b="$many" 'BEGIN {
  printf "| 1 | %d | %d | %.1f |\n", n, a, a / n
  printf "| 16 | %d | %d | %.1f |\n", n, b, b / n
}'
