#!/usr/bin/env bash
# A throwaway OpenStack Keystone (identity v3, Debian 12's python3-keystone
# 22.0, "Zed") for loopback tests, with an SQLite database and fernet tokens.
# `scripts/backends.sh start keystone` runs `prepare`, serves the WSGI app with
# uWSGI on 127.0.0.1:$KEYSTONE_PORT and then runs `provision`; swift-saio.sh
# runs `swift-filters` for the configuration of Swift's second proxy, the one
# that accepts Keystone tokens (SWIFT_PORT + 7, default 19037).
#
# No Apache, no MySQL, no /etc/keystone: only python3-keystone (keystone-manage,
# keystone-wsgi-public) is installed, not the `keystone` package, whose
# postinst wants dbconfig-common and starts a system service.
#
# usage: scripts/keystone.sh prepare|provision|swift-filters|env|token
#   prepare        write etc/keystone.conf; lay data/ anew: a copy of seed/ if
#                  it matches (a finished earlier start), else fresh fernet and
#                  credential keys, `keystone-manage db_sync` and `bootstrap`
#   provision      (server running) create the test domain/project/users/roles,
#                  the object-store service and endpoints and an application
#                  credential, write appcred.json and ids.env, save seed/; a
#                  no-op when prepare restored seed/
#   swift-filters  print the [filter:authtoken] and [filter:keystoneauth]
#                  sections for Swift's proxy-server-keystone.conf
#   env            print the REGSTORE_KEYSTONE_* variables the tests read
#   token          print a token of swiftuser scoped to project regstore
#
# Layout of $KEYSTONE_ROOT:
#   etc/keystone.conf  read by keystone-manage (--config-file) and by the
#                      server (OS_KEYSTONE_CONFIG_DIR=etc)
#   data/              keystone.db, fernet-keys/, credential-keys/: replaced at
#                      every start, so each start is clean
#   seed/              data/ + appcred.json + ids.env as provisioned by the
#                      first start, copied back by later ones (db_sync +
#                      bootstrap + provisioning cost ~15 s; a copy ~0.3 s).
#                      Rebuilt when the stamp (Keystone version, its port,
#                      the object-store endpoint URL, this script) changes.
#   appcred.json       the application credential of swiftuser: id, secret, ...
#   ids.env            KEY=value lines: ids of the domain, project, user, ...
#   manage.log         output of the keystone-manage calls
#
# Environment: KEYSTONE_ROOT (required, but not for swift-filters),
#   KEYSTONE_PORT (default 19036), SWIFT_PORT (Swift's base port, default
#   19030; the Keystone proxy listens on SWIFT_PORT + 7).
#
# Swift: Keystone projects are served by a proxy of their own, SWIFT_PORT + 7
# (19037; proxy-server-keystone.conf of scripts/swift-saio.sh: authtoken +
# keystoneauth, no tempauth); the tempauth proxy on SWIFT_PORT (19030) never
# talks to Keystone. Both proxies serve one cluster, so the two auth systems
# keep different account prefixes: tempauth AUTH_ (AUTH_test), keystoneauth
# KEY_ (also what the tests and the recorded token response expect). The
# catalog's object-store endpoints (public and internal, RegionOne) are
# http://127.0.0.1:19037/v1/KEY_<project id>. On the Keystone proxy a tempauth
# token, or any request to an AUTH_ account, gets 401/403; on the tempauth
# proxy a Keystone token is just an unknown token (401).
set -euo pipefail
port=${KEYSTONE_PORT:-19036}
swift_port=$((${SWIFT_PORT:-19030} + 7))  # the Keystone proxy, 19037
url=http://127.0.0.1:$port/v3
swift_prefix=KEY_
# The object-store endpoint; %(project_id)s is Keystone's substitution.
swift_url="http://127.0.0.1:$swift_port/v1/$swift_prefix%(project_id)s"
# Debian's interpreter, the one python3-keystone is installed for (a `python3`
# earlier on PATH, e.g. pyenv's, does not see it).
py=/usr/bin/python3

# Test identities (loopback only; the tests read them through `env`).
admin_user=admin admin_pass=regstore-admin admin_project=admin
domain=regstore-domain project=regstore user=swiftuser pass=swiftpass
appcred_name=regstore-tests appcred_secret=regstore-appcred-secret
# The Swift proxy's own service user (Default domain, project "service", role
# "service": keystonemiddleware needs it to validate the users' tokens).
svc_user=swift svc_pass=swift-service-pass svc_project=service

cmd=${1:-}
if [ "$cmd" = swift-filters ]; then
  cat <<EOF

# Keystone (scripts/keystone.sh): authtoken validates X-Auth-Token against
# Keystone (the checks cached in memcached); delay_auth_decision lets requests
# without a valid token go on to keystoneauth, which then decides: anonymous
# ones are refused unless an ACL or tempurl (swift.authorize_override) allows
# them. keystoneauth authorizes Keystone identities on $swift_prefix<project id>
# accounts only.
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:$port
auth_url = http://127.0.0.1:$port
auth_type = password
user_domain_id = default
project_domain_id = default
project_name = $svc_project
username = $svc_user
password = $svc_pass
delay_auth_decision = True
cache = swift.cache
include_service_catalog = False
service_token_roles_required = True
# Token checks are cached in memcached (swift.cache) for this many seconds.
token_cache_time = 300

