#!/usr/bin/env bash
# WebDAV at scale (issue #24): PROPFIND depth 1 of a 10,000-entry directory and a 200 MB PUT
# (streamed past server.max_body_bytes) and GET, with the server's peak RSS for each.
#
#   bash bench/webdav_scale.sh            # debug binary (cargo build first)
#   LONGSHIP_BIN=target/release/longship ENTRIES=10000 PUT_MB=200 bash bench/webdav_scale.sh
#
# Starts one server on loopback (api_key mode, local storage in a temp dir). The directory is
# seeded on disk before the server starts (what PROPFIND reads is the storage listing; the
# startup index build of the seeded files is waited for). Peak RSS is the kernel's VmHWM,
# reset (`clear_refs` 5) right before each measured request, so it is that request's peak.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LONGSHIP_BIN:-$ROOT/target/debug/longship}
ENTRIES=${ENTRIES:-10000}
PUT_MB=${PUT_MB:-200}
RUNS=${RUNS:-5}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
WORK=$(mktemp -d)
ROOT_KEY=bench-root-key
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool"; exit 2; }
done
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build)"; exit 2; }

start() {
    "$BIN" serve --root-api-key "$ROOT_KEY" --port "$PORT" --data-dir "$WORK/data" >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server did not start"; cat "$WORK/server.log"; exit 1
}
rss() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$SERVER_PID/status"; }
reset_peak() { echo 5 >"/proc/$SERVER_PID/clear_refs" 2>/dev/null || echo "   (cannot reset the peak: VmHWM is since start)"; }

start
BASE="http://127.0.0.1:$PORT"
KEY=$(curl -sf -X POST -H "X-API-Key: $ROOT_KEY" -H 'Content-Type: application/json' \
    -d '{"account_id":"davscale","admin_user_id":"alice"}' "$BASE/api/v1/admin/accounts" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["user_key"])')
DAV="$BASE/webdav/resources"
curl -sf -X MKCOL -H "X-API-Key: $KEY" "$DAV/big" >/dev/null
# Seed the directory on disk, then restart so the server sees it as it would any data.
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
python3 - "$WORK/data/viking/davscale/resources/big" "$ENTRIES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"entry-{i:05d}.md"), "w") as f:
        f.write(f"# entry {i}\n\nwombat {i}\n")
PY
start
# Wait for the startup index build to settle (find sees the last entry).
for _ in $(seq 1 600); do
    n=$(curl -s -X POST -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
        -d "{\"query\":\"wombat $((ENTRIES - 1))\",\"limit\":1}" "$BASE/api/v1/search/find" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["result"]["resources"]))' 2>/dev/null || echo 0)
    [ "$n" -ge 1 ] && break
    sleep 1
done

echo "== PROPFIND Depth: 1 of a $ENTRIES-entry directory ($RUNS runs; binary: $BIN)"
echo "   server RSS before: $(rss VmRSS) kB"
times=()
for r in $(seq 1 "$RUNS"); do
    reset_peak
    out=$(curl -s -o "$WORK/pf.xml" -w '%{http_code} %{time_total} %{size_download}' -X PROPFIND \
        -H "X-API-Key: $KEY" -H 'Depth: 1' "$DAV/big/")
    set -- $out
    [ "$1" = 207 ] || { echo "PROPFIND answered $1"; exit 1; }
    responses=$(grep -o '<D:response>' "$WORK/pf.xml" | wc -l)
    echo "   run $r: $2 s, $3 bytes, $responses responses, server peak RSS $(rss VmHWM) kB"
    times+=("$2")
done
python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(f'   median {statistics.median(v):.3f} s, min {min(v):.3f} s')" "${times[@]}"

echo "== PUT of $PUT_MB MB (server.max_body_bytes is 32 MiB: streamed) and GET"
python3 -c "import os,sys; f=open(sys.argv[1],'wb'); [f.write(os.urandom(1<<20)) for _ in range(int(sys.argv[2]))]" "$WORK/blob.bin" "$PUT_MB"
reset_peak
out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -T "$WORK/blob.bin" -H "X-API-Key: $KEY" "$DAV/big.bin")
set -- $out
[ "$1" = 201 ] || { echo "PUT answered $1"; tail -5 "$WORK/server.log"; exit 1; }
echo "   PUT: $2 s ($(python3 -c "print(f'{$PUT_MB/$2:.1f}')") MB/s), server peak RSS $(rss VmHWM) kB"
reset_peak
out=$(curl -s -o "$WORK/back.bin" -w '%{http_code} %{time_total}' -H "X-API-Key: $KEY" "$DAV/big.bin")
set -- $out
[ "$1" = 200 ] || { echo "GET answered $1"; exit 1; }
cmp "$WORK/blob.bin" "$WORK/back.bin"
echo "   GET: $2 s ($(python3 -c "print(f'{$PUT_MB/$2:.1f}')") MB/s), byte-identical, server peak RSS $(rss VmHWM) kB"
leftover=$(find "$WORK/data/viking/davscale/_system/uploads" -type f 2>/dev/null | wc -l)
echo "   staging pieces left: $leftover"
echo "== ok"
