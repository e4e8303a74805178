"""Resources benchmark: ingestion throughput and /health latency while ingesting.

1. A tree of N Markdown and source files (default 5,000; ~4 KiB each, a mix of .md/.rs/.py)
   is zipped (as the SDK does for a directory), uploaded through temp_upload and added with
   wait=true. Reports upload MB/s, ingestion files/s and MB/s (unpacked bytes / time from the
   add request to its answer: parse in the child process, summaries, staging, publish).
2. The same for M small PDFs (default 100) in one archive (text extraction per file).
3. Throughout, a separate process probes GET /health every 5 ms on a keep-alive connection;
   p50/p99/max are reported idle and during ingestion (samples sent while ingestion ran).
4. Time from an add_resource(wait=true) answer on instance A until find on instance B (same
   storage) returns the new document (5 single documents, polled every 20 ms).

Model-free (extractive summaries). Prints a Markdown section for bench/REPORT.md.
Usage: python3 resources_bench.py [files] [pdfs]   (env RESOURCES_BENCH_FILES / _PDFS too)
"""
import http.client
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
import zipfile

from common import ROOT_KEY, Server, call, percentile, temp_dir

FILES = int(os.environ.get("RESOURCES_BENCH_FILES", sys.argv[1] if len(sys.argv) > 1 else 5000))
PDFS = int(os.environ.get("RESOURCES_BENCH_PDFS", sys.argv[2] if len(sys.argv) > 2 else 100))
WORDS = "agent context memory index vector session commit archive resource summary tree node " \
        "storage shard replica latency budget token overview abstract retrieval keyword".split()


