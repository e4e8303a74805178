"""System benchmark: /health vs authenticated throughput, idle memory, start-to-first-200.

Prints a Markdown section for bench/REPORT.md.
"""
import shutil
import statistics
import sys

from common import ROOT_KEY, Server, call, temp_dir, wrk

SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10


def main():
    # Start-up time and idle memory: 5 fresh starts (4 storage + 2 commit threads, defaults).
    starts, rss = [], []
    for _ in range(5):
        d = temp_dir()
        s = Server(d, args=["--storage-threads", "4", "--commit-threads", "2"])
        starts.append(s.first_ok * 1000)
        import time
        time.sleep(1.0)
        rss.append(s.rss_kib() / 1024)
        s.stop()
        shutil.rmtree(d, ignore_errors=True)

    d = temp_dir()
    s = Server(d)
    key = ROOT_KEY
    kind = "ROOT key"
    status, body = call(s.url + "/api/v1/admin/accounts", "POST", ROOT_KEY,
                        {"account_id": "bench", "admin_user_id": "alice"})
    if status == 200:
        status, body2 = call(s.url + "/api/v1/admin/accounts/bench/users", "POST", ROOT_KEY,
                             {"user_id": "bob", "role": "user"})
        if status == 200:
            key, kind = body2["result"]["user_key"], "USER key"
    health = wrk(s.url + "/health", SECONDS)
    authed = wrk(s.url + "/api/v1/system/status", SECONDS, headers={"X-API-Key": key})
    s.stop()
    shutil.rmtree(d, ignore_errors=True)

    ratio = authed["rps"] / health["rps"] if health["rps"] else 0
    print("## System: throughput, memory, start-up\n")
    print(f"wrk, 2 threads, 32 connections, {SECONDS} s per run, same machine as the server.\n")
    print("| measurement | Longship | target | OpenViking 0.5.2 |")
    print("|---|---|---|---|")
    print(f"| GET /health req/s (p50 / p99 ms) | {health['rps']:.0f} ({health['p50_ms']:.2f} / {health['p99_ms']:.2f}) | — | 3.9–4.9k |")
    print(f"| GET /api/v1/system/status with a {kind}, req/s (p50 / p99 ms) | {authed['rps']:.0f} ({authed['p50_ms']:.2f} / {authed['p99_ms']:.2f}) | — | 1.5–2.0k |")
    print(f"| authenticated / health throughput ratio | {ratio:.2f} | ≥ 0.50 | ~0.4 |")
    print(f"| non-2xx responses during the runs | {health['errors'] + authed['errors']} | 0 | — |")
    print(f"| idle RSS after start, 4 storage + 2 commit threads (median of 5) | {statistics.median(rss):.1f} MiB | < 30 MiB | ~483 MB |")
    print(f"| process start → first 200 from /health (median / max of 5) | {statistics.median(starts):.0f} / {max(starts):.0f} ms | < 200 ms | 5.4–6.9 s |")
    print()


if __name__ == "__main__":
    main()
