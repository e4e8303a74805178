//! Foundation: process, configuration, system endpoints, envelope conventions.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Opts, Server, Storage, ROOT_KEY};

fn longship() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_longship"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LONGSHIP_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn health_ready_status_and_envelope() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let h = s.get("/health", None);
    assert_eq!(h.status, 200);
    assert_eq!(h.body["status"], "ok");
    assert_eq!(h.body["auth_mode"], "api_key");
    assert!(h.body.get("role").is_none());
    // A bad key never flips /health (spec §13.15); the root key adds identity fields.
    assert_eq!(s.get("/health", Some("wrong")).status, 200);
    let h = s.get("/health", Some(ROOT_KEY));
    assert_eq!(h.body["role"], "root");

    let r = s.get("/ready", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["checks"]["agfs"]["checks"]["filesystem"], "ok");

    let st_resp = s.get("/api/v1/system/status", Some(ROOT_KEY));
    assert_eq!(st_resp.status, 200);
    assert_eq!(st_resp.result()["user"], "default");
    assert!(st_resp.body["time"].as_f64().is_some());
    assert!(st_resp.body.get("error").is_none());

    let missing = s.get("/api/v1/system/status", None);
    assert_eq!(missing.status, 401);
    assert_eq!(missing.code(), "UNAUTHENTICATED");
    let bad = s.get("/api/v1/system/status", Some("nope"));
    assert_eq!(bad.status, 401);
    assert_eq!(bad.body["error"]["message"], "Invalid API key");

    let nf = s.get("/api/v1/does-not-exist", Some(ROOT_KEY));
    assert_eq!(nf.status, 404);
    assert_eq!(nf.code(), "NOT_FOUND");
    let na = s.delete("/health", None);
    assert_eq!(na.status, 405);
    assert_eq!(na.body["status"], "error");
}

#[test]
fn observer_reports_pools_and_validates_format() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .arg("--workers")
            .arg("3")
            .arg("--storage-threads")
            .arg("5")
            .arg("--commit-threads")
            .arg("1"),
    );
    let o = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    assert_eq!(o.status, 200, "{:?}", o.body);
    assert_eq!(o.result()["is_healthy"], true);
    let pools = &o.result()["components"]["pools"]["status"];
    assert_eq!(pools["http_workers"], 3);
    assert_eq!(pools["storage"]["threads"], 5);
    assert_eq!(pools["commit"]["threads"], 1);
    let table = s.get("/api/v1/observer/system", Some(ROOT_KEY));
    assert!(table.result()["components"]["storage"]["status"].is_string());
    let bad = s.get("/api/v1/observer/system?format=xml", Some(ROOT_KEY));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), "INVALID_ARGUMENT");
    assert!(bad.body["error"]["details"]["validation_errors"].is_array());
    // Pool threads are named and exist.
    let task_dir = format!("/proc/{}/task", s.pid());
    let names: Vec<String> = std::fs::read_dir(task_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    for want in ["storage-0", "storage-4", "commit-0"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
}

#[test]
fn request_id_is_echoed_or_generated() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = s.raw("GET", "/health", &[("X-Request-ID", "trace:1/a.b-c")], b"");
    assert_eq!(r.header("x-request-id"), Some("trace:1/a.b-c"));
    let r = s.raw(
        "GET",
        "/health",
        &[("X-Request-ID", "bad id with spaces")],
        b"",
    );
    let generated = r.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 36, "uuid expected, got {generated}");
    let r = s.get("/health", None);
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn dev_mode_identity_headers() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = s.raw(
        "GET",
        "/api/v1/system/status",
        &[("X-OpenViking-User", "alice")],
        b"",
    );
    assert_eq!(r.result()["user"], "alice");
    let r = s.raw(
        "GET",
        "/api/v1/system/status",
        &[("X-OpenViking-User", "../evil")],
        b"",
    );
    assert_eq!(r.status, 400);
    let r = s.raw(
        "GET",
        "/api/v1/system/status",
        &[("X-OpenViking-Actor-Peer", "a/b")],
        b"",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn startup_errors_exit_2_with_one_line() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let cases: Vec<Vec<String>> = vec![
        vec!["--port".into(), s.port.to_string()],
        vec!["--host".into(), "0.0.0.0".into()],
        vec!["--storage-threads".into(), "0".into()],
        vec!["--config".into(), "/nonexistent/longship.toml".into()],
        vec!["--root-api-key".into(), "".into()],
    ];
    for extra in cases {
        let out = longship()
            .arg("serve")
            .arg("--data-dir")
            .arg(st.path())
            .args(&extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
    }
    let out = longship()
        .args(["serve", "--data-dir"])
        .arg(st.path())
        .env("LONGSHIP_SERVER__NO_SUCH_KEY", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_layers_and_masking() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[server]\nport = 7001\nworkers = 3\n[auth]\nroot_api_key = \"file-secret\"\n",
    )
    .unwrap();
    let out = longship()
        .arg("config")
        .arg("--config")
        .arg(&file)
        .env("LONGSHIP_SERVER__PORT", "7002")
        .env("LONGSHIP_POOLS__STORAGE_THREADS", "6")
        .arg("--storage-threads")
        .arg("7")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        v["server"]["port"].as_integer(),
        Some(7002),
        "env beats file"
    );
    assert_eq!(
        v["server"]["workers"].as_integer(),
        Some(3),
        "file beats defaults"
    );
    assert_eq!(
        v["pools"]["storage_threads"].as_integer(),
        Some(7),
        "cli beats env"
    );
    assert!(!text.contains("file-secret"));
    let out = longship().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("longship"));
}

