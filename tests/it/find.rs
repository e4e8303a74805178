//! find / search (docs/API.md, Search) through the real binary: tenant isolation, bad input,
//! freshness across instances, index rebuilds and crashes. Runs on both storage backends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, register, ACCOUNTS};
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

const FIND: &str = "/api/v1/search/find";
const SEARCH: &str = "/api/v1/search/search";
const WRITE: &str = "/api/v1/content/write";
/// Generous bound on cross-instance freshness (the setting is 1000 ms).
const BOUND: Duration = Duration::from_secs(8);

pub fn find(s: &Server, key: Option<&str>, body: Value) -> Resp {
    s.post(FIND, key, body)
}

/// Every hit URI of a find result.
pub fn uris(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{:?}", r.body);
    let res = r.result();
    ["memories", "resources", "skills"]
        .iter()
        .flat_map(|k| res[*k].as_array().cloned().unwrap_or_default())
        .map(|h| h["uri"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn write(s: &Server, key: Option<&str>, uri: &str, content: &str) {
    let r = s.post(WRITE, key, json!({"uri": uri, "content": content}));
    assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
}

/// Poll `cond` until it holds or `within` passes; returns how long it took.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn search_status(s: &Server) -> Value {
    let r = s.get("/api/v1/observer/system?format=json", Some(ROOT_KEY));
    r.result()["components"]["retrieval"]["status"].clone()
}

fn wait_built(s: &Server) {
    eventually(Duration::from_secs(60), || {
        search_status(s)["building"] == false
    })
    .expect("index built");
}

#[test]
fn tenant_matrix_has_no_cross_tenant_hits() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let mut keys = Vec::new();
    for acct in ["acme", "beta"] {
        let admin = create_account(&s, acct, "admin1");
        let user = register(&s, &admin, acct, "user2", "user");
        for (uid, key) in [("admin1", admin.clone()), ("user2", user)] {
            let tag = format!("zq{acct}{uid}");
            write(
                &s,
                Some(&key),
                "viking://~/memories/notes/private.md",
                &format!("private {tag}mem"),
            );
            write(
                &s,
                Some(&key),
                &format!("viking://resources/{uid}.md"),
                &format!("shared {tag}res"),
            );
            keys.push((acct, uid, key));
        }
    }
    for (acct, uid, key) in &keys {
        for (other_acct, other_uid, _) in &keys {
            let tag = format!("zq{other_acct}{other_uid}");
            let mem = uris(&find(&s, Some(key), json!({"query": format!("{tag}mem")})));
            let res = uris(&find(&s, Some(key), json!({"query": format!("{tag}res")})));
            let own = acct == other_acct && uid == other_uid;
            assert_eq!(
                mem.len(),
                usize::from(own),
                "{acct}/{uid} sees memory of {other_acct}/{other_uid}: {mem:?}"
            );
            assert_eq!(
                res.len(),
                usize::from(acct == other_acct),
                "{acct}/{uid} resource of {other_acct}: {res:?}"
            );
            // Another user's space as a target: refused without naming anything inside it.
            if acct == other_acct && !own {
                let r = find(
                    &s,
                    Some(key),
                    json!({"query": "private", "target_uri": format!("viking://user/{other_uid}/memories")}),
                );
                assert_eq!(r.status, 403, "{:?}", r.body);
                assert!(!r.raw.windows(7).any(|w| w == b"private"), "{:?}", r.body);
            }
        }
    }
    // ROOT has no tenant data access in api_key mode.
    assert_eq!(
        find(&s, Some(ROOT_KEY), json!({"query": "shared"})).status,
        403
    );
}

#[test]
fn bad_input_is_a_clear_400() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let cases = [
        (json!({"query": ""}), "must not be empty"),
        (json!({"query": "x".repeat(5000)}), "body.query"),
        (json!({"query": "x", "limit": 0}), "between 1 and 1000"),
        (
            json!({"query": "x", "node_limit": 100000}),
            "body.node_limit",
        ),
        (json!({"query": "x", "limit": "ten"}), "body.limit"),
        (json!({"query": 5}), "body.query"),
        (
            json!({"query": "x", "filter": {"op": "and", "conds": [{"op": "bogus"}]}}),
            "body.filter.conds.0.op",
        ),
        (
            json!({"query": "x", "filter": {"op": "must", "field": "owner", "conds": ["a"]}}),
            "body.filter.field",
        ),
        (json!({"query": "x", "filter": [1]}), "body.filter"),
        (json!({"query": "x", "since": "last tuesday"}), "body.since"),
        (
            json!({"query": "x", "context_type": "docs"}),
            "memory, resource, skill",
        ),
        (json!({"query": "x", "level": 7}), "body.level"),
        (json!({"query": "x", "tags": ["team"]}), "strict k=v"),
        (
            json!({"query": "x", "time_field": "born_at"}),
            "body.time_field",
        ),
    ];
    for (body, needle) in cases {
        let r = find(&s, None, body.clone());
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.code(), "INVALID_ARGUMENT");
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let r = find(
        &s,
        None,
        json!({"query": "x", "image_url": "data:image/png;base64,AAAA"}),
    );
    assert_eq!(r.status, 501);
    let r = s.post(SEARCH, None, json!({"query": "x", "mode": "context"}));
    assert_eq!(r.status, 501, "{:?}", r.body);
    let r = s.post(SEARCH, None, json!({"query": "x", "max_tokens": 200}));
    assert_eq!(r.status, 400);
    let r = find(
        &s,
        None,
        json!({"query": "x", "target_uri": "viking://temp/x"}),
    );
    assert_eq!(r.status, 400);
    // Query-language characters are plain text.
    for q in [
        "\"unterminated",
        "a AND b OR",
        "title:(x*)",
        "[[[",
        "*",
        "\\",
        "a:b:c",
        "-x",
    ] {
        let r = find(&s, None, json!({"query": q}));
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
    }
    let r = find(&s, None, json!({"query": "x", "telemetry": true}));
    assert_eq!(r.status, 200);
    // As in 0.5.2's FindRequest / SearchRequest (extra="forbid"), unknown keys are refused,
    // and search-only keys on find.
    for (path, body) in [
        (FIND, json!({"query": "x", "unknown_field": {"a": 1}})),
        (FIND, json!({"query": "x", "session_id": "s"})),
        (SEARCH, json!({"query": "x", "unknown_field": 1})),
    ] {
        let r = s.post(path, None, body.clone());
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(
            r.body["error"]["details"]["validation_errors"][0]["type"], "extra_forbidden",
            "{body}"
        );
    }
    // Field types are reported at the field, with pydantic's type names.
    for (body, loc, kind) in [
        (json!({"query": 5}), json!(["body", "query"]), "string_type"),
        (
            json!({"query": "x", "limit": "ten"}),
            json!(["body", "limit"]),
            "int_type",
        ),
        (
            json!({"query": "x", "read_content": "maybe"}),
            json!(["body", "read_content"]),
            "bool_parsing",
        ),
        (
            json!({"query": "x", "target_uri": ["viking://resources", 7]}),
            json!(["body", "target_uri", "1"]),
            "string_type",
        ),
    ] {
        let r = find(&s, None, body.clone());
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        let e = &r.body["error"]["details"]["validation_errors"][0];
        assert_eq!(e["type"], kind, "{body}: {e}");
        assert_eq!(e["loc"], loc, "{body}: {e}");
    }
}

