"""Auth / multi-instance benchmark (issue 4). Prints a Markdown section for bench/REPORT.md.

1. Convergence: a write on instance A, then the time until instance B accepts the new key
   (create) or rejects the old one (regenerate), p50/p99 over N trials, for
   auth.refresh_interval_ms = 0, 100 and 1000. B is polled in a tight loop; a sample is the
   send time of B's first request that got the new answer, measured from A's 200.
2. Authenticated throughput with 100k users in the registry versus 10 users (wrk, keys drawn
   at random from 1,000 real keys by a Lua script), which must stay flat.
3. Registry reads under a flood of 10k distinct random keys: the AuthActor's counters
   (freshness checks, marker reads, files re-read) before and after, per second.

Usage: python3 auth_bench.py [wrk-seconds] [trials]   (LONGSHIP_BIN = release binary)
"""
import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import http.client

from common import ROOT_KEY, Server, call, percentile, temp_dir, wrk

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 200


def b64u(s):
    return base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")


def key_for(account, user, seed):
    secret = hashlib.sha256(f"{user}\0{seed}".encode()).hexdigest()
    return f"{b64u(account)}.{b64u(user)}.{b64u(secret)}"


class Conn:
    """A keep-alive connection (so a sample measures the server, not TCP setup)."""

    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def status(self, path, key):
        try:
            self.c.request("GET", path, headers={"X-API-Key": key})
            r = self.c.getresponse()
            r.read()
            return r.status
        except (OSError, http.client.HTTPException):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return self.status(path, key)


def wait_for(conn, key, want, t0, limit=10.0):
    """(send time, answer time, attempts), in s after t0, of the first request on `conn`
    answering `want`."""
    attempts = 0
    while True:
        sent = time.perf_counter()
        attempts += 1
        if conn.status("/api/v1/system/status", key) == want:
            return sent - t0, time.perf_counter() - t0, attempts
        if sent - t0 > limit:
            raise RuntimeError(f"no {want} within {limit}s")


