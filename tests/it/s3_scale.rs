//! Sessions on S3 at scale and under clock skew (issue 15), always on a real SeaweedFS: two
//! instances (one 90 s ahead under `faketime`) racing adds and commits on one session, kill -9
//! during appends and log compaction, and a 20,000-message session read back in order.
//!
//! Accounting is exact: every acknowledged message must be in the live log or in exactly one
//! completed archive, once; a message whose add failed must be nowhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use longship::storage::sessions::archive::{self, State};
use longship::storage::sessions::meta::SessionMeta;
use longship::storage::sessions::{live, SessionRef};
use longship::storage::Storage as _;

use crate::harness::{Opts, Server, Storage};
use crate::seaweed::{self, SeaweedFs};

const ACCOUNT: &str = "acme";
const USER: &str = "alice";

/// libfaketime (Debian package `faketime`), preloaded straight into the server process: the
/// `faketime` program forks, so killing it would leave the server running. In CI (or with
/// IT_REQUIRE_S3) its absence is a failure.
fn libfaketime() -> Option<String> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file());
    match found {
        Some(lib) => Some(lib.to_string()),
        None if seaweed::required() => {
            panic!("libfaketime (Debian package faketime) is required by the clock-skew test")
        }
        None => {
            eprintln!("SKIPPED: clock-skew test needs libfaketime (apt-get install faketime)");
            None
        }
    }
}

fn opts_for(sw: &SeaweedFs, prefix: &str) -> Opts {
    sw.server_env(prefix)
        .iter()
        .fold(Opts::dev(), |o, (k, v)| o.env(k, v))
}

/// One request; `None` when the connection failed (the server was killed).
fn send(base: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let res = ureq::post(&format!("{base}{path}"))
        .timeout(Duration::from_secs(60))
        .set("X-OpenViking-Account", ACCOUNT)
        .set("X-OpenViking-User", USER)
        .send_json(body.clone());
    match res {
        Ok(r) => Some((r.status(), r.into_json().unwrap_or(Value::Null))),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_json().unwrap_or(Value::Null))),
        Err(_) => None,
    }
}

fn retryable(code: u16) -> bool {
    code == 409 || code == 503
}

/// Add one message, retrying answers that say "retry" (bounded). `Some(true)`: acknowledged.
/// `Some(false)` never happens (other failures panic); `None`: the connection failed.
fn add_until_acked(base: &str, sid: &str, content: &str) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = json!({"role": "user", "content": content});
        let (code, v) = send(base, &format!("/api/v1/sessions/{sid}/messages"), &body)?;
        match code {
            200 => return Some(true),
            c if retryable(c) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            c => panic!("add {content}: {c} {v}"),
        }
    }
}

/// Every message of the session as stored: completed archives in order, then the live log.
fn stored_messages(store: &dyn longship::storage::Storage, sid: &str) -> Vec<Value> {
    let s = SessionRef::new(ACCOUNT, USER, sid);
    let mut out = Vec::new();
    for (_, name) in archive::list(store, &s).expect("list archives") {
        let dir = s.archive(&name).unwrap();
        match archive::state(store, &dir).expect("archive state") {
            State::Pending => panic!("{name} left pending"),
            State::Failed(_) => {}
            State::Done(_) => {
                let path = dir.join(archive::MESSAGES).unwrap();
                if store.stat(&path).unwrap().is_some() {
                    out.extend(live::read_messages(store, &path).expect("archive messages"));
                }
            }
        }
    }
    let meta = SessionMeta::load(store, &s)
        .expect("meta")
        .expect("session exists");
    assert!(meta.internal.pending_commit.is_none(), "commit marker left");
    out.extend(live::read_live_messages(store, &s, &meta).expect("live messages"));
    out
}

