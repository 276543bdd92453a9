#!/usr/bin/env bash
# Quick start: back up a MongoDB into ./backups.
#
# With MONGODB_URI set, backs that deployment up. Without it, installs a local mongod 6.0
# (pinned, checksummed, cached in ~/.cache/mongokeep), starts it as a one-node replica set on
# 127.0.0.1:27917, seeds it with sample data (once), and backs that up.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin mongokeep --example seed
BIN=target/release/mongokeep

if [ -z "${MONGODB_URI:-}" ]; then
  DIR="${MONGOKEEP_QUICKSTART_DIR:-$HOME/.cache/mongokeep/quickstart}"
  PORT="${MONGOKEEP_QUICKSTART_PORT:-27917}"
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "quickstart: starting a local mongod (replica set rs0) on 127.0.0.1:$PORT, data in $DIR" >&2
    bash scripts/services.sh mongod-start "$DIR" "$PORT" --replset
  fi
  export MONGODB_URI="mongodb://127.0.0.1:$PORT/?replicaSet=rs0"
  target/release/examples/seed "$MONGODB_URI" rich sample_shop >&2
  target/release/examples/seed "$MONGODB_URI" app sample_food orders 20 >&2
  echo "quickstart: the local mongod keeps running; stop it with: kill \$(cat $DIR/pid)" >&2
fi

"$BIN" backup --repo "${MONGOKEEP_REPO:-./backups}" "$@"
"$BIN" snapshots --repo "${MONGOKEEP_REPO:-./backups}"
