//! Regression tests of issue #25 items 1 and 2: one account cannot make the memory budget
//! refuse or stall another. Each test has an attacker account and a victim account, through
//! the real binary; bounds are seconds, the figures live in bench/budget_bench.py.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::create_account;
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

/// Open a request whose headers announce a body and send `sent` bytes of it, then nothing.
fn stalled(s: &Server, path: &str, key: &str, headers: &str, sent: usize) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n{headers}\r\n");
    c.write_all(head.as_bytes()).expect("send head");
    if sent > 0 {
        c.write_all(&vec![b' '; sent])
            .expect("send part of the body");
    }
    c
}

/// The status line and body the server sent on `c`, waiting at most `within`.
fn answer(c: &mut TcpStream, within: Duration) -> String {
    c.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = vec![0u8; 8192];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).to_string()
}

fn admission(s: &Server) -> Value {
    let r = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    r.result()["components"]["admission"]["status"].clone()
}

fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Every request with a body the victim makes in a day, each within `bound`.
fn victim_is_served(s: &Server, key: &str, round: usize, bound: Duration) {
    let calls: Vec<(&str, String, Value)> = vec![
        (
            "find",
            "/api/v1/search/find".into(),
            json!({"query": "victim"}),
        ),
        (
            "write",
            "/api/v1/content/write".into(),
            json!({"uri": format!("viking://resources/v{round}.md"), "content": "victim note", "mode": "create"}),
        ),
        (
            "grep",
            "/api/v1/search/grep".into(),
            json!({"uri": "viking://resources", "pattern": "victim"}),
        ),
        (
            "session",
            "/api/v1/sessions".into(),
            json!({"session_id": format!("s{round}")}),
        ),
        (
            "message",
            format!("/api/v1/sessions/s{round}/messages"),
            json!({"role": "user", "content": "hello"}),
        ),
    ];
    for (what, path, body) in calls {
        let t = Instant::now();
        let r = s.post(&path, Some(key), body);
        assert_eq!(r.status, 200, "victim {what}: {:?}", r.body);
        assert!(t.elapsed() < bound, "victim {what} took {:?}", t.elapsed());
    }
    // The root's admin calls too.
    let t = Instant::now();
    let r = s.post(
        "/api/v1/admin/accounts",
        Some(ROOT_KEY),
        json!({"account_id": format!("third{round}"), "admin_user_id": "a"}),
    );
    assert_eq!(r.status, 200, "root create account: {:?}", r.body);
    assert!(t.elapsed() < bound, "root call took {:?}", t.elapsed());
}

