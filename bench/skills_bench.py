"""Skills benchmark: install, list and find cost as an account's skills grow.

On a fresh server: install N skills from SKILL.md text one after the other (latency of each
add, wait=false), list them, run 50 skills/find queries, then install one uploaded ZIP package
of F files (upload + add). Prints a Markdown section.
Usage: python3 skills_bench.py [N] [F]   (LONGSHIP_BIN picks the binary; default release)
"""
import io
import json
import sys
import time
import urllib.request
import uuid
import zipfile

from common import ROOT_KEY, Server, call, percentile, temp_dir

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
F = int(sys.argv[2]) if len(sys.argv) > 2 else 500
WORDS = ["convert", "merge", "report", "deploy", "review", "translate", "summarise", "test"]
OBJECTS = ["pdf", "csv", "invoice", "release", "ticket", "image", "schema", "log"]


def skill(i):
    verb, obj = WORDS[i % len(WORDS)], OBJECTS[(i // len(WORDS)) % len(OBJECTS)]
    return (f"---\nname: skill-{i}\ndescription: {verb.capitalize()} {obj} files, variant {i}.\n"
            f"---\n\n# Skill {i}\n\nSteps to {verb} a {obj}.\n")


def upload(url, key, name, data):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/api/v1/resources/temp_upload", data=body, method="POST")
    req.add_header("X-API-Key", key)
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["result"]["temp_file_id"]


def main():
    s = Server(temp_dir())
    try:
        _, created = call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                          {"account_id": "bench", "admin_user_id": "alice"})
        key = created["result"]["user_key"]
        adds = []
        for i in range(N):
            t = time.perf_counter()
            st, r = call(s.url + "/api/v1/skills", "POST", key, {"data": skill(i)})
            adds.append((time.perf_counter() - t) * 1000)
            assert st == 200, r
        t = time.perf_counter()
        st, listed = call(s.url + "/api/v1/skills", "GET", key)
        list_ms = (time.perf_counter() - t) * 1000
        assert listed["result"]["total"] == N, listed
        finds, hits = [], 0
        for q in range(50):
            query = f"{WORDS[q % len(WORDS)]} {OBJECTS[q % len(OBJECTS)]} files"
            t = time.perf_counter()
            st, r = call(s.url + "/api/v1/skills/find", "POST", key, {"query": query, "limit": 10})
            finds.append((time.perf_counter() - t) * 1000)
            hits += bool(r["result"]["skills"])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("big/SKILL.md", skill(N + 1).replace(f"skill-{N + 1}", "big"))
            for f in range(F):
                z.writestr(f"big/resources/r{f // 50}/file{f}.md", f"# File {f}\n\n" + "text " * 200)
        data = buf.getvalue()
        t = time.perf_counter()
        tid = upload(s.url, key, "big.zip", data)
        st, r = call(s.url + "/api/v1/skills", "POST", key, {"temp_file_id": tid, "wait": True})
        zip_ms = (time.perf_counter() - t) * 1000
        assert st == 200, r
        print("## Skills\n")
        print(f"- binary: `{s.proc.args[0]}`; one server, local backend, sequential client")
        print(f"- {N} inline installs (wait=false): p50 {percentile(adds, 50):.1f} ms, "
              f"p99 {percentile(adds, 99):.1f} ms, max {max(adds):.1f} ms")
        print(f"- list of {N} skills: {list_ms:.1f} ms")
        print(f"- 50 skills/find over {N} skills: p50 {percentile(finds, 50):.1f} ms, "
              f"p99 {percentile(finds, 99):.1f} ms ({hits}/50 with hits)")
        print(f"- one ZIP package of {F} files ({len(data) // 1024} KiB): upload + install "
              f"(wait=true) {zip_ms:.0f} ms, auxiliary_files {r['result']['auxiliary_files']}")
    finally:
        s.stop()


if __name__ == "__main__":
    main()
