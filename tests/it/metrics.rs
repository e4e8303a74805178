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
