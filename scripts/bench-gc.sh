#!/usr/bin/env bash
# Garbage collection on S3 (moto): regstore's against docker/distribution
# 2.8.2's (Debian's `docker-registry garbage-collect`), same bucket, same run.
#
# What it does:
#  1. builds `regstore` and `gc-bench` (release) from this tree and copies
#     them to a temporary directory (the target directory is shared, so
#     another tree's build could replace them mid-run);
#  2. starts a private moto_server on 127.0.0.1:$GC_BENCH_MOTO_PORT (from
#     the venv `scripts/backends.sh install s3` makes) and creates the
#     bucket; it is stopped at exit. Private, so other tests' traffic and
#     objects do not share the emulator: moto answers one request at a time
#     per thread and a listing costs it time in proportion to the whole
#     bucket. GC_BENCH_S3_ENDPOINT uses a running S3 instead;
#  3. runs gc-bench (benches/src/bin/gc-bench.rs): writes the same registry
#     under two prefixes of the bucket through regstore's s3 driver
#     (GC_BENCH_BLOBS blobs in GC_BENCH_REPOS repositories, half of them
#     unreferenced); runs both collections in --dry-run mode on the first
#     prefix, then for real, regstore on the first and docker-registry on
#     the second, each talking to S3 through one counting relay; checks
#     each found exactly the unreferenced blobs and left exactly the
#     referenced ones; prints a Markdown table (requests by kind, wall
#     time, blobs, ratios) on stdout, progress on stderr.
#
# How long, on 2 shared cores with moto, once built (docs/gc-bench.md has
# the figures): GC_BENCH_QUICK=1 about 20 s; 2,000 blobs in 200
# repositories about 4.5 min; the default size (10,000 blobs in 1,000
# repositories) 12 min with `--only dry`, about an hour with the real runs
# (moto's listings cost time in proportion to the whole bucket, and
# docker-registry lists one directory per request). The first build takes
# minutes more.
#
#   scripts/bench-gc.sh                              # the full size
#   GC_BENCH_QUICK=1 scripts/bench-gc.sh             # CI-sized
#   scripts/bench-gc.sh --delete-untagged            # extra arguments go to gc-bench
#   scripts/bench-gc.sh --only dry                   # skip the real runs
#
# Knobs (environment):
#   GC_BENCH_QUICK=1        200 blobs in 20 repositories (CI-sized, < 1 min)
#   GC_BENCH_BLOBS          blobs in all (default 10000; GC_BENCH_QUICK: 200)
#   GC_BENCH_REPOS          repositories (default 1000; GC_BENCH_QUICK: 20);
#                           BLOBS/REPOS must be even and at least 4
#   GC_BENCH_S3_ENDPOINT    use this S3 (e.g. http://127.0.0.1:19000 after
#                           `scripts/backends.sh start s3`) instead of a private moto
#   GC_BENCH_BUCKET         bucket (default regstore; made on the private moto,
#                           must exist on GC_BENCH_S3_ENDPOINT)
#   GC_BENCH_MOTO_PORT      the private moto's port (default 19100)
#   GC_BENCH_CONCURRENCY    regstore garbage-collect --concurrency (default 16)
#   GC_BENCH_LATENCY        time the relay holds every request of either program
#                           (default 0; e.g. 20ms for a distant S3: docker-registry's
#                           requests go one at a time, so it pays this per request)
#   GC_BENCH_LOGS           directory for each program's stdout/stderr and the
#                           relay's log of every request (one line each)
#   GC_BENCH_OUT            also write the report there (Markdown)
#   REGSTORE, GC_BENCH      prebuilt binaries to use (no build)
#   DOCKER_REGISTRY         default /usr/bin/docker-registry (scripts/clients.sh install)
#   BACKENDS_STATE          where `scripts/backends.sh install s3` put moto's venv
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${GC_BENCH_QUICK:-0}" = 1 ]; then
  blobs=${GC_BENCH_BLOBS:-200} repos=${GC_BENCH_REPOS:-20}
else
  blobs=${GC_BENCH_BLOBS:-10000} repos=${GC_BENCH_REPOS:-1000}
fi
bucket=${GC_BENCH_BUCKET:-regstore}
docker_registry=${DOCKER_REGISTRY:-/usr/bin/docker-registry}
state=${BACKENDS_STATE:-/tmp/regstore-backends}

work=$(mktemp -d)
moto_pid=
cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -x "$docker_registry" ]; then
  echo "bench-gc: no $docker_registry (scripts/clients.sh install)" >&2
  exit 1
fi

if [ -n "${REGSTORE:-}" ] && [ -n "${GC_BENCH:-}" ]; then
  regstore=$REGSTORE gc_bench=$GC_BENCH
else
  target=${CARGO_TARGET_DIR:-target}
  echo "bench-gc: building regstore and gc-bench (release)" >&2
  cargo build --release -p regstore-cli -p regstore-benches --bin regstore --bin gc-bench >&2
  cp "$target/release/regstore" "$target/release/gc-bench" "$work/"
  regstore=$work/regstore gc_bench=$work/gc-bench
fi

if [ -n "${GC_BENCH_S3_ENDPOINT:-}" ]; then
  endpoint=$GC_BENCH_S3_ENDPOINT
else
  port=${GC_BENCH_MOTO_PORT:-19100}
  endpoint=http://127.0.0.1:$port
  moto=$state/moto/bin/moto_server
  if [ ! -x "$moto" ]; then
    echo "bench-gc: no $moto (scripts/backends.sh install s3)" >&2
    exit 1
  fi
  if curl -s -o /dev/null "$endpoint/"; then
    echo "bench-gc: something already listens on $endpoint (set GC_BENCH_MOTO_PORT)" >&2
    exit 1
  fi
  "$moto" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "$endpoint/moto-api/" && break
    sleep 0.2
  done
  curl -sf -o /dev/null "$endpoint/moto-api/" || { tail -n 20 "$work/moto.log" >&2; exit 1; }
  curl -sf --user test:test --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "$endpoint/$bucket" >/dev/null
  echo "bench-gc: moto on $endpoint (pid $moto_pid)" >&2
fi

args=(--blobs "$blobs" --repos "$repos" --endpoint "$endpoint" --bucket "$bucket"
  --regstore "$regstore" --docker-registry "$docker_registry"
  --concurrency "${GC_BENCH_CONCURRENCY:-16}" --latency "${GC_BENCH_LATENCY:-0}")
if [ -n "${GC_BENCH_LOGS:-}" ]; then
  args+=(--logs "$GC_BENCH_LOGS")
fi
echo "bench-gc: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" >&2
if [ -n "${GC_BENCH_OUT:-}" ]; then
  "$gc_bench" "${args[@]}" "$@" | tee "$GC_BENCH_OUT"
else
  "$gc_bench" "${args[@]}" "$@"
fi