[filter:keystoneauth]
use = egg:swift#keystoneauth
reseller_prefix = $swift_prefix
operator_roles = admin, member
reseller_admin_role = ResellerAdmin
EOF
  exit 0
fi

: "${KEYSTONE_ROOT:?set KEYSTONE_ROOT}"
etc=$KEYSTONE_ROOT/etc data=$KEYSTONE_ROOT/data seed=$KEYSTONE_ROOT/seed

case $cmd in
env)
  echo "REGSTORE_KEYSTONE_AUTHURL=$url"
  echo "REGSTORE_KEYSTONE_REGION=RegionOne"
  echo "REGSTORE_KEYSTONE_DOMAIN=$domain"
  echo "REGSTORE_KEYSTONE_PROJECT=$project"
  echo "REGSTORE_KEYSTONE_USERNAME=$user"
  echo "REGSTORE_KEYSTONE_PASSWORD=$pass"
  echo "REGSTORE_KEYSTONE_APPCRED_FILE=$KEYSTONE_ROOT/appcred.json"
  echo "REGSTORE_KEYSTONE_ADMIN_USERNAME=$admin_user"
  echo "REGSTORE_KEYSTONE_ADMIN_PASSWORD=$admin_pass"
  # Ids exist only once a start has provisioned them.
  if [ -f "$KEYSTONE_ROOT/ids.env" ]; then cat "$KEYSTONE_ROOT/ids.env"; fi
  ;;

prepare)
  if ! command -v keystone-manage >/dev/null; then
    echo "keystone.sh: keystone-manage is missing: run scripts/backends.sh install keystone" >&2
    exit 1
  fi
  mkdir -p "$etc"
  cat >"$etc/keystone.conf" <<EOF
[DEFAULT]
use_stderr = true

[database]
connection = sqlite:///$data/keystone.db

[token]
provider = fernet
# 4 h: longer than a whole CI run, so no test sees its token expire.
expiration = 14400

[fernet_tokens]
key_repository = $data/fernet-keys

[fernet_receipts]
key_repository = $data/fernet-keys

[credential]
key_repository = $data/credential-keys

[identity]
# bcrypt's minimum: every password and application credential check hashes.
password_hash_rounds = 4
EOF
  version=$($py -c 'import importlib.metadata as m; print(m.version("keystone"))')
  # This script's own hash too: a change to what it provisions rebuilds seed/.
  stamp="keystone $version port $port swift $swift_url script $(sha1sum <"$0" | cut -c1-12)"
  rm -rf "$data" "$KEYSTONE_ROOT/appcred.json" "$KEYSTONE_ROOT/ids.env"
  # SQLite in WAL mode: Keystone leaves a connection with an unfinished read
  # open after issuing a token; in the default rollback-journal mode its
  # shared lock makes the next write wait 5 s and fail ("database is locked",
  # HTTP 500 with an empty body). In WAL mode readers do not block writers.
  wal() { $py -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' "$data/keystone.db"; }
  if [ "$(cat "$seed/stamp" 2>/dev/null)" = "$stamp" ]; then
    cp -a "$seed/data" "$data"
    cp "$seed/appcred.json" "$seed/ids.env" "$KEYSTONE_ROOT/"
    wal
    exit 0
  fi
  rm -rf "$seed"
  mkdir -p "$data"
  # Two fernet keys each (0 staged, 1 primary), what `keystone-manage
  # fernet_setup` and `credential_setup` write, without their ~5 s each.
  $py - "$data/fernet-keys" "$data/credential-keys" <<'EOF'
import base64, os, sys
os.umask(0o077)
for repo in sys.argv[1:]:
    os.mkdir(repo)
    for name in ("0", "1"):
        with open(os.path.join(repo, name), "w") as f:
            f.write(base64.urlsafe_b64encode(os.urandom(32)).decode())
EOF
  manage() {
    if ! keystone-manage --config-file "$etc/keystone.conf" "$@" >>"$KEYSTONE_ROOT/manage.log" 2>&1; then
      echo "keystone.sh: keystone-manage $1 failed; $KEYSTONE_ROOT/manage.log:" >&2
      tail -n 30 "$KEYSTONE_ROOT/manage.log" >&2
      exit 1
    fi
  }
  : >"$KEYSTONE_ROOT/manage.log"
  manage db_sync
  wal
  # Identity endpoints in region RegionOne (admin's too: bootstrap wants it).
  manage bootstrap --bootstrap-username "$admin_user" --bootstrap-password "$admin_pass" \
    --bootstrap-project-name "$admin_project" --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$url" --bootstrap-public-url "$url" --bootstrap-internal-url "$url"
  echo "$stamp" >"$data/stamp"
  ;;

provision)
  # Restored from seed/: already provisioned.
  [ -f "$KEYSTONE_ROOT/appcred.json" ] && exit 0
  $py - "$url" "$swift_url" "$KEYSTONE_ROOT" \
    "$admin_user" "$admin_pass" "$admin_project" "$domain" "$project" "$user" "$pass" \
    "$appcred_name" "$appcred_secret" "$svc_user" "$svc_pass" "$svc_project" <<'EOF'
