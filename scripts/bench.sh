#!/usr/bin/env bash
# Side-by-side benchmark: mongokeep against the official mongodump/mongorestore 100.7.0 on
# the same data, same machine, same run. Prints a table (stderr) and JSON (stdout).
#
#   scripts/bench.sh                 defaults: BENCH_APP_MIB=512 BENCH_BIG_MIB=2048 BENCH_REPEAT=3
#   BENCH_APP_MIB=128 BENCH_BIG_MIB=256 BENCH_REPEAT=3 scripts/bench.sh     a quick run
#   BENCH_INDEXES=1 scripts/bench.sh  each collection also gets three secondary indexes (by
#                                    email, by time, by status and time), built by every restore
#
# With compression off the archive is as large as the data, so the disk's direct-write speed
# (dd, same bytes, same run) is measured too: the slower of it and the raw scan is the
# physical limit of that case.
#
# Data: deterministic app-like documents (200 B to 4 KiB; names, emails, timestamps, enums,
# small arrays) in three collections sharing BENCH_APP_MIB, plus one collection of
# BENCH_BIG_MIB. Each case runs BENCH_REPEAT times; the median is reported with wall and CPU
# seconds, peak resident memory, bytes written and MiB/s of BSON, and the ratio to
# mongodump/mongorestore (throughput: higher is better for mongokeep). Starts its own
# mongod and Garage (from the test-services cache) on free ports and stops them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${BENCH_APP_MIB:-512}
BIG=${BENCH_BIG_MIB:-2048}
REPEAT=${BENCH_REPEAT:-3}
INDEXES=${BENCH_INDEXES:-0}

bash scripts/services.sh install >/dev/null
CACHE="${MONGOKEEP_CACHE:-$HOME/.cache/mongokeep}"
TOOLS="$CACHE/mongodb-tools-100.7.0/bin"
cargo build --release --quiet --bin mongokeep --example seed
MK=target/release/mongokeep
SEED=target/release/examples/seed

WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
bash scripts/services.sh mongod-start "$WORK/mongod" "$PORT" >/dev/null
S3_PORT=$(free_port)
bash scripts/services.sh garage-start "$WORK/garage" "$S3_PORT" "$(free_port)" "$(free_port)" >/dev/null 2>&1
cleanup() {
  local f pid
  for f in "$WORK/mongod/pid" "$WORK/garage/pid"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$WORK" || true
}
trap cleanup EXIT
URI="mongodb://127.0.0.1:$PORT/"
S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
# shellcheck disable=SC1091
. <(sed 's/^MONGOKEEP_TEST_S3_ACCESS_KEY=/export AWS_ACCESS_KEY_ID=/; s/^MONGOKEEP_TEST_S3_SECRET_KEY=/export AWS_SECRET_ACCESS_KEY=/' "$WORK/garage/keys")
export AWS_EC2_METADATA_DISABLED=true MONGOKEEP_S3_ENDPOINT="$S3_ENDPOINT" MONGOKEEP_S3_REGION=garage MONGOKEEP_S3_PATH_STYLE=true

echo "seeding: 3 app collections sharing $APP MiB and one of $BIG MiB ..." >&2
$SEED "$URI" app bench orders $((APP / 2)) >/dev/null
$SEED "$URI" app bench users $((APP / 4)) >/dev/null
$SEED "$URI" app bench events $((APP / 4)) >/dev/null
$SEED "$URI" app bench big "$BIG" >/dev/null
if [ "$INDEXES" = 1 ]; then
  for c in orders users events big; do $SEED "$URI" indexes bench "$c" >/dev/null; done
fi
read -r DOCS BSON < <($SEED "$URI" scan bench)
echo "data: $DOCS documents, $((BSON / 1048576)) MiB of BSON" >&2

# mongo_command NAME DB...: run {NAME: 1} on each DB of the benchmark's mongod (OP_MSG by hand, so
# the script needs no MongoDB shell).
mongo_command() { python3 - "$PORT" "$@" <<'PY'
import socket, struct, sys
port, name = int(sys.argv[1]), sys.argv[2].encode()
for db in sys.argv[3:]:
    body = b"\x10" + name + b"\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", len(db) + 1) + db.encode() + b"\x00"
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    payload = struct.pack("<I", 0) + b"\x00" + doc
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload)
    hdr = s.recv(16, socket.MSG_WAITALL)
    s.recv(struct.unpack("<i", hdr[:4])[0] - 16, socket.MSG_WAITALL)
    s.close()
PY
}
drop() { mongo_command dropDatabase "$@"; }

# settle: before every measured run, the same quiet start for every tool: mongod writes a
# checkpoint (fsync) and the kernel writes dirty pages back, so that no run pays for the
# writes of the one before it (a restore leaves gigabytes to flush).
settle() {
  mongo_command fsync admin
  sync
  sleep 1
}

# measure NAME BYTES_PATH CMD...: run once, append "name wall cpu rss_kib bytes" to $WORK/runs.
measure() {
  local name=$1 out=$2
  shift 2
  settle
  python3 - "$@" >"$WORK/m" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(rc, round(wall, 3), round(ru.ru_utime + ru.ru_stime, 3), ru.ru_maxrss)
PY
  read -r rc wall cpu rss <"$WORK/m"
  [ "$rc" = 0 ] || { echo "$name failed with exit $rc" >&2; exit 1; }
  local bytes=0
  [ -n "$out" ] && bytes=$(du -sb "$out" | cut -f1)
  echo "$name $wall $cpu $rss $bytes" >>"$WORK/runs"
}