fn content_of(m: &Value) -> String {
    m["parts"][0]["text"]
        .as_str()
        .or_else(|| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Each acknowledged content exactly once, nothing else (except `maybe`: at most once), and
/// each writer's messages in the order it had them acknowledged.
fn assert_exact(stored: &[Value], acked: &[String], maybe: &[String]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for m in stored {
        *count.entry(content_of(m)).or_default() += 1;
    }
    let lost: Vec<&String> = acked.iter().filter(|c| !count.contains_key(*c)).collect();
    let dup: Vec<(&String, &usize)> = count.iter().filter(|(_, n)| **n > 1).collect();
    let stray: Vec<&String> = count
        .keys()
        .filter(|c| !acked.contains(c) && !maybe.contains(c))
        .collect();
    assert!(
        lost.is_empty() && dup.is_empty() && stray.is_empty(),
        "{} stored; lost {} {:?}; duplicated {:?}; never acknowledged {:?}",
        stored.len(),
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>(),
        dup.iter().take(10).collect::<Vec<_>>(),
        stray.iter().take(10).collect::<Vec<_>>()
    );
    // Per writer (content prefix), stored order = acknowledged order.
    let position: HashMap<String, usize> = stored
        .iter()
        .enumerate()
        .map(|(i, m)| (content_of(m), i))
        .collect();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for c in acked {
        let writer = c.split('-').next().unwrap_or_default();
        let at = position[c];
        if let Some(prev) = last.insert(writer, at) {
            assert!(
                prev < at,
                "{c} stored before an earlier message of {writer}"
            );
        }
    }
}

/// Two instances over one bucket add `per_instance` messages each to one session while both
/// commit it now and then; `skew` is extra environment for the second one (its clock shifted).
fn race(skew: Option<&[(&str, &str)]>, per_instance: usize) {
    let Some(sw) = seaweed::shared() else { return };
    let st = Storage::new();
    let prefix = format!("race-{}", uuid::Uuid::new_v4().simple());
    let a = Server::start(&st, opts_for(&sw, &prefix));
    let b_opts = skew
        .unwrap_or_default()
        .iter()
        .fold(opts_for(&sw, &prefix), |o, (k, v)| o.env(k, v));
    let b = Server::start(&st, b_opts);
    if skew.is_some() {
        // The skew is real: the second instance's HTTP `Date` runs ahead of the first's.
        let date = |s: &Server| {
            let r = s.get("/health", None);
            let raw = r.header("date").expect("Date header").to_string();
            chrono::DateTime::parse_from_rfc2822(&raw).expect("HTTP date")
        };
        let ahead = (date(&b) - date(&a)).num_seconds();
        assert!(
            (80..=100).contains(&ahead),
            "second instance is {ahead} s ahead"
        );
    }
    let sid = format!("race{}", uuid::Uuid::new_v4().simple());
    let bases = [a.url(""), b.url("")];
    let acked = Arc::new(Mutex::new(Vec::new()));
    let adding = Arc::new(AtomicUsize::new(bases.len()));
    let commits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, base) in bases.iter().enumerate() {
        let (url, session, acked, adding) =
            (base.clone(), sid.clone(), acked.clone(), adding.clone());
        threads.push(std::thread::spawn(move || {
            let (base, sid) = (url, session);
            let tag = ["a", "b"][i];
            for n in 0..per_instance {
                let content = format!("{tag}-{n:05}");
                assert_eq!(add_until_acked(&base, &sid, &content), Some(true));
                acked.lock().unwrap().push(content);
            }
            adding.fetch_sub(1, Ordering::SeqCst);
        }));
        let (base, sid, commits, stop) = (base.clone(), sid.clone(), commits.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut round = 0u64;
            let deadline = Instant::now() + Duration::from_secs(150);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(120 + 37 * i as u64));
                round += 1;
                let keep = [0, 3, 0, 1][(round % 4) as usize];
                let body = json!({ "keep_recent_count": keep });
                match send(&base, &format!("/api/v1/sessions/{sid}/commit"), &body) {
                    Some((200, v)) if v["result"]["status"] == "accepted" => {
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Some((200, _)) => {}
                    Some((c, _)) if retryable(c) || c == 404 => {}
                    other => panic!("commit: {other:?}"),
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(170);
    while adding.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        2 * per_instance,
        "every add acknowledged in time"
    );
    assert!(
        commits.load(Ordering::SeqCst) >= 2,
        "commits raced the adds"
    );
    let store =
        longship::storage::backend::s3::S3Storage::open(&sw.settings(&prefix)).expect("open");
    let stored = stored_messages(&store, &sid);
    assert_exact(&stored, &acked, &[]);
    for s in [&a, &b] {
        let log = s.log_text();
        assert!(
            !log.contains("took over a lock lease"),
            "a live lease was taken over:\n{log}"
        );
    }
}

#[test]
fn skewed_clock_races_lose_and_duplicate_no_message() {
    let Some(lib) = libfaketime() else { return };
    // The second instance's clock runs 90 s ahead (wall clock; intervals are unaffected).
    race(Some(&[("LD_PRELOAD", &lib), ("FAKETIME", "+90s")]), 250);
}

#[test]
fn two_instances_adding_while_commits_race_account_exactly() {
    race(None, 150);
}

/// kill -9 while messages are being added, several times, at moments that fall on log
/// compactions (every 32 segments) too; what was acknowledged survives exactly once.
#[test]
fn kill9_during_appends_and_compaction_keeps_every_acknowledged_message_once() {
    let Some(sw) = seaweed::shared() else { return };
    let st = Storage::new();
    let prefix = format!("kill-{}", uuid::Uuid::new_v4().simple());
    let sid = format!("kill{}", uuid::Uuid::new_v4().simple());
    let mut acked: Vec<String> = Vec::new();
    let mut maybe: Vec<String> = Vec::new();
    let mut n = 0usize;
    // Kill once 31, 63+... acknowledgements are in: the add in flight is the one compacting.
    for (round, kill_after) in [31usize, 20, 33, 45].into_iter().enumerate() {
        let mut s = Server::start(&st, opts_for(&sw, &prefix));
        let base = s.url("");
        let in_flight = Arc::new(Mutex::new(None::<String>));
        let done = Arc::new(Mutex::new(Vec::<String>::new()));
        let start = n;
        let adder = {
            let (base, sid, in_flight, done) =
                (base.clone(), sid.clone(), in_flight.clone(), done.clone());
            std::thread::spawn(move || {
                for i in start..start + 500 {
                    let content = format!("k-{i:05}");
                    *in_flight.lock().unwrap() = Some(content.clone());
                    match add_until_acked(&base, &sid, &content) {
                        Some(true) => done.lock().unwrap().push(content),
                        _ => return,
                    }
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while done.lock().unwrap().len() < kill_after && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.kill9();
        adder.join().expect("adder");
        let done = done.lock().unwrap().clone();
        assert!(done.len() >= kill_after, "round {round}: too slow");
        n = start + 500;
        if let Some(c) = in_flight.lock().unwrap().clone() {
            if !done.contains(&c) {
                maybe.push(c);
            }
        }
        acked.extend(done);
    }
    let s = Server::start(&st, opts_for(&sw, &prefix));
    let (code, v) = send(
        &s.url(""),
        &format!("/api/v1/sessions/{sid}/commit"),
        &json!({"keep_recent_count": 2}),
    )
    .expect("commit");
    assert_eq!(code, 200, "{v}");
    let store =
        longship::storage::backend::s3::S3Storage::open(&sw.settings(&prefix)).expect("open");
    let stored = stored_messages(&store, &sid);
    assert_exact(&stored, &acked, &maybe);
}

/// 20,000 messages (in batches, as agents add them) read back complete and in order, from
/// the store and through the API.
#[test]
fn twenty_thousand_message_session_reads_back_complete_and_in_order() {
    let Some(sw) = seaweed::shared() else { return };
    let st = Storage::new();
    let prefix = format!("big-{}", uuid::Uuid::new_v4().simple());
    let s = Server::start(&st, opts_for(&sw, &prefix));
    let sid = format!("big{}", uuid::Uuid::new_v4().simple());
    let total = 20_000;
    for batch in 0..total / 100 {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({"role": "user", "content": format!("m-{:05}", batch * 100 + i)}))
            .collect();
        let (code, v) = send(
            &s.url(""),
            &format!("/api/v1/sessions/{sid}/messages/batch"),
            &json!({ "messages": messages }),
        )
        .expect("batch");
        assert_eq!(code, 200, "{v}");
    }
    let store =
        longship::storage::backend::s3::S3Storage::open(&sw.settings(&prefix)).expect("open");
    let stored = stored_messages(&store, &sid);
    let want: Vec<String> = (0..total).map(|i| format!("m-{i:05}")).collect();
    let got: Vec<String> = stored.iter().map(content_of).collect();
    assert_eq!(got.len(), total);
    assert!(got == want, "out of order");
    // The log was compacted into a few chunks, not left as 200 segments.
    let meta = SessionMeta::load(&store, &SessionRef::new(ACCOUNT, USER, &sid))
        .unwrap()
        .unwrap();
    let log = meta.internal.log.expect("segment log on S3");
    assert!(log.next - log.from < 32 && log.chunks.len() <= 8, "{log:?}");
    let r = ureq::get(&s.url(&format!("/api/v1/sessions/{sid}")))
        .set("X-OpenViking-Account", ACCOUNT)
        .set("X-OpenViking-User", USER)
        .call()
        .expect("get session");
    let v: Value = r.into_json().expect("json");
    assert_eq!(v["result"]["message_count"], total);
}

/// Content append on S3 rewrites the whole object, so it is bounded: an append that would grow
/// a file past the cap is refused (413 through the API) and leaves the file as it was.
#[test]
fn s3_append_is_bounded_and_refusal_changes_nothing() {
    let Some(sw) = seaweed::shared() else { return };
    let prefix = format!("append-{}", uuid::Uuid::new_v4().simple());
    let store =
        longship::storage::backend::s3::S3Storage::open(&sw.settings(&prefix)).expect("open");
    let cap = longship::storage::backend::s3::APPEND_MAX_BYTES as usize;
    let path = longship::storage::StorePath::parse("acme/resources/big.log").unwrap();
    let start = vec![b'x'; cap - 10];
    store.write(&path, &start).expect("write");
    store
        .append(&path, b"0123456789")
        .expect("append up to the cap");
    let err = store.append(&path, b"!").expect_err("past the cap");
    assert!(
        matches!(err, longship::storage::StorageError::TooLarge(_)),
        "{err:?}"
    );
    assert_eq!(store.stat(&path).unwrap().unwrap().size, cap as u64);
}