import json, os, sys, urllib.error, urllib.request

(url, swift_url, root, admin_user, admin_pass, admin_project,
 domain, project, user, password, appcred_name, appcred_secret,
 svc_user, svc_pass, svc_project) = sys.argv[1:]


def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return resp.headers, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        sys.exit("keystone.sh: %s %s: %s %s" % (method, path, e.code, e.read().decode(errors="replace")))


def password_token(name, pw, user_domain, scope):
    headers, _ = call("POST", "/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {
            "user": {"name": name, "domain": user_domain, "password": pw}}},
        "scope": scope}})
    return headers["X-Subject-Token"]


admin = password_token(admin_user, admin_pass, {"id": "default"},
                       {"project": {"name": admin_project, "domain": {"id": "default"}}})


def create(kind, body):
    return call("POST", "/%ss" % kind, {kind: body}, admin)[1][kind]["id"]


def role_id(name):
    roles = call("GET", "/roles?name=" + name, token=admin)[1]["roles"]
    return roles[0]["id"] if roles else create("role", {"name": name})


def grant(project_id, user_id, role):
    call("PUT", "/projects/%s/users/%s/roles/%s" % (project_id, user_id, role_id(role)), token=admin)


domain_id = create("domain", {"name": domain, "description": "regstore tests"})
project_id = create("project", {"name": project, "domain_id": domain_id})
user_id = create("user", {"name": user, "password": password, "domain_id": domain_id,
                          "default_project_id": project_id})
grant(project_id, user_id, "member")

svc_project_id = create("project", {"name": svc_project, "domain_id": "default"})
svc_user_id = create("user", {"name": svc_user, "password": svc_pass, "domain_id": "default"})
grant(svc_project_id, svc_user_id, "service")  # may validate others' tokens
role_id("ResellerAdmin")  # keystoneauth's reseller_admin_role, for tests that want it

service_id = create("service", {"name": "swift", "type": "object-store",
                                "description": "Swift (scripts/swift-saio.sh)"})
for interface in ("public", "internal"):
    create("endpoint", {"service_id": service_id, "interface": interface,
                        "region_id": "RegionOne", "url": swift_url})

# The application credential belongs to swiftuser and is made with its own
# token (scoped to project regstore: the credential gets that scope and roles).
tok = password_token(user, password, {"name": domain},
                     {"project": {"name": project, "domain": {"name": domain}}})
cred = call("POST", "/users/%s/application_credentials" % user_id,
            {"application_credential": {"name": appcred_name, "secret": appcred_secret,
                                        "description": "regstore tests"}}, tok)[1]["application_credential"]

with open(os.path.join(root, "appcred.json"), "w") as f:
    json.dump({"auth_url": url, "id": cred["id"], "name": cred["name"], "secret": cred["secret"],
               "user_id": user_id, "user_name": user, "user_domain_name": domain,
               "project_id": project_id, "project_name": project, "domain_id": domain_id},
              f, indent=2)
    f.write("\n")
with open(os.path.join(root, "ids.env"), "w") as f:
    for k, v in [("DOMAIN_ID", domain_id), ("PROJECT_ID", project_id), ("USER_ID", user_id),
                 ("APPCRED_ID", cred["id"]), ("APPCRED_SECRET", cred["secret"]),
                 ("SWIFT_STORAGE_URL", swift_url.replace("%(project_id)s", project_id))]:
        f.write("REGSTORE_KEYSTONE_%s=%s\n" % (k, v))
EOF
  # Save the provisioned state for the next starts. sqlite3's backup API gives
  # a consistent copy while the server runs.
  rm -rf "$seed.tmp" && mkdir -p "$seed.tmp/data"
  cp -a "$data/fernet-keys" "$data/credential-keys" "$seed.tmp/data/"
  $py -c 'import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst); dst.close(); src.close()' "$data/keystone.db" "$seed.tmp/data/keystone.db"
  cp "$KEYSTONE_ROOT/appcred.json" "$KEYSTONE_ROOT/ids.env" "$seed.tmp/"
  cp "$data/stamp" "$seed.tmp/stamp"
  rm -rf "$seed" && mv "$seed.tmp" "$seed"
  ;;

token)
  curl -sf -D - -o /dev/null -H 'Content-Type: application/json' -d @- "$url/auth/tokens" <<EOF |
{"auth": {"identity": {"methods": ["password"], "password": {"user":
  {"name": "$user", "domain": {"name": "$domain"}, "password": "$pass"}}},
 "scope": {"project": {"name": "$project", "domain": {"name": "$domain"}}}}}
EOF
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-subject-token" {print $2; ok = 1} END {exit !ok}'
  ;;

*) echo "usage: $0 prepare|provision|swift-filters|env|token" >&2; exit 2 ;;
esac
