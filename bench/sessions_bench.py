"""Sessions benchmark: does a commit of a huge session stall anything else?

For --commit-threads 1, 2 (default) and 4, on a fresh server each:
  1. prefill 3 × 4 sessions with 50,000 messages each (~700 bytes of text apiece, ~43 MB per
     session) through the batch API (timed, not probed);
  2. idle: probe GET /health (every 5 ms) and a small authenticated read (every 10 ms) for a
     few seconds, from separate processes with keep-alive connections;
  3. load: the same probes during 3 rounds of 4 concurrent commits of those sessions, while a
     stream of 1 MiB writes and back-to-back read work run until the last commit answers.
Reports latency percentiles of the probes (idle vs load, only samples sent while commits ran),
commit wall time and messages archived per second.

The load adapts to what the server offers: `POST /api/v1/content/write` for the 1 MiB writes,
`GET /api/v1/fs/stat` for the small read, `POST /api/v1/search/grep` over 3,000 files for the
back-to-back work, and the admin API for a USER key. Missing routes fall back to sessions-only
equivalents (named in the report): 1 MiB batch adds to another session, SE3 of a small session,
SE9 context of a 2,000-message session, and dev mode (identity headers) instead of keys.

Prints a Markdown section for bench/REPORT.md. Usage: python3 sessions_bench.py [idle-seconds]
(SESSIONS_BENCH_COMMIT_THREADS=2,1,4 chooses the rows.)
"""
import http.client
import json
import os
import multiprocessing as mp
import shutil
import sys
import threading
import time

from common import ROOT_KEY, Server, percentile, temp_dir

IDLE_SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SESSIONS = 4
ROUNDS = 3  # rounds of 4 concurrent commits per row, back to back, for more probe samples
MESSAGES = 50_000
BATCH = 100
TEXT = "lorem ipsum dolor sit amet " * 26  # ~700 bytes
ONE_MIB = 1024 * 1024


class Api:
    """Keep-alive JSON calls with either a key or dev-mode identity headers."""

    def __init__(self, port, headers):
        self.port = port
        self.headers = dict(headers)
        self.conn = None

    def call(self, method, path, body=None, raw=None, timeout=600, parse=True):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                h = dict(self.headers)
                if data is not None:
                    h["Content-Type"] = "application/json"
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                payload = r.read()
                if not parse:
                    return r.status, None
                try:
                    return r.status, json.loads(payload or b"null")
                except ValueError:
                    return r.status, None
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        raise RuntimeError("unreachable")


def probe(port, headers, path, interval, stop, out):
    """Closed-loop prober on its own process: one request every `interval` seconds."""
    api = Api(port, headers)
    samples = []
    next_at = time.perf_counter()
    while not stop.is_set():
        t0 = time.perf_counter()
        wall = time.time()
        try:
            status, _ = api.call("GET", path, timeout=10, parse=False)
        except Exception:  # noqa: BLE001 - a failed probe is a data point, not a crash
            status = 0
        samples.append((wall, (time.perf_counter() - t0) * 1000.0, status))
        next_at += interval
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.perf_counter()
    out.put(samples)


def run_probes(port, headers, targets, seconds=None, until=None):
    """Run probes for `seconds`, or until `until()` returns (called in this process)."""
    stop = mp.Event()
    queues, procs = [], []
    for path, interval in targets:
        q = mp.Queue()
        p = mp.Process(target=probe, args=(port, headers, path, interval, stop, q), daemon=True)
        p.start()
        queues.append(q)
        procs.append(p)
    time.sleep(0.3)  # connections up before the window opens
    window = [time.time(), None]
    if until is None:
        time.sleep(seconds)
    else:
        until()
    window[1] = time.time()
    stop.set()
    results = [q.get(timeout=60) for q in queues]
    for p in procs:
        p.join(timeout=10)
    return [[s for s in r if window[0] <= s[0] <= window[1]] for r in results]


