//! Ingested trees on S3 appear whole or not at all (issue 14), always on a real SeaweedFS:
//! another instance listing during a publish never sees part of the tree; kill -9 mid-publish
//! leaves nothing visible after restart and recovery; `fs mv` of a directory still moves it
//! and still refuses an existing target.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::create_account;
use crate::harness::{Opts, Server, Storage};
use crate::resources::{tree, upload_id, wait_task, zip_bytes};
use crate::seaweed::{self, SeaweedFs};

const RESOURCES: &str = "/api/v1/resources";

fn opts_for(sw: &SeaweedFs, prefix: &str) -> Opts {
    sw.server_env(prefix)
        .iter()
        .fold(Opts::default(), |o, (k, v)| o.env(k, v))
}

/// A zip of `n` small text files in ten directories (`.rst`: stored as they are, one object
/// each; a Markdown file would become a directory of its own, 0.5.2's layout, tripling the
/// objects a publish moves).
fn bulk_zip(n: usize) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("bulk/d{}/f{i:04}.rst", i % 10),
                format!("# File {i}\n\nLine {i}.\n").into_bytes(),
            )
        })
        .collect();
    let entries: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    zip_bytes(&entries)
}

/// Names in `viking://resources` as `s` lists them.
fn resource_names(s: &Server, key: &str) -> Vec<String> {
    let r = s.get("/api/v1/fs/ls?uri=viking://resources", Some(key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let uri = e["uri"].as_str().unwrap_or_default();
            uri.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The text files of the tree at `uri`.
fn md_files(s: &Server, key: &str, uri: &str) -> usize {
    tree(s, key, uri)
        .iter()
        .filter(|p| p.ends_with(".rst"))
        .count()
}

#[test]
fn s3_another_instance_sees_an_ingested_tree_whole_or_not_at_all() {
    const FILES: usize = 400;
    let Some(sw) = seaweed::shared() else { return };
    let st = Storage::new();
    let prefix = format!("pub-{}", uuid::Uuid::new_v4().simple());
    let a = Server::start(&st, opts_for(&sw, &prefix));
    let b = Server::start(&st, opts_for(&sw, &prefix));
    let key = create_account(&a, "acme", "alice");
    let id = upload_id(&a, &key, "bulk.zip", &bulk_zip(FILES));
    let adding = AtomicBool::new(true);
    let (absent_while_adding, whole) = std::thread::scope(|scope| {
        let lister = scope.spawn(|| {
            let started = Instant::now();
            let (mut absent_while_adding, mut whole) = (0, 0);
            for _ in 0..20_000 {
                let was_adding = adding.load(Ordering::Acquire);
                if resource_names(&b, &key).iter().any(|n| n == "bulk") {
                    let seen = md_files(&b, &key, "viking://resources/bulk");
                    assert_eq!(seen, FILES, "instance B saw part of the tree");
                    whole += 1;
                    if !was_adding {
                        break;
                    }
                } else {
                    absent_while_adding += usize::from(was_adding);
                }
                if started.elapsed() > Duration::from_secs(120) {
                    break;
                }
            }
            (absent_while_adding, whole)
        });
        let r = a.post(
            RESOURCES,
            Some(&key),
            json!({"temp_file_id": id, "source_name": "bulk.zip",
                   "to": "viking://resources/bulk", "wait": true}),
        );
        adding.store(false, Ordering::Release);
        assert_eq!(r.status, 200, "{:?}", r.body);
        eprintln!("added: {}", r.body);
        lister.join().unwrap()
    });
    eprintln!("B lists {:?}", resource_names(&b, &key));
    assert!(whole > 0, "B saw the tree once it was added");
    assert!(absent_while_adding > 0, "B listed while the add ran");
    let log = a.log_until("resource published", Duration::from_secs(10));
    let publish_ms = log
        .lines()
        .find(|l| l.contains("resource published"))
        .and_then(|l| l.split("stage_and_publish_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?");
    eprintln!("{FILES} files staged and published in {publish_ms} ms; B listed {absent_while_adding} times meanwhile");
    // A directory moves as a whole through the API too, and an existing target refuses.
    let mv = |from: &str, to: &str| {
        a.post(
            "/api/v1/fs/mv",
            Some(&key),
            json!({"from_uri": from, "to_uri": to}),
        )
    };
    let r = mv("viking://resources/bulk/d1", "viking://resources/moved");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(md_files(&b, &key, "viking://resources/moved"), FILES / 10);
    let r = mv("viking://resources/bulk/d2", "viking://resources/moved");
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert_eq!(md_files(&b, &key, "viking://resources/bulk/d2"), FILES / 10);
    let leftovers = sw.raw(&prefix).move_leftovers();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn s3_kill_9_mid_publish_leaves_no_partial_tree_after_restart() {
    const FILES: usize = 600;
    let Some(sw) = seaweed::shared() else { return };
    let st = Storage::new();
    let prefix = format!("kill-{}", uuid::Uuid::new_v4().simple());
    let opts = opts_for(&sw, &prefix)
        .env("LONGSHIP_RESOURCES__STALE_AFTER_SECS", "4")
        .env("LONGSHIP_RESOURCES__SWEEP_INTERVAL_SECS", "1")
        .env("LONGSHIP_STORAGE__S3__MOVE_RECOVERY_SECS", "1");
    let mut s = Server::start(&st, opts);
    let key = create_account(&s, "acme", "alice");
    let id = upload_id(&s, &key, "bulk.zip", &bulk_zip(FILES));
    let raw = sw.raw(&prefix);
    let (url, body) = (
        s.url(RESOURCES),
        json!({"temp_file_id": id, "source_name": "bulk.zip",
               "to": "viking://resources/bulk", "wait": true}),
    );
    let key2 = key.clone();
    // The add never answers: the server dies under it.
    let adder = std::thread::spawn(move || {
        let _ = ureq::post(&url)
            .set("X-API-Key", &key2)
            .timeout(Duration::from_secs(120))
            .send_json(body);
    });
    let flag = "acme/resources/.longship-pub-bulk";
    let started = Instant::now();
    let mut task_id = None;
    while !raw.exists(flag) {
        task_id = task_id.or_else(|| {
            raw.keys_under("acme/_system/ingest/active")
                .iter()
                .find_map(|k| {
                    k.rsplit('/')
                        .next()?
                        .strip_suffix(".json")
                        .map(str::to_string)
                })
        });
        assert!(
            started.elapsed() < Duration::from_secs(120) && !adder.is_finished(),
            "the publish never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Into the copy, so part of the tree is at its destination (hidden by the flag).
    while raw.exists(flag)
        && raw.keys_under("acme/resources/bulk").len() < FILES / 10
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    s.kill9();
    let copied = raw.keys_under("acme/resources/bulk").len();
    let _ = adder.join();
    let task_id = task_id.expect("the ingestion's task was seen");
    eprintln!("killed mid-publish with {copied} of ~{FILES} objects copied");
    s.restart();
    let done: Value = wait_task(&s, &key, &task_id);
    assert_eq!(done["status"], "failed", "{done}");
    // Recovery (at startup, then every second) settles the move: no flag, no intent, and the
    // tree is either gone or whole.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let names = resource_names(&s, &key);
        let keys = raw.keys();
        if names.iter().any(|n| n == "bulk") {
            let under: Vec<&String> = keys
                .iter()
                .filter(|k| k.starts_with("acme/resources/"))
                .take(20)
                .collect();
            assert_eq!(
                md_files(&s, &key, "viking://resources/bulk"),
                FILES,
                "a partial tree is visible: {under:?}\n{}",
                s.log_text()
            );
        }
        let left: Vec<&String> = keys
            .iter()
            .filter(|k| {
                seaweed::is_move_bookkeeping(k)
                    || k.starts_with(&format!("acme/_system/ingest/{task_id}/"))
            })
            .collect();
        if left.is_empty() {
            let dest = keys
                .iter()
                .filter(|k| k.starts_with("acme/resources/bulk/"))
                .count();
            assert!(
                dest == 0 || names.iter().any(|n| n == "bulk"),
                "objects under a destination nobody sees: {dest}"
            );
            eprintln!(
                "after restart: the tree is {}",
                if dest == 0 { "rolled back" } else { "whole" }
            );
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The name is free (or the tree whole): a new add lands normally.
    let id = upload_id(&s, &key, "again.zip", &bulk_zip(20));
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "source_name": "again.zip",
               "parent": "viking://resources", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}