#[test]
fn sigterm_exits_cleanly() {
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::dev());
    assert_eq!(s.sigterm(Duration::from_secs(20)), Some(0));
    assert!(s.log_text().contains("shutdown complete"));
}

#[test]
fn sigint_exits_cleanly_like_sigterm() {
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::dev());
    assert_eq!(s.sigint(Duration::from_secs(20)), Some(0));
    let log = s.log_text();
    assert!(log.contains("SIGINT"), "{log}");
    assert!(log.contains("shutdown complete"), "{log}");
}

#[test]
fn ready_reports_storage_failure_and_recovers() {
    let st = Storage::private();
    let s = Server::start(&st, Opts::default());
    assert_eq!(s.get("/ready", None).status, 200);
    st.take_down();
    let r = s.get("/ready", None);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["status"], "not_ready");
    let fs_check = r.body["checks"]["agfs"]["checks"]["filesystem"]
        .as_str()
        .unwrap();
    assert!(fs_check.starts_with("error: "), "{fs_check}");
    // Liveness never depends on storage.
    assert_eq!(s.get("/health", None).status, 200);
    let o = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    assert_eq!(o.result()["is_healthy"], false);
    let errors = o.result()["errors"].as_array().cloned().unwrap_or_default();
    for expected in ["storage has errors", "filesystem has errors"] {
        assert!(errors.contains(&serde_json::json!(expected)), "{errors:?}");
    }
    st.bring_back();
    assert_eq!(s.get("/ready", None).status, 200);
}

#[test]
fn actor_peer_header_is_validated_on_data_routes_and_ignored_on_sessions() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let bad = [("X-OpenViking-Actor-Peer", "a/b")];
    let r = s.raw("GET", "/api/v1/fs/ls?uri=viking://resources", &bad, b"");
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = s.raw("GET", "/api/v1/sessions", &bad, b"");
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// `GET /openapi.json` is served by the real binary without a key (api_key mode), as OpenAPI
/// 3.1 JSON naming the routes clients use, and its operations need a key where the route does.
#[test]
fn openapi_document_is_served_without_a_key() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let r = s.get("/openapi.json", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        r.body["openapi"]
    );
    let paths = &r.body["paths"];
    for (path, method) in [
        ("/api/v1/search/find", "post"),
        ("/api/v1/sessions/{sid}/commit", "post"),
        (
            "/api/v1/admin/accounts/{account_id}/users/{user_id}/role",
            "put",
        ),
        ("/api/v1/fs", "delete"),
        ("/openapi.json", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    let find = &paths["/api/v1/search/find"]["post"];
    assert!(find["security"].is_array(), "{find}");
    assert!(paths["/health"]["get"].get("security").is_none());
    let schema = &r.body["components"]["schemas"]["FindBody"];
    assert_eq!(schema["additionalProperties"], false, "{schema}");
    assert!(schema["properties"]["limit"].is_object(), "{schema}");
}
