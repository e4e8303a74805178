#!/usr/bin/env bash
# WebDAV with clients nobody here wrote (issue #24): the litmus compliance suite and rclone.
#
#   bash bench/webdav_clients.sh            # debug binary (cargo build first)
#   LONGSHIP_BIN=target/release/longship FILES=1000 bash bench/webdav_clients.sh
#
# Needs the Debian packages `litmus` and `rclone`. Starts one server on loopback (api_key mode,
# local storage in a temp dir), creates an account, then:
#   1. litmus (Basic auth, the key as password): the `basic`, `copymove`, `props` and `locks`
#      suites must pass (exit 1 if not); `http` is reported.
#   2. rclone: FILES files (half text, half binary, in 10 directories) synced up, 10% changed,
#      5% deleted and 5% added locally, synced up again, then synced back down into an empty
#      directory; `rclone check --download` compares contents byte for byte after each step
#      (plain WebDAV gives rclone sizes only). Prints the times (throughput up and down).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LONGSHIP_BIN:-$ROOT/target/debug/longship}
FILES=${FILES:-1000}
PORT=${PORT:-$((20000 + RANDOM % 20000))}
WORK=$(mktemp -d)
ROOT_KEY=bench-root-key
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in litmus rclone curl python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y litmus rclone)"; exit 2; }
done
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build)"; exit 2; }

"$BIN" serve --root-api-key "$ROOT_KEY" --port "$PORT" --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
    curl -sf "$BASE/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
KEY=$(curl -sf -X POST -H "X-API-Key: $ROOT_KEY" -H 'Content-Type: application/json' \
    -d '{"account_id":"davbench","admin_user_id":"alice"}' "$BASE/api/v1/admin/accounts" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["user_key"])')
DAV="$BASE/webdav/resources"

echo "== litmus ($DAV)"
litmus -k "$DAV/" alice "$KEY" >"$WORK/litmus.out" 2>&1 || true
grep -E '^<- summary|FAIL' "$WORK/litmus.out" | sed 's/^/   /'
for suite in basic copymove props locks; do
    if ! grep -q "summary for \`$suite': of [0-9]* tests run: [0-9]* passed, 0 failed" "$WORK/litmus.out"; then
        echo "litmus $suite suite FAILED"; cat "$WORK/litmus.out"; exit 1
    fi
done

echo "== rclone ($FILES files)"
REMOTE=":webdav:sync"
RC=(rclone --webdav-url "$DAV" --webdav-bearer-token "$KEY" --transfers 4 --checkers 4 -q)
curl -sf -X MKCOL -H "X-API-Key: $KEY" "$DAV/sync" >/dev/null
python3 - "$WORK/local" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(24)
for i in range(n):
    d = os.path.join(root, f"dir{i % 10}")
    os.makedirs(d, exist_ok=True)
    if i % 2:
        with open(os.path.join(d, f"blob{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(0, 64 * 1024)))
    else:
        with open(os.path.join(d, f"note{i}.md"), "w") as f:
            f.write(f"# note {i}\n\n" + " ".join(rnd.choice(["koala", "wombat", "quokka", "numbat"]) for _ in range(rnd.randint(5, 400))) + "\n")
EOF
BYTES=$(du -sb "$WORK/local" | cut -f1)
t0=$(date +%s.%N)
"${RC[@]}" sync "$WORK/local" "$REMOTE"
t1=$(date +%s.%N)
"${RC[@]}" check --download "$WORK/local" "$REMOTE"
echo "   up: $FILES files, $BYTES bytes in $(python3 -c "print(f'{$t1-$t0:.1f}')") s; check --download: identical"

python3 - "$WORK/local" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(2024)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
rnd.shuffle(files)
k = max(1, n // 20)
for p in files[:2 * k]:                      # 10% changed (sizes change: plain WebDAV compares sizes)
    with open(p, "ab") as f:
        f.write(b"\nchanged " + rnd.randbytes(17))
for p in files[2 * k:3 * k]:                 # 5% deleted
    os.remove(p)
for i in range(k):                           # 5% added
    with open(os.path.join(root, f"dir{i % 10}", f"new{i}.bin"), "wb") as f:
        f.write(rnd.randbytes(1000 + i))
EOF
t0=$(date +%s.%N)
"${RC[@]}" sync "$WORK/local" "$REMOTE"
t1=$(date +%s.%N)
"${RC[@]}" check --download "$WORK/local" "$REMOTE"
echo "   modified and synced up again in $(python3 -c "print(f'{$t1-$t0:.1f}')") s; check --download: identical"

t0=$(date +%s.%N)
"${RC[@]}" sync "$REMOTE" "$WORK/back"
t1=$(date +%s.%N)
"${RC[@]}" check --download "$REMOTE" "$WORK/back"
diff -r "$WORK/local" "$WORK/back" >/dev/null
BYTES=$(du -sb "$WORK/back" | cut -f1)
echo "   down: $(find "$WORK/back" -type f | wc -l) files, $BYTES bytes in $(python3 -c "print(f'{$t1-$t0:.1f}')") s; check --download and diff -r: identical"
echo "== ok"
