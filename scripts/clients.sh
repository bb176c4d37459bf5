#!/usr/bin/env bash
# Installs the real registry clients and servers the server tests drive:
# skopeo, podman, umoci + busybox-static (to build a test image offline),
# Debian's docker-registry (docker/distribution 2.8.2, for the storage
# compatibility tests), openssl and curl (TLS test), chromium (headless, for
# the CORS browser test). Idempotent; needs root
# (or sudo) and Debian's apt.
#
#   scripts/clients.sh install
set -euo pipefail

PACKAGES=(skopeo podman docker-registry umoci busybox-static openssl curl chromium)
# Program each package provides, to tell whether it is installed.
declare -A PROVIDES=(
  [skopeo]=/usr/bin/skopeo
  [podman]=/usr/bin/podman
  [docker-registry]=/usr/bin/docker-registry
  [umoci]=/usr/bin/umoci
  [busybox-static]=/bin/busybox
  [openssl]=/usr/bin/openssl
  [curl]=/usr/bin/curl
  [chromium]=/usr/bin/chromium
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    [ -x "${PROVIDES[$p]}" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "clients.sh: all present (${PACKAGES[*]})"
    return
  fi
  echo "clients.sh: installing ${missing[*]}"
  # docker-registry's package would start a registry on :5000; keep
  # services from starting while we install (and restore the policy after).
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
  fi
  [ "$created" -eq 1 ] && as_root rm -f "$policy"
  # In case a service started anyway (no policy-rc.d support).
  if pgrep -x docker-registry >/dev/null 2>&1; then
    as_root pkill -x docker-registry || true
  fi
  return "$rc"
}

case "${1:-}" in
  install) install ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
