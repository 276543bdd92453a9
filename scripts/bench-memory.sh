#!/usr/bin/env bash
# Peak resident memory of `mongokeep backup` (gzip, and without compression) and
# `mongokeep restore` for one large collection, at two sizes, to show that memory is
# bounded and does not grow with the collection. Prints a table and JSON.
#
#   scripts/bench-memory.sh [SIZE_MIB ...]      default: 512 2048
#
# Starts its own mongod (from the test-services cache) on a free port, seeds app-like
# documents (deterministic), backs each size up into a local repository in a temporary
# folder, and reads the peak RSS from /usr/bin/time-like accounting (getrusage via python).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(512 2048)

cargo build --release --quiet --bin mongokeep --example seed
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bash scripts/services.sh mongod-start "$WORK/mongod" "$PORT" >/dev/null
cleanup() {
  local pid
  pid=$(cat "$WORK/mongod/pid" 2>/dev/null) || true
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$WORK" || true
}
trap cleanup EXIT
URI="mongodb://127.0.0.1:$PORT/"

# Run a command, print "<exit> <wall seconds> <cpu seconds> <peak RSS KiB>" (children's rusage).
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(rc, round(wall, 2), round(ru.ru_utime + ru.ru_stime, 2), ru.ru_maxrss)
PY
}

echo "operation  size_mib  documents  wall_s  cpu_s  peak_rss_mib  bson_mib_per_s" >&2
json="["
for size in "${SIZES[@]}"; do
  target/release/examples/seed "$URI" app bench "orders_$size" "$size" >/dev/null
  read -r rc wall cpu rss < <(MONGODB_URI="$URI" measure target/release/mongokeep backup --repo "$WORK/repo" \
    --db bench --ns-include "bench.orders_$size" --json)
  [ "$rc" = 0 ] || { echo "backup failed with exit $rc" >&2; exit 1; }
  docs=$(target/release/mongokeep show latest --repo "$WORK/repo" --json | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["totals"]["documents"], m["totals"]["bson_bytes"])')
  read -r ndocs bson <<<"$docs"
  for op in backup backup_none restore; do
    if [ "$op" = backup_none ]; then
      read -r rc wall cpu rss < <(MONGODB_URI="$URI" measure target/release/mongokeep backup --repo "$WORK/repo_none" \
        --db bench --ns-include "bench.orders_$size" --compression none --json)
      [ "$rc" = 0 ] || { echo "backup --compression none failed with exit $rc" >&2; exit 1; }
      rm -rf "$WORK/repo_none"
    fi
    if [ "$op" = restore ]; then
      read -r rc wall cpu rss < <(measure target/release/mongokeep restore --repo "$WORK/repo" --snapshot latest \
        --target "$URI" --ns-from 'bench.*' --ns-to 'bench_restored.*' --json)
      [ "$rc" = 0 ] || { echo "restore failed with exit $rc" >&2; exit 1; }
    fi
    mbps=$(python3 -c "print(round($bson/1048576/$wall, 1))")
    rss_mib=$(python3 -c "print(round($rss/1024, 1))")
    printf '%9s  %8s  %9s  %6s  %5s  %12s  %14s\n' "$op" "$size" "$ndocs" "$wall" "$cpu" "$rss_mib" "$mbps" >&2
    json+="{\"operation\":\"$op\",\"size_mib\":$size,\"documents\":$ndocs,\"bson_bytes\":$bson,\"wall_s\":$wall,\"cpu_s\":$cpu,\"peak_rss_mib\":$rss_mib,\"bson_mib_per_s\":$mbps},"
  done
done
echo "${json%,}]"
