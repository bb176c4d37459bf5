#!/usr/bin/env bash
# Prepares a one-node, one-replica OpenStack Swift ("Swift All In One") for
# loopback tests: writes the server configs, builds the rings and leaves an
# empty storage device. `scripts/backends.sh start swift` runs this, then
# starts memcached and swift-{account,container,object,proxy}-server with the
# configs under $SWIFT_ROOT/etc (and, with Keystone, a second proxy-server
# with proxy-server-keystone.conf).
#
# Needs the Debian packages swift swift-proxy swift-account swift-container
# swift-object memcached (`scripts/backends.sh install swift`).
#
# Layout of $SWIFT_ROOT:
#   etc/     *-server.conf, *.builder, *.ring.gz (rings kept between runs: each
#            swift-ring-builder call costs ~1 s; rebuilt when the ports change)
#            proxy-server.conf           tempauth only (AUTH_ accounts)
#            proxy-server-keystone.conf  authtoken + keystoneauth only (KEY_
#                                        accounts); always written, started by
#                                        backends.sh only with Keystone
#   srv/d1/  the only device; EMPTIED on every run, so each start is clean
#   cache/   recon cache
#
# Two proxies, one cluster: the same rings, swift_dir and memcached, each its
# own auth. Keystone on the tempauth proxy (authtoken before tempauth) would
# make it ask Keystone about every tempauth token it has not cached (~130 ms
# each, a 404 from Keystone), which slows the tempauth tests ~10x.
#
# Environment:
#   SWIFT_ROOT        required
#   SWIFT_PORT        base port (default 19030): proxy +0, account +1,
#                     container +2, object +3, memcached +4, UDP log sink +5,
#                     (Keystone +6, scripts/keystone.sh), Keystone proxy +7
#   KEYSTONE_PORT     for proxy-server-keystone.conf (default 19036): the
#                     Keystone of `backends.sh start keystone`; its sections
#                     come from `scripts/keystone.sh swift-filters` and need
#                     python3-keystonemiddleware once that proxy runs
#   SWIFT_DEVICE_FS   dir (default) | tmpfs
#       dir:   a plain directory. Swift keeps object metadata in user.* xattrs;
#              on ext4 all xattrs of a file must fit in one 4 KiB block, so an
#              object with ~3.5 KB of X-Object-Meta-* fails (proxy 503). Normal
#              objects and SLO manifests are far below that.
#       tmpfs: mounts a tmpfs (SWIFT_TMPFS_SIZE, default 2g) on srv/d1: no xattr
#              size limit, RAM-backed; needs root or sudo and Linux >= 6.6
#              (user.* xattrs on tmpfs). `backends.sh stop swift` unmounts it.
set -euo pipefail
: "${SWIFT_ROOT:?set SWIFT_ROOT}"
base=${SWIFT_PORT:-19030}
proxy_port=$base account_port=$((base + 1)) container_port=$((base + 2))
object_port=$((base + 3)) memcache_port=$((base + 4)) log_sink_port=$((base + 5))
keystone_proxy_port=$((base + 7))
etc=$SWIFT_ROOT/etc dev=$SWIFT_ROOT/srv/d1
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- storage device: always start empty --------------------------------------
mkdir -p "$etc" "$dev" "$SWIFT_ROOT/cache"
if mountpoint -q "$dev" 2>/dev/null; then
  find "$dev" -mindepth 1 -delete  # a tmpfs left mounted by an earlier start
else
  rm -rf "$dev" && mkdir -p "$dev"
  if [ "${SWIFT_DEVICE_FS:-dir}" = tmpfs ]; then
    as_root mount -t tmpfs -o "size=${SWIFT_TMPFS_SIZE:-2g},mode=0755,uid=$(id -u),gid=$(id -g)" tmpfs "$dev"
  fi
fi

