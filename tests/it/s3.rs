//! The server on the S3 backend: settings, readiness through a store outage, masking.
//! (The behavioural suites run on S3 too when `IT_STORAGE_BACKEND=s3`.)

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Opts, Server, Storage, ROOT_KEY};
use crate::seaweed::{self, SeaweedFs};

fn longship() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_longship"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LONGSHIP_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c
}

fn opts_for(sw: &SeaweedFs, prefix: &str) -> Opts {
    sw.server_env(prefix)
        .iter()
        .fold(Opts::default(), |o, (k, v)| o.env(k, v))
}

/// Poll `/ready` until it answers `want` (the store's state is probed per request).
fn ready_becomes(s: &Server, want: u16, within: Duration) -> crate::harness::Resp {
    let deadline = Instant::now() + within;
    loop {
        let r = s.get("/ready", None);
        if r.status == want || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn s3_server_ready_follows_the_store_and_recovers_without_restart() {
    let Some(sw) = SeaweedFs::start() else { return };
    let st = Storage::new();
    let prefix = format!("srv-{}", uuid::Uuid::new_v4().simple());
    let s = Server::start(&st, opts_for(&sw, &prefix));
    let r = s.get("/ready", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["checks"]["agfs"]["checks"]["filesystem"], "ok");
    let log = s.log_until("storage_backend=\"s3\"", Duration::from_secs(10));
    assert!(log.contains("storage_backend=\"s3\""), "{log}");
    assert!(!st.local("").exists(), "nothing of /local on disk");
    sw.stop();
    let r = ready_becomes(&s, 503, Duration::from_secs(10));
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["status"], "not_ready");
    let why = r.body["checks"]["agfs"]["checks"]["filesystem"]
        .as_str()
        .unwrap_or_default();
    // The client learns the kind of failure; the endpoint and the store's own words go to the
    // log only (storage details never reach clients).
    assert!(
        why.starts_with("error: ") && why.contains("unavailable") && !why.contains("127.0.0.1"),
        "{why}"
    );
    assert!(
        s.log_until("object store", Duration::from_secs(10))
            .contains("object store"),
        "the log names the store"
    );
    assert_eq!(
        s.get("/health", None).status,
        200,
        "liveness never follows storage"
    );
    let obs = s.get("/api/v1/observer/system", Some(ROOT_KEY));
    assert_eq!(obs.status, 200);
    assert_eq!(obs.result()["is_healthy"], false, "{:?}", obs.body);

    sw.resume();
    let r = ready_becomes(&s, 200, Duration::from_secs(20));
    assert_eq!(r.status, 200, "recovers without a restart: {:?}", r.body);
}

#[test]
fn s3_server_starts_while_the_store_is_down_and_reports_not_ready() {
    if seaweed::available().is_none() {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let st = Storage::new();
    let opts = Opts::dev()
        .env("LONGSHIP_STORAGE__BACKEND", "s3")
        .env(
            "LONGSHIP_STORAGE__S3__ENDPOINT",
            &format!("http://127.0.0.1:{port}"),
        )
        .env("LONGSHIP_STORAGE__S3__BUCKET", "nowhere")
        .env("LONGSHIP_STORAGE__S3__ALLOW_HTTP", "true")
        .env("LONGSHIP_STORAGE__S3__CONNECT_TIMEOUT_MS", "200")
        .env("LONGSHIP_STORAGE__S3__MAX_RETRIES", "1")
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s");
    // Live, never initialized: the dev-mode scaffold waits for the store.
    let s = Server::start_live(&st, opts);
    let r = s.get("/ready", None);
    assert_eq!(r.status, 503, "{:?}", r.body);
    let why = r.body["checks"]["agfs"]["checks"]["filesystem"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("unavailable"), "{why}");
    assert!(
        !why.contains(&port.to_string()),
        "no endpoint to clients: {why}"
    );
    assert!(
        s.log_until(&port.to_string(), Duration::from_secs(10))
            .contains(&port.to_string()),
        "the log names the endpoint"
    );
}

#[test]
fn s3_settings_from_env_are_shown_masked_and_validated() {
    let out = longship()
        .arg("config")
        .env("LONGSHIP_STORAGE__BACKEND", "s3")
        .env("LONGSHIP_STORAGE__S3__ENDPOINT", "http://127.0.0.1:8333")
        .env("LONGSHIP_STORAGE__S3__BUCKET", "team-bucket")
        .env("LONGSHIP_STORAGE__S3__PREFIX", "prod/a")
        .env("LONGSHIP_STORAGE__S3__ALLOW_HTTP", "true")
        .env("LONGSHIP_STORAGE__S3__ACCESS_KEY_ID", "AKIDSHOWN")
        .env(
            "LONGSHIP_STORAGE__S3__SECRET_ACCESS_KEY",
            "very-secret-value",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let s3 = &v["storage"]["s3"];
    assert_eq!(v["storage"]["backend"].as_str(), Some("s3"));
    assert_eq!(s3["bucket"].as_str(), Some("team-bucket"));
    assert_eq!(s3["prefix"].as_str(), Some("prod/a"));
    assert_eq!(s3["allow_http"].as_bool(), Some(true));
    assert_eq!(s3["access_key_id"].as_str(), Some("AKIDSHOWN"));
    assert_eq!(s3["secret_access_key"].as_str(), Some("********"));
    assert!(!text.contains("very-secret-value"));

    // A missing bucket, and plain http without allow_http, are startup errors (exit 2).
    for (k, v) in [
        ("LONGSHIP_STORAGE__S3__BUCKET", ""),
        ("LONGSHIP_STORAGE__S3__ALLOW_HTTP", "false"),
    ] {
        let out = longship()
            .arg("serve")
            .env("LONGSHIP_STORAGE__BACKEND", "s3")
            .env("LONGSHIP_STORAGE__S3__ENDPOINT", "http://127.0.0.1:8333")
            .env("LONGSHIP_STORAGE__S3__BUCKET", "b")
            .env("LONGSHIP_STORAGE__S3__ALLOW_HTTP", "true")
            .env(k, v)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{k}={v}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("storage.s3"), "{err}");
    }
}

#[test]
fn s3_api_key_server_started_during_an_outage_serves_health_and_loads_when_the_store_returns() {
    let Some(sw) = SeaweedFs::start() else { return };
    let st = Storage::new();
    let prefix = format!("late-{}", uuid::Uuid::new_v4().simple());
    sw.stop();
    let opts = opts_for(&sw, &prefix)
        .env("LONGSHIP_STORAGE__S3__REQUEST_TIMEOUT_MS", "1000")
        .env("LONGSHIP_STORAGE__S3__MAX_RETRIES", "0");
    let s = Server::start_live(&st, opts);
    // Alive and honest: live, not ready, keyed requests refused with 503 (never a 401).
    assert_eq!(s.get("/health", None).status, 200);
    let r = s.get("/ready", None);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["reason"], "initializing");
    let r = s.get("/api/v1/system/status", Some(ROOT_KEY));
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(r.header("Retry-After").is_some());

    sw.resume();
    let r = ready_becomes(&s, 200, Duration::from_secs(60));
    assert_eq!(r.status, 200, "loads once the store is back: {:?}", r.body);
    let created = s.post(
        "/api/v1/admin/accounts",
        Some(ROOT_KEY),
        serde_json::json!({"account_id": "late", "admin_user_id": "alice"}),
    );
    assert_eq!(created.status, 200, "{:?}", created.body);
}
