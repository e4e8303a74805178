"""Tenant isolation of the memory budget (issue #25 items 1 and 2): a victim account's latency
while an attacker account (1) holds idle uploads and idle announced bodies open, and (2) runs
finds with read_content over many 1 MiB files.

Prints a markdown section. Usage: python3 budget_bench.py [seconds-per-attack]
LONGSHIP_BIN picks the binary (compare two builds by running this twice).
"""
import http.client
import json
import os
import shutil
import socket
import sys
import threading
import time

from common import BIN, ROOT_KEY, Server, call, percentile, temp_dir

MIB = 1 << 20
FILES = int(os.environ.get("BUDGET_BENCH_FILES", "200"))


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def timed(port, method, path, key, body=None, timeout=120):
    """One request on a fresh connection: (status, seconds, response bytes)."""
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h = {"X-API-Key": key}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, time.perf_counter() - t, len(raw)
    except OSError:
        return 0, time.perf_counter() - t, 0


def stalled(port, path, key, headers, sent=0):
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n{headers}\r\n"
    s.sendall(head.encode() + b" " * sent)
    return s


def victim_loop(port, key, seconds, tag):
    """The victim's finds and small writes, back to back, for `seconds`."""
    lat, statuses = [], {}
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end and i < 10000:
        i += 1
        if i % 2:
            st, dt, _ = timed(port, "POST", "/api/v1/search/find", key, {"query": "victim"})
        else:
            st, dt, _ = timed(port, "POST", "/api/v1/content/write", key,
                              {"uri": f"viking://resources/{tag}{i}.md", "content": "victim note",
                               "mode": "create"})
        lat.append(dt)
        statuses[st] = statuses.get(st, 0) + 1
    return lat, statuses


def health_loop(port, stop, out):
    while not stop.is_set() and len(out) < 100000:
        t = time.perf_counter()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/health")
            c.getresponse().read()
            c.close()
        except OSError:
            pass
        out.append(time.perf_counter() - t)
        time.sleep(0.05)


def account(s, name):
    st, body = call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                    {"account_id": name, "admin_user_id": "admin"})
    assert st == 200, body
    return body["result"]["user_key"]


def row(label, lat, statuses, health, extra=""):
    served = statuses.get(200, 0)
    total = sum(statuses.values())
    other = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if k != 200) or "-"
    return (f"| {label} | {served}/{total} | {other} | {percentile(lat, 50) * 1000:.0f} | "
            f"{percentile(lat, 99) * 1000:.0f} | {max(lat) * 1000:.0f} | "
            f"{max(health) * 1000 if health else float('nan'):.0f} | {extra} |")


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10
    d = temp_dir()
    env = {"LONGSHIP_SEARCH__MAX_INDEXED_BYTES": "4096"}
    s = Server(d, env=env)
    rows = []
    try:
        attacker = account(s, "attacker")
        victim = account(s, "victim")
        port = s.port
        for i in range(20):
            timed(port, "POST", "/api/v1/content/write", victim,
                  {"uri": f"viking://resources/seed{i}.md", "content": "victim seed",
                   "mode": "create"})
        lat, st = victim_loop(port, victim, min(seconds, 5), "idle")
        rows.append(row("no attack", lat, st, []))

        # Attack 1: 32 idle temp uploads + 8 idle content/write announcing 32 MiB.
        socks = [stalled(port, "/api/v1/resources/temp_upload", attacker,
                         "Content-Type: multipart/form-data; boundary=zzz\r\n"
                         "Content-Length: 104857600\r\n") for _ in range(32)]
        socks += [stalled(port, "/api/v1/content/write", attacker,
                          "Content-Type: application/json\r\nContent-Length: 33554432\r\n", 1)
                  for _ in range(8)]
        time.sleep(0.5)
        stop, health = threading.Event(), []
        h = threading.Thread(target=health_loop, args=(port, stop, health))
        h.start()
        lat, st = victim_loop(port, victim, seconds, "a1")
        stop.set()
        h.join()
        cut = 0
        give_up = time.perf_counter() + 30
        for sk in socks:
            sk.settimeout(max(0.1, give_up - time.perf_counter()))
            try:
                cut += sk.recv(64).startswith(b"HTTP/1.1 408")
            except OSError:
                pass
            sk.close()
        rows.append(row("1: 32 idle uploads + 8 idle 32 MiB writes", lat, st, health,
                        f"attacker's stalled bodies answered 408: {cut}/40"))

        # Attack 2: finds with read_content over FILES 1 MiB files, 3 at a time.
        body = "needle " + "x" * MIB
        for i in range(FILES):
            timed(port, "POST", "/api/v1/content/write", attacker,
                  {"uri": f"viking://resources/f{i}.md", "content": body, "mode": "create"})
        find = {"query": "needle", "read_content": True, "limit": 1000}
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            _, b = call(s.url + "/api/v1/search/find", "POST", attacker,
                        {"query": "needle", "limit": 1000})
            if isinstance(b, dict) and len(b.get("result", {}).get("resources", [])) >= FILES:
                break
            time.sleep(0.5)
        base_rss = rss_kib(s.proc.pid, "VmRSS")
        stop2, att = threading.Event(), {"sizes": [], "statuses": {}}
        lock = threading.Lock()

        def attack():
            n = 0
            while not stop2.is_set() and n < 1000:
                n += 1
                stt, _, size = timed(port, "POST", "/api/v1/search/find", attacker, find, 300)
                with lock:
                    att["statuses"][stt] = att["statuses"].get(stt, 0) + 1
                    att["sizes"].append(size)

        peak = [0]

        def sample():
            while not stop2.is_set():
                peak[0] = max(peak[0], rss_kib(s.proc.pid, "VmRSS"))
                time.sleep(0.05)

        threads = [threading.Thread(target=attack) for _ in range(3)]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        stop, health = threading.Event(), []
        h = threading.Thread(target=health_loop, args=(port, stop, health))
        h.start()
        time.sleep(1)
        lat, st = victim_loop(port, victim, seconds, "a2")
        stop.set()
        h.join()
        stop2.set()
        for t in threads:
            t.join()
        biggest = max(att["sizes"] or [0]) / MIB
        astat = ", ".join(f"{k}: {v}" for k, v in sorted(att["statuses"].items()))
        rows.append(row(f"2: 3 concurrent finds, read_content, {FILES} × 1 MiB files", lat, st,
                        health, f"attacker {astat}; largest answer {biggest:.1f} MiB; "
                        f"server RSS {base_rss // 1024} → peak {peak[0] // 1024} MiB"))
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)
    print(f"## Budget isolation between accounts (issue #25), binary {BIN}")
    print()
    print(f"Victim: finds and small writes back to back on fresh connections, {seconds:.0f} s "
          "per attack; /health probed every 50 ms meanwhile.")
    print()
    print("| attack | victim served | victim refused | p50 ms | p99 ms | max ms | "
          "/health max ms | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    print()


if __name__ == "__main__":
    main()