# --- /etc/swift/swift.conf ----------------------------------------------------
# The servers read the hash path prefix/suffix and the storage policies from
# this hard-coded path; swift_dir below relocates only rings and other confs.
# The Debian package ships one (prefix/suffix "changeme", policy 0), which is
# fine for a throwaway node. Write a minimal one only if it is missing.
if [ ! -f /etc/swift/swift.conf ]; then
  printf '%s\n' '[swift-hash]' 'swift_hash_path_prefix = regstore-test' \
    'swift_hash_path_suffix = regstore-test' '' '[storage-policy:0]' \
    'name = Policy-0' 'default = yes' | as_root sh -c 'mkdir -p /etc/swift && cat >/etc/swift/swift.conf'
fi

# --- server configs -----------------------------------------------------------
# user: the servers setuid() to it at startup, so it must be whoever runs them
# (the packaged default "swift" cannot write our directories; a non-root user
# cannot switch to root). workers = 0: one process, no forked children.
# log_udp_*: without -v they would log to /dev/log (absent here); with -v they
# log to stderr and send the syslog copy to a UDP port nobody listens on.
defaults() { # port log_name
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = $(id -un)
swift_dir = $etc
devices = $SWIFT_ROOT/srv
mount_check = false
disable_fallocate = true
log_name = $2
log_level = INFO
log_udp_host = 127.0.0.1
log_udp_port = $log_sink_port
EOF
}

for kind in account container object; do
  port_var=${kind}_port
  {
    defaults "${!port_var}" "$kind-server"
    cat <<EOF

[pipeline:main]
pipeline = healthcheck recon $kind-server

[app:$kind-server]
use = egg:swift#$kind

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:recon]
use = egg:swift#recon
recon_cache_path = $SWIFT_ROOT/cache
EOF
  } >"$etc/$kind-server.conf"
done

# Proxies: the middlewares a registry driver uses: bulk (bulk delete), tempurl
# (signed URLs), copy, slo/dlo (large objects); `auth` is tempauth or
# authtoken + keystoneauth. Memcached is mandatory: tempauth keeps its tokens
# there, authtoken its token checks.
proxy_conf() { # port log_name auth
  defaults "$1" "$2" | grep -v -e '^devices' -e '^mount_check' -e '^disable_fallocate'
  cat <<EOF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl $3 copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true
# One device only: the default (60 s) would make every object request fail
# for a minute after a single 507 or timeout from the object server.
error_suppression_interval = 1

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcache_port

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo
# Swift's default is 1000; 100 lets tests reach nested large objects
# (manifests of manifests) with ~100 MiB instead of 1 GiB.
max_manifest_segments = 100

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
allow_object_versioning = true

[filter:symlink]
use = egg:swift#symlink
EOF
}

{
  proxy_conf "$proxy_port" proxy-server tempauth
  cat <<EOF

[filter:tempauth]
use = egg:swift#tempauth
# user_<account>_<user> = <password> [groups]
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test2_tester2 = testing2 .admin
user_test_tester3 = testing3
EOF
} >"$etc/proxy-server.conf"

# Written whatever runs: only a text file until backends.sh starts a proxy
# with it (with Keystone, possibly later than the rest of Swift).
{
  proxy_conf "$keystone_proxy_port" proxy-server-keystone "authtoken keystoneauth"
  KEYSTONE_PORT=${KEYSTONE_PORT:-$((base + 6))} "$(dirname "$0")/keystone.sh" swift-filters
} >"$etc/proxy-server-keystone.conf"

# --- rings: part power 8, 1 replica, min_part_hours 1, one device ------------
stamp="$account_port $container_port $object_port"
if [ "$(cat "$etc/rings.ports" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$etc"/*.builder "$etc"/*.ring.gz "$etc/backups" "$etc/rings.ports"
  build_ring() { # kind port
    swift-ring-builder "$etc/$1.builder" create 8 1 1 &&
      swift-ring-builder "$etc/$1.builder" add "r1z1-127.0.0.1:$2/d1" 100 &&
      swift-ring-builder "$etc/$1.builder" rebalance
  } >/dev/null
  # ~1 s of Python start-up per call: build the three rings side by side.
  pids=()
  for kind in account container object; do
    port_var=${kind}_port
    build_ring "$kind" "${!port_var}" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "$stamp" >"$etc/rings.ports"
fi