def prose(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_tree_zip(n, scale=1.0, stored=False):
    """n Markdown/Rust/Python files (sizes times `scale`), deflated or stored in the ZIP."""
    rng = random.Random(7)
    buf = io.BytesIO()
    raw = 0
    lines = int(90 * scale)
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", method) as z:
        for i in range(n):
            d = f"pkg{i % 50}/mod{i % 7}"
            kind = i % 3
            if kind == 0:
                name, text = f"{d}/doc{i}.md", (f"# Document {i}\n\n{prose(rng, int(120 * scale))}.\n\n"
                                                f"## Details\n\n{prose(rng, int(300 * scale))}.\n")
            elif kind == 1:
                body = "\n".join(f"    let v{j} = {j} * 2; // {prose(rng, 6)}" for j in range(lines))
                name, text = f"{d}/file{i}.rs", f"//! Module {i}: {prose(rng, 10)}.\nfn f{i}() {{\n{body}\n}}\n"
            else:
                body = "\n".join(f"    x{j} = '{prose(rng, 6)}'" for j in range(lines))
                name, text = f"{d}/script{i}.py", f"# Script {i}: {prose(rng, 10)}.\ndef g{i}():\n{body}\n"
            data = text.encode()
            raw += len(data)
            z.writestr(name, data)
    return buf.getvalue(), raw


def tiny_pdf(text):
    """A one-page PDF with one line of text (hand-built, as any PDF writer would emit)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def make_pdf_zip(n):
    rng = random.Random(11)
    buf = io.BytesIO()
    raw = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(n):
            data = tiny_pdf(f"Paper {i} about {prose(rng, 8)}")
            raw += len(data)
            z.writestr(f"papers/p{i}.pdf", data)
    return buf.getvalue(), raw


def upload(port, key, name, data):
    boundary = "benchboundary42"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/api/v1/resources/temp_upload", body=body,
                 headers={"X-API-Key": key, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = conn.getresponse()
    out = json.loads(r.read())
    assert r.status == 200, out
    return out["result"]["temp_file_id"]


def probe(port, path, stop, out, started):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples = []
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        samples.append((t - started, (time.perf_counter() - t) * 1000))
        time.sleep(0.005)
    out.put(samples)


def stats(samples):
    v = [ms for _, ms in samples]
    return len(v), percentile(v, 50), percentile(v, 99), max(v) if v else float("nan")


def ingest(server, key, name, data, started, windows):
    """Upload, add with wait=false (answer = tree visible), poll the task (summaries done),
    then system/wait (this instance's index has applied the change). Returns seconds."""
    t0 = time.perf_counter()
    tid = upload(server.port, key, name, data)
    t1 = time.perf_counter()
    status, body = call(server.url + "/api/v1/resources", "POST", key,
                        {"temp_file_id": tid, "source_name": name}, timeout=3600)
    t2 = time.perf_counter()
    assert status == 200, body
    task = body["result"]["task_id"]
    while True:
        _, t = call(server.url + f"/api/v1/tasks/{task}", key=key)
        if t["result"]["status"] in ("completed", "failed"):
            break
        time.sleep(0.02)
    t3 = time.perf_counter()
    status, waited = call(server.url + "/api/v1/system/wait", "POST", key, {"timeout": 3600},
                          timeout=3600)
    assert status == 200, waited
    t4 = time.perf_counter()
    windows.append((t1 - started, t4 - started))
    return t1 - t0, t2 - t1, t4 - t1, body["result"]


def cross_instance_lags(a, data_dir, key):
    b = Server(data_dir)
    try:
        # B builds its index of what is already stored first; time only the tail of new adds.
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 600:
            _, obs = call(b.url + "/api/v1/observer/system?format=json", key=ROOT_KEY)
            if not obs["result"]["components"]["retrieval"]["status"]["building"]:
                break
            time.sleep(0.2)
        lags = []
        for i in range(5):
            word = f"zebrafinch{i}quartz"
            tid = upload(a.port, key, f"lag{i}.md", f"# Lag {i}\n\nThe {word} document.\n".encode())
            status, body = call(a.url + "/api/v1/resources", "POST", key,
                                {"temp_file_id": tid, "source_name": f"lag{i}.md", "wait": True})
            assert status == 200, body
            t0 = time.perf_counter()
            while True:
                _, found = call(b.url + "/api/v1/search/find", "POST", key,
                                {"query": word, "target_uri": "viking://resources"})
                hits = found.get("result", {}).get("resources", []) if isinstance(found, dict) else []
                if any(h["uri"].startswith(f"viking://resources/lag{i}") for h in hits):
                    break
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("document never became findable on B")
                time.sleep(0.02)
            lags.append(time.perf_counter() - t0)
        return lags
    finally:
        b.stop()


def main():
    data_dir = temp_dir()
    server = Server(data_dir)
    try:
        _, b = call(server.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                    {"account_id": "bench", "admin_user_id": "alice"})
        key = b["result"]["user_key"]
        tree_zip, tree_raw = make_tree_zip(FILES)
        pdf_zip, pdf_raw = make_pdf_zip(PDFS)
        # The case: a 50 MB archive of thousands of files (stored, not deflated).
        big_zip, big_raw = make_tree_zip(FILES, scale=2.2, stored=True)
        started = time.perf_counter()
        stop = mp.Event()
        q = mp.Queue()
        prober = mp.Process(target=probe, args=(server.port, "/health", stop, q, started))
        prober.start()
        time.sleep(3)  # idle samples
        idle_end = time.perf_counter() - started
        windows = []
        up_tree, add_tree, all_tree, res_tree = ingest(server, key, "tree.zip", tree_zip, started, windows)
        up_pdf, add_pdf, all_pdf, res_pdf = ingest(server, key, "papers.zip", pdf_zip, started, windows)
        up_big, add_big, all_big, res_big = ingest(server, key, "big.zip", big_zip, started, windows)
        stop.set()
        samples = q.get(timeout=60)
        prober.join()
        lags = cross_instance_lags(server, data_dir, key)
        idle = [s for s in samples if s[0] < idle_end]
        busy = [s for s in samples if any(a <= s[0] <= b for a, b in windows)]
        mb = 1024 * 1024
        print("## Resources ingestion (model-free)\n")
        print(f"- server: release build, defaults (storage 4 / commit 2 pool threads), local disk, "
              f"api_key mode; probe and uploads on the same machine over loopback")
        print("\nvisible = add_resource answer (parsed in the child, summaries, staged, published); "
              "+ indexed = until system/wait returns (task done and this instance's search index "
              "has applied the tree, sidecars included).\n")
        print("| input | files | unpacked | zip | upload | visible | files/s | MB/s | + indexed | files/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, n, raw, z, up, add, whole, res in (
            ("Markdown/code tree", FILES, tree_raw, len(tree_zip), up_tree, add_tree, all_tree, res_tree),
            ("PDFs", PDFS, pdf_raw, len(pdf_zip), up_pdf, add_pdf, all_pdf, res_pdf),
            ("50 MB archive (stored)", FILES, big_raw, len(big_zip), up_big, add_big, all_big, res_big),
        ):
            stored = res["meta"]["files"]
            assert stored >= n, (stored, n)  # large documents are split into several files
            print(f"| {label} | {n} | {raw / mb:.1f} MB | {z / mb:.1f} MB | {up:.2f} s "
                  f"| {add:.2f} s | {n / add:.0f} | {raw / mb / add:.1f} | {whole:.2f} s | {n / whole:.0f} |")
        print("\n| GET /health (every 5 ms) | samples | p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|")
        for label, s in (("idle", idle), ("during ingestion", busy)):
            n, p50, p99, mx = stats(s)
            print(f"| {label} | {n} | {p50:.2f} | {p99:.2f} | {mx:.2f} |")
        print(f"\n- add_resource(wait=true) answer on A → findable on B: median "
              f"{percentile(lags, 50) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
              f"({len(lags)} documents; bound: search.refresh_interval_ms = 1000)")
        print()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
