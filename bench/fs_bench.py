"""Filesystem/content/search benchmark (issue 5): ls of a 10k-entry directory, grep across 10k
files, 1 MiB and 100 MB write-then-read, and /health latency while unlimited greps over 3,000
files run back to back.

Dev mode (every request is ROOT of the account named by X-OpenViking-Account), release binary,
loopback. Corpora are written straight to the data directory before the server starts. The
/health sampler is a paced client (one request every 5 ms on a kept-alive connection), so the
percentiles measure the server, not a saturating load generator.

Prints a Markdown section for bench/REPORT.md. Usage: python3 bench/fs_bench.py [seconds]
"""
import http.client
import json
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.parse

from common import Server, percentile, temp_dir

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ACCOUNT = "bench"
HEADERS = {"X-OpenViking-Account": ACCOUNT, "X-OpenViking-User": "bob",
           "Content-Type": "application/json"}
LINE = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n"


class Conn:
    """A kept-alive HTTP/1.1 connection."""

    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def req(self, method, path, body=None, headers=HEADERS):
        self.c.request(method, path, body=body, headers=headers)
        r = self.c.getresponse()
        data = r.read()
        return r.status, data


def q(uri):
    return urllib.parse.quote(uri, safe="")


def corpus(data_dir, rel, dirs, per_dir, body):
    root = os.path.join(data_dir, "viking", ACCOUNT, "resources", rel)
    for d in range(dirs):
        p = os.path.join(root, f"d{d:03}")
        os.makedirs(p, exist_ok=True)
        for f in range(per_dir):
            with open(os.path.join(p, f"f{f:04}.md"), "w") as fh:
                fh.write(body)


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def ms(values):
    return f"{statistics.median(values):.1f} / {percentile(values, 99):.1f}"


def expect(status, data, what):
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {data[:300]!r}")
    return data