def convergence(interval_ms, trials):
    d = temp_dir()
    env = {"LONGSHIP_AUTH__REFRESH_INTERVAL_MS": str(interval_ms)}
    a, b = Server(d, env=env), Server(d, env=env)
    try:
        st, body = call(a.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                        {"account_id": "conv", "admin_user_id": "boss"})
        assert st == 200, body
        admin = body["result"]["user_key"]
        cb = Conn(b.port)
        accept, reject = [], []
        for i in range(trials):
            st, body = call(f"{a.url}/api/v1/admin/accounts/conv/users", "POST", admin,
                            {"user_id": f"u{i}"})
            t0 = time.perf_counter()
            assert st == 200, body
            key = body["result"]["user_key"]
            accept.append(wait_for(cb, key, 200, t0))
            st, body = call(f"{a.url}/api/v1/admin/accounts/conv/users/u{i}/key", "POST",
                            admin, {})
            t0 = time.perf_counter()
            assert st == 200, body
            reject.append(wait_for(cb, key, 401, t0)[0])
        return accept, reject
    finally:
        a.stop()
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def write_registry(d, users):
    """A registry with one account of `users` plaintext users (as OpenViking would store it)."""
    root = os.path.join(d, "viking")
    os.makedirs(os.path.join(root, "_system"), exist_ok=True)
    os.makedirs(os.path.join(root, "big", "_system"), exist_ok=True)
    now = "2026-01-01T00:00:00.000000+00:00"
    with open(os.path.join(root, "_system", "accounts.json"), "w") as f:
        json.dump({"accounts": {"default": {"created_at": now}, "big": {"created_at": now}}},
                  f, indent=2)
    keys = []
    table = {}
    for i in range(users):
        k = key_for("big", f"user{i}", "bench")
        table[f"user{i}"] = {"role": "user", "key": k}
        if i % max(1, users // 1000) == 0:
            keys.append(k)
    with open(os.path.join(root, "big", "_system", "users.json"), "w") as f:
        json.dump({"users": table}, f, indent=2)
    return keys[:1000]


LUA = """
local keys = {}
for line in io.lines("%s") do keys[#keys + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/v1/system/status", {["X-API-Key"] = keys[math.random(#keys)]})
end
"""


def throughput(users):
    d = temp_dir()
    keys = write_registry(d, users)
    s = Server(d)
    try:
        t0 = time.perf_counter()
        while call(s.url + "/api/v1/system/status", key=keys[0])[0] != 200:
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("registry never loaded")
            time.sleep(0.05)
        keyfile = os.path.join(d, "keys.txt")
        with open(keyfile, "w") as f:
            f.write("\n".join(keys) + "\n")
        script = os.path.join(d, "keys.lua")
        with open(script, "w") as f:
            f.write(LUA % keyfile)
        cmd = ["wrk", "-t2", "-c32", f"-d{SECONDS}s", "--latency", "-s", script,
               s.url + "/api/v1/system/status"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60).stdout
        import re
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        lat = {int(p): float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
               for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
        errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        return {"rps": rps, "p50": lat.get(50), "p99": lat.get(99),
                "errors": int(errs.group(1)) if errs else 0, "rss": s.rss_kib() / 1024}
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def counters(s):
    st, body = call(s.url + "/api/v1/observer/system?format=json", key=ROOT_KEY)
    return body["result"]["components"]["auth"]["status"]["counters"]


def flood(n=10000, threads=256):
    d = temp_dir()
    s = Server(d)
    try:
        for i in range(20):
            call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                 {"account_id": f"acct{i}", "admin_user_id": "a"})
        before = counters(s)
        codes = {}
        lock = threading.Lock()

        def worker(t):
            c = Conn(s.port)
            for i in range(t, n, threads):
                kind = i % 3
                if kind == 0:
                    k = os.urandom(32).hex()
                elif kind == 1:
                    k = key_for(f"ghost{i}", "u", str(i))
                else:
                    k = key_for(f"acct{i % 20}", f"nobody{i}", str(i))
                st = c.status("/api/v1/system/status", k)
                with lock:
                    codes[st] = codes.get(st, 0) + 1

        t0 = time.perf_counter()
        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.perf_counter() - t0
        after = counters(s)
        delta = {k: after[k] - before[k] for k in after}
        return elapsed, delta, codes
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def main():
    print("## Auth: multi-instance convergence, throughput vs registry size, random-key floods\n")
    print(f"Two release instances over one local data dir, same machine; {TRIALS} trials per "
          "interval. A sample is the send time of B's first request with the new answer, "
          "measured from A's 200 (B polled over one keep-alive connection).\n")
    print("| refresh_interval_ms | user created on A: B's first request accepted | "
          "… answered after, p50 / p99 ms | regenerate on A → old key 401 on B "
          "(send time), p50 / p99 ms | OpenViking 0.5.2 |")
    print("|---|---|---|---|---|")
    for interval in (0, 100, 1000):
        acc, rej = convergence(interval, TRIALS)
        ms = lambda v, p: percentile(v, p) * 1000
        first = sum(1 for a in acc if a[2] == 1)
        answered = [a[1] for a in acc]
        print(f"| {interval} | {first}/{len(acc)} | {ms(answered, 50):.2f} / "
              f"{ms(answered, 99):.2f} | {ms(rej, 50):.1f} / {ms(rej, 99):.1f} | "
              "401 / accepted indefinitely (~30 s with the watcher) |")
    print()
    small, big = throughput(10), throughput(100_000)
    print(f"Authenticated `GET /api/v1/system/status`, wrk 2 threads × 32 connections, "
          f"{SECONDS} s, keys drawn at random from up to 1,000 real user keys.\n")
    print("| users in the registry | req/s | p50 / p99 ms | non-2xx | RSS MiB |")
    print("|---|---|---|---|---|")
    for n, r in (("10", small), ("100,000", big)):
        print(f"| {n} | {r['rps']:.0f} | {r['p50']:.2f} / {r['p99']:.2f} | {r['errors']} | "
              f"{r['rss']:.0f} |")
    print(f"\nRatio 100k / 10: {big['rps'] / small['rps']:.2f} (flat = ~1.0).\n")
    elapsed, delta, codes = flood()
    print("Flood of 10,000 distinct random keys (⅓ 64-hex, ⅓ new-format naming unknown "
          "accounts, ⅓ naming known accounts with unknown users), 256 concurrent clients, "
          "refresh_interval_ms = 1000. Keys naming an unknown account wait for the next shared "
          "check (≤ 1 interval) before their 401, which bounds the request rate here.\n")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| duration | {elapsed:.1f} s ({10000 / elapsed:.0f} req/s), answers {codes} |")
    for k in ("freshness_checks", "marker_reads", "reloads", "files_reread", "probes"):
        print(f"| {k} | {delta[k]} ({delta[k] / elapsed:.2f}/s) |")
    print()


if __name__ == "__main__":
    main()
