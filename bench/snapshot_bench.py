"""Snapshot benchmark (issue #22): what a version costs after a small change.

Plants FILES files (~1 KiB each) in DIRS directories under viking://resources/sb (local disk,
behind the server's back), commits them, changes CHANGED_PCT % of the files (rewritten with new
content), commits again, and reports for each commit: wall time, objects and bytes the snapshot
repository files written (objects, the ref and stat-cache shards, measured on disk by
mtime), and a no-change commit. Bytes
written must follow the change, not the tree. Dev mode, loopback, one client, local backend.
The binary is $LONGSHIP_BIN (default target/release/longship); the report states which.
Usage: python3 bench/snapshot_bench.py [files] [dirs] [changed_pct]
"""
import json
import os
import shutil
import sys
import time
import urllib.request

from common import BIN, Server, temp_dir

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
    try:
        def commit(label):
            since = time.time() - 0.01
            t = time.perf_counter()
            res = post(server.url, "/api/v1/snapshot/commit",
                       {"message": label, "paths": ["viking://resources/sb"]})
            took = time.perf_counter() - t
            files, size = written_since(repo, since)
            rows.append((label, took, files, size, len(res.get("changed") or []),
                         res["result"]))

        commit("first commit (whole tree)")
        changed = max(1, int(FILES * CHANGED_PCT / 100))
        step = FILES // changed
        for k in range(changed):
            i = (k * step + k) % FILES
            with open(os.path.join(base, f"d{i % DIRS:03}", f"f{i:05}.md"), "wb") as f:
                f.write(content(i, 1))
        commit(f"after {changed} files changed ({CHANGED_PCT:g} %)")
        commit("no change")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"## Snapshots: {FILES} files in {DIRS} directories ({tree_bytes / 1e6:.1f} MB), "
          f"{CHANGED_PCT:g} % changed\n")
    print(f"Binary: `{os.path.relpath(BIN)}`; local backend; dev mode; loopback; one client.\n")
    print("| commit | time | files written (objects, ref, stat cache) | bytes written | changed paths | result |")
    print("|---|---|---|---|---|---|")
    for label, took, objs, size, n, result in rows:
        print(f"| {label} | {took:.2f} s | {objs} | {size:,} | {n} | {result} |")


if __name__ == "__main__":
    main()
