//! Prometheus metrics.

use crate::harness::{Opts, Server, Storage, ROOT_KEY};

fn scrape(s: &Server) -> String {
    let r = s.get("/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    String::from_utf8(r.raw).unwrap()
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn counts_requests_by_route_and_exports_pools_and_auth() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default().arg("--storage-threads").arg("3"));
    for _ in 0..5 {
        s.get("/health", None);
    }
    s.get(
        "/api/v1/tasks/00000000-0000-4000-8000-000000000001",
        Some(ROOT_KEY),
    );
    s.get("/no/such/route", None);
    let text = scrape(&s);
    let health = value(
        &text,
        r#"longship_http_requests_total{method="GET",route="/health",status="200"}"#,
    );
    assert!(health.unwrap_or(0.0) >= 5.0, "{text}");
    // Path parameters are folded into the route pattern.
    assert!(
        text.contains(r#"route="/api/v1/tasks/{task_id}",status="404""#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#));
    assert_eq!(
        value(&text, r#"longship_pool_threads{pool="storage"}"#),
        Some(3.0)
    );
    assert!(value(&text, r#"longship_pool_rejected_total{pool="commit"}"#).is_some());
    assert!(text.contains("longship_http_request_duration_seconds_bucket"));
    assert!(
        text.contains("longship_auth{"),
        "auth gauges missing: {text}"
    );
    // Running totals are counters; the auth ones form one family labelled by event.
    for family in [
        "longship_http_requests_total",
        "longship_pool_completed_total",
        "longship_pool_rejected_total",
        "longship_pool_panicked_total",
        "longship_auth_events_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} counter")),
            "{family} is not a counter: {text}"
        );
    }
    assert!(
        value(&text, r#"longship_auth_events_total{event="resolves"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(!text.contains(r#"longship_auth{name="counters_"#), "{text}");
    // A second scrape never lowers a counter.
    let again = scrape(&s);
    let completed = |t: &str| value(t, r#"longship_pool_completed_total{pool="storage"}"#);
    assert!(completed(&again) >= completed(&text), "{again}");
    assert_eq!(value(&text, "longship_storage_up"), Some(1.0));
    assert!(!text.contains(ROOT_KEY));
}

/// Issue #19: the access log must never hold a request up. Here stderr (and stdout) is a pipe
/// nobody reads: once its kernel buffer and the writer's small queue are full, a blocking
/// logger would stall every HTTP worker on its next log line. The burst must still be answered
/// promptly and the lines that did not fit are counted in /metrics.
#[test]
fn an_unread_log_pipe_never_stalls_requests_and_drops_are_counted() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_longship"));
    cmd.arg("serve")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        // Held open and never read.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("LONGSHIP_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info")
        .env("LONGSHIP_LOGGING__BUFFER_LINES", "64");
    let mut child = cmd.spawn().expect("spawn longship");
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let agent = || {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build()
    };
    let up = Instant::now();
    let probe = agent();
    while probe.get(&url("/health")).call().is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ~150 bytes a line: 4 × 1000 lines are several times a 64 KiB pipe buffer plus the queue.
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let get = url("/health");
            let client = agent();
            std::thread::spawn(move || {
                let begun = Instant::now();
                let mut answered = 0;
                for _ in 0..1000 {
                    if begun.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    if matches!(client.get(&get).call(), Ok(r) if r.status() == 200) {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let answered: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let took = started.elapsed();
    let text = probe
        .get(&url("/metrics"))
        .call()
        .expect("metrics answers while the log pipe is full")
        .into_string()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        answered, 4000,
        "requests stalled or failed (after {took:?})"
    );
    let dropped = value(&text, "longship_log_lines_dropped_total").unwrap_or(0.0);
    assert!(dropped > 0.0, "no dropped lines counted:\n{text}");
}
