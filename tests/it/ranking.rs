//! Ranking and index upkeep through the real binary (issues #25.6, #26.3, #26.4, #26.6,
//! #26.7): per-account statistics, live = rebuilt rankings, repair of a killed writer's
//! unrecorded writes at restart, cross-instance freshness under load, the claimed index
//! directory and the analyzer's NFKC/emoji handling. Runs on both storage backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::find::{eventually, find, uris, write};
use crate::harness::api::create_account;
use crate::harness::{Opts, Server, Storage};

/// (uri, score as serialized) of every hit, in rank order.
fn ranked(s: &Server, key: Option<&str>, body: Value) -> Vec<(String, String)> {
    let r = find(s, key, body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let res = r.result();
    ["memories", "resources", "skills"]
        .iter()
        .flat_map(|k| res[*k].as_array().cloned().unwrap_or_default())
        .map(|h| {
            (
                h["uri"].as_str().unwrap_or_default().to_string(),
                h["score"].to_string(),
            )
        })
        .collect()
}

fn search_status(s: &Server) -> Value {
    let r = s.get(
        "/api/v1/observer/system?format=json",
        Some(crate::harness::ROOT_KEY),
    );
    r.result()["components"]["retrieval"]["status"].clone()
}

fn wait_built(s: &Server) {
    eventually(Duration::from_secs(60), || {
        search_status(s)["building"] == false && search_status(s)["index_lag"] == 0
    })
    .expect("index built");
}

#[test]
fn another_accounts_writes_leave_scores_byte_identical() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "alice", "admin");
    let mallory = create_account(&s, "mallory", "admin");
    write(
        &s,
        Some(&alice),
        "viking://resources/birds.md",
        "The nightingale sings at night in the garden.",
    );
    write(
        &s,
        Some(&alice),
        "viking://resources/control.md",
        "A quiet control document about the garden at night.",
    );
    let q = json!({"query": "nightingale garden night"});
    let before = ranked(&s, Some(&alice), q.clone());
    assert_eq!(before.len(), 2, "{before:?}");
    // Another tenant writes the word 200 times over, overwrites and deletes some.
    for i in 0..200 {
        write(
            &s,
            Some(&mallory),
            &format!("viking://resources/n/{i}.md"),
            &format!("nightingale nightingale private note {i}"),
        );
    }
    for i in 0..20 {
        write(
            &s,
            Some(&mallory),
            &format!("viking://resources/n/{i}.md"),
            "garden garden garden",
        );
    }
    let rm = s.delete(
        "/api/v1/fs?uri=viking://resources/n/150.md&recursive=false",
        Some(&mallory),
    );
    assert_eq!(rm.status, 200, "{:?}", rm.body);
    // Mallory's own find waits for Mallory's writes: they are in the index now (the
    // summaries of the directory holding them follow later; only documents are counted).
    let seen: Vec<String> = uris(&find(
        &s,
        Some(&mallory),
        json!({"query": "nightingale", "limit": 1000}),
    ))
    .into_iter()
    .filter(|u| !u.ends_with("/.abstract.md") && !u.ends_with("/.overview.md"))
    .collect();
    assert_eq!(seen.len(), 179, "{seen:?}");
    assert_eq!(ranked(&s, Some(&alice), q), before);
}

