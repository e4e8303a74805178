"""Per-request overhead (issue #19 item 2): Longship's /health beside a bare actix-web handler,
authenticated system/status (USER key, key hashing at its default) and fs/ls of a 10-entry
directory, all in one run, each server at its default worker count, access log on (info).

The bare handler is bench/bare_actix (its own small cargo project; built here into the main
target directory if missing). Prints a Markdown section; `bash bench/run.sh` puts it into
REPORT.md, bench/overhead_results.md keeps the last recorded run with its conditions.
Usage: python3 bench/overhead_bench.py [seconds] [rounds]
"""
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

from common import ROOT, ROOT_KEY, Server, call, free_port, temp_dir, wait_health, wrk

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
BARE = os.path.join(ROOT, "target", "release", "bare_actix")


def build_bare():
    if os.path.exists(BARE):
        return
    manifest = os.path.join(ROOT, "bench", "bare_actix", "Cargo.toml")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", manifest,
                    "--target-dir", os.path.join(ROOT, "target")], check=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    build_bare()
    port = free_port()
    bare = subprocess.Popen([BARE, str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    bare_url = f"http://127.0.0.1:{port}"
    wait_health(bare_url, time.perf_counter())

    d = temp_dir()
    # The access log stays on (the bench default elsewhere is RUST_LOG=warn).
    s = Server(d, env={"RUST_LOG": "info,tantivy=warn"})
    status, _ = call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                     {"account_id": "bench", "admin_user_id": "alice"})
    assert status == 200, status
    status, body = call(s.url + "/api/v1/admin/accounts/bench/users", "POST", ROOT_KEY,
                        {"user_id": "bob", "role": "user"})
    assert status == 200, status
    user_key = body["result"]["user_key"]
    for i in range(10):
        status, _ = call(s.url + "/api/v1/content/write", "POST", user_key,
                         {"uri": f"viking://resources/ten/f{i}.md", "content": f"file {i}\n",
                          "mode": "create"})
        assert status == 200, status
    ls_url = s.url + "/api/v1/fs/ls?uri=" + urllib.parse.quote("viking://resources/ten", safe="")
    status, body = call(ls_url, "GET", user_key)
    assert status == 200 and len(body["result"]) >= 10, (status, body)

    key = {"X-API-Key": user_key}
    rows = []
    load_before = loadavg()
    # Interleaved rounds: every target sees the same background load, round after round.
    for _ in range(ROUNDS):
        r = {
            "bare": wrk(bare_url + "/health", SECONDS),
            "health": wrk(s.url + "/health", SECONDS),
            "status": wrk(s.url + "/api/v1/system/status", SECONDS, headers=key),
            "ls": wrk(ls_url, SECONDS, headers=key),
        }
        rows.append(r)
    load_after = loadavg()
    s.stop()
    bare.terminate()
    bare.wait(timeout=10)
    shutil.rmtree(d, ignore_errors=True)

    def med(name, field="rps"):
        vals = sorted(r[name][field] for r in rows)
        return vals[len(vals) // 2]

    errors = sum(r[n]["errors"] for r in rows for n in r)
    print("## Per-request overhead: /health beside bare actix-web\n")
    print(f"wrk -t2 -c32 -d{SECONDS}s, {ROUNDS} interleaved rounds (median shown), same run, "
          f"loopback; both servers at their default worker count ({os.cpu_count()} CPUs); "
          f"Longship with the access log on (info, to a file), API-key auth, key hashing at its "
          f"default; load average before / after: {load_before} / {load_after}.\n")
    print("| target | req/s (median) | p50 / p99 ms | ratio | goal |")
    print("|---|---|---|---|---|")
    b, h, st, ls = med("bare"), med("health"), med("status"), med("ls")
    lat = lambda n: f"{med(n, 'p50_ms'):.2f} / {med(n, 'p99_ms'):.2f}"
    print(f"| bare actix-web GET /health | {b:.0f} | {lat('bare')} | 1.00 | — |")
    print(f"| Longship GET /health | {h:.0f} | {lat('health')} | {h / b:.2f} × bare | ≥ 0.80 × bare |")
    print(f"| Longship GET /api/v1/system/status (USER key) | {st:.0f} | {lat('status')} | {st / h:.2f} × /health | ≥ 0.75 × /health |")
    print(f"| Longship GET /api/v1/fs/ls, 10 entries (USER key) | {ls:.0f} | {lat('ls')} | {ls / h:.2f} × /health | reported |")
    print(f"\nPer round (req/s, bare / health / status / ls): " + "; ".join(
        f"{r['bare']['rps']:.0f} / {r['health']['rps']:.0f} / {r['status']['rps']:.0f} / "
        f"{r['ls']['rps']:.0f}" for r in rows) + f". Non-2xx responses: {errors}.\n")


if __name__ == "__main__":
    main()
