"""Tags benchmark (issue #21): what tags cost.

1. Index build over a planted corpus (FILES files in DIRS directories) with and without a tag
   map in every directory (every file tagged): seconds from start until the index is built.
2. set_tags latency (sequential, one kept-alive connection), on files of one directory (one map
   compare-and-swap each) and on files spread over all directories.
3. find latency with and without a `tags` filter; ls of a DIRSIZE-entry directory with and
   without `include_tags`.

Dev mode (no root key), loopback, one client. The binary is $LONGSHIP_BIN (default
target/release/longship); the report states which. Prints a Markdown section.
Usage: python3 bench/tags_bench.py [files] [dirs]
"""
import http.client
import json
import os
import shutil
import statistics
import sys
import time
import urllib.parse

from common import BIN, Server, percentile, temp_dir

FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
DIRS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
ACCOUNT = "bench"
HEADERS = {"X-OpenViking-Account": ACCOUNT, "X-OpenViking-User": "bob",
           "Content-Type": "application/json"}
WORDS = ["wombat", "quokka", "numbat", "echidna", "bilby", "dingo", "possum", "koala"]


def plant(data_dir, tagged):
    base = os.path.join(data_dir, "viking", ACCOUNT, "resources", "tb")
    for d in range(DIRS):
        dpath = os.path.join(base, f"d{d:03}")
        os.makedirs(dpath, exist_ok=True)
        nodes = {}
        for i in range(d, FILES, DIRS):
            name = f"f{i:05}.md"
            with open(os.path.join(dpath, name), "w") as f:
                f.write(f"# note {i}\n{WORDS[i % len(WORDS)]} facts number {i}\n")
            nodes[name] = [f"team=t{i % 4}", f"shard=s{d % 8}"]
        if tagged:
            with open(os.path.join(dpath, ".longship-tags"), "w") as f:
                json.dump({"nodes": nodes}, f)


class Conn:
    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def req(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        self.c.request(method, path, body=data, headers=HEADERS)
        r = self.c.getresponse()
        out = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: {r.status} {out[:300]!r}")
        return json.loads(out)


def built(conn):
    st = conn.req("GET", "/api/v1/observer/system?format=json")
    return st["result"]["components"]["retrieval"]["status"].get("building") is False


def build_time(tagged):
    d = temp_dir()
    try:
        plant(d, tagged)
        started = time.perf_counter()
        s = Server(d, root_key=None)
        try:
            c = Conn(s.port)
            while not built(c):
                time.sleep(0.05)
            return time.perf_counter() - started
        finally:
            s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name, ms):
    return (f"| {name} | {len(ms)} | {statistics.median(ms):.2f} | "
            f"{percentile(ms, 99):.2f} |")


def main():
    plain_s = build_time(False)
    tagged_s = build_time(True)
    rows = []
    d = temp_dir()
    try:
        plant(d, True)
        s = Server(d, root_key=None)
        try:
            c = Conn(s.port)
            while not built(c):
                time.sleep(0.05)
            q = urllib.parse.quote
            same_dir = timed(lambda i: c.req("POST", "/api/v1/content/set_tags", {
                "uri": f"viking://resources/tb/d000/f{(i % (FILES // DIRS)) * DIRS:05}.md",
                "tags": [f"round=r{i}"], "mode": "append"}), 200)
            spread = timed(lambda i: c.req("POST", "/api/v1/content/set_tags", {
                "uri": f"viking://resources/tb/d{(i % FILES) % DIRS:03}/f{i % FILES:05}.md",
                "tags": [f"round=r{i}"], "mode": "append"}), 200)
            find_plain = timed(lambda i: c.req("POST", "/api/v1/search/find", {
                "query": WORDS[i % len(WORDS)], "limit": 10}), 200)
            find_tagged = timed(lambda i: c.req("POST", "/api/v1/search/find", {
                "query": WORDS[i % len(WORDS)], "limit": 10, "tags": [f"team=t{i % 4}"]}), 200)
            ls_uri = q("viking://resources/tb/d001")
            ls_plain = timed(lambda i: c.req(
                "GET", f"/api/v1/fs/ls?uri={ls_uri}&output=original&node_limit=1000"), 50)
            ls_tags = timed(lambda i: c.req(
                "GET", f"/api/v1/fs/ls?uri={ls_uri}&output=original&node_limit=1000"
                "&include_tags=true"), 50)
            rows = [row("set_tags, one directory (one map)", same_dir),
                    row("set_tags, spread over directories", spread),
                    row("find, no tags", find_plain),
                    row("find, `tags: [team=…]`", find_tagged),
                    row(f"ls {FILES // DIRS} entries", ls_plain),
                    row(f"ls {FILES // DIRS} entries, include_tags", ls_tags)]
        finally:
            s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"## Tags ({FILES} files in {DIRS} directories; binary {os.path.relpath(BIN)})\n")
    print(f"Index build from storage: {plain_s:.2f} s without tag maps, {tagged_s:.2f} s with "
          f"every file tagged (one map per directory).\n")
    print("| operation | n | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
