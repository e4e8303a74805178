"""Fairness benchmark (issue #25 item 3): another account's latency while one account runs the
heaviest jobs it may.

Two accounts on one server (default configuration, local backend): the attacker and the victim.
For each attack the victim runs, one after another for SECONDS, the four operations below and
the benchmark reports each one's p50 / p99 / max and non-200 answers:

- stat: GET /api/v1/fs/stat of one of its files;
- write: POST /api/v1/content/write of a small file;
- commit: POST /api/v1/sessions/<id>/commit after adding one message;
- add: a 25-byte Markdown upload + POST /api/v1/resources wait=true (upload included).

Attacks (each on a fresh server and data directory):

- idle: no attacker;
- copies: 6 clients each running recursive copies of a 5,000-file tree back to back;
- slow URLs: 4 clients each adding a URL on loopback that drips 40 bytes per 200 ms (above
  the default minimum fetch rate; the server's 30 s fetch timeout ends each); beyond the
  per-account cap they get 429 and retry after 200 ms;
- hostile parses: 4 clients each uploading and adding an 8 MiB HTML page back to back.

Usage: LONGSHIP_BIN=path/to/longship python3 fair_bench.py [seconds] [label]
Prints a Markdown section (the label names the build).
"""
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import BIN, ROOT_KEY, Server, call, percentile, safe_call, temp_dir, upload

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
LABEL = sys.argv[2] if len(sys.argv) > 2 else os.path.basename(BIN)
TREE_FILES = 5000


class Drip(BaseHTTPRequestHandler):
    """A page that sends 40 bytes every 200 ms (above the default minimum fetch rate) for 60 s."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/markdown")
        self.send_header("Content-Length", str(300 * 40))
        self.end_headers()
        for _ in range(300):
            try:
                self.wfile.write(b"x" * 40)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.2)

    def log_message(self, *args):
        pass


def plant_tree(data_dir, account):
    base = os.path.join(data_dir, "viking", account, "resources", "big")
    for i in range(TREE_FILES):
        d = os.path.join(base, f"d{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % 100:04d}.md"), "w") as f:
            f.write(f"# File {i}\n\nplanted content for the copy benchmark\n")


def attacker_copies(url, key, stop, worker):
    n = 0
    while not stop.is_set():
        n += 1
        status, _ = safe_call(url + "/api/v1/fs/cp", "POST", key,
                              {"from_uri": "viking://resources/big",
                               "to_uri": f"viking://resources/copy_{worker}_{n}",
                               "recursive": True}, timeout=600)
        if status != 200:
            time.sleep(0.2)


def attacker_slow_urls(url, key, stop, site):
    while not stop.is_set():
        status, _ = safe_call(url + "/api/v1/resources", "POST", key,
                              {"path": f"{site}/{uuid.uuid4().hex}.md", "wait": True}, timeout=600)
        if status != 200:
            time.sleep(0.2)


HOSTILE_HTML = (b"<html><body>" + b"".join(
    b"<table><tr><td><p>cell <b>%d</b> <i>text</i> <a href='#x'>link</a></p></td></tr></table>" % i
    for i in range(100_000)) + b"</body></html>")[: 8 * 1024 * 1024]


def attacker_hostile(url, key, stop, worker):
    n = 0
    while not stop.is_set():
        n += 1
        status, body = upload(url, key, f"page_{worker}_{n}.html", HOSTILE_HTML)
        if status != 200:
            time.sleep(0.2)
            continue
        status, _ = safe_call(url + "/api/v1/resources", "POST", key,
                              {"temp_file_id": body["result"]["temp_file_id"], "wait": True},
                              timeout=600)
        if status != 200:
            time.sleep(0.2)


def victim(url, key, seconds):
    lat = {"stat": [], "write": [], "commit": [], "add": []}
    bad = {k: 0 for k in lat}
    status, _ = safe_call(url + "/api/v1/content/write", "POST", key,
                          {"uri": "viking://resources/mine.md", "content": "mine"})
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        i += 1
        t = time.perf_counter()
        status, _ = safe_call(url + "/api/v1/fs/stat?uri=viking%3A%2F%2Fresources%2Fmine.md",
                              key=key, timeout=300)
        lat["stat"].append(time.perf_counter() - t)
        bad["stat"] += status != 200
        t = time.perf_counter()
        status, _ = safe_call(url + "/api/v1/content/write", "POST", key,
                              {"uri": f"viking://resources/w{i % 20}.md", "content": f"write {i}"},
                              timeout=300)
        lat["write"].append(time.perf_counter() - t)
        bad["write"] += status != 200
        safe_call(url + "/api/v1/sessions/s1/messages", "POST", key,
                  {"role": "user", "content": f"message {i}"}, timeout=300)
        t = time.perf_counter()
        status, _ = safe_call(url + "/api/v1/sessions/s1/commit", "POST", key, {}, timeout=300)
        lat["commit"].append(time.perf_counter() - t)
        bad["commit"] += status != 200
        t = time.perf_counter()
        status, body = upload(url, key, f"note{i}.md", b"# Note\n\nTwenty-five bytes", timeout=300)
        if status == 200:
            status, _ = safe_call(url + "/api/v1/resources", "POST", key,
                                  {"temp_file_id": body["result"]["temp_file_id"], "wait": True},
                                  timeout=300)
        lat["add"].append(time.perf_counter() - t)
        bad["add"] += status != 200
    return lat, bad


def scenario(name, site):
    data_dir = temp_dir()
    env = {"LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS": "true"}
    srv = Server(data_dir, env=env)
    try:
        keys = {}
        for account in ("attacker", "victim"):
            status, body = call(srv.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                                {"account_id": account, "admin_user_id": "u"})
            assert status == 200, body
            keys[account] = body["result"]["user_key"]
        stop = threading.Event()
        threads = []
        if name == "copies":
            plant_tree(data_dir, "attacker")
            threads = [threading.Thread(target=attacker_copies,
                                        args=(srv.url, keys["attacker"], stop, w))
                       for w in range(6)]
        elif name == "slow URLs":
            threads = [threading.Thread(target=attacker_slow_urls,
                                        args=(srv.url, keys["attacker"], stop, site))
                       for _ in range(4)]
        elif name == "hostile parses":
            threads = [threading.Thread(target=attacker_hostile,
                                        args=(srv.url, keys["attacker"], stop, w))
                       for w in range(4)]
        for t in threads:
            t.daemon = True
            t.start()
        if threads:
            time.sleep(3)  # the attack is under way
        lat, bad = victim(srv.url, keys["victim"], SECONDS)
        stop.set()
        return lat, bad
    finally:
        srv.stop()


def main():
    site_server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    site_server.daemon_threads = True
    threading.Thread(target=site_server.serve_forever, daemon=True).start()
    site = f"http://127.0.0.1:{site_server.server_address[1]}"
    print(f"### Fairness: the victim's latency under another account's attack ({LABEL})\n")
    print(f"Victim loop {SECONDS:.0f} s per attack; latencies in seconds; n = samples, "
          "bad = non-200 answers.\n")
    print("| attack | op | n | p50 | p99 | max | bad |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in ("idle", "copies", "slow URLs", "hostile parses"):
        lat, bad = scenario(name, site)
        for op in ("stat", "write", "commit", "add"):
            v = lat[op]
            print(f"| {name} | {op} | {len(v)} | {percentile(v, 50):.3f} | "
                  f"{percentile(v, 99):.3f} | {max(v) if v else float('nan'):.3f} | {bad[op]} |",
                  flush=True)
    print()
    site_server.shutdown()


if __name__ == "__main__":
    main()
