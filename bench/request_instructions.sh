#!/usr/bin/env bash
# Instructions per request on the HTTP worker thread (callgrind), for /health and other GET
# routes: deterministic, so it can be compared on a loaded machine where wrk cannot (issue #19
# item 2). Starts the server under valgrind with instrumentation off, warms up with 200
# keep-alive requests, counts N more on one connection, and prints the busiest thread's total
# (the HTTP worker: one worker is configured) divided by N.
#
#   bash bench/request_instructions.sh target/release/longship 2000 /health
#   MODE=api_key bash bench/request_instructions.sh target/release/longship 2000 /api/v1/system/status
#   bash bench/request_instructions.sh target/release/bare_actix 2000 /health
#
# MODE=api_key starts with a root key, creates an account and a USER key and sends it.
# Needs valgrind (Debian package).
# usage: cg.sh BIN N PATH [KEY]   -> instructions per request (callgrind), keep-alive requests
set -eu
BIN=$1; N=${2:-2000}; P=${3:-/health}; KEY=${4:-}
W=$(mktemp -d); PORT=$((20000 + RANDOM % 20000))
cd "$W"
if [ "$(basename $BIN)" = bare_actix ]; then
  valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file=$W/cg.out "$BIN" $PORT >/dev/null 2>$W/vg.log &
else
  LONGSHIP_SERVER__PORT=$PORT LONGSHIP_STORAGE__DATA_DIR=$W/data LONGSHIP_AUTH__MODE=${MODE:-dev} RUST_LOG=info,tantivy=warn LONGSHIP_SERVER__WORKERS=1 \
  valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file=$W/cg.out "$BIN" serve ${MODE:+--root-api-key rk} >$W/out.log 2>$W/vg.log &
fi
VPID=$!
for i in $(seq 1 300); do curl -sf http://127.0.0.1:$PORT/health >/dev/null && break; sleep 0.5; done
if [ "${MODE:-}" = api_key ]; then KEY=$(python3 - <<PY
import http.client, json
c=http.client.HTTPConnection("127.0.0.1",$PORT)
def call(m,p,b):
    c.request(m,p,body=json.dumps(b),headers={"X-API-Key":"rk","Content-Type":"application/json"}); r=c.getresponse(); return json.loads(r.read())
import time
for i in range(60):
    if call("POST","/api/v1/admin/accounts",{"account_id":"bench","admin_user_id":"alice"}).get("status")=="ok": break
    time.sleep(1)
import sys, time
for i in range(30):
    r=call("POST","/api/v1/admin/accounts/bench/users",{"user_id":"bob%d"%i,"role":"user"})
    if "result" in r: print(r["result"]["user_key"]); break
    print(r, file=sys.stderr); time.sleep(2)
PY
); fi
python3 - <<PY
import http.client
c=http.client.HTTPConnection("127.0.0.1",$PORT)
h={"X-API-Key":"$KEY"} if "$KEY" else {}
for i in range(200):
    c.request("GET","$P",headers=h); c.getresponse().read()
PY
callgrind_control -i on $VPID >/dev/null
python3 - <<PY
import http.client
c=http.client.HTTPConnection("127.0.0.1",$PORT)
h={"X-API-Key":"$KEY"} if "$KEY" else {}
for i in range($N):
    c.request("GET","$P",headers=h); r=c.getresponse(); r.read()
print("last status", r.status)
PY
callgrind_control -i off $VPID >/dev/null
callgrind_control -d $VPID >/dev/null
sleep 1
kill $VPID; wait $VPID 2>/dev/null || true
for f in $W/cg.out*; do t=$(callgrind_annotate $f 2>/dev/null | awk "/PROGRAM TOTALS/" | head -1 | awk '{gsub(",","",$1); print $1}'); echo "$(basename $f) $t"; done
F=$(ls -S $W/cg.out* | head -1)
TOT=$(callgrind_annotate $F 2>/dev/null | awk "/PROGRAM TOTALS/" | head -1 | awk '{gsub(",","",$1); print $1}')
echo "total $TOT per-request $((TOT / N))"
cp $F "${CG_OUT:-/tmp/request_instructions.cg}"

rm -rf $W
