"""Request-rate cost of the audit log on small writes (issue #23 item 6): two release servers
over their own data directories, one with `audit.enabled = true` (the default: every write is
one audit entry, group-committed every `audit.flush_interval_ms`), one with it off; wrk drives
`content/write` of small files (replace mode, 1000 names) on each side in turn, several rounds,
so a loaded machine slows both alike. Prints each run and the medians with the load average.
Usage: python3 bench/audit_bench.py [seconds] [rounds] [connections]
"""
import os
import statistics
import sys

from common import ROOT_KEY, Server, call, temp_dir

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CONNECTIONS = int(sys.argv[3]) if len(sys.argv) > 3 else 16

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"uri":"viking://resources/bench/f%d.md","content":"small write %d\\n","mode":"replace"}',
    n % 1000, n)
  return wrk.format(nil, nil, nil, body)
end
"""


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def start(audit_on):
    d = temp_dir()
    s = Server(d, env={"LONGSHIP_AUDIT__ENABLED": "true" if audit_on else "false"})
    status, body = call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                        {"account_id": "bench", "admin_user_id": "alice"})
    assert status == 200, (status, body)
    key = body["result"]["user_key"]
    for i in range(1000):
        status, _ = call(s.url + "/api/v1/content/write", "POST", key,
                         {"uri": f"viking://resources/bench/f{i}.md", "content": "seed\n",
                          "mode": "replace"})
        assert status == 200, status
    return d, s, key


def main():
    script = os.path.join(temp_dir(), "write.lua")
    with open(script, "w") as f:
        f.write(LUA)
    sides = {"audit on": start(True), "audit off": start(False)}
    print(f"audit bench: {SECONDS} s per run, {ROUNDS} rounds, {CONNECTIONS} connections, "
          f"load average before {loadavg()}")
    print("| round | side | writes/s | p50 ms | p99 ms | non-2xx |")
    print("|---:|---|---:|---:|---:|---:|")
    rates = {k: [] for k in sides}
    for r in range(1, ROUNDS + 1):
        order = list(sides) if r % 2 else list(reversed(list(sides)))
        for side in order:
            _, s, key = sides[side]
            out = wrk_script(s.url + "/api/v1/content/write", script, key)
            rates[side].append(out["rps"])
            print(f"| {r} | {side} | {out['rps']:.0f} | {out['p50_ms']:.2f} | "
                  f"{out['p99_ms']:.2f} | {out['errors']} |")
    on, off = statistics.median(rates["audit on"]), statistics.median(rates["audit off"])
    print(f"\nmedians: audit on {on:.0f} writes/s, audit off {off:.0f} writes/s, "
          f"cost {100 * (off - on) / off:.1f}% (bound 10%); load average after {loadavg()}")
    for _, s, _ in sides.values():
        s.stop()


def wrk_script(url, script, key):
    import re
    import subprocess
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", script,
           "-H", f"X-API-Key: {key}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[int(pct)] = float(val) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": lat.get(50, float("nan")), "p99_ms": lat.get(99, float("nan")),
            "errors": int(errs.group(1)) if errs else 0}


if __name__ == "__main__":
    main()