def cpu_seconds_busy():
    """Busy CPU seconds of the whole machine so far (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pid):
    """utime + stime of one process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    """This bench's CPU: its own threads plus reaped children (the probe processes)."""
    import resource
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def stats(samples):
    lat = [s[1] for s in samples]
    bad = sum(1 for s in samples if s[2] != 200)
    return {"n": len(lat), "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "max": max(lat) if lat else float("nan"), "bad": bad}


def fill(api, sid, n):
    for start in range(0, n, BATCH):
        msgs = [{"role": "user" if (start + i) % 2 == 0 else "assistant",
                 "content": f"{sid}-{start + i} {TEXT}"} for i in range(min(BATCH, n - start))]
        status, body = api.call("POST", f"/api/v1/sessions/{sid}/messages/batch", {"messages": msgs})
        if status != 200:
            raise RuntimeError(f"prefill {sid}: {status} {body}")


def start_server(data_dir, commit_threads):
    """A USER key when the admin API exists, else dev mode with identity headers."""
    args = ["--commit-threads", str(commit_threads)]
    s = Server(data_dir, args=args)
    admin = Api(s.port, {"X-API-Key": ROOT_KEY})
    status, _ = admin.call("POST", "/api/v1/admin/accounts", {"account_id": "bench", "admin_user_id": "alice"})
    if status == 200:
        status, body = admin.call("POST", "/api/v1/admin/accounts/bench/users", {"user_id": "bob", "role": "user"})
        if status == 200:
            return s, {"X-API-Key": body["result"]["user_key"]}, "USER key (api_key mode)"
    s.stop()
    s = Server(data_dir, root_key=None, args=args)
    return s, {"X-OpenViking-Account": "bench", "X-OpenViking-User": "bob"}, "dev mode (no admin API on this build)"


def exists(api, method, path, body=None):
    status, _ = api.call(method, path, body)
    return status not in (404, 405, 501)


def scenario(commit_threads):
    d = temp_dir()
    s, headers, auth = start_server(d, commit_threads)
    try:
        api = Api(s.port, headers)
        notes = {"auth": auth}
        # What the build offers.
        has_write = exists(api, "POST", "/api/v1/content/write",
                           {"uri": "viking://resources/bench/probe.md", "content": "x", "mode": "replace"})
        has_stat = has_write and exists(api, "GET", "/api/v1/fs/stat?uri=viking://resources/bench/probe.md")
        has_grep = has_write and exists(api, "POST", "/api/v1/search/grep",
                                        {"uri": "viking://resources/bench", "pattern": "zzz"})
        # Small read target.
        api.call("POST", "/api/v1/sessions", {"session_id": "probe"})
        for i in range(3):
            api.call("POST", "/api/v1/sessions/probe/messages", {"role": "user", "content": f"hi {i}"})
        small = "/api/v1/fs/stat?uri=viking://resources/bench/probe.md" if has_stat else "/api/v1/sessions/probe"
        notes["small read"] = "GET /api/v1/fs/stat" if has_stat else "GET /api/v1/sessions/{small} (SE3; no fs/stat on this build)"
        # Back-to-back work target.
        if has_grep:
            for i in range(3000):
                api.call("POST", "/api/v1/content/write",
                         {"uri": f"viking://resources/bench/grep/f{i:04}.md", "content": f"line {i}\nneedle {i % 7}\n" * 20,
                          "mode": "replace"})
            notes["back-to-back"] = "POST /api/v1/search/grep over 3,000 files"
        else:
            fill(api, "ctx", 2000)
            notes["back-to-back"] = "GET /api/v1/sessions/ctx/context of a 2,000-message session (SE9; no search/grep on this build)"
        notes["writes"] = ("POST /api/v1/content/write, 1 MiB each" if has_write
                           else "POST …/messages/batch of 100 × 10 KiB (1 MiB) to another session (no content/write on this build)")

        # Prefill the 4 big sessions in parallel (not measured).
        t0 = time.perf_counter()
        threads = [threading.Thread(target=fill, args=(Api(s.port, headers), f"big{i}", MESSAGES))
                   for i in range(SESSIONS * ROUNDS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        prefill_s = time.perf_counter() - t0
        sizes = []
        for i in range(SESSIONS * ROUNDS):
            for root, _, files in os.walk(os.path.join(d, "viking")):
                if root.endswith(f"/sessions/big{i}") and "messages.jsonl" in files:
                    sizes.append(os.path.getsize(os.path.join(root, "messages.jsonl")))
        notes["session size"] = f"{(sum(sizes) / len(sizes) / 1e6):.1f} MB of JSON lines each" if sizes else "?"
        notes[f"prefill ({commit_threads} commit threads)"] = (
            f"{SESSIONS * ROUNDS * MESSAGES:,} messages through the batch API in {prefill_s:.1f} s "
            f"({SESSIONS * ROUNDS * MESSAGES / prefill_s:,.0f} messages/s, 12 clients)")

        targets = [("/health", 0.005), (small, 0.010)]
        load_before = loadavg()
        idle = run_probes(s.port, headers, targets, seconds=IDLE_SECONDS)

        # Load: 4 commits + 1 MiB writes + back-to-back work, until the last commit answers.
        done = threading.Event()
        counters = {"writes": 0, "write_bytes": 0, "work": 0, "write_errors": 0, "work_errors": 0}
        blob = "y" * ONE_MIB
        batch_body = json.dumps({"messages": [{"role": "user", "content": "w" * (ONE_MIB // 100)} for _ in range(100)]}).encode()

        def writer():
            w = Api(s.port, headers)
            i = 0
            while not done.is_set():
                if has_write:
                    st, _ = w.call("POST", "/api/v1/content/write",
                                   raw=json.dumps({"uri": f"viking://resources/bench/blob-{i % 16}.md", "content": blob,
                                                   "mode": "replace"}).encode(), parse=False)
                else:
                    st, _ = w.call("POST", "/api/v1/sessions/writes/messages/batch", raw=batch_body, parse=False)
                counters["writes"] += 1
                counters["write_bytes"] += ONE_MIB
                counters["write_errors"] += st != 200
                i += 1

        def worker():
            w = Api(s.port, headers)
            while not done.is_set():
                if has_grep:
                    st, _ = w.call("POST", "/api/v1/search/grep",
                                   {"uri": "viking://resources/bench/grep", "pattern": "needle 3"}, parse=False)
                else:
                    st, _ = w.call("GET", "/api/v1/sessions/ctx/context", parse=False)
                counters["work"] += 1
                counters["work_errors"] += st != 200

        commit_results = []

        parts = os.environ.get("SESSIONS_BENCH_LOAD", "commits,writes,work").split(",")
        notes["load parts"] = ", ".join(parts)

        def load():
            bg = ([threading.Thread(target=writer)] if "writes" in parts else []) + \
                 ([threading.Thread(target=worker)] if "work" in parts else [])
            for t in bg:
                t.start()

            def one(i):
                c = Api(s.port, headers)
                t = time.perf_counter()
                st, body = c.call("POST", f"/api/v1/sessions/big{i}/commit", {})
                commit_results.append((st, (body or {}).get("result", {}), time.perf_counter() - t))

            counters["commit_wall"] = 0.0
            for rnd in range(ROUNDS if "commits" in parts else 0):
                start = time.perf_counter()
                cs = [threading.Thread(target=one, args=(rnd * SESSIONS + i,)) for i in range(SESSIONS)]
                for t in cs:
                    t.start()
                for t in cs:
                    t.join()
                counters["commit_wall"] += time.perf_counter() - start
            if "commits" not in parts:
                time.sleep(10)
            done.set()
            for t in bg:
                t.join()

        busy0, srv0, own0, t0 = cpu_seconds_busy(), cpu_seconds_of(s.proc.pid), own_cpu_seconds(), time.perf_counter()
        loaded = run_probes(s.port, headers, targets, until=load)
        elapsed = time.perf_counter() - t0
        busy = cpu_seconds_busy() - busy0
        server_cpu = cpu_seconds_of(s.proc.pid) - srv0
        bench_cpu = own_cpu_seconds() - own0
        cores = os.cpu_count() or 1
        cpu = {"server": server_cpu / (elapsed * cores), "bench": bench_cpu / (elapsed * cores),
               "other": max(0.0, busy - server_cpu - bench_cpu) / (elapsed * cores)}
        archived = 0
        for i in range(SESSIONS * ROUNDS):
            st, body = api.call("GET", f"/api/v1/sessions/big{i}")
            if st == 200 and body["result"]["message_count"] == 0 and body["result"]["commit_count"] >= 1:
                archived += MESSAGES
        ok_commits = sum(1 for st, r, _ in commit_results if st == 200 and r.get("status") == "accepted")
        return {"threads": commit_threads, "idle": [stats(x) for x in idle], "load": [stats(x) for x in loaded],
                "commit_wall": counters["commit_wall"], "archived": archived, "ok_commits": ok_commits,
                "commit_each": sorted(t for _, _, t in commit_results), "writes": counters["writes"],
                "write_errors": counters["write_errors"], "work": counters["work"], "work_errors": counters["work_errors"],
                "prefill_s": prefill_s, "notes": notes, "loadavg": (load_before, loadavg()), "cpu": cpu}
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)


def fmt(st):
    return f"{st['p50']:.2f} / {st['p99']:.2f} / {st['max']:.2f} (n={st['n']}{', non-200=' + str(st['bad']) if st['bad'] else ''})"


def main():
    # On a machine shared with other work, SESSIONS_BENCH_NICE=-5 runs the whole bench (server,
    # clients, probes) ahead of the other tenants' processes, approximating a dedicated box; the
    # server's pool threads still set their own absolute niceness (10, commits 19).
    bench_nice = int(os.environ.get("SESSIONS_BENCH_NICE", "0"))
    if bench_nice:
        os.nice(bench_nice)
    rows = os.environ.get("SESSIONS_BENCH_COMMIT_THREADS", "2,1,4")
    results = [scenario(int(t)) for t in rows.split(",")]
    notes = dict(results[0]["notes"])
    for r in results[1:]:
        notes.update({k: v for k, v in r["notes"].items() if k.startswith("prefill")})
    print("## Sessions: commits of 50k-message sessions vs everything else\n")
    print(f"Per row a fresh release server; {ROUNDS} rounds, each committing {SESSIONS} sessions × {MESSAGES:,} "
          f"messages ({notes['session size']}) at once (keep_recent_count 0), while 1 MiB writes and back-to-back "
          f"work run throughout; probes from "
          f"separate processes on keep-alive connections: /health every 5 ms, the small read every 10 ms. "
          f"Latency columns are p50 / p99 / max in ms; load rows count only probes sent while commits ran. "
          f"Idle rows: {IDLE_SECONDS} s without load.\n")
    for k, v in notes.items():
        print(f"- {k}: {v}")
    print(f"- bench process niceness: {os.nice(0)} "
          f"({'ahead of other tenants, see SESSIONS_BENCH_NICE' if os.nice(0) < 0 else 'same as other processes'})")
    print()
    print("| commit threads | phase | GET /health | small read | commits: total wall s (each s); accepted | messages archived/s | 1 MiB writes | back-to-back ops | CPU share: server / bench clients / other processes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['threads']} | idle (loadavg {r['loadavg'][0]:.1f}) | {fmt(r['idle'][0])} | {fmt(r['idle'][1])} | — | — | — | — | — |")
        each = f"{min(r['commit_each']):.2f}–{max(r['commit_each']):.2f}" if r["commit_each"] else "-"
        rate = r["archived"] / r["commit_wall"] if r["commit_wall"] else 0
        print(f"| {r['threads']} | 4 commits + load (loadavg after {r['loadavg'][1]:.1f}) | {fmt(r['load'][0])} | {fmt(r['load'][1])} | "
              f"{r['commit_wall']:.2f} ({each}); {r['ok_commits']}/{SESSIONS * ROUNDS} | {rate:,.0f} | "
              f"{r['writes']} ({r['write_errors']} failed) | {r['work']} ({r['work_errors']} failed) | "
              f"{r['cpu']['server']:.0%} / {r['cpu']['bench']:.0%} / {r['cpu']['other']:.0%} |")
    print()
    worst_h99 = max(r["load"][0]["p99"] for r in results)
    worst_hmax = max(r["load"][0]["max"] for r in results)
    worst_r99 = max(r["load"][1]["p99"] for r in results)
    print("| target (under load, worst row) | measured | verdict |")
    print("|---|---|---|")
    print(f"| /health p99 < 10 ms | {worst_h99:.2f} ms | {'met' if worst_h99 < 10 else 'MISSED'} |")
    print(f"| /health max < 50 ms | {worst_hmax:.2f} ms | {'met' if worst_hmax < 50 else 'MISSED'} |")
    print(f"| small read p99 < 50 ms | {worst_r99:.2f} ms | {'met' if worst_r99 < 50 else 'MISSED'} |")
    print("| OpenViking 0.5.2, same kind of load | /health p99 875 ms, small read p99 4.7 s | — |")
    print()
    print("The 1-minute load average and, for load rows, the machine's CPU split (share of all cores used "
          "by the server, by this bench's own clients and probes, and by every other process) are "
          "printed per row: this 2-core machine is shared, and other processes (compilers, other "
          "servers) running at the same time inflate every latency column, idle rows included.\n")


if __name__ == "__main__":
    main()
