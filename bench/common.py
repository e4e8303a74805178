"""Shared helpers for Longship benchmarks: start release binaries, drive wrk, percentiles."""
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("LONGSHIP_BIN", os.path.join(ROOT, "target", "release", "longship"))
ROOT_KEY = "bench-root-key"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One release `longship serve` process over `data_dir`."""

    def __init__(self, data_dir, root_key=ROOT_KEY, args=(), env=None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [BIN, "serve", "--port", str(self.port), "--data-dir", data_dir, *args]
        if root_key:
            cmd += ["--root-api-key", root_key]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LONGSHIP_")}
        full_env.update(storage_env(data_dir))
        full_env.update(env or {})
        full_env.setdefault("RUST_LOG", "warn")
        self.log = open(os.path.join(data_dir, f"server-{self.port}.log"), "wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=full_env)
        self.first_ok = wait_health(self.url, self.started)
        wait_ready(self.url)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def storage_env(data_dir):
    """Backend settings for a server over `data_dir`. bench/s3_bench.py sets BENCH_STORAGE_ENV
    (a JSON object of LONGSHIP_STORAGE__* / AWS_* variables) to rerun a benchmark on S3; the
    data dir's name becomes the key prefix, so servers sharing a data dir share the data."""
    raw = os.environ.get("BENCH_STORAGE_ENV")
    if not raw:
        return {}
    env = json.loads(raw)
    env["LONGSHIP_STORAGE__S3__PREFIX"] = os.path.basename(os.path.normpath(data_dir))
    return env


def wait_health(url, started, timeout=20.0):
    """Seconds from `started` until /health first answers 200."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except (OSError, urllib.error.URLError):
            time.sleep(0.001)
    raise RuntimeError(f"{url} did not become healthy")


def wait_ready(url, timeout=30.0):
    """Wait until /ready is past `initializing` (the registry loads after the port opens)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        status, body = call(url + "/ready")
        if not (isinstance(body, dict) and body.get("reason") == "initializing"):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{url} stayed initializing")


def call(url, method="GET", key=None, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if key:
        req.add_header("X-API-Key", key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw


def wrk(url, seconds=10, connections=32, threads=2, headers=None):
    """Run wrk; returns {'rps', 'p50_ms', 'p99_ms', 'errors'}."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk not installed (apt-get install wrk)")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
        lat[int(pct)] = float(val) * scale
    errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": rps, "p50_ms": lat.get(50), "p99_ms": lat.get(99),
            "errors": int(errs.group(1)) if errs else 0, "raw": out}


def _probe_health(port, stop, out, started, every):
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
        time.sleep(every)
    out.put(samples)


class HealthProbe:
    """GET /health every `every` s on one keep-alive connection, from a separate process (so
    the script's own work does not delay it). `now()` is the probe's clock; `stats(start,
    end)` gives the latencies of the requests started in that window."""

    def __init__(self, port, every=0.005):
        import multiprocessing as mp
        self.started = time.perf_counter()
        self._stop, self._out = mp.Event(), mp.Queue()
        self._proc = mp.Process(target=_probe_health,
                                args=(port, self._stop, self._out, self.started, every))
        self._proc.start()
        self.samples = None

    def now(self):
        return time.perf_counter() - self.started

    def finish(self):
        if self.samples is None:
            self._stop.set()
            self.samples = self._out.get(timeout=60)
            self._proc.join()
        return self

    def kill(self):
        if self.samples is None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()

    def stats(self, start, end):
        v = [ms for t, ms in self.samples if start <= t <= end]
        if not v:
            return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        return {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}


def percentile(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


_TEMP_DIRS = []


def _remove_temp_dirs():
    # Only in the process that made them (a forked helper process must not remove them).
    for pid, d in _TEMP_DIRS:
        if pid == os.getpid():
            shutil.rmtree(d, ignore_errors=True)


def _exit_on_signal(signum, _frame):
    # SIGTERM/SIGHUP end the script through SystemExit, so `finally` blocks stop the servers
    # and the atexit hook removes the temp dirs (a plain default-action kill would leave them).
    raise SystemExit(128 + signum)


atexit.register(_remove_temp_dirs)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) == signal.SIG_DFL:
        signal.signal(_sig, _exit_on_signal)


def temp_dir(prefix="longship-bench-"):
    """A temp dir removed when the script ends (normally, by an exception, Ctrl-C or SIGTERM)."""
    d = tempfile.mkdtemp(prefix=prefix)
    _TEMP_DIRS.append((os.getpid(), d))
    return d


def multipart(filename, data):
    boundary = "bench" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def upload_file(url, key, filename, path, timeout=3600):
    """temp_upload of the file at `path`, streamed from disk (multipart, Content-Length known,
    the file never held whole): (status, body)."""
    boundary = "bench" + uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = os.path.getsize(path)
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest("POST", "/api/v1/resources/temp_upload")
        conn.putheader("X-API-Key", key)
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + size + len(tail)))
        conn.endheaders()
        conn.send(head)
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                conn.send(chunk)
        conn.send(tail)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw
    finally:
        conn.close()


def upload(url, key, filename, data, timeout=120):
    ct, body = multipart(filename, data)
    req = urllib.request.Request(url + "/api/v1/resources/temp_upload", data=body, method="POST")
    req.add_header("X-API-Key", key)
    req.add_header("Content-Type", ct)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None
    except OSError:
        return 0, None


def safe_call(*args, **kwargs):
    try:
        return call(*args, **kwargs)
    except OSError:
        return 0, None
