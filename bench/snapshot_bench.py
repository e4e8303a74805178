"""Snapshot benchmark (issue #22): what a version costs after a small change.

Plants FILES files (~1 KiB each) in DIRS directories under viking://resources/sb (local disk,
behind the server's back), commits them, changes CHANGED_PCT % of the files (rewritten with new
content), commits again, and reports for each commit: wall time, objects and bytes the snapshot
repository files written (objects, the ref and stat-cache shards, measured on disk by
mtime), and a no-change commit. Bytes
written must follow the change, not the tree. Dev mode, loopback, one client, local backend.
Before each commit the server is left to settle (under 15 % of one core over 3 s: the startup
index build of the planted tree is done), so a commit's time is its own. During each commit
GET /health is probed every 5 ms from another process (p50/p99/max per commit) and the
server's peak RSS is taken (VmHWM, reset before each commit).
The binary is $LONGSHIP_BIN (default target/release/longship); the report states which.
Usage: python3 bench/snapshot_bench.py [files] [dirs] [changed_pct]
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

from common import BIN, HealthProbe, Server, temp_dir

FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
DIRS = int(sys.argv[2]) if len(sys.argv) > 2 else 100
CHANGED_PCT = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
ACCOUNT = "bench"
HEADERS = {"X-OpenViking-Account": ACCOUNT, "X-OpenViking-User": "bob",
           "Content-Type": "application/json"}


def post(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers=HEADERS)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["result"]


def written_since(repo_dir, since):
    """(objects, bytes) of files under the repository written at or after `since` (objects,
    refs and stat-cache shards alike)."""
    count = size = 0
    for root, _, names in os.walk(repo_dir):
        for n in names:
            st = os.stat(os.path.join(root, n))
            if st.st_mtime >= since:
                count += 1
                size += st.st_size
    return count, size


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid, deadline_s=1800):
    """Wait until the server is idle: under 15 % of one core over 3 s."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(3)
        if cpu_seconds(pid) - c0 < 0.45:
            return
    raise RuntimeError("the server did not settle")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def content(i, generation):
    line = f"file {i} generation {generation} " + "lorem ipsum dolor sit amet " * 4 + "\n"
    return (line * 8).encode()


def main():
    data_dir = temp_dir()
    base = os.path.join(data_dir, "viking", ACCOUNT, "resources", "sb")
    tree_bytes = 0
    for i in range(FILES):
        d = os.path.join(base, f"d{i % DIRS:03}")
        os.makedirs(d, exist_ok=True)
        data = content(i, 0)
        tree_bytes += len(data)
        with open(os.path.join(d, f"f{i:05}.md"), "wb") as f:
            f.write(data)
    repo = os.path.join(data_dir, "viking", ACCOUNT, "_system", "snapshots")
    server = Server(data_dir, root_key=None)
    rows = []
    health = None
    loads = []
    try:
        pid = server.proc.pid
        settle(pid)
        health = HealthProbe(server.port)
        time.sleep(3)
        windows = [("idle", (0.0, health.now()))]

        def commit(label):
            settle(pid)
            reset_peak(pid)
            since = time.time() - 0.01
            start = health.now()
            t = time.perf_counter()
            res = post(server.url, "/api/v1/snapshot/commit",
                       {"message": label, "paths": ["viking://resources/sb"]})
            took = time.perf_counter() - t
            windows.append((label, (start, health.now())))
            loads.append(os.getloadavg()[0])
            files, size = written_since(repo, since)
            rows.append((label, took, files, size, len(res.get("changed") or []),
                         res["result"], peak_mib(pid)))

        commit("first commit (whole tree)")
        changed = max(1, int(FILES * CHANGED_PCT / 100))
        step = FILES // changed
        for k in range(changed):
            i = (k * step + k) % FILES
            with open(os.path.join(base, f"d{i % DIRS:03}", f"f{i:05}.md"), "wb") as f:
                f.write(content(i, 1))
        commit(f"after {changed} files changed ({CHANGED_PCT:g} %)")
        commit("no change")
        health.finish()
    finally:
        if health is not None:
            health.kill()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()

    print(f"## Snapshots: {FILES} files in {DIRS} directories ({tree_bytes / 1e6:.1f} MB), "
          f"{CHANGED_PCT:g} % changed\n")
    print(f"Binary: `{os.path.relpath(BIN)}`; commit {rev}; local backend; dev mode; loopback; "
          f"one client; {os.cpu_count()} cores; 1-min load average after each commit: "
          + ", ".join(f"{x:.2f}" for x in loads) + ".\n")
    print("| commit | time | files written (objects, ref, stat cache) | bytes written | "
          "changed paths | result | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, took, objs, size, n, result, peak in rows:
        print(f"| {label} | {took:.2f} s | {objs} | {size:,} | {n} | {result} | {peak:.0f} |")
    print("\n| GET /health during | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, (a, b) in windows:
        h = health.stats(a, b)
        print(f"| {label} | {h['n']} | {h['p50']:.2f} | {h['p99']:.2f} | {h['max']:.2f} |")


if __name__ == "__main__":
    main()