for i in $(seq "$REPEAT"); do
  echo "round $i/$REPEAT" >&2
  measure raw_scan "" $SEED "$URI" scan bench
  # The disk's own write speed for as many bytes as the uncompressed archive (direct I/O,
  # as the local store writes): with compression off, the slower of this and the raw scan
  # is the physical limit.
  rm -f "$WORK/disk_write"
  measure disk_write "$WORK/disk_write" dd if=/dev/zero of="$WORK/disk_write" bs=8M count=$((BSON / 8388608 + 1)) oflag=direct status=none
  rm -f "$WORK/disk_write"
  rm -f "$WORK/dump.archive"
  measure mongodump_gzip "$WORK/dump.archive" "$TOOLS/mongodump" --uri "$URI" --db bench --archive="$WORK/dump.archive" --gzip --quiet
  drop bench_mr
  measure mongorestore_gzip "" "$TOOLS/mongorestore" --uri "$URI" --archive="$WORK/dump.archive" --gzip --nsFrom 'bench.*' --nsTo 'bench_mr.*' --quiet
  rm -rf "$WORK/repo" "$WORK/repo_none"
  measure mongokeep_backup "$WORK/repo" env MONGODB_URI="$URI" $MK -q backup --db bench --repo "$WORK/repo"
  measure mongokeep_backup_none "$WORK/repo_none" env MONGODB_URI="$URI" $MK -q backup --db bench --repo "$WORK/repo_none" --compression none
  measure mongokeep_backup_s3 "" env MONGODB_URI="$URI" $MK -q backup --db bench --repo "s3://mongokeep-test/bench$i"
  drop bench_mk
  measure mongokeep_restore "" $MK -q restore --repo "$WORK/repo" --snapshot latest --target "$URI" --ns-from 'bench.*' --ns-to 'bench_mk.*'
  measure mongokeep_verify "" $MK -q verify --repo "$WORK/repo" --scratch "${URI}bv$i"
  drop bench_mr bench_mk
done

python3 - "$WORK/runs" "$BSON" "$DOCS" "$APP" "$BIG" "$REPEAT" "$INDEXES" <<'PY'
import json, statistics, sys, subprocess, platform
runs, bson, docs, app, big, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
indexes = sys.argv[7] == "1"
rows = {}
for line in open(runs):
    n, wall, cpu, rss, b = line.split()
    rows.setdefault(n, []).append((float(wall), float(cpu), int(rss), int(b)))
med = {}
for n, v in rows.items():
    med[n] = {
        "wall_s": round(statistics.median(x[0] for x in v), 2),
        "cpu_s": round(statistics.median(x[1] for x in v), 2),
        "peak_rss_mib": round(statistics.median(x[2] for x in v) / 1024, 1),
        "bytes_written": int(statistics.median(x[3] for x in v)),
        "runs": len(v),
        "wall_s_each": [x[0] for x in v],
    }
    med[n]["bson_mib_per_s"] = round(bson / 1048576 / med[n]["wall_s"], 1)
ref = {"mongokeep_backup": "mongodump_gzip", "mongokeep_backup_none": "raw_scan", "mongokeep_backup_s3": "mongodump_gzip",
       "mongokeep_restore": "mongorestore_gzip", "mongokeep_verify": "mongokeep_restore"}
for n, r in ref.items():
    if n in med and r in med:
        med[n]["compared_to"] = r
        if n == "mongokeep_verify":
            med[n]["wall_ratio"] = round(med[n]["wall_s"] / med[r]["wall_s"], 2)
            # Round by round (verify runs right after the restore of the same round).
            med[n]["wall_ratio_each"] = [round(a[0] / b[0], 2) for a, b in zip(rows[n], rows[r])]
        else:
            med[n]["throughput_ratio"] = round(med[n]["bson_mib_per_s"] / med[r]["bson_mib_per_s"], 2)
if all(k in med for k in ("mongokeep_backup_none", "raw_scan", "disk_write")):
    none = med["mongokeep_backup_none"]
    read, write = med["raw_scan"]["bson_mib_per_s"], round(med["disk_write"]["bytes_written"] / 1048576 / med["disk_write"]["wall_s"], 1)
    med["disk_write"]["bson_mib_per_s"] = write
    none["physical_limit"] = "disk_write" if write < read else "raw_scan"
    none["ratio_to_physical_limit"] = round(none["bson_mib_per_s"] / min(read, write), 2)
if "mongokeep_backup" in med and "mongodump_gzip" in med:
    med["mongokeep_backup"]["size_ratio"] = round(med["mongokeep_backup"]["bytes_written"] / med["mongodump_gzip"]["bytes_written"], 3)
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = {"commit": commit, "machine": f"{platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores",
       "dataset": {"documents": docs, "bson_bytes": bson, "app_mib": int(app), "big_mib": int(big), "secondary_indexes": indexes}, "repeat": repeat, "results": med}
print(f"{'case':24} {'wall_s':>8} {'cpu_s':>7} {'rss_mib':>8} {'written_mib':>11} {'bson_mib/s':>10}  ratio", file=sys.stderr)
for n, m in med.items():
    ratio = m.get("throughput_ratio", m.get("wall_ratio", ""))
    extra = f" x {m['compared_to']}" if "compared_to" in m else ""
    if "size_ratio" in m:
        extra += f", archive size x{m['size_ratio']} of mongodump's"
    if "physical_limit" in m:
        extra += f"; x{m['ratio_to_physical_limit']} the physical limit ({m['physical_limit']})"
    print(f"{n:24} {m['wall_s']:>8} {m['cpu_s']:>7} {m['peak_rss_mib']:>8} {m['bytes_written']/1048576:>11.1f} {m['bson_mib_per_s']:>10}  {ratio}{extra}", file=sys.stderr)
print(json.dumps(out, indent=2))
PY