#[test]
fn levels_filters_and_time() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = s.post(
        "/api/v1/fs/mkdir",
        None,
        json!({"uri": "viking://resources/guide", "description": "Guide to quasar telemetry"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    write(
        &s,
        None,
        "viking://resources/guide/quasar.md",
        "Quasar telemetry details and more quasar facts",
    );
    let all = uris(&find(&s, None, json!({"query": "quasar telemetry"})));
    assert_eq!(all.len(), 2, "{all:?}");
    let l0 = find(&s, None, json!({"query": "quasar", "level": 0}));
    assert_eq!(uris(&l0), vec!["viking://resources/guide/.abstract.md"]);
    assert_eq!(l0.result()["resources"][0]["level"], 0);
    let l2 = uris(&find(&s, None, json!({"query": "quasar", "level": "2"})));
    assert_eq!(l2, vec!["viking://resources/guide/quasar.md"]);
    let f =
        json!({"op": "must_not", "field": "uri", "conds": ["viking://resources/guide/quasar.md"]});
    assert_eq!(
        uris(&find(&s, None, json!({"query": "quasar", "filter": f}))).len(),
        1
    );
    assert_eq!(
        uris(&find(&s, None, json!({"query": "quasar", "since": "1h"}))).len(),
        2
    );
    assert!(uris(&find(
        &s,
        None,
        json!({"query": "quasar", "until": "2001-01-01"})
    ))
    .is_empty());
    assert!(uris(&find(
        &s,
        None,
        json!({"query": "quasar", "score_threshold": 0.99999})
    ))
    .is_empty());
    let r = find(
        &s,
        None,
        json!({"query": "quasar", "include_provenance": true}),
    );
    assert!(r.result()["provenance"][0]["searched_directories"].is_array());
    assert_eq!(
        uris(&find(
            &s,
            None,
            json!({"query": "quasar", "context_type": "memory"})
        ))
        .len(),
        0
    );
}

#[test]
fn two_instances_see_writes_removals_moves_and_account_deletion() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    let key = create_account(&a, "acme", "alice");
    wait_built(&b);
    let doc = "viking://resources/fresh/zephyr.md";
    write(&a, Some(&key), doc, "zephyrine winds");
    // Read-your-writes on A: no waiting.
    assert_eq!(
        uris(&find(&a, Some(&key), json!({"query": "zephyrine"}))),
        vec![doc]
    );
    let took = eventually(BOUND, || {
        uris(&find(&b, Some(&key), json!({"query": "zephyrine"}))) == vec![doc]
    });
    assert!(took.is_some(), "write on A not found on B within {BOUND:?}");
    // mv on A: old URI gone, new found on B.
    let moved = "viking://resources/moved";
    let r = a.post(
        "/api/v1/fs/mv",
        Some(&key),
        json!({"from_uri": "viking://resources/fresh", "to_uri": moved}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let want = format!("{moved}/zephyr.md");
    assert!(eventually(BOUND, || uris(&find(
        &b,
        Some(&key),
        json!({"query": "zephyrine"})
    )) == vec![want.clone()])
    .is_some());
    // rm on A: gone from B.
    let r = a.delete(
        &format!("/api/v1/fs?uri={moved}&recursive=true"),
        Some(&key),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(eventually(BOUND, || uris(&find(
        &b,
        Some(&key),
        json!({"query": "zephyrine"})
    ))
    .is_empty())
    .is_some());
    // Account deleted on A: a re-created account of the same name finds none of it anywhere.
    write(
        &a,
        Some(&key),
        "viking://resources/old.md",
        "obsidian relic",
    );
    assert!(eventually(BOUND, || uris(&find(
        &b,
        Some(&key),
        json!({"query": "obsidian"})
    ))
    .len()
        == 1)
    .is_some());
    let r = a.delete(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let again = create_account(&b, "acme", "alice");
    for s in [&a, &b] {
        assert!(
            eventually(BOUND, || uris(&find(
                s,
                Some(&again),
                json!({"query": "obsidian"})
            ))
            .is_empty())
            .is_some(),
            "deleted account's documents still found"
        );
    }
    let metrics = b.get("/metrics", None);
    assert!(String::from_utf8_lossy(&metrics.raw).contains("longship_search{name=\"index_lag\"}"));
}

#[test]
fn deleted_index_is_rebuilt_identically_and_intact_index_is_ready_at_once() {
    let st = Storage::new();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let opts = Opts::dev().env("LONGSHIP_SEARCH__INDEX_DIR", index_dir.to_str().unwrap());
    let mut s = Server::start(&st, opts.clone());
    for i in 0..30 {
        write(
            &s,
            None,
            &format!("viking://resources/r/doc{i}.md"),
            &format!("nebula doc{i} {}", "filler ".repeat(i)),
        );
    }
    let q = json!({"query": "nebula", "limit": 100});
    let before = find(&s, None, q.clone());
    assert_eq!(uris(&before).len(), 30);
    // Intact index: a restart serves at once without a rebuild.
    s.sigterm(Duration::from_secs(20));
    let s2 = Server::start(&st, opts.clone());
    assert_eq!(search_status(&s2)["building"], false);
    assert_eq!(find(&s2, None, q.clone()).result(), before.result());
    drop(s2);
    // A second process on the same index directory is refused with a clear error.
    let s3 = Server::start(&st, opts.clone());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_longship"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(st.path())
        .env("LONGSHIP_SEARCH__INDEX_DIR", &index_dir)
        .envs(st.server_env())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another process"));
    drop(s3);
    std::fs::remove_dir_all(&index_dir).unwrap();
    let s4 = Server::start(&st, opts);
    assert_eq!(s4.get("/ready", None).status, 200);
    wait_built(&s4);
    let after = find(&s4, None, q);
    assert_eq!(after.result(), before.result());
}

/// The nice value of each of `pid`'s threads whose name starts with `prefix`.
fn thread_nices(pid: u32, prefix: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
        if let Some(nice) = after.split(' ').nth(16).and_then(|n| n.parse().ok()) {
            out.push((comm, nice));
        }
    }
    out
}

/// A full rebuild must yield the CPU to the HTTP workers: the index writer and the threads
/// tantivy spawns for indexing, merging and segment updates run at `pools.thread_nice`, the HTTP workers at
/// the process's own (the test runner's, which may itself be niced).
#[test]
fn indexing_threads_run_at_the_pool_niceness() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev().env("LONGSHIP_POOLS__THREAD_NICE", "15"));
    write(&s, None, "viking://resources/n.md", "niceness check");
    let mut indexing = Vec::new();
    for prefix in [
        "thrd-tantivy",
        "merge_thread",
        "segment_updater",
        "search-writer",
    ] {
        let found = thread_nices(s.pid(), prefix);
        assert!(!found.is_empty(), "no {prefix} thread found");
        indexing.extend(found);
    }
    for (name, nice) in &indexing {
        assert_eq!(*nice, 15, "{name} runs at nice {nice}");
    }
    // The HTTP workers keep the process's own niceness, which is the test runner's (CI runs
    // it un-niced; a developer may run the suite under `nice`).
    let runner = own_nice();
    let http = thread_nices(s.pid(), "actix-rt");
    assert!(!http.is_empty());
    assert!(
        http.iter().all(|(_, n)| *n == runner),
        "{http:?} vs runner {runner}"
    );
}

/// This process's niceness (field 19 of /proc/self/stat).
fn own_nice() -> i64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap();
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

#[test]
fn kill9_during_indexing_catches_up_without_loss_or_duplicates() {
    let st = Storage::new();
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("idx");
    let n = 400;
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("d{}/f{i}.md", i % 20),
                format!("pulsar item{i} {}", "text ".repeat(200)).into_bytes(),
            )
        })
        .collect();
    st.at("default/resources/bulk").seed(files);
    let opts = Opts::dev().env("LONGSHIP_SEARCH__INDEX_DIR", index_dir.to_str().unwrap());
    let mut s = Server::start(&st, opts.clone());
    // Kill while the first build is (very likely) still running.
    std::thread::sleep(Duration::from_millis(300));
    s.kill9();
    let s = Server::start(&st, opts);
    wait_built(&s);
    let hits = uris(&find(&s, None, json!({"query": "pulsar", "limit": 1000})));
    let unique: std::collections::BTreeSet<_> = hits.iter().collect();
    assert_eq!(hits.len(), n, "every document exactly once");
    assert_eq!(unique.len(), n);
    for i in [0, 137, n - 1] {
        let one = uris(&find(&s, None, json!({"query": format!("item{i}")})));
        assert_eq!(
            one,
            vec![format!("viking://resources/bulk/d{}/f{i}.md", i % 20)]
        );
    }
}

