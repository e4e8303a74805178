//! Sessions under concurrency and failure: two instances racing adds and commits, kill -9 in
//! the middle of a commit, a client that disconnects, SIGTERM during a commit, a full commit
//! pool. Message accounting is exact: every message sent is live or archived exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use longship::storage::StorePath;

use crate::harness::api::Dev;
use crate::harness::{Opts, Server, Storage};

/// Add `n` messages in batches of 100; returns their texts.
fn fill(c: &Dev, sid: &str, n: usize, tag: &str) -> Vec<String> {
    let mut texts = Vec::with_capacity(n);
    let pad = "x".repeat(200);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let msgs: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let t = format!("{tag}-{i} {pad}");
                texts.push(t.clone());
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                json!({"role": role, "content": t})
            })
            .collect();
        let r = c.post(
            &format!("/api/v1/sessions/{sid}/messages/batch"),
            json!({"messages": msgs}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
    }
    texts
}

/// The messages of a JSON-lines file at `/local/<rel>` (none when it is missing).
fn read_lines(st: &Storage, rel: &str) -> Vec<Value> {
    // A session's live messages are a segment log on S3: read them as the server does.
    let live_of = rel
        .strip_suffix("/messages.jsonl")
        .filter(|dir| !dir.contains("/history/"));
    let bytes = match live_of {
        Some(dir) => Some(st.session_live(dir)),
        None => st.read(rel),
    };
    match bytes {
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("message line"))
            .collect(),
        None => Vec::new(),
    }
}

