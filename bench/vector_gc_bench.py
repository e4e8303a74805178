"""Stored-vector garbage collection (issue #13): how long the sweep that follows a completed
full reconcile takes over a store holding referenced vectors, old orphans and an old model's
vectors, on the local backend.

Seeds `viking/default/resources/gc/d<i>.md` (N_DOCS unique documents) with their stored
vectors (64 dimensions, the layout `<account>/_system/vectors/<model_key>/<hash[..2]>/<hash>.f32`),
N_ORPHANS vectors no document references and N_OLD_MODEL vectors of another model key, all
two hours old; starts a release server with a dense model configured (its provider is an
unreachable loopback port: the sweep needs none, and stored vectors load without it), and
reads the sweep's own log line ("stored vector sweep finished": deleted, kept, took_ms).
Prints a Markdown section.
"""
import hashlib
import os
import re
import sys
import time

from common import Server, call, temp_dir

N_DOCS = int(os.environ.get("N_DOCS", "5000"))
N_ORPHANS = int(os.environ.get("N_ORPHANS", "20000"))
N_OLD_MODEL = int(os.environ.get("N_OLD_MODEL", "5000"))
MODEL, DIM = "bench-model", 64


def vector_path(root, key, h):
    return os.path.join(root, "default", "_system", "vectors", key, h[:2], h + ".f32")


def write(path, data, mtime):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (mtime, mtime))


def main():
    data = temp_dir()
    root = os.path.join(data, "viking")
    key = hashlib.sha256(f"{MODEL}|{DIM}".encode()).hexdigest()[:16]
    old = time.time() - 7200
    vec = bytes(DIM * 4)
    t0 = time.perf_counter()
    for i in range(N_DOCS):
        body = f"document {i} about topic {i % 97}\n".encode()
        write(os.path.join(root, "default", "resources", "gc", f"d{i}.md"), body, old)
        write(vector_path(root, key, hashlib.sha256(body).hexdigest()), vec, old)
    for i in range(N_ORPHANS):
        write(vector_path(root, key, hashlib.sha256(f"orphan {i}".encode()).hexdigest()), vec, old)
    for i in range(N_OLD_MODEL):
        h = hashlib.sha256(f"old {i}".encode()).hexdigest()
        write(vector_path(root, "00112233aabbccdd", h), vec, old)
    seeded = time.perf_counter() - t0
    env = {
        "LONGSHIP_EMBEDDING__DENSE__PROVIDER": "openai",
        "LONGSHIP_EMBEDDING__DENSE__API_BASE": "http://127.0.0.1:9/v1",
        "LONGSHIP_EMBEDDING__DENSE__MODEL": MODEL,
        "LONGSHIP_EMBEDDING__DENSE__DIMENSION": str(DIM),
        "RUST_LOG": "info",
    }
    s = Server(data, env=env)
    line = None
    deadline = time.time() + 600
    log_path = os.path.join(data, f"server-{s.port}.log")
    while time.time() < deadline and line is None:
        with open(log_path, errors="replace") as f:
            for l in f:
                if "stored vector sweep finished" in l:
                    line = l
        time.sleep(0.2)
    _, status = call(s.url + "/api/v1/observer/system?format=json", key="bench-root-key")
    s.stop()
    if line is None:
        print("sweep did not finish within 600 s", file=sys.stderr)
        sys.exit(1)
    fields = dict(re.findall(r"(\w+)=(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", line)))
    left = sum(len(files) for _, _, files in os.walk(os.path.join(root, "default", "_system", "vectors")))
    emb = status["result"]["components"]["retrieval"]["status"]["embedding"]
    print("## Stored-vector sweep (local backend, release build)\n")
    print(f"Seeded {N_DOCS} documents with their vectors, {N_ORPHANS} orphan vectors and "
          f"{N_OLD_MODEL} vectors of another model, all 2 h old ({seeded:.1f} s to seed).\n")
    print("| deleted | kept | sweep took | vector objects left | loaded from storage |")
    print("|---|---|---|---|---|")
    print(f"| {fields.get('deleted')} | {fields.get('kept')} | {fields.get('took_ms')} ms | "
          f"{left} | {emb.get('loaded_from_storage', '?')} |")
    ok = left == N_DOCS and int(fields.get("deleted", 0)) == N_ORPHANS + N_OLD_MODEL
    print(f"\nexpected {N_DOCS} left and {N_ORPHANS + N_OLD_MODEL} deleted: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
