//! Regression tests of issue #11: no single request may freeze or exhaust the server, no
//! backend detail in errors, every documented bound met. One test per defect, through the real
//! binary; bounds are generous (about a second), the precise figures live in bench/.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Opts, Resp, Server, Storage};

/// A dev-mode caller (account and user from headers).
fn call(s: &Server, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
    s.raw(
        method,
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-OpenViking-Account", "acme"),
            ("X-OpenViking-User", "alice"),
        ],
        body.unwrap_or_default(),
    )
}

fn post(s: &Server, path: &str, body: &Value) -> Resp {
    call(s, "POST", path, Some(body.to_string().as_bytes()))
}

/// Polls `/health` until stopped; returns the slowest answer seen.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Duration>>,
}

impl HealthWatch {
    fn start(s: &Server) -> Self {
        let url = s.url("/health");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            // Bounded: at most 2,000 probes.
            for _ in 0..2000 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = ureq::get(&url).timeout(Duration::from_secs(30)).call();
                let took = t.elapsed();
                assert!(r.is_ok(), "/health failed: {r:?}");
                worst = worst.max(took);
                std::thread::sleep(Duration::from_millis(20));
            }
            worst
        });
        HealthWatch {
            stop,
            handle: Some(handle),
        }
    }

    fn worst(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("health thread"))
            .unwrap_or_default()
    }
}

fn assert_refused(r: &Resp, status: u16, code: &str, took: Duration, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", r.body);
    assert_eq!(r.code(), code, "{what}: {:?}", r.body);
    assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    assert!(r.raw.len() < 4096, "{what}: the error echoes the input");
}