/// Texts of every message the session at `/local/<dir>` holds (live + completed archives)
/// with their counts, and the archives' terminal states. Panics on a pending (half-visible)
/// archive. Reads through the backend, so it works on local disk and S3 alike.
fn account(st: &Storage, dir: &str) -> (HashMap<String, usize>, Vec<(String, &'static str)>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut states = Vec::new();
    let mut add = |m: &Value| {
        *seen
            .entry(m["parts"][0]["text"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        *ids.entry(m["id"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    };
    for name in st.list(&format!("{dir}/history")) {
        let archive = format!("{dir}/history/{name}");
        if st.exists(&format!("{archive}/.done")) {
            for m in read_lines(st, &format!("{archive}/messages.jsonl")) {
                add(&m);
            }
            states.push((name, "done"));
        } else if st.exists(&format!("{archive}/.failed.json")) {
            assert!(
                !st.exists(&format!("{archive}/messages.jsonl")),
                "{name}: a failed archive keeps a copy of live messages"
            );
            states.push((name, "failed"));
        } else {
            panic!("{name} is neither completed nor failed");
        }
    }
    for m in read_lines(st, &format!("{dir}/messages.jsonl")) {
        add(&m);
    }
    assert!(ids.values().all(|&n| n == 1), "a message id appears twice");
    (seen, states)
}

fn assert_exactly_once(seen: &HashMap<String, usize>, sent: &[String]) {
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n != 1).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    let lost: Vec<_> = sent.iter().filter(|t| !seen.contains_key(*t)).collect();
    assert!(
        lost.is_empty(),
        "lost {} messages, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(seen.len(), sent.len());
}

fn meta_on_disk(st: &Storage, dir: &str) -> Value {
    serde_json::from_str(&st.read_string(&format!("{dir}/.meta.json"))).expect("meta json")
}

fn commit_tasks(c: &Dev, sid: &str) -> Vec<Value> {
    let r = c.get(&format!(
        "/api/v1/tasks?task_type=session_commit&resource_id={sid}"
    ));
    assert_eq!(r.status, 200);
    r.result().as_array().cloned().unwrap_or_default()
}

/// Poll until `f` is true (bounded).
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn commit_running(s: &Server) -> bool {
    let c = Dev::alice(s);
    let r = c.get("/api/v1/observer/system?format=json");
    r.result()["components"]["pools"]["status"]["commit"]["running"]
        .as_u64()
        .unwrap_or(0)
        > 0
}

/// A commit request on its own thread with its own client settings; the outcome is the HTTP
/// status or the transport error.
fn commit_async(
    port: u16,
    sid: &str,
    timeout: Duration,
) -> std::thread::JoinHandle<Result<u16, String>> {
    commit_async_with(port, sid, timeout, json!({}))
}

fn commit_async_with(
    port: u16,
    sid: &str,
    timeout: Duration,
    body: Value,
) -> std::thread::JoinHandle<Result<u16, String>> {
    let url = format!("http://127.0.0.1:{port}/api/v1/sessions/{sid}/commit");
    std::thread::spawn(move || {
        let r = ureq::post(&url)
            .timeout(timeout)
            .set("X-OpenViking-Account", "acme")
            .set("X-OpenViking-User", "alice")
            .send_json(body);
        match r {
            Ok(resp) => Ok(resp.status()),
            Err(ureq::Error::Status(code, _)) => Ok(code),
            Err(e) => Err(e.to_string()),
        }
    })
}

#[test]
fn two_instances_racing_adds_and_commits_lose_nothing() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::dev());
    let b = Server::start(&st, Opts::dev());
    assert_eq!(
        Dev::alice(&a)
            .post("/api/v1/sessions", json!({"session_id": "race"}))
            .status,
        200
    );
    let sent = std::sync::Mutex::new(Vec::new());
    let commits = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for w in 0..4 {
            let server = if w % 2 == 0 { &a } else { &b };
            let sent = &sent;
            scope.spawn(move || {
                let c = Dev::alice(server);
                for i in 0..25 {
                    let texts: Vec<String> = (0..4).map(|j| format!("w{w}-{i}-{j}")).collect();
                    let msgs: Vec<Value> = texts
                        .iter()
                        .map(|t| json!({"role": "user", "content": t}))
                        .collect();
                    let r = if i % 3 == 0 {
                        // single adds too, not only batches
                        let mut last = None;
                        for m in &msgs {
                            last = Some(c.post("/api/v1/sessions/race/messages", m.clone()));
                            assert_eq!(last.as_ref().map(|r| r.status), Some(200));
                        }
                        last.expect("sent")
                    } else {
                        c.post(
                            "/api/v1/sessions/race/messages/batch",
                            json!({"messages": msgs}),
                        )
                    };
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
                    sent.lock().expect("lock").extend(texts);
                }
            });
        }
        for k in 0..2 {
            let server = if k == 0 { &a } else { &b };
            let commits = &commits;
            scope.spawn(move || {
                let c = Dev::alice(server);
                for i in 0..8 {
                    let r = c.post(
                        "/api/v1/sessions/race/commit",
                        json!({"keep_recent_count": (i + k) % 3}),
                    );
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw));
                    if r.result()["status"] == "accepted" {
                        commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let sent = sent.into_inner().expect("lock");
    assert_eq!(sent.len(), 400);
    let dir = "acme/user/alice/sessions/race".to_string();
    let (seen, states) = account(&st, &dir);
    assert_exactly_once(&seen, &sent);
    let accepted = commits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(accepted > 0);
    assert_eq!(states.len(), accepted, "one archive per accepted commit");
    assert!(states.iter().all(|(_, s)| *s == "done"));
    // Both instances agree on the counters.
    for s in [&a, &b] {
        let m = Dev::alice(s).get("/api/v1/sessions/race");
        assert_eq!(m.result()["total_message_count"], 400);
        assert_eq!(m.result()["commit_count"].as_u64(), Some(accepted as u64));
        let live = read_lines(&st, &format!("{dir}/messages.jsonl")).len() as u64;
        assert_eq!(m.result()["message_count"].as_u64(), Some(live));
    }
    // Every commit task is complete, visible from either instance.
    let tasks = commit_tasks(&Dev::alice(&b), "race");
    assert_eq!(tasks.len(), accepted);
    assert!(tasks.iter().all(|t| t["status"] == "completed"));
}

#[test]
fn kill9_mid_commit_leaves_a_consistent_session() {
    // Three kill points: as soon as the archive directory appears (its Phase 1 record may not
    // be durable yet); as soon as the archive's copy of the messages is in place (the live file
    // is being rewritten); as soon as the live file has shrunk (past the point of no return).
    for (sid, point) in [
        ("k9a", "archive dir"),
        ("k9b", "archive copy"),
        ("k9c", "live rewritten"),
    ] {
        let st = Storage::new();
        let mut s = Server::start(&st, Opts::dev());
        let sent = fill(&Dev::alice(&s), sid, 20_000, sid);
        let dir = format!("acme/user/alice/sessions/{sid}");
        // One backend handle for the polling loop (works on local disk and S3 alike).
        let store = st.store();
        let path = |rel: &str| StorePath::parse(&format!("{dir}/{rel}")).expect("store path");
        let size_of = |rel: &str| store.stat(&path(rel)).ok().flatten().map(|m| m.size);
        let full_size = size_of("messages.jsonl").unwrap_or(0);
        let reached = || match point {
            "archive dir" => size_of("history/archive_001").is_some(),
            "archive copy" => size_of("history/archive_001/messages.jsonl").is_some(),
            // On S3 the live messages are a segment log: the rewrite empties it.
            _ if st.is_s3() => {
                let log = &meta_on_disk(&st, &dir)["_longship"]["log"];
                log["chunks"].as_array().is_some_and(|c| c.is_empty()) && log["from"] == log["next"]
            }
            _ => size_of("messages.jsonl").is_some_and(|n| n < full_size),
        };
        let client = commit_async(s.port, sid, Duration::from_secs(60));
        eventually(
            "the commit to reach the kill point",
            Duration::from_secs(60),
            reached,
        );
        s.kill9();
        let _ = client.join();
        let before = if size_of("history/archive_001/.done").is_some() {
            "done"
        } else {
            "unfinished"
        };
        s.restart();
        let c = Dev::alice(&s);
        // The next touch of the session repairs it — at once on local disk, where the dead
        // process's lock died with it; on S3 once the dead holder's lease expires (30 s).
        let deadline = Instant::now() + Duration::from_secs(90);
        let m = loop {
            let m = c.get(&format!("/api/v1/sessions/{sid}"));
            assert_eq!(m.status, 200);
            let repaired = meta_on_disk(&st, &dir)["_longship"]
                .get("pending_commit")
                .is_none();
            if repaired {
                break m;
            }
            assert!(Instant::now() < deadline, "the session was never repaired");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (seen, states) = account(&st, &dir);
        eprintln!(
            "{sid}: kill -9 at '{point}' landed with the archive {before}; repaired to {states:?}"
        );
        assert_exactly_once(&seen, &sent);
        assert!(states.len() <= 1);
        assert!(meta_on_disk(&st, &dir)["_longship"]
            .get("pending_commit")
            .is_none());
        let live = read_lines(&st, &format!("{dir}/messages.jsonl")).len() as u64;
        assert_eq!(m.result()["message_count"].as_u64(), Some(live));
        assert_eq!(m.result()["total_message_count"], 20_000);
        let tasks = commit_tasks(&c, sid);
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        if states.first().map(|(_, st)| *st) == Some("done") {
            assert_eq!(tasks[0]["status"], "completed");
            assert_eq!(live, 0);
            assert_eq!(m.result()["commit_count"], 1);
        } else {
            assert_eq!(tasks[0]["status"], "failed");
            assert_eq!(live, 20_000);
        }
        // And the session goes on: the next commit archives whatever is live.
        let r = c.post(&format!("/api/v1/sessions/{sid}/commit"), json!({}));
        assert_eq!(r.status, 200);
        let (seen, states) = account(&st, &dir);
        assert_exactly_once(&seen, &sent);
        assert!(states.iter().any(|(_, st)| *st == "done"));
        assert!(read_lines(&st, &format!("{dir}/messages.jsonl")).is_empty());
    }
}

#[test]
fn commit_completes_after_the_client_disconnects() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);
    let sent = fill(&c, "dc", 20_000, "dc");
    // The client gives up long before the commit of 20k messages can finish.
    // keep_recent_count 1 takes the copying path (the slower one), so the answer cannot come
    // back before the client hangs up.
    let outcome = commit_async_with(
        s.port,
        "dc",
        Duration::from_millis(30),
        json!({"keep_recent_count": 1}),
    )
    .join()
    .expect("client thread");
    assert!(
        outcome.is_err(),
        "the commit answered within 30 ms ({outcome:?}); nothing was disconnected"
    );
    let mut task = Value::Null;
    eventually(
        "the commit task to complete",
        Duration::from_secs(60),
        || {
            task = commit_tasks(&c, "dc")
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            task["status"] == "completed" || task["status"] == "failed"
        },
    );
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(
        task["result"]["archive_uri"],
        "viking://user/alice/sessions/dc/history/archive_001"
    );
    let dir = "acme/user/alice/sessions/dc".to_string();
    let (seen, states) = account(&st, &dir);
    assert_exactly_once(&seen, &sent);
    assert_eq!(states, [("archive_001".to_string(), "done")]);
    assert_eq!(c.get("/api/v1/sessions/dc").result()["message_count"], 1);
}

#[test]
fn sigterm_lets_a_running_commit_finish() {
    a_stop_signal_lets_a_running_commit_finish(Server::sigterm);
}

/// Ctrl-C drains exactly like SIGTERM (actix would otherwise treat SIGINT as a forced stop).
#[test]
fn sigint_lets_a_running_commit_finish() {
    a_stop_signal_lets_a_running_commit_finish(Server::sigint);
}

fn a_stop_signal_lets_a_running_commit_finish(stop: fn(&mut Server, Duration) -> Option<i32>) {
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::dev());
    let sent = fill(&Dev::alice(&s), "term", 20_000, "term");
    let client = commit_async(s.port, "term", Duration::from_secs(60));
    eventually("the commit to start", Duration::from_secs(30), || {
        commit_running(&s)
    });
    let code = stop(&mut s, Duration::from_secs(60));
    assert_eq!(code, Some(0), "server did not exit cleanly");
    // The client got its answer: the request drained, the commit finished.
    assert_eq!(client.join().expect("client thread"), Ok(200));
    let dir = "acme/user/alice/sessions/term".to_string();
    // Finished before exit: nothing left for a repair to do.
    assert!(meta_on_disk(&st, &dir)["_longship"]
        .get("pending_commit")
        .is_none());
    let (seen, states) = account(&st, &dir);
    assert_exactly_once(&seen, &sent);
    assert_eq!(states, [("archive_001".to_string(), "done")]);
    let s2 = Server::start(&st, Opts::dev());
    let tasks = commit_tasks(&Dev::alice(&s2), "term");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["status"], "completed");
}

#[test]
fn a_full_commit_pool_answers_503_at_once_and_health_stays_fast() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::dev()
            .arg("--commit-threads")
            .arg("1")
            .env("LONGSHIP_POOLS__COMMIT_QUEUE_LIMIT", "1"),
    );
    let c = Dev::alice(&s);
    fill(&c, "big", 20_000, "big");
    fill(&c, "small", 3, "small");
    let client = commit_async(s.port, "big", Duration::from_secs(60));
    eventually("the commit to start", Duration::from_secs(30), || {
        commit_running(&s)
    });
    let t0 = Instant::now();
    let r = c.post("/api/v1/sessions/small/commit", json!({}));
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.code(), "UNAVAILABLE");
    assert!(r.header("Retry-After").is_some());
    assert!(waited < Duration::from_secs(1), "503 took {waited:?}");
    // Generous bound only: latency is measured by bench/sessions_bench.py.
    let t0 = Instant::now();
    assert_eq!(s.get("/health", None).status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(client.join().expect("client thread"), Ok(200));
    // Once the pool has room again (its permit is returned just after the answer), the
    // refused commit goes through.
    let mut last = Value::Null;
    eventually(
        "the commit pool to take work again",
        Duration::from_secs(10),
        || {
            let r = c.post("/api/v1/sessions/small/commit", json!({}));
            last = r.result().clone();
            r.status != 503
        },
    );
    assert_eq!(last["status"], "accepted");
}
