"""Tenant isolation benchmark (issue #25 items 4, 5 and 6): what one account's hostile inputs
cost, measured through the real binary with the default configuration (local backend).

- item 4, dripping fetch: an account adds a loopback URL (private URLs allowed for the bench)
  whose server sends one byte every 5 s; reports how long the add_resource ran and its answer.
- item 5, multiplying archive: a 1,000-entry zip of repetitive 1 MiB Markdown entries; reports
  the answer, its time, and the files stored under the account afterwards.
- item 6, scores: the victim's find score for a word in its own document, before and after
  another account writes 200 documents containing the same word (and a control word).
Another account's `/health`-free `fs/stat` latency is probed every 100 ms meanwhile (items 4, 5).

Usage: LONGSHIP_BIN=path/to/longship python3 tenant_bench.py [label]
Prints a Markdown section.
"""
import io
import os
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import BIN, ROOT_KEY, Server, call, percentile, safe_call, temp_dir, upload

LABEL = sys.argv[1] if len(sys.argv) > 1 else os.path.basename(BIN)


class SlowDrip(BaseHTTPRequestHandler):
    """One byte every 5 s, for up to 300 s."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/markdown")
        self.send_header("Content-Length", "60")
        self.end_headers()
        for _ in range(60):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(5)

    def log_message(self, *args):
        pass


def accounts(url, names):
    keys = {}
    for name in names:
        status, body = call(url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                            {"account_id": name, "admin_user_id": "u"})
        assert status == 200, body
        keys[name] = body["result"]["user_key"]
    return keys


def probe(url, key, stop, out):
    call(url + "/api/v1/content/write", "POST", key,
         {"uri": "viking://resources/probe.md", "content": "probe", "mode": "create"})
    while not stop.is_set():
        t = time.perf_counter()
        status, _ = safe_call(url + "/api/v1/fs/stat?uri=viking://resources/probe.md", "GET", key,
                              timeout=60)
        out.append((time.perf_counter() - t, status))
        time.sleep(0.1)


def with_probe(url, key, work):
    stop, samples = threading.Event(), []
    t = threading.Thread(target=probe, args=(url, key, stop, samples), daemon=True)
    t.start()
    try:
        result = work()
    finally:
        stop.set()
        t.join()
    lat = [s for s, _ in samples]
    bad = sum(1 for _, st in samples if st != 200)
    return result, f"victim stat p99 {percentile(lat, 99) * 1000:.0f} ms, max " \
                   f"{max(lat) * 1000 if lat else float('nan'):.0f} ms, n={len(lat)}, non-200 {bad}"


def count_files(data_dir, account):
    n = 0
    for _, _, files in os.walk(os.path.join(data_dir, "viking", account, "resources")):
        n += len(files)
    return n


def item4(site):
    data_dir = temp_dir()
    srv = Server(data_dir, env={"LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS": "true"})
    try:
        keys = accounts(srv.url, ("attacker", "victim"))

        def work():
            t = time.perf_counter()
            status, body = safe_call(srv.url + "/api/v1/resources", "POST", keys["attacker"],
                                     {"path": f"{site}/drip.md", "wait": True}, timeout=400)
            msg = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
            return time.perf_counter() - t, status, msg[:90]

        (secs, status, msg), probe_txt = with_probe(srv.url, keys["victim"], work)
        return f"| 4: URL dripping 1 byte / 5 s | add_resource ran {secs:.1f} s, answered " \
               f"{status} ({msg}) | {probe_txt} |"
    finally:
        srv.stop()


def item5():
    buf = io.BytesIO()
    entry = (b"# Section\n\n" + b"all work and no play makes a dull archive. " * 40 + b"\n\n") * 400
    entry = entry[: 1 << 20]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(1000):
            z.writestr(f"docs/part{i:04d}.md", entry)
    data = buf.getvalue()
    data_dir = temp_dir()
    srv = Server(data_dir)
    try:
        keys = accounts(srv.url, ("attacker", "victim"))

        def work():
            t = time.perf_counter()
            status, body = upload(srv.url, keys["attacker"], "bomb.zip", data, timeout=900)
            if status != 200:
                return time.perf_counter() - t, status, "upload refused"
            status, body = safe_call(srv.url + "/api/v1/resources", "POST", keys["attacker"],
                                     {"temp_file_id": body["result"]["temp_file_id"],
                                      "wait": True}, timeout=900)
            msg = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
            return time.perf_counter() - t, status, msg[:90]

        (secs, status, msg), probe_txt = with_probe(srv.url, keys["victim"], work)
        stored = count_files(data_dir, "attacker")
        return f"| 5: zip of 1,000 × 1 MiB repetitive entries ({len(data) / 1e6:.2f} MB) | " \
               f"answered {status} in {secs:.1f} s ({msg}); {stored} files stored | {probe_txt} |"
    finally:
        srv.stop()


def item5_sections(max_nodes=None):
    """A document archive that stays under the ratio limits but splits into more sections than
    one ingestion may produce (`resources.ingest_max_nodes`)."""
    import random
    rng = random.Random(5)
    vocab = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3))
             for _ in range(5000)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(120):
            parts = []
            for s in range(600):
                words = " ".join(rng.choice(vocab) for _ in range(60))
                parts.append(f"## Section {s}\n\n{words}\n")
            z.writestr(f"docs/book{i:03d}.md", "# Book\n\n" + "\n".join(parts))
    data = buf.getvalue()
    data_dir = temp_dir()
    env = {"LONGSHIP_RESOURCES__INGEST_MAX_NODES": str(max_nodes)} if max_nodes else {}
    srv = Server(data_dir, env=env)
    try:
        keys = accounts(srv.url, ("attacker", "victim"))

        def work():
            t = time.perf_counter()
            status, body = upload(srv.url, keys["attacker"], "books.zip", data, timeout=900)
            if status != 200:
                return time.perf_counter() - t, status, "upload refused"
            status, body = safe_call(srv.url + "/api/v1/resources", "POST", keys["attacker"],
                                     {"temp_file_id": body["result"]["temp_file_id"],
                                      "wait": True}, timeout=900)
            msg = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
            return time.perf_counter() - t, status, msg[:90]

        (secs, status, msg), probe_txt = with_probe(srv.url, keys["victim"], work)
        stored = count_files(data_dir, "attacker")
        cap = f"ingest_max_nodes {max_nodes}" if max_nodes else "default ingest_max_nodes"
        return f"| 5b: zip of 120 documents × 600 sections ({len(data) / 1e6:.2f} MB, under " \
               f"the ratio limit; {cap}) | answered {status} in {secs:.1f} s ({msg}); {stored} files " \
               f"stored | {probe_txt} |"
    finally:
        srv.stop()


def item6():
    data_dir = temp_dir()
    srv = Server(data_dir)
    try:
        keys = accounts(srv.url, ("alice", "mallory"))
        call(srv.url + "/api/v1/content/write", "POST", keys["alice"],
             {"uri": "viking://resources/notes.md", "mode": "create",
              "content": "The nightingale sang at dusk. The lighthouse keeper wrote it down."})
        call(srv.url + "/api/v1/content/write", "POST", keys["alice"],
             {"uri": "viking://resources/other.md", "mode": "create",
              "content": "A page about tides and harbours."})

        def scores():
            out = {}
            for word in ("nightingale", "lighthouse"):
                status, body = call(srv.url + "/api/v1/search/find", "POST", keys["alice"],
                                    {"query": word, "limit": 5})
                res = body["result"]["resources"] if status == 200 else []
                out[word] = [round(r["score"], 6) for r in res]
            return out

        before = scores()
        for i in range(200):
            call(srv.url + "/api/v1/content/write", "POST", keys["mallory"],
                 {"uri": f"viking://resources/n{i}.md", "mode": "create",
                  "content": f"nightingale nightingale private note {i}"})
        # Mallory's own find waits until her writes are indexed; then Alice asks again.
        call(srv.url + "/api/v1/search/find", "POST", keys["mallory"], {"query": "nightingale"})
        after = scores()
        same = "identical" if before == after else "CHANGED"
        return f"| 6: another account writes 200 docs with the victim's word | scores before " \
               f"{before}, after {after}: {same} | - |"
    finally:
        srv.stop()


def main():
    site_server = ThreadingHTTPServer(("127.0.0.1", 0), SlowDrip)
    site_server.daemon_threads = True
    threading.Thread(target=site_server.serve_forever, daemon=True).start()
    site = f"http://127.0.0.1:{site_server.server_address[1]}"
    print(f"### Tenant isolation, items 4-6 ({LABEL})\n")
    print("| attack | outcome | victim meanwhile |")
    print("|---|---|---|")
    for run in (lambda: item4(site), item5, item5_sections, lambda: item5_sections(5000),
                item6):
        print(run(), flush=True)
    print()
    site_server.shutdown()


if __name__ == "__main__":
    main()