def health_during_greps(s, health, pattern):
    stop = threading.Event()
    runs = [0, 0]
    matches = [0]
    g3 = json.dumps({"uri": "viking://resources/grep3k", "pattern": pattern, "node_limit": 0}).encode()

    def grepper(i):
        gc = Conn(s.port)
        while not stop.is_set():
            data = expect(*gc.req("POST", "/api/v1/search/grep", g3), "grep")
            if runs[i] == 0:
                matches[0] = json.loads(data)["result"]["count"]
            runs[i] += 1

    threads = [threading.Thread(target=grepper, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    samples = []
    end = time.perf_counter() + SECONDS
    while time.perf_counter() < end:
        t = time.perf_counter()
        st, _ = health.req("GET", "/health", headers={})
        samples.append((time.perf_counter() - t) * 1000)
        if st != 200:
            raise RuntimeError(f"/health answered {st}")
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    return (f"GET /health during back-to-back unlimited greps over 3,000 files "
            f"(2 grep clients, {sum(runs)} greps of {matches[0]:,} matches each in {SECONDS} s), "
            f"p50 / p99 / max of {len(samples)} samples",
            f"{percentile(samples, 50):.2f} / {percentile(samples, 99):.2f} / {max(samples):.2f} ms")


def main():
    d = temp_dir()
    flat = os.path.join(d, "viking", ACCOUNT, "resources", "flat")
    os.makedirs(flat)
    for i in range(10_000):
        with open(os.path.join(flat, f"f{i:05}.md"), "w") as fh:
            fh.write("x\n")
    body = LINE * 51 + "the end of the file\n"  # ~4 KiB
    corpus(d, "grep10k", 100, 100, body)
    corpus(d, "grep3k", 30, 100, body)
    s = Server(d, root_key=None, env={"LONGSHIP_SERVER__MAX_BODY_BYTES": str(160 << 20)})
    c = Conn(s.port)
    rows = []
    try:
        # ls of a 10k-entry directory.
        flat_uri = q("viking://resources/flat")
        for out in ("original", "agent"):
            c.req("GET", f"/api/v1/fs/ls?uri={flat_uri}&output={out}")
        page = timed(lambda: expect(*c.req("GET", f"/api/v1/fs/ls?uri={flat_uri}&output=original"), "ls"), 30)
        full = timed(lambda: expect(*c.req("GET", f"/api/v1/fs/ls?uri={flat_uri}&output=original&node_limit=10000"), "ls"), 30)
        last = timed(lambda: expect(*c.req("GET", f"/api/v1/fs/ls?uri={flat_uri}&output=agent&offset=9900&node_limit=100"), "ls"), 30)
        rows.append(("ls, 10k-entry directory, default page (1000 entries, original)", ms(page) + " ms"))
        rows.append(("ls, 10k-entry directory, all 10,000 entries (node_limit=10000)", ms(full) + " ms"))
        rows.append(("ls, 10k-entry directory, last page (offset 9900, agent)", ms(last) + " ms"))

        # grep across 10k files (page cache warm after the first run).
        g = json.dumps({"uri": "viking://resources/grep10k", "pattern": "tempor$", "node_limit": 1}).encode()
        g_all = json.dumps({"uri": "viking://resources/grep10k", "pattern": "no-such-text", "node_limit": 0}).encode()
        cold = timed(lambda: expect(*c.req("POST", "/api/v1/search/grep", g_all), "grep"), 1)
        warm = timed(lambda: expect(*c.req("POST", "/api/v1/search/grep", g_all), "grep"), 5)
        scanned = json.loads(c.req("POST", "/api/v1/search/grep", g_all)[1])["result"]["files_scanned"]
        first = timed(lambda: expect(*c.req("POST", "/api/v1/search/grep", g), "grep"), 5)
        rows.append((f"grep across 10,000 files (~4 KiB, {scanned} scanned, no match), first run",
                     f"{cold[0]:.0f} ms = {scanned / cold[0] * 1000:,.0f} files/s"))
        rows.append(("grep across 10,000 files, warm (median of 5)",
                     f"{statistics.median(warm):.0f} ms = {scanned / statistics.median(warm) * 1000:,.0f} files/s"))
        rows.append(("grep with node_limit=1 over the same tree (stops at the first match)",
                     f"{statistics.median(first):.1f} ms"))

        # Write then read: 1 MiB and 100 MB.
        for label, size, n in (("1 MiB", 1 << 20, 20), ("100 MB", 100 * 1000 * 1000, 3)):
            content = (LINE * (size // len(LINE) + 1))[:size]
            uri = f"viking://resources/big-{size}.md"
            payload = json.dumps({"uri": uri, "content": content}).encode()
            del content
            w, r, dl = [], [], []
            for _ in range(n):
                t = time.perf_counter()
                expect(*c.req("POST", "/api/v1/content/write", payload), "write")
                t1 = time.perf_counter()
                expect(*c.req("GET", f"/api/v1/content/read?uri={q(uri)}"), "read")
                t2 = time.perf_counter()
                expect(*c.req("GET", f"/api/v1/content/download?uri={q(uri)}"), "download")
                t3 = time.perf_counter()
                w.append((t1 - t) * 1000)
                r.append((t2 - t1) * 1000)
                dl.append((t3 - t2) * 1000)
            del payload
            both = [a + b for a, b in zip(w, r)]
            rows.append((f"{label}: write (replace) median / p99", ms(w) + " ms"))
            rows.append((f"{label}: read (JSON string) median / p99", ms(r) + " ms"))
            rows.append((f"{label}: write-then-read median / p99", ms(both) + " ms"))
            rows.append((f"{label}: download (raw bytes) median / p99", ms(dl) + " ms"))
        with open(f"/proc/{s.proc.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
        rows.append(("server peak RSS after the 100 MB writes/reads", f"{hwm:.0f} MiB"))

        # /health while unlimited greps over 3,000 files run back to back: once with 51 of 52
        # lines matching (153,000 matches, ~20 MB answers), once with one match per file.
        health = Conn(s.port)
        base = timed(lambda: health.req("GET", "/health", headers={}), 500)
        rows.append(("GET /health idle, p50 / p99 / max (500 sequential)",
                     f"{percentile(base, 50):.2f} / {percentile(base, 99):.2f} / {max(base):.2f} ms"))
        for pattern in ("tempor$", "^the end"):
            rows.append(health_during_greps(s, health, pattern))
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)

    print("## Filesystem, content and search\n")
    print("Release build, dev mode, loopback, Python `http.client` with keep-alive on the same "
          "machine; times include transfer and client-side reading of the body. Corpora: "
          "10,000 files of 2 bytes in one directory; 10,000 and 3,000 files of ~4 KiB in 100 and "
          "30 directories.\n")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"Machine load average at the end (1/5/15 min): {' / '.join(load)} — the cores are "
          "shared with other work, which inflates tail latencies.\n")
    print("| measurement | result |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()


if __name__ == "__main__":
    main()