#[test]
fn copies_are_indexed_like_writes() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    write(
        &s,
        None,
        "viking://resources/src/orig.md",
        "marmalade recipe",
    );
    let r = s.post("/api/v1/fs/cp", None, json!({"from_uri": "viking://resources/src", "to_uri": "viking://resources/dst", "recursive": true}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut got = uris(&find(&s, None, json!({"query": "marmalade"})));
    got.sort();
    assert_eq!(
        got,
        vec![
            "viking://resources/dst/orig.md",
            "viking://resources/src/orig.md"
        ]
    );
}

/// Hybrid retrieval against the harness embedding server, which stands for a real
/// OpenAI-compatible provider; it goes down mid-run and comes back.
#[test]
fn hybrid_with_a_provider_that_goes_down_and_comes_back() {
    use crate::embed_server::{EmbedServer, DIM};
    let mut provider = EmbedServer::start();
    let st = Storage::new();
    let api_base = provider.api_base();
    let dense = |o: Opts| {
        o.env("LONGSHIP_EMBEDDING__DENSE__PROVIDER", "openai")
            .env("LONGSHIP_EMBEDDING__DENSE__API_BASE", &api_base)
            .env("LONGSHIP_EMBEDDING__DENSE__MODEL", "harness-hash-64")
            .env("LONGSHIP_EMBEDDING__DENSE__API_KEY", "sk-test-secret-value")
            .env("LONGSHIP_EMBEDDING__DENSE__DIMENSION", &DIM.to_string())
    };
    let a = Server::start(&st, dense(Opts::dev()));
    write(
        &a,
        None,
        "viking://resources/garage/car.md",
        "The car needs new tires before winter",
    );
    write(
        &a,
        None,
        "viking://resources/kitchen/fruit.md",
        "Bananas ripen quickly in a warm kitchen",
    );
    // "automobile" shares no word with the car document: only the vector signal finds it.
    // Scoped to resources: the dev-mode scaffold's sidecars (user, agent) are indexed too and,
    // sharing no word with it, tie at a vector score of 0.
    let ok = eventually(BOUND, || {
        let r = find(
            &a,
            None,
            json!({"query": "automobile", "target_uri": "viking://resources"}),
        );
        uris(&r).first().map(String::as_str) == Some("viking://resources/garage/car.md")
    });
    assert!(ok.is_some(), "vector match not found");
    let r = find(
        &a,
        None,
        json!({"query": "automobile", "target_uri": "viking://resources"}),
    );
    let hit = &r.result()["resources"][0];
    assert!(
        hit["match_reason"]
            .as_str()
            .unwrap()
            .contains("vector (harness-hash-64)"),
        "{hit}"
    );
    let score = hit["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    // Keyword search still works as such.
    let r = a.post(
        SEARCH,
        None,
        json!({"query": "automobile", "search_type": "keywords"}),
    );
    assert!(uris(&r).is_empty());
    // Vectors live in shared storage, hidden, keyed by model and content hash.
    assert!(st.at("default/_system/vectors").is_dir());
    let embedded_before_b = provider.inputs.load(std::sync::atomic::Ordering::Relaxed);

    // The provider goes down: writes and finds keep working from keywords.
    provider.take_down();
    write(
        &a,
        None,
        "viking://resources/garage/vehicle.md",
        "Our vehicle broke down on the highway",
    );
    let r = find(&a, None, json!({"query": "vehicle highway"}));
    assert_eq!(
        uris(&r).first().map(String::as_str),
        Some("viking://resources/garage/vehicle.md")
    );
    assert!(r.result()["resources"][0]["match_reason"]
        .as_str()
        .unwrap()
        .contains("keyword"));
    let failing = eventually(BOUND, || {
        let s = search_status(&a);
        s["embedding"]["state"] == "failing" && s["embedding"]["backlog"].as_u64().unwrap_or(0) >= 1
    });
    assert!(failing.is_some(), "{}", search_status(&a));
    let metrics = String::from_utf8_lossy(&a.get("/metrics", None).raw).to_string();
    assert!(
        metrics.contains("longship_search{name=\"embedding_backlog\"}"),
        "{metrics}"
    );
    // The key is never shown.
    let obs = a.get("/api/v1/observer/system?format=json", None);
    assert!(!String::from_utf8_lossy(&obs.raw).contains("sk-test-secret-value"));
    assert!(!a.log_text().contains("sk-test-secret-value"));

    // Back up: the backlog drains and the new document becomes a vector match too.
    provider.bring_back();
    let drained = eventually(Duration::from_secs(90), || {
        let r = find(
            &a,
            None,
            json!({"query": "automobile", "target_uri": "viking://resources"}),
        );
        uris(&r).contains(&"viking://resources/garage/vehicle.md".to_string())
    });
    assert!(drained.is_some(), "{}", search_status(&a));

    // Another instance loads the stored vectors instead of paying the provider again.
    let b = Server::start(&st, dense(Opts::dev()));
    let loaded = eventually(BOUND, || {
        search_status(&b)["embedding"]["loaded_from_storage"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    assert!(loaded.is_some(), "{}", search_status(&b));
    assert_eq!(search_status(&b)["embedding"]["embedded"], 0);
    let _ = embedded_before_b;
}

#[test]
fn session_archives_are_not_findable_and_removed_users_are_purged() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "alice");
    let bob = register(&s, &admin, "acme", "bob", "user");
    let r = s.post("/api/v1/sessions", Some(&bob), json!({"session_id": "s1"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(
        "/api/v1/sessions/s1/messages",
        Some(&bob),
        json!({"role": "user", "content": "remember the quokka expedition"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Neither live messages nor the archive a commit makes are indexed (0.5.2 skips the
    // session namespace; tests/it/layout.rs checks it on both backends).
    assert!(uris(&find(&s, Some(&bob), json!({"query": "quokka"}))).is_empty());
    let r = s.post("/api/v1/sessions/s1/commit", Some(&bob), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    write(
        &s,
        Some(&bob),
        "viking://~/memories/notes/q.md",
        "quokka sightings",
    );
    let hits = uris(&find(&s, Some(&bob), json!({"query": "quokka"})));
    assert!(hits.iter().all(|u| !u.contains("/sessions/")), "{hits:?}");
    assert!(
        hits.contains(&"viking://user/bob/memories/notes/q.md".to_string()),
        "{hits:?}"
    );
    // alice (same account) never sees bob's sessions.
    assert!(uris(&find(&s, Some(&admin), json!({"query": "quokka"}))).is_empty());
    // bob is removed, then a new bob registered: none of the old bob's data is found.
    write(
        &s,
        Some(&bob),
        "viking://~/memories/notes/x.md",
        "platypus notes",
    );
    let r = s.delete("/api/v1/admin/accounts/acme/users/bob", Some(ROOT_KEY));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let bob2 = register(&s, &admin, "acme", "bob", "user");
    for q in ["platypus", "quokka"] {
        assert!(
            uris(&find(&s, Some(&bob2), json!({"query": q}))).is_empty(),
            "{q}"
        );
    }
}

/// A change written to storage with no change record (its writer was killed in between) is
/// found by the periodic reconcile within `search.reconcile_interval_secs`.
#[test]
fn unrecorded_changes_are_repaired_by_the_reconcile() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::dev().env("LONGSHIP_SEARCH__RECONCILE_INTERVAL_SECS", "10"),
    );
    wait_built(&s);
    st.at("default/resources/orphan.md").write("wombat burrow");
    let took = eventually(Duration::from_secs(40), || {
        uris(&find(&s, None, json!({"query": "wombat"}))) == vec!["viking://resources/orphan.md"]
    });
    assert!(took.is_some(), "unrecorded write not repaired");
    st.at("default/resources/orphan.md").remove(false);
    let gone = eventually(Duration::from_secs(40), || {
        uris(&find(&s, None, json!({"query": "wombat"}))).is_empty()
    });
    assert!(gone.is_some(), "unrecorded removal not repaired");
}

/// A new account's and a new user's scaffold abstracts are findable at once: their sidecars
/// are what the creation records for the index — not the whole account, which may already
/// hold data (here documents planted behind the server's back, which only the periodic
/// reconcile picks up) that finds of the account would otherwise wait on while it is
/// re-indexed.
#[test]
fn scaffolds_of_new_accounts_and_users_are_findable_at_once() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    wait_built(&s);
    let planted: Vec<(String, Vec<u8>)> = (0..400)
        .map(|i| {
            (
                format!("acme/resources/old/doc{i}.md"),
                format!("quokkaplanted document {i}").into_bytes(),
            )
        })
        .collect();
    st.at("").seed(planted);
    let key = create_account(&s, "acme", "alice");
    let r = find(
        &s,
        Some(&key),
        // (The skills registry's own summary is not a hit: skill hits come only from inside a
        // package, as in 0.5.2.)
        json!({"query": "shared agent capabilities configuration", "target_uri": "viking://agent"}),
    );
    assert!(
        uris(&r).contains(&"viking://agent/.abstract.md".to_string()),
        "{:?}",
        r.body
    );
    let bob = register(&s, &key, "acme", "bob", "user");
    let r = find(
        &s,
        Some(&bob),
        json!({"query": "long-term memories", "target_uri": "viking://user/bob"}),
    );
    assert!(
        uris(&r).contains(&"viking://user/bob/memories/.overview.md".to_string())
            || uris(&r).contains(&"viking://user/bob/memories/.abstract.md".to_string()),
        "{:?}",
        r.body
    );
    let r = find(&s, Some(&key), json!({"query": "quokkaplanted"}));
    assert!(
        uris(&r).is_empty(),
        "the creation re-indexed the whole account"
    );
    let status = search_status(&s);
    assert_eq!(status["errors"], 0, "{status}");
}
