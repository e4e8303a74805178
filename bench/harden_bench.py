"""Hardening benchmark (issue #11): memory under a burst of large writes with and without the
in-flight body budget, and /health latency while URI and pattern bombs are being refused.

Prints a markdown section for bench/REPORT.md. Usage: python3 harden_bench.py [seconds]
"""
import http.client
import json
import os
import shutil
import sys
import threading
import time

from common import Server, percentile, temp_dir, wrk

WRITERS = 50
BODY_MB = 30
MIB = 1 << 20


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def post(port, path, body, headers=None, timeout=120):
    """POST raw bytes; returns (status, retry_after, seconds)."""
    t = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json", "X-OpenViking-Account": "acme",
         "X-OpenViking-User": "alice"}
    h.update(headers or {})
    c.request("POST", path, body=body, headers=h)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r.getheader("Retry-After"), time.perf_counter() - t


def burst(budget_bytes):
    """50 concurrent 30 MB content/write requests; clients honour 503 + Retry-After and retry
    until their write is stored. Returns a result row."""
    d = temp_dir()
    env = {"LONGSHIP_SERVER__MAX_INFLIGHT_BODY_BYTES": str(budget_bytes)}
    s = Server(d, root_key=None, env=env)
    try:
        content = "x" * (BODY_MB * 1000 * 1000)
        bodies = [json.dumps({"uri": f"viking://resources/big{i}.md", "content": content}).encode()
                  for i in range(WRITERS)]
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(s.proc.pid, "VmRSS"))
                time.sleep(0.01)

        refused = [0]
        lock = threading.Lock()
        statuses = []

        reset = [0]

        def writer(i):
            while True:
                try:
                    status, retry, _ = post(s.port, "/api/v1/content/write", bodies[i])
                except (BrokenPipeError, ConnectionResetError):
                    # Refused from the headers while this client was still sending its body:
                    # the server answers 503 and closes; a client that writes the whole body
                    # before reading (no Expect: 100-continue) sees the close instead.
                    with lock:
                        reset[0] += 1
                    time.sleep(0.2)
                    continue
                if status == 503 and retry:
                    with lock:
                        refused[0] += 1
                    time.sleep(float(retry) * 0.2)
                    continue
                statuses.append(status)
                return

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        time.sleep(3)
        done.set()
        sampler.join()
        after = rss_kib(s.proc.pid, "VmRSS")
        hwm = rss_kib(s.proc.pid, "VmHWM")
        ok = sum(1 for x in statuses if x == 200)
        return {
            "budget": "off (64 GiB)" if budget_bytes >= 64 << 30 else f"{budget_bytes // MIB} MiB",
            "ok": ok, "refused": refused[0], "reset": reset[0], "seconds": elapsed,
            "peak_mib": max(hwm, peak[0]) / 1024, "after_mib": after / 1024,
        }
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def bombs(seconds):
    """/health under wrk while 4 clients keep sending URI and pattern bombs."""
    d = temp_dir()
    s = Server(d, root_key=None)
    try:
        status, _, _ = post(s.port, "/api/v1/content/write",
                            json.dumps({"uri": "viking://resources/a.md",
                                        "content": "alpha\n"}).encode())
        assert status == 200, status
        uri_bomb = json.dumps({"uri": "viking://resources/" + "a/" * 800_000 + "x.md",
                               "pattern": "x"}).encode()
        pattern_bomb = json.dumps({"uri": "viking://resources",
                                   "pattern": "|".join(f"word{i}" for i in range(2_000_000))}).encode()
        stop = threading.Event()
        lat = {"uri": [], "pattern": []}
        bad = []

        def bomber(kind, body):
            while not stop.is_set():
                status, _, took = post(s.port, "/api/v1/search/grep", body)
                if status != 400:
                    bad.append(status)
                lat[kind].append(took)

        threads = [threading.Thread(target=bomber, args=(k, b)) for k, b in
                   [("uri", uri_bomb), ("uri", uri_bomb), ("pattern", pattern_bomb),
                    ("pattern", pattern_bomb)]]
        for th in threads:
            th.start()
        time.sleep(0.5)
        health = wrk(s.url + "/health", seconds=seconds, connections=4, threads=1)
        stop.set()
        for th in threads:
            th.join()
        hwm = rss_kib(s.proc.pid, "VmHWM")
        return health, lat, bad, len(uri_bomb), len(pattern_bomb), hwm / 1024
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    rows = [burst(64 << 30), burst(256 * MIB)]
    health, lat, bad, uri_len, pattern_len, hwm = bombs(seconds)
    print("## Hardening: request-body budget, bombs (issue #11)")
    print()
    print(f"Release binary, {os.cpu_count()} cores shared with the load generator (Python "
          "clients and wrk on the same machine, loopback).")
    print()
    print(f"{WRITERS} concurrent `content/write` requests of {BODY_MB} MB each; clients that get "
          "503 wait `Retry-After`/5 and retry until stored. RSS of the server process.")
    print()
    print("| server.max_inflight_body_bytes | stored | refusals read as 503 / seen as a closed connection | wall s | peak RSS MiB | RSS 3 s after MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['budget']} | {r['ok']}/{WRITERS} | {r['refused']} / {r['reset']} | "
              f"{r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['after_mib']:.0f} |")
    print()
    print(f"`GET /health` under wrk (1 thread, 4 connections, {seconds} s) while 4 clients keep "
          f"sending `search/grep` bombs: a {uri_len / MIB:.1f} MiB body with an 800,000-segment "
          f"URI, and a {pattern_len / MIB:.1f} MiB body with a 2,000,000-word alternation.")
    print()
    print("| /health req/s | p50 ms | p99 ms | non-2xx | bombs refused (400) | bomb answer p50 / p99 ms | other answers | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    all_lat = lat["uri"] + lat["pattern"]
    print(f"| {health['rps']:.0f} | {health['p50_ms']:.2f} | {health['p99_ms']:.2f} | "
          f"{health['errors']} | {len(all_lat) - len(bad)} | "
          f"{percentile(all_lat, 50) * 1000:.0f} / {percentile(all_lat, 99) * 1000:.0f} | "
          f"{len(bad)} | {hwm:.0f} |")
    print()


if __name__ == "__main__":
    main()
