#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for a while (docs/fuzzing.md).
#
#   scripts/fuzz.sh              # every target, 30 s each (what CI runs)
#   scripts/fuzz.sh 3600         # every target, an hour each
#   scripts/fuzz.sh 600 manifest config   # only these targets
#
# libFuzzer through cargo-fuzz on the stable toolchain, without a sanitizer
# (`-s none`: the sanitizers need nightly's -Zsanitizer; Rust code is
# memory-safe, so a panic, an overflow in debug arithmetic or a failed
# property assertion is what a target finds). Installs cargo-fuzz and a C++
# compiler (libfuzzer-sys builds libFuzzer) when they are missing.
#
# Each target starts from its checked-in seeds, fuzz/corpus/<target>/
# (read only), and keeps what it finds in $FUZZ_WORK/corpus/<target>/, so
# a later run on the same machine continues from there. Prints the
# executions of each target; exits non-zero if any target crashed, with
# the crashing input's path in the output (fuzz/artifacts/<target>/).
#
# Environment:
#   FUZZ_TARGET_DIR  build directory (default ~/.cache/regstore/fuzz-target;
#                    not the workspace's: the instrumented build uses other
#                    RUSTFLAGS and would evict the normal one)
#   FUZZ_WORK        where the grown corpora go (default $FUZZ_TARGET_DIR/work)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
target_dir="${FUZZ_TARGET_DIR:-$HOME/.cache/regstore/fuzz-target}"
work="${FUZZ_WORK:-$target_dir/work}"

if ! command -v c++ >/dev/null 2>&1; then
  echo "fuzz.sh: installing a C++ compiler (libfuzzer-sys builds libFuzzer)" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

# One build of every target; `cargo fuzz run` below finds it up to date.
build=(--fuzz-dir fuzz --target-dir "$target_dir" --sanitizer none)
start=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz.sh: built in $(($(date +%s) - start)) s"

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  echo "fuzz.sh: $t for $seconds s"
  status=0
  # -timeout: an input that takes 10 s is a finding too (a hang).
  cargo fuzz run "${build[@]}" "$t" "$work/corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # libFuzzer: "Test unit written to <path>" for a crash, leak or timeout.
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
    tail -n 40 "$log"
    echo "fuzz.sh: $t FAILED (exit $status) after ${execs:-?} executions; input: ${crash:-none written}; log: $log"
    echo "fuzz.sh: reproduce with: cargo fuzz run ${build[*]} $t ${crash:-}"
    failed+=("$t")
    summary+=("$t: FAILED, ${execs:-?} executions, input ${crash:-?}")
  else
    summary+=("$t: ${execs:-?} executions in $seconds s (${rate:-?}/s), corpus $(find "$work/corpus/$t" -type f | wc -l) inputs")
  fi
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