#[test]
fn live_index_ranks_like_a_rebuilt_one_and_placeholders_are_not_indexed() {
    let st = Storage::new();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let opts = Opts::dev().env("LONGSHIP_SEARCH__INDEX_DIR", index_dir.to_str().unwrap());
    let mut s = Server::start(&st, opts.clone());
    let words = [
        "orbit", "comet", "nebula", "quasar", "pulsar", "galaxy", "meteor", "zenith",
    ];
    let text = |i: usize, gen: usize| -> String {
        (0..(5 + (i * 7 + gen) % 23))
            .map(|k| words[(i * 3 + k * (gen + 1)) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    for i in 0..60 {
        write(
            &s,
            None,
            &format!("viking://resources/sky/d{i}.md"),
            &text(i, 0),
        );
    }
    // Edits and removals: their old versions must not weigh in afterwards.
    for round in 1..4 {
        for i in (0..60).step_by(3) {
            write(
                &s,
                None,
                &format!("viking://resources/sky/d{i}.md"),
                &text(i, round),
            );
        }
    }
    for i in (1..60).step_by(4) {
        let r = s.delete(
            &format!("/api/v1/fs?uri=viking://resources/sky/d{i}.md&recursive=false"),
            None,
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // A placeholder sidecar as a writer may leave it (here planted in storage, in a
    // directory no write touches, so no summary refresh replaces it).
    st.write(
        "default/resources/quiet/.abstract.md",
        b"# viking://resources/quiet/ [Directory abstract is not ready]\n",
    );
    // The summaries of sky/ follow its writes: compare rankings once they settled (no
    // refresh left to do, and the index caught up with the sidecars written).
    crate::layout::wait_summaries_settled(&st, "default");
    let caught_up = eventually(Duration::from_secs(60), || {
        search_status(&s)["index_lag"] == 0
    });
    assert!(caught_up.is_some(), "index never caught up");
    let queries: Vec<Value> = words
        .iter()
        .map(|w| json!({"query": w, "limit": 10}))
        .chain(
            words
                .windows(2)
                .map(|p| json!({"query": format!("{} {}", p[0], p[1]), "limit": 10})),
        )
        .collect();
    let live: Vec<_> = queries
        .iter()
        .map(|q| ranked(&s, None, q.clone()))
        .collect();
    assert!(live.iter().all(|r| !r.is_empty()));
    s.sigterm(Duration::from_secs(20));
    std::fs::remove_dir_all(&index_dir).unwrap();
    let s2 = Server::start(&st, opts);
    wait_built(&s2);
    let rebuilt: Vec<_> = queries
        .iter()
        .map(|q| ranked(&s2, None, q.clone()))
        .collect();
    for (q, (a, b)) in queries.iter().zip(live.iter().zip(&rebuilt)) {
        assert_eq!(a, b, "query {q}: live vs rebuilt");
    }
    // The rebuild read the placeholder from storage, and left it out.
    let hits = uris(&find(
        &s2,
        None,
        json!({"query": "directory abstract is not ready", "limit": 100}),
    ));
    assert!(
        !hits.contains(&"viking://resources/quiet/.abstract.md".to_string()),
        "{hits:?}"
    );
}

#[test]
fn restart_after_kill9_repairs_the_writes_it_did_not_record() {
    let st = Storage::new();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    // The periodic reconcile stays at its default (300 s): only the startup repair can help.
    let opts = Opts::dev().env("LONGSHIP_SEARCH__INDEX_DIR", index_dir.to_str().unwrap());
    let mut s = Server::start(&st, opts.clone());
    for i in 0..5 {
        write(
            &s,
            None,
            &format!("viking://resources/burst/w{i}.md"),
            &format!("burstword w{i}"),
        );
    }
    // A burst of writes in flight when the process is killed.
    let url = s.url("/api/v1/content/write");
    let burst = std::thread::spawn(move || {
        for i in 5..400 {
            let body = json!({"uri": format!("viking://resources/burst/w{i}.md"), "content": format!("burstword w{i}")});
            if ureq::post(&url)
                .timeout(Duration::from_secs(5))
                .send_json(body)
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    s.kill9();
    burst.join().unwrap();
    // The kill's window (the file in storage, its change record never written), made
    // certain: this is what a write interrupted between the two leaves behind.
    st.write(
        "default/resources/burst/interrupted.md",
        b"burstword interrupted",
    );
    let s2 = Server::start(&st, opts);
    assert_eq!(
        search_status(&s2)["building"],
        false,
        "an intact index resumes"
    );
    let stored: Vec<String> = st
        .list("default/resources/burst")
        .into_iter()
        .filter(|n| n.ends_with(".md") && !n.starts_with('.'))
        .map(|n| format!("viking://resources/burst/{n}"))
        .collect();
    assert!(stored.len() >= 6, "{stored:?}");
    let all_found = || {
        let mut hits = uris(&find(
            &s2,
            None,
            json!({"query": "burstword", "limit": 1000}),
        ));
        hits.sort();
        let mut want = stored.clone();
        want.sort();
        hits == want
    };
    assert!(
        eventually(Duration::from_secs(30), all_found).is_some(),
        "every stored document findable within seconds of the restart, not at the 300 s reconcile"
    );
}

#[test]
fn writes_on_one_instance_are_found_on_another_within_the_refresh_interval() {
    let st = Storage::new();
    // The documented bound is the interval on a quiet machine (bench/search_bench.py, part
    // `load`, measures it); a debug build on shared cores adds its apply and commit time, so
    // this checks a generous multiple, which a tail that missed changes (repaired only by the
    // 300 s reconcile) or polled rarely would still exceed.
    let interval_ms = 1000u64;
    let opts = Opts::dev().env(
        "LONGSHIP_SEARCH__REFRESH_INTERVAL_MS",
        &interval_ms.to_string(),
    );
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    wait_built(&b);
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The reader: polls B for every document of the load, noting when each first appears.
    let poll_url = b.url("/api/v1/search/find");
    let (seen2, done2) = (seen.clone(), done.clone());
    let reader = std::thread::spawn(move || {
        let stop_by = Instant::now() + Duration::from_secs(60);
        while Instant::now() < stop_by {
            let finished = done2.load(std::sync::atomic::Ordering::Acquire);
            let body = json!({"query": "freshload", "target_uri": "viking://resources/fresh", "limit": 1000});
            if let Ok(r) = ureq::post(&poll_url)
                .timeout(Duration::from_secs(5))
                .send_json(body)
            {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let now = Instant::now();
                let mut seen = seen2.lock().unwrap();
                for h in v["result"]["resources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    if let Some(u) = h["uri"].as_str() {
                        seen.entry(u.to_string()).or_insert(now);
                    }
                }
            }
            if finished && seen2.lock().unwrap().len() >= 300 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // The load: 50 writes/s on A for 6 s (bounded count and time).
    let start = Instant::now();
    for i in 0..300u32 {
        let due = start + Duration::from_millis(20 * u64::from(i));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let uri = format!("viking://resources/fresh/f{i}.md");
        write(&a, None, &uri, &format!("freshload item{i}"));
        acked.lock().unwrap().insert(uri, Instant::now());
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    reader.join().unwrap();
    let acked = acked.lock().unwrap();
    let seen = seen.lock().unwrap();
    let mut lat: Vec<Duration> = acked
        .iter()
        .map(|(u, t)| {
            seen.get(u)
                .map(|s| s.saturating_duration_since(*t))
                .unwrap_or(Duration::MAX)
        })
        .collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    let max = *lat.last().unwrap();
    eprintln!(
        "freshness over {} writes: p50 {:?} p99 {p99:?} max {max:?}",
        lat.len(),
        lat[lat.len() / 2]
    );
    // Each latency includes up to one reader poll (a find of up to 300 hits) on top.
    assert!(
        max <= Duration::from_millis(10 * interval_ms),
        "p99 {p99:?}, max {max:?}"
    );
}

#[test]
fn index_directory_survives_a_port_change_and_stale_ones_are_removed() {
    let st = Storage::new();
    let base = st.path().join(".longship").join("search");
    // A directory of a long-gone instance (the old per-port layout), unused for 8 days.
    let stale = base.join("4242");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("LOCK"), b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(stale.join("LOCK"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(8 * 24 * 3600))
        .unwrap();
    let mut s = Server::start(&st, Opts::dev());
    wait_built(&s);
    write(&s, None, "viking://resources/keep.md", "persistent harbour");
    assert!(!stale.exists(), "stale directory removed at startup");
    let dirs = |b: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(b)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let first = dirs(&base);
    assert_eq!(first.len(), 1, "{first:?}");
    // A second process from the same configuration gets a directory of its own.
    let other = Server::start(&st, Opts::dev());
    assert_eq!(dirs(&base).len(), 2);
    wait_built(&other);
    drop(other);
    // A restart on another port keeps its index: ready at once, nothing rebuilt.
    s.sigterm(Duration::from_secs(20));
    let s2 = Server::start(&st, Opts::dev());
    let status = search_status(&s2);
    assert_eq!(status["building"], false, "{status}");
    assert_eq!(
        uris(&find(&s2, None, json!({"query": "harbour"}))),
        vec!["viking://resources/keep.md"]
    );
    assert_eq!(dirs(&base).len(), 2, "no new directory per port");
}

#[test]
fn fullwidth_letters_match_ascii_and_emoji_are_found() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    write(
        &s,
        None,
        "viking://resources/wide.md",
        "ＡＰＩ　ｇａｔｅｗａｙ settings",
    );
    write(
        &s,
        None,
        "viking://resources/launch.md",
        "release day 🚀 checklist",
    );
    assert_eq!(
        uris(&find(&s, None, json!({"query": "api gateway"}))),
        vec!["viking://resources/wide.md"]
    );
    assert_eq!(
        uris(&find(&s, None, json!({"query": "ｃｈｅｃｋｌｉｓｔ"}))),
        vec!["viking://resources/launch.md"]
    );
    assert_eq!(
        uris(&find(&s, None, json!({"query": "🚀"}))),
        vec!["viking://resources/launch.md"]
    );
}
