#!/usr/bin/env bash
# Installs what the tests need and runs every test of the workspace.
#
#   scripts/test.sh            # everything, full sizes
#   scripts/test.sh -E 'test(/walk/)'   # extra arguments go to cargo nextest
#
# Environment:
#   REGSTORE_REQUIRE_BACKENDS=1  a test whose backend is unreachable fails
#                                instead of being skipped (CI sets it)
#   REGSTORE_TEST_SHORT=1        shrink the largest conformance sizes
#   CARGO_TARGET_DIR             shared build directory (default ./target)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# Real registry clients (skopeo, podman) and docker/distribution for the
# server's tests. Without them those tests skip, unless backends are required.
if ! scripts/clients.sh install; then
  if [ "${REGSTORE_REQUIRE_BACKENDS:-}" = 1 ]; then
    echo "test.sh: cannot install the registry clients and REGSTORE_REQUIRE_BACKENDS=1" >&2
    exit 1
  fi
  echo "test.sh: registry clients not installed; their tests will be skipped" >&2
fi

# Real storage servers for the cloud drivers (moto, Azurite,
# fake-gcs-server) on 127.0.0.1, stopped when this script exits. Without
# them the cloud conformance suites skip, unless backends are required.
if scripts/backends.sh install && scripts/backends.sh start; then
  trap 'scripts/backends.sh stop' EXIT
else
  scripts/backends.sh stop || true
  if [ "${REGSTORE_REQUIRE_BACKENDS:-}" = 1 ]; then
    echo "test.sh: cannot start the storage backends and REGSTORE_REQUIRE_BACKENDS=1" >&2
    exit 1
  fi
  echo "test.sh: storage backends not started; the cloud driver suites will be skipped" >&2
fi

# Every test binary, the conformance suites (one test per case and driver)
# and the CLI tests that run the regstore binary as a user would.
cargo nextest run --workspace --no-fail-fast "$@"
# The out-of-tree driver example is its own workspace (see its Cargo.toml).
cargo nextest run --manifest-path examples/out-of-tree-driver/Cargo.toml --no-fail-fast --no-tests=pass "$@"
# nextest does not run doc tests.
cargo test --workspace --doc --quiet