/// Item 1: idle uploads and idle announced bodies of one account hold nothing and are cut off;
/// an account holding real bodies is refused past its share while others are served.
#[test]
fn idle_and_large_bodies_of_one_account_never_refuse_another() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_SERVER__BODY_IDLE_TIMEOUT_SECS", "3")
            .env(
                "LONGSHIP_SERVER__MAX_INFLIGHT_BODY_BYTES_PER_ACCOUNT",
                &(48u64 << 20).to_string(),
            ),
    );
    let attacker = create_account(&s, "attacker", "mallory");
    let victim = create_account(&s, "victim", "alice");
    victim_is_served(&s, &victim, 0, Duration::from_secs(5));

    // 32 uploads that sent their headers only, and 8 writes announcing 32 MiB that sent 1 byte.
    let upload_head =
        "Content-Type: multipart/form-data; boundary=zzz\r\nContent-Length: 104857600\r\n";
    let write_head = "Content-Type: application/json\r\nContent-Length: 33554432\r\n";
    let mut idle: Vec<TcpStream> = (0..32)
        .map(|_| {
            stalled(
                &s,
                "/api/v1/resources/temp_upload",
                &attacker,
                upload_head,
                0,
            )
        })
        .collect();
    idle.extend((0..8).map(|_| stalled(&s, "/api/v1/content/write", &attacker, write_head, 1)));
    // Until all 32 uploads are inside their handler, waiting for their bodies.
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = String::from_utf8_lossy(&s.get("/metrics", None).raw).to_string();
            m.lines()
                .any(|l| l.starts_with("longship_ingest{name=\"uploads_in_flight\"} 32"))
        }),
        "the idle uploads never reached their handler"
    );
    for round in 1..=2 {
        victim_is_served(&s, &victim, round, Duration::from_secs(5));
    }
    // They hold what arrived (at most a byte each), not what they announced.
    let held = admission(&s)["in_flight_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(held <= 8, "{}", admission(&s));
    // The stalled bodies are cut off with 408 after the idle timeout (3 s).
    let t = Instant::now();
    for c in idle.iter_mut() {
        let a = answer(c, Duration::from_secs(20));
        assert!(a.starts_with("HTTP/1.1 408"), "{a}");
        assert!(a.contains("DEADLINE_EXCEEDED"), "{a}");
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());

    // Real bodies: the attacker's share (48 MiB) holds four 11 MiB halves of 12 MiB writes...
    let write_12 = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        12 << 20
    );
    let held: Vec<TcpStream> = (0..4)
        .map(|_| stalled(&s, "/api/v1/content/write", &attacker, &write_12, 11 << 20))
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || admission(&s)["in_flight_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 44 << 20)),
        "{}",
        admission(&s)
    );
    // ...so a fifth is refused from its headers, 429 with Retry-After...
    let mut fifth = stalled(&s, "/api/v1/content/write", &attacker, &write_12, 0);
    let a = answer(&mut fifth, Duration::from_secs(5));
    assert!(a.starts_with("HTTP/1.1 429"), "{a}");
    assert!(a.to_ascii_lowercase().contains("retry-after: 1"), "{a}");
    assert!(a.contains("max_inflight_body_bytes_per_account"), "{a}");
    // ...while the victim's ordinary and 8 MiB bodies are served.
    victim_is_served(&s, &victim, 3, Duration::from_secs(5));
    let big = "v".repeat(8 << 20);
    let r: Resp = s.post(
        "/api/v1/content/write",
        Some(&victim),
        json!({"uri": "viking://resources/big.md", "content": big, "mode": "create"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    drop(held);
    assert!(
        eventually(Duration::from_secs(10), || admission(&s)["in_flight_bytes"]
            == 0),
        "{}",
        admission(&s)
    );
}

/// Item 2: a find with `read_content` attaches a bounded, marked amount of content, and the
/// answers one account holds count against its share: past it 429, the victim is served.
#[test]
fn find_content_is_bounded_marked_and_charged() {
    let st = Storage::new();
    let per_hit = 1usize << 20;
    let per_answer = 24usize << 20;
    let s = Server::start(
        &st,
        Opts::default()
            .env(
                "LONGSHIP_SEARCH__FIND_CONTENT_MAX_BYTES_PER_HIT",
                &per_hit.to_string(),
            )
            .env(
                "LONGSHIP_SEARCH__FIND_CONTENT_MAX_BYTES",
                &per_answer.to_string(),
            )
            // Index only the head of each file: indexing is not what is tested.
            .env("LONGSHIP_SEARCH__MAX_INDEXED_BYTES", "4096"),
    );
    let attacker = create_account(&s, "attacker", "mallory");
    let victim = create_account(&s, "victim", "alice");
    let files = 40;
    let body = format!("needle {}", "x".repeat(per_hit + 1000));
    for i in 0..files {
        let r = s.post(
            "/api/v1/content/write",
            Some(&attacker),
            json!({"uri": format!("viking://resources/f{i}.md"), "content": body, "mode": "create"}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let find = json!({"query": "needle", "read_content": true, "limit": 1000});
    let mut hits = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            let r = s.post("/api/v1/search/find", Some(&attacker), find.clone());
            assert_eq!(r.status, 200, "{:?}", r.body);
            hits = r.result()["resources"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            hits.len() == files
        }),
        "only {} hits",
        hits.len()
    );
    let mut attached = 0;
    for h in &hits {
        let c = h["content"].as_str().expect("content");
        assert_eq!(h["content_truncated"], true, "{}", h["uri"]);
        let (text, note) = c.split_once("\n[content truncated").expect("marker");
        assert!(text.len() <= per_hit, "{}", text.len());
        assert!(note.contains("content/read"), "{note}");
        attached += text.len();
    }
    assert!(attached <= per_answer, "{attached}");
    assert!(attached >= per_answer - per_hit, "{attached}");
    // Hits past the answer's bound carry the marker alone.
    let last = hits
        .last()
        .and_then(|h| h["content"].as_str())
        .unwrap_or("");
    assert!(
        last.starts_with("\n[content truncated"),
        "{}",
        &last[..last.len().min(80)]
    );

    // Answers the attacker does not read stay held (and charged) while they wait to be sent.
    let req = find.to_string();
    let head = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        req.len()
    );
    let mut unread = Vec::new();
    for _ in 0..2 {
        let mut c = stalled(&s, "/api/v1/search/find", &attacker, &head, 0);
        c.write_all(req.as_bytes()).expect("send");
        unread.push(c);
    }
    assert!(
        eventually(Duration::from_secs(20), || admission(&s)["in_flight_bytes"]
            .as_u64()
            .is_some_and(|n| n >= 2 * (per_answer as u64 - per_hit as u64))),
        "{}",
        admission(&s)
    );
    // A third does not fit the attacker's 64 MiB share: 429 at once.
    let t = Instant::now();
    let r = s.post("/api/v1/search/find", Some(&attacker), find.clone());
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The victim's finds and writes are served meanwhile, and /health answers.
    victim_is_served(&s, &victim, 1, Duration::from_secs(5));
    let r = s.post(
        "/api/v1/search/find",
        Some(&victim),
        json!({"query": "victim", "read_content": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let t = Instant::now();
    assert_eq!(s.get("/health", None).status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Gone readers give their answers' bytes back.
    drop(unread);
    assert!(
        eventually(Duration::from_secs(10), || admission(&s)["in_flight_bytes"]
            == 0),
        "{}",
        admission(&s)
    );
}