/// Defect 1: a megabyte URI is refused at once, linear work only, and never stalls `/health`.
#[test]
fn long_uris_are_refused_at_once_and_health_stays_up() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let watch = HealthWatch::start(&s);
    let huge = format!("viking://resources/{}x.md", "a/".repeat(800_000));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (url, body) = (
                s.url("/api/v1/search/grep"),
                json!({"uri": huge, "pattern": "x"}).to_string(),
            );
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = ureq::post(&url)
                    .timeout(Duration::from_secs(60))
                    .set("Content-Type", "application/json")
                    .set("X-OpenViking-Account", "acme")
                    .set("X-OpenViking-User", "alice")
                    .send_bytes(body.as_bytes());
                let status = match r {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(code, _)) => code,
                    Err(e) => panic!("{e}"),
                };
                (status, t.elapsed())
            })
        })
        .collect();
    for t in threads {
        let (status, took) = t.join().expect("client thread");
        assert_eq!(status, 400);
        assert!(took < Duration::from_secs(3), "1.6 MB URI took {took:?}");
    }
    // Just over each documented limit, on every kind of URI input.
    let long = format!("viking://resources/{}", "a".repeat(4100));
    let deep = format!("viking://resources/{}x", "a/".repeat(300));
    for uri in [&long, &deep] {
        for (path, body) in [
            ("/api/v1/fs/mkdir", json!({"uri": uri})),
            ("/api/v1/search/grep", json!({"uri": uri, "pattern": "x"})),
            ("/api/v1/content/write", json!({"uri": uri, "content": "x"})),
            (
                "/api/v1/fs/mv",
                json!({"from_uri": uri, "to_uri": "viking://resources/b"}),
            ),
        ] {
            let t = Instant::now();
            let r = post(&s, path, &body);
            assert_refused(&r, 400, "INVALID_URI", t.elapsed(), path);
        }
        let r = call(&s, "GET", &format!("/api/v1/fs/stat?uri={uri}"), None);
        assert_eq!(r.status, 400, "{:?}", r.body);
    }
    // A URI at the limits is served.
    let at_limit = format!("viking://resources/{}x.md", "a/".repeat(254));
    let r = post(
        &s,
        "/api/v1/content/write",
        &json!({"uri": at_limit, "content": "deep"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // A 30 MB JSON body is decoded off the HTTP workers: /health is not held up meanwhile.
    let pad = "p".repeat(30 << 20);
    let body = json!({"uri": "viking://resources", "pattern": "x", "pad": pad}).to_string();
    let t = Instant::now();
    let r = call(&s, "POST", "/api/v1/search/grep", Some(body.as_bytes()));
    assert!(r.status < 500, "{:?}", r.body);
    assert!(t.elapsed() < Duration::from_secs(10));
    let worst = watch.worst();
    assert!(worst < Duration::from_secs(1), "/health took {worst:?}");
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Defect 2: a long pattern is a 400 before any compilation; patterns within the limit stay
/// bounded by the regex size limits (400, never gigabytes).
#[test]
fn grep_patterns_are_bounded() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = post(
        &s,
        "/api/v1/content/write",
        &json!({"uri": "viking://resources/a.md", "content": "alpha\nbeta\n"}),
    );
    assert_eq!(r.status, 200);
    let watch = HealthWatch::start(&s);
    let alternation: Vec<String> = (0..2_000_000).map(|i| format!("word{i}")).collect();
    let bomb = alternation.join("|");
    assert!(bomb.len() > 18_000_000);
    let body = json!({"uri": "viking://resources", "pattern": bomb}).to_string();
    let t = Instant::now();
    let r = call(&s, "POST", "/api/v1/search/grep", Some(body.as_bytes()));
    assert_refused(&r, 400, "INVALID_ARGUMENT", t.elapsed(), "18 MB pattern");
    // Inside the length limit, still refused by the compiled-size limits.
    for pattern in [
        "(a{1000}){1000}",
        "((((a{100}){100}){100}){100})",
        "\\w{5000}",
    ] {
        let t = Instant::now();
        let r = post(
            &s,
            "/api/v1/search/grep",
            &json!({"uri": "viking://resources", "pattern": pattern}),
        );
        assert_refused(&r, 400, "INVALID_ARGUMENT", t.elapsed(), pattern);
    }
    // A long literal alternation just under the limit works and stays small.
    let words: Vec<String> = (0..1200).map(|i| format!("w{i}")).collect();
    let r = post(
        &s,
        "/api/v1/search/grep",
        &json!({"uri": "viking://resources", "pattern": format!("beta|{}", words.join("|"))}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["count"], 1);
    let worst = watch.worst();
    assert!(worst < Duration::from_secs(1), "/health took {worst:?}");
    let peak = peak_rss_mib(s.pid());
    assert!(peak < 1024, "peak RSS {peak} MiB");
}

/// Open a request (in `account`) whose body is announced but only partly sent (`sent`
/// bytes): it holds what arrived.
fn half_sent(s: &Server, account: &str, len: usize, sent: usize) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let head = format!(
        "POST /api/v1/content/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-OpenViking-Account: {account}\r\nX-OpenViking-User: alice\r\nContent-Length: {len}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).expect("send head");
    c.write_all(&vec![b' '; sent]).expect("send some body");
    c
}

/// Defect 3: body bytes in flight are bounded; past the budget 503 + Retry-After at once,
/// before the body is read; the budget comes back when those requests end. (Issue #25: bodies
/// hold what arrived, so the holders here send most of theirs.)
#[test]
fn inflight_body_budget_sheds_with_503_and_recovers() {
    let st = Storage::new();
    let budget = 80u64 << 20;
    let s = Server::start(
        &st,
        Opts::dev()
            .env(
                "LONGSHIP_SERVER__MAX_INFLIGHT_BODY_BYTES",
                &budget.to_string(),
            )
            .env(
                "LONGSHIP_SERVER__SMALL_BODY_RESERVE_BYTES",
                &(4u64 << 20).to_string(),
            ),
    );
    let size = 30 << 20;
    let held: Vec<TcpStream> = ["h1", "h2"]
        .iter()
        .map(|a| half_sent(&s, a, size, 29 << 20))
        .collect();
    // Until both holders' bytes have arrived and been charged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(&s, "GET", "/api/v1/observer/system?format=json", None);
        let held_bytes = r.result()["components"]["admission"]["status"]["in_flight_bytes"]
            .as_u64()
            .unwrap_or(0);
        if held_bytes >= 58 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holders never charged: {held_bytes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let watch = HealthWatch::start(&s);
    // A third announced 30 MB body does not fit the 22 MiB left: refused from its headers.
    let mut third = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = Instant::now();
    third
        .write_all(
            format!(
                "POST /api/v1/content/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 X-OpenViking-Account: h3\r\nX-OpenViking-User: alice\r\nContent-Length: {size}\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("send head");
    let mut answer = vec![0u8; 4096];
    let n = third.read(&mut answer).expect("an answer before the body");
    let head = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(head.contains("UNAVAILABLE"), "{head}");
    // Small requests still fit and are served meanwhile.
    let r = post(
        &s,
        "/api/v1/content/write",
        &json!({"uri": "viking://resources/small.md", "content": "small"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The held bodies end (client gone): their budget returns.
    drop(held);
    let content = "c".repeat(size - 200);
    let body = json!({"uri": "viking://resources/big.md", "content": content}).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call(&s, "POST", "/api/v1/content/write", Some(body.as_bytes()));
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(Instant::now() < deadline, "budget never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let worst = watch.worst();
    assert!(worst < Duration::from_secs(1), "/health took {worst:?}");
}

/// Defect 6: a session's own files cannot be changed through fs; a session damaged anyway
/// answers a clear error and can still be deleted.
#[test]
fn session_files_are_protected_and_damaged_sessions_deletable() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = post(&s, "/api/v1/sessions", &json!({"session_id": "s1"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = post(
        &s,
        "/api/v1/sessions/s1/messages",
        &json!({"role": "user", "content": "hello"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = post(
        &s,
        "/api/v1/fs/mkdir",
        &json!({"uri": "viking://resources/d"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let session = st.at("acme/user/alice/sessions/s1");
    let before = session.digest();
    for name in ["messages.jsonl", ".meta.json", "history"] {
        let uri = format!("viking://session/s1/{name}");
        let r = call(&s, "DELETE", &format!("/api/v1/fs?uri={uri}"), None);
        assert_eq!(r.status, 400, "rm {name}: {:?}", r.body);
        let r = post(&s, "/api/v1/fs/mkdir", &json!({"uri": uri}));
        assert_eq!(r.status, 400, "mkdir {name}: {:?}", r.body);
        let r = post(
            &s,
            "/api/v1/fs/mv",
            &json!({"from_uri": "viking://resources/d", "to_uri": uri}),
        );
        assert_eq!(r.status, 400, "mv onto {name}: {:?}", r.body);
        let r = post(
            &s,
            "/api/v1/fs/mv",
            &json!({"from_uri": uri, "to_uri": "viking://resources/x"}),
        );
        assert_eq!(r.status, 400, "mv of {name}: {:?}", r.body);
    }
    let r = post(
        &s,
        "/api/v1/fs/mv",
        &json!({"from_uri": "viking://resources/d", "to_uri": "viking://session/s2"}),
    );
    assert_eq!(r.status, 400, "mv onto a session: {:?}", r.body);
    assert_eq!(session.digest(), before, "session files changed");
    assert_eq!(call(&s, "GET", "/api/v1/sessions/s1", None).status, 200);

    // Damaged outside the API: the live messages file replaced by a directory.
    session.join("messages.jsonl").remove(false);
    session.join("messages.jsonl").join("x").write("junk");
    for (method, path) in [
        ("GET", "/api/v1/sessions/s1"),
        ("GET", "/api/v1/sessions/s1/context"),
        ("POST", "/api/v1/sessions/s1/commit"),
    ] {
        let r = call(&s, method, path, Some(b"{}"));
        assert!(r.status < 500, "{method} {path}: {:?}", r.body);
    }
    let r = post(
        &s,
        "/api/v1/sessions/s1/messages",
        &json!({"role": "user", "content": "more"}),
    );
    assert!(r.status < 500, "{:?}", r.body);
    // On S3 a "directory" is only a key prefix, so a messages object can still be written
    // beside it; on disk the directory is in the way.
    if !st.is_s3() {
        assert!(r.status >= 400, "{:?}", r.body);
    }
    // A corrupt meta as well.
    session.join(".meta.json").write("{not json");
    let r = call(&s, "GET", "/api/v1/sessions/s1", None);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("damaged"));
    let r = call(&s, "DELETE", "/api/v1/sessions/s1", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!session.exists());
    assert_eq!(call(&s, "GET", "/api/v1/sessions/s1", None).status, 404);
}

/// Defect 10: a plain `..` in content/write is 400 INVALID_ARGUMENT like its encoded form.
#[test]
fn write_with_dot_dot_is_invalid_argument() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    for uri in [
        "viking://resources/../x.md",
        "viking://resources/a/../../x.md",
        "viking://resources/./x.md",
        "viking://resources/%2e%2e/x.md",
    ] {
        let r = post(
            &s,
            "/api/v1/content/write",
            &json!({"uri": uri, "content": "x"}),
        );
        assert_eq!(r.status, 400, "{uri}: {:?}", r.body);
        assert_eq!(r.code(), "INVALID_ARGUMENT", "{uri}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("invalid uri: Unsafe"),
            "{uri}: {:?}",
            r.body
        );
    }
}

/// Defect 5: during a storage outage every path (auth, admin, sessions, tasks, readiness)
/// answers with the service and the kind of failure, never a path, key, URL or bucket, and
/// never a doubled prefix.
#[test]
fn storage_outage_errors_name_the_service_not_the_backend() {
    use base64::Engine as _;
    let st = Storage::private();
    let s = Server::start(&st, Opts::default());
    let key = crate::harness::api::create_account(&s, "acme", "alice");
    let r = s.post("/api/v1/sessions", Some(&key), json!({"session_id": "s1"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Everything that names the store or its layout.
    let mut secrets: Vec<String> = vec![
        st.path().display().to_string(),
        "/local".into(),
        "acme/".into(),
        "_system".into(),
        "users.json".into(),
        "http://".into(),
        "retry".into(),
    ];
    for (k, v) in st.server_env() {
        if k.ends_with("ENDPOINT") || k.ends_with("BUCKET") || k.ends_with("PREFIX") {
            secrets.push(v);
        }
    }
    st.take_down();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let fake = format!("{}.{}.{}", b64("acme"), b64("mallory"), "k".repeat(43));
    let root = Some(crate::harness::ROOT_KEY);
    let answers = [
        ("fake key", s.get("/api/v1/system/status", Some(&fake))),
        ("list accounts", s.get("/api/v1/admin/accounts", root)),
        (
            "list users",
            s.get("/api/v1/admin/accounts/acme/users", root),
        ),
        (
            "add user",
            s.post(
                "/api/v1/admin/accounts/acme/users",
                root,
                json!({"user_id": "bob", "role": "user"}),
            ),
        ),
        ("get session", s.get("/api/v1/sessions/s1", Some(&key))),
        (
            "add message",
            s.post(
                "/api/v1/sessions/s1/messages",
                Some(&key),
                json!({"role": "user", "content": "x"}),
            ),
        ),
        ("list tasks", s.get("/api/v1/tasks", Some(&key))),
        (
            "ls",
            s.get("/api/v1/fs/ls?uri=viking://resources", Some(&key)),
        ),
        ("ready", s.get("/ready", None)),
    ];
    let mut unavailable = 0;
    for (what, r) in &answers {
        assert!(r.status < 500 || r.status == 503, "{what}: {:?}", r.body);
        let text = String::from_utf8_lossy(&r.raw);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} reveals {secret:?}: {text}"
            );
        }
        assert_eq!(
            text.matches("Service unavailable").count(),
            usize::from(r.status == 503 && *what != "ready"),
            "{what}: {text}"
        );
        if r.status == 503 && *what != "ready" {
            unavailable += 1;
            assert_eq!(r.body["error"]["details"]["service"], "storage", "{what}");
            assert!(r.header("retry-after").is_some(), "{what}");
        }
    }
    if st.is_s3() {
        assert!(unavailable >= 4, "{answers:?}");
    }
    st.bring_back();
}

/// Defect 11 (cp): `POST /api/v1/fs/cp` under the mv rules: 409 on an existing target, 400
/// for a directory without `recursive`, tenant checks, and a whole copy of every file.
#[test]
fn fs_cp_copies_under_the_mv_rules() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = crate::harness::api::create_account(&s, "acme", "alice");
    let post = |_: &Server, path: &str, body: &Value| s.post(path, Some(&key), body.clone());
    let call = |_: &Server, _m: &str, path: &str, _b: Option<&[u8]>| s.get(path, Some(&key));
    for (uri, content) in [
        ("viking://resources/src/a.md", "alpha"),
        ("viking://resources/src/sub/b.md", "beta"),
        ("viking://resources/other.md", "other"),
    ] {
        let r = post(
            &s,
            "/api/v1/content/write",
            &json!({"uri": uri, "content": content}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let cp = |from: &str, to: &str, recursive: bool| {
        post(
            &s,
            "/api/v1/fs/cp",
            &json!({"from_uri": from, "to_uri": to, "recursive": recursive}),
        )
    };
    let r = cp(
        "viking://resources/src/a.md",
        "viking://resources/a2.md",
        false,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["from"], "viking://resources/src/a.md");
    assert_eq!(r.result()["to"], "viking://resources/a2.md");
    assert_eq!(r.result()["recursive"], false);
    let read = |uri: &str| call(&s, "GET", &format!("/api/v1/content/read?uri={uri}"), None);
    assert_eq!(read("viking://resources/a2.md").result(), "alpha");
    assert_eq!(read("viking://resources/src/a.md").result(), "alpha");
    // Never overwritten, never merged.
    let r = cp(
        "viking://resources/src/a.md",
        "viking://resources/other.md",
        false,
    );
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(read("viking://resources/other.md").result(), "other");
    let r = cp("viking://resources/src", "viking://resources/dst", false);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = cp("viking://resources/src", "viking://resources/dst", true);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(read("viking://resources/dst/sub/b.md").result(), "beta");
    assert_eq!(
        st.at("acme/resources/dst").digest(),
        st.at("acme/resources/src").digest()
    );
    let r = cp("viking://resources/src", "viking://resources/dst", true);
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = cp(
        "viking://resources/src",
        "viking://resources/src/sub/x",
        true,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = cp(
        "viking://resources/nope.md",
        "viking://resources/n.md",
        false,
    );
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = cp(
        "viking://resources/src/a.md",
        "viking://resources/no/dir/a.md",
        false,
    );
    assert_eq!(r.status, 404, "{:?}", r.body);
    // Tenant checks: another user's space is neither source nor target; another account's
    // data cannot be named at all.
    let r = cp(
        "viking://user/bob/memories/x.md",
        "viking://resources/x.md",
        false,
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = cp(
        "viking://resources/src/a.md",
        "viking://user/bob/a.md",
        false,
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = cp(
        "viking://resources/src/a.md",
        "viking://session/s1/messages.jsonl",
        false,
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(!st.exists("other/resources/a.md"));
}

fn whoami_timed(s: &Server, key: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = s.get("/api/v1/system/status", Some(key));
    (r.status, t.elapsed())
}

/// Defect 4: a key of an account deleted on another instance is refused within
/// `refresh_interval_ms` of the deletion, and a key naming an unknown account is never held a
/// whole interval (misses share rate-limited checks that start after they arrived).
#[test]
fn deleted_and_unknown_accounts_are_refused_promptly() {
    let st = Storage::new();
    // A long interval separates the fixed behaviour (refused within one interval, each 401
    // quick) from the old one (every miss held for the next marker check, up to 2 s apart, so
    // the first 401 came up to an interval + 2 s late) even on a loaded machine.
    let opts = Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "3000");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let key = crate::harness::api::create_account(&a, "gone", "alice");
    crate::harness::api::create_account(&a, "stays", "bob");
    assert_eq!(whoami_timed(&b, &key).0, 200);
    let r = a.delete(
        "/api/v1/admin/accounts/gone",
        Some(crate::harness::ROOT_KEY),
    );
    assert!(r.status == 200 || r.status == 202, "{:?}", r.body);
    let deleted = Instant::now();
    loop {
        let sent = deleted.elapsed();
        let (status, took) = whoami_timed(&b, &key);
        if status == 401 {
            // The documented bound (the interval) plus slack for the check itself.
            assert!(
                sent <= Duration::from_millis(4500),
                "refused only at {sent:?}"
            );
            assert!(took < Duration::from_millis(1000), "401 held {took:?}");
            break;
        }
        assert_eq!(status, 200);
        assert!(deleted.elapsed() < Duration::from_secs(10), "never refused");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every later request with that key, and keys of accounts nobody knows, answer quickly.
    for i in 0..10 {
        let ghost = longship::storage::keys::new_key(&format!("ghost{i}"), "u", None);
        for k in [&key, &ghost] {
            let (status, took) = whoami_timed(&b, k);
            assert_eq!(status, 401);
            assert!(took < Duration::from_millis(1000), "401 after {took:?}");
        }
    }
}

/// Defect 8: steady, announced admin traffic never makes the sweep warn; a change that was
/// really never announced still does, and is applied.
#[test]
fn sweep_warns_only_for_changes_older_than_the_interval() {
    let st = Storage::new();
    let opts = Opts::default().env("LONGSHIP_AUTH__SWEEP_INTERVAL_SECS", "1");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let admin = crate::harness::api::create_account(&a, "acme", "alice");
    let warning = "never announced";
    // About seven sweeps on B under announced writes on A; B sees no traffic meanwhile.
    let until = Instant::now() + Duration::from_secs(7);
    let mut i = 0;
    while Instant::now() < until {
        crate::harness::api::register(&a, &admin, "acme", &format!("u{i}"), "user");
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(i >= 5, "only {i} registrations");
    assert!(!b.log_text().contains(warning), "{}", b.log_text());
    // B catches up with every announced change (requests need fresh checks)...
    let generation = |s: &Server| {
        s.get(
            "/api/v1/observer/system?format=json",
            Some(crate::harness::ROOT_KEY),
        )
        .result()["components"]["auth"]["status"]["generation"]
            .as_u64()
            .unwrap_or(0)
    };
    let target = generation(&a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while generation(&b) < target {
        assert_eq!(whoami_timed(&b, &admin).0, 200);
        assert!(Instant::now() < deadline, "B never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // ...then a users.json change is written without its announcement (a writer killed in
    // between): the next sweep finds it, and it is still missing an interval later.
    let path = st.at("acme/_system/users.json");
    let mut doc: Value = serde_json::from_slice(&path.read().expect("users.json")).expect("json");
    doc["users"]
        .as_object_mut()
        .expect("users")
        .remove("u0")
        .expect("u0");
    path.write(serde_json::to_vec_pretty(&doc).expect("encode"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log_text().contains(warning) {
        assert!(
            Instant::now() < deadline,
            "the sweep never found it: {}",
            b.get(
                "/api/v1/observer/system?format=json",
                Some(crate::harness::ROOT_KEY)
            )
            .result()["components"]["auth"]["status"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Defect 9 (S3 only): a hung object store costs each call at most the per-operation
/// deadline, new work is shed at once with 503 + Retry-After while it hangs, /health stays
/// fast, and service resumes when the store answers again.
#[test]
fn a_hung_object_store_is_bounded_and_shed() {
    let st = Storage::private();
    if !st.is_s3() {
        eprintln!("SKIPPED: needs the S3 backend (IT_STORAGE_BACKEND=s3)");
        return;
    }
    let s = Server::start(
        &st,
        Opts::dev().env("LONGSHIP_STORAGE__S3__OPERATION_TIMEOUT_MS", "2000"),
    );
    let r = post(
        &s,
        "/api/v1/content/write",
        &json!({"uri": "viking://resources/a.md", "content": "alpha"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    st.freeze(true);
    let watch = HealthWatch::start(&s);
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = s.url("/api/v1/content/read?uri=viking://resources/a.md");
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = ureq::get(&url)
                    .set("X-OpenViking-Account", "acme")
                    .set("X-OpenViking-User", "alice")
                    .timeout(Duration::from_secs(60))
                    .call();
                let status = match r {
                    Ok(r) => r.status(),
                    Err(ureq::Error::Status(c, _)) => c,
                    Err(e) => panic!("{e}"),
                };
                (status, t.elapsed())
            })
        })
        .collect();
    for t in in_flight {
        let (status, took) = t.join().expect("reader");
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(5), "a hung call took {took:?}");
    }
    for _ in 0..5 {
        let t = Instant::now();
        let r = call(&s, "GET", "/api/v1/fs/ls?uri=viking://resources", None);
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(r.header("retry-after").is_some());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    let worst = watch.worst();
    assert!(worst < Duration::from_secs(1), "/health took {worst:?}");
    st.freeze(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = call(
            &s,
            "GET",
            "/api/v1/content/read?uri=viking://resources/a.md",
            None,
        );
        if r.status == 200 {
            assert_eq!(r.result(), "alpha");
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {:?}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Defect 11 (status): the observer reports, with real states, the components `ov status`
/// reads, in upstream's shapes, next to Longship's own.
#[test]
fn observer_reports_the_components_ov_status_reads() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    // Two finds, one with no hit: the retrieval rows count them.
    let r = s.post(
        "/api/v1/content/write",
        None,
        serde_json::json!({"uri": "viking://resources/obs.md", "content": "observer quokka"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    for q in ["quokka", "zzqnothingmatches"] {
        let r = s.post("/api/v1/search/find", None, serde_json::json!({"query": q}));
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = call(&s, "GET", "/api/v1/observer/system", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let components = &r.result()["components"];
    let retrieval = components["retrieval"]["status"].as_str().unwrap_or("");
    let cell = |metric: &str| {
        retrieval
            .lines()
            .find(|l| l.contains(metric))
            .and_then(|l| l.split('|').nth(2))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(cell("Total Queries"), "2", "{retrieval}");
    assert_eq!(cell("Zero-Result Queries"), "1", "{retrieval}");
    assert_eq!(cell("Zero-Result Rate"), "50.0%", "{retrieval}");
    let lock = components["lock"]["status"].as_str().unwrap_or("");
    assert!(lock.starts_with("No active locks."), "{lock}");
    for name in [
        "queue",
        "vikingdb",
        "models",
        "lock",
        "retrieval",
        "filesystem",
        "storage",
        "pools",
        "auth",
    ] {
        let c = &components[name];
        assert_eq!(c["name"], name);
        assert_eq!(c["is_healthy"], true, "{name}: {c}");
        assert!(c["status"].is_string(), "{name}: {c}");
    }
    let queue = components["queue"]["status"].as_str().unwrap_or("");
    assert!(queue.contains(" TOTAL "), "{queue}");
    assert!(queue.contains("In Progress"), "{queue}");
    assert!(components["filesystem"]["status"]
        .as_str()
        .unwrap_or("")
        .starts_with("Mount: /local"));
    let r = call(&s, "GET", "/api/v1/observer/system?format=json", None);
    let components = &r.result()["components"];
    assert!(components["queue"]["status"]["summary"]["pending"].is_u64());
    assert_eq!(
        components["vikingdb"]["status"]["summary"]["collection_count"],
        1
    );
    assert!(components["retrieval"]["status"]["docs"].is_u64());
    assert_eq!(components["retrieval"]["status"]["queries"], 2);
    assert_eq!(components["lock"]["status"]["active_locks"], 0);
    assert_eq!(
        components["filesystem"]["status"]["mounts"][0]["plugin"],
        if st.is_s3() { "s3" } else { "local" }
    );
}

/// Defect 7 (local backend): temporary files a killed writer left behind are removed at
/// startup once they are old enough; a fresh one (a live writer's, maybe on another instance
/// sharing the directory) is left alone.
#[test]
fn stale_temp_files_are_swept_at_startup() {
    let st = Storage::new();
    if st.is_s3() {
        eprintln!("SKIPPED: the S3 backend writes no temporary files");
        return;
    }
    let s = Server::start(&st, Opts::dev());
    let r = post(
        &s,
        "/api/v1/content/write",
        &json!({"uri": "viking://resources/docs/a.md", "content": "a"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    drop(s);
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    let plant = |rel: &str, old: bool| {
        let path = st.local(rel);
        std::fs::write(&path, vec![b'x'; 4096]).expect("plant");
        if old {
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(two_hours_ago).expect("set mtime");
        }
        path
    };
    let stale = [
        plant(".longship-tmp-0a1b2c", true),
        plant("acme/resources/docs/.longship-tmp-3d4e5f", true),
    ];
    let fresh = plant("acme/resources/docs/.longship-tmp-live", false);
    let s = Server::start(
        &st,
        Opts::dev().env("LONGSHIP_STORAGE__STALE_TEMP_SECS", "600"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while stale.iter().any(|p| p.exists()) {
        assert!(Instant::now() < deadline, "stale temporary files remain");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fresh.exists(), "a live writer's file was removed");
    assert!(st.local("acme/resources/docs/a.md").exists());
    let r = call(
        &s,
        "GET",
        "/api/v1/content/read?uri=viking://resources/docs/a.md",
        None,
    );
    assert_eq!(r.result(), "a");
}
