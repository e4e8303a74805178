//! Observer components, `system/consistency` and the debug routes (issue #24) through the real
//! binary: every component in 0.5.2's shape with real values, keys masked and storage
//! locations never shown; a consistency check that finds what was changed behind the index's
//! back and agrees again after a reindex; the debug routes scoped to the caller's account.
//! Runs on both storage backends.

use std::time::Duration;

use serde_json::{json, Value};

use crate::embed_server::{EmbedServer, DIM};
use crate::find::{eventually, find, write};
use crate::harness::api::{create_account, register};
use crate::harness::{Opts, Resp, Server, Storage};
use crate::layout::with_summaries;

const COMPONENTS: [&str; 6] = [
    "queue",
    "vikingdb",
    "models",
    "lock",
    "retrieval",
    "filesystem",
];
const CHAT_KEY: &str = "sk-observer-secret-0123456789WXYZ";
const EMBED_KEY: &str = "sk-embedding-secret-abcdefghQRST";
const CONSISTENCY: &str = "/api/v1/system/consistency";

fn component(s: &Server, key: &str, name: &str, format: &str) -> Value {
    let r = s.get(
        &format!("/api/v1/observer/{name}?format={format}"),
        Some(key),
    );
    assert_eq!(r.status, 200, "{name}: {:?}", r.body);
    let c = r.result().clone();
    assert_eq!(c["name"], name);
    assert!(
        c["is_healthy"].is_boolean() && c["has_errors"].is_boolean(),
        "{c}"
    );
    assert!(c["is_healthy"] != c["has_errors"], "{c}");
    c
}

fn status_json(s: &Server, key: &str, name: &str) -> Value {
    component(s, key, name, "json")["status"].clone()
}

fn with_models(provider: &EmbedServer) -> Opts {
    Opts::default()
        .env("LONGSHIP_EMBEDDING__DENSE__PROVIDER", "openai")
        .env("LONGSHIP_EMBEDDING__DENSE__API_BASE", &provider.api_base())
        .env("LONGSHIP_EMBEDDING__DENSE__MODEL", "harness-hash-64")
        .env("LONGSHIP_EMBEDDING__DENSE__DIMENSION", &DIM.to_string())
        .env("LONGSHIP_EMBEDDING__DENSE__API_KEY", EMBED_KEY)
        // A chat model that is configured but never called by this test.
        .env("LONGSHIP_VLM__API_BASE", "http://127.0.0.1:9/v1")
        .env("LONGSHIP_VLM__MODEL", "observer-chat")
        .env("LONGSHIP_VLM__API_KEY", CHAT_KEY)
}

#[test]
fn every_component_shows_real_values_in_both_formats() {
    let provider = EmbedServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_models(&provider));
    let admin = create_account(&s, "obsacct", "boss");
    for i in 0..3 {
        write(
            &s,
            Some(&admin),
            &format!("viking://resources/obs/doc{i}.md"),
            &format!("observer note {i} about lighthouses"),
        );
    }
    for _ in 0..2 {
        let r = find(&s, Some(&admin), json!({"query": "lighthouses"}));
        assert_eq!(r.status, 200, "{:?}", r.body);
    }

    for name in COMPONENTS {
        let table = component(&s, &admin, name, "table");
        assert!(table["status"].is_string(), "{name}: {table}");
        let default = s.get(&format!("/api/v1/observer/{name}"), Some(&admin));
        assert!(
            default.result()["status"].is_string(),
            "{name} default is the table"
        );
        assert!(status_json(&s, &admin, name).is_object(), "{name}");
        // No component names where the data lives.
        for r in [&table, &default.result().clone()] {
            let text = r.to_string();
            assert!(
                !text.contains(&st.path().display().to_string()),
                "{name}: {text}"
            );
            assert!(
                !text.contains(CHAT_KEY) && !text.contains(EMBED_KEY),
                "{name}"
            );
        }
    }
    let bad = s.get("/api/v1/observer/queue?format=xml", Some(&admin));
    assert_eq!(bad.status, 400, "{:?}", bad.body);

    // queue: the pools with the work they did, and the three backlogs.
    let q = status_json(&s, &admin, "queue");
    let names: Vec<&str> = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["queue"].as_str().unwrap())
        .collect();
    for want in [
        "storage",
        "ingest",
        "ingestion",
        "memory_backlog",
        "embedding",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    let storage_pool = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["queue"] == "storage")
        .unwrap();
    assert!(storage_pool["processed"].as_u64().unwrap() >= 3, "{q}");

    // vikingdb: the index's documents and segments.
    let v = status_json(&s, &admin, "vikingdb");
    assert!(v["index"]["documents"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["index"]["segments"].as_u64().unwrap() >= 1, "{v}");
    assert!(component(&s, &admin, "vikingdb", "table")["status"]
        .as_str()
        .unwrap()
        .contains("Segments"));

    // models: both configured models, keys masked to their last four characters.
    let m = status_json(&s, &admin, "models");
    assert_eq!(m["vlm"][0]["model"], "observer-chat", "{m}");
    assert_eq!(m["vlm"][0]["api_key"], "****WXYZ", "{m}");
    assert_eq!(m["embedding"][0]["model"], "harness-hash-64", "{m}");
    assert_eq!(m["embedding"][0]["api_key"], "****QRST", "{m}");
    let mt = component(&s, &admin, "models", "table");
    assert!(mt["status"].as_str().unwrap().contains("****WXYZ"), "{mt}");
    assert!(
        !mt.to_string().contains("127.0.0.1:9"),
        "endpoints are not shown: {mt}"
    );

    // retrieval: the two finds, with their latency.
    let r = status_json(&s, &admin, "retrieval");
    let find_latency = r["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["route"] == "find")
        .cloned()
        .unwrap();
    assert!(find_latency["requests"].as_u64().unwrap() >= 2, "{r}");
    assert!(
        find_latency["avg_latency_ms"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["queries"].as_u64().unwrap() >= 2, "{r}");
    let rt = component(&s, &admin, "retrieval", "table");
    assert!(
        rt["status"]
            .as_str()
            .unwrap()
            .contains("find Avg Latency (ms)"),
        "{rt}"
    );

    // lock: counts, and nothing held while idle.
    let l = status_json(&s, &admin, "lock");
    assert!(
        l["active_locks"].is_u64() && l["timed_out_waits"].is_u64(),
        "{l}"
    );
    assert_eq!(l["available"], true);

    // filesystem: the backend kind and its reachability, jobs counted, no location.
    let f = status_json(&s, &admin, "filesystem");
    let mount = &f["mounts"][0];
    assert_eq!(mount["reachable"], true, "{f}");
    assert_eq!(
        mount["plugin"],
        if st.is_s3() { "s3" } else { "local" },
        "{f}"
    );
    assert!(
        mount["stats"]["total_operations"].as_u64().unwrap() >= 3,
        "{f}"
    );
    assert!(
        mount.get("location").is_none() && mount.get("error").is_none(),
        "{f}"
    );

    // debug/health answers for the caller's account.
    let h = s.get("/api/v1/debug/health", Some(&admin));
    assert_eq!(h.status, 200, "{:?}", h.body);
    assert_eq!(h.result()["account_id"], "obsacct");
    assert_eq!(h.result()["healthy"], true);
}

fn consistency(s: &Server, key: &str, uri: &str) -> Resp {
    s.post(CONSISTENCY, Some(key), json!({"uri": uri}))
}

fn missing_keys(r: &Resp) -> Vec<String> {
    r.result()["missing_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn consistency_finds_changes_made_behind_the_index_and_agrees_after_reindex() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        with_summaries(Opts::default()).env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "300"),
    );
    let admin = create_account(&s, "consist", "boss");
    for name in ["a.md", "sub/b.md"] {
        write(
            &s,
            Some(&admin),
            &format!("viking://resources/cc/{name}"),
            &format!("consistency note {name}"),
        );
    }
    // Once the summaries are written the subtree agrees with the index.
    let agreed = eventually(Duration::from_secs(30), || {
        let r = consistency(&s, &admin, "viking://resources/cc");
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.result()["ok"] == true
    });
    let r = consistency(&s, &admin, "viking://resources/cc");
    assert!(agreed.is_some(), "{:?}", r.body);
    // 2 files and two sidecars each for cc and cc/sub.
    assert_eq!(r.result()["expected_count"], 6, "{:?}", r.body);
    assert_eq!(r.result()["missing_record_count"], 0);

    // A file written straight into storage (no change record): missing from the index.
    st.write(
        "consist/resources/cc/sub/behind.md",
        b"written behind the index",
    );
    let r = consistency(&s, &admin, "viking://resources/cc");
    assert_eq!(r.result()["ok"], false, "{:?}", r.body);
    assert_eq!(
        missing_keys(&r),
        vec!["sub/behind.md#level=2"],
        "{:?}",
        r.body
    );
    assert_eq!(
        r.result()["missing_records"][0]["uri"],
        "viking://resources/cc/sub/behind.md"
    );
    // A file removed behind the index's back: an orphaned record.
    st.at("consist/resources/cc/a.md").remove(false);
    let r = consistency(&s, &admin, "viking://resources/cc");
    let orphaned = &r.result()["orphaned_records"];
    assert_eq!(orphaned[0]["key"], "a.md#level=2", "{:?}", r.body);

    // content/reindex repairs it.
    let re = s.post(
        "/api/v1/content/reindex",
        Some(&admin),
        json!({"uri": "viking://resources/cc", "mode": "vectors_only", "wait": true}),
    );
    assert_eq!(re.status, 200, "{:?}", re.body);
    let repaired = eventually(Duration::from_secs(30), || {
        let r = consistency(&s, &admin, "viking://resources/cc");
        r.result()["missing_record_count"] == 0 && r.result()["orphaned_record_count"] == 0
    });
    let r = consistency(&s, &admin, "viking://resources/cc");
    assert!(repaired.is_some(), "{:?}", r.body);

    // Bad input: a file, a missing directory, no uri, another user's space.
    let r = consistency(&s, &admin, "viking://resources/cc/sub/b.md");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(
        consistency(&s, &admin, "viking://resources/nowhere").status,
        404
    );
    assert_eq!(s.post(CONSISTENCY, Some(&admin), json!({})).status, 400);
    let user = register(&s, &admin, "consist", "pat", "user");
    assert_eq!(consistency(&s, &user, "viking://user/boss").status, 403);
    assert_eq!(consistency(&s, &user, "viking://user/pat").status, 200);
}

#[test]
fn debug_vector_routes_are_scoped_to_the_account() {
    let st = Storage::new();
    // Without an embedding model: 0.5.2's answer for a missing vector store.
    let plain = Server::start(&st, Opts::default());
    let key = create_account(&plain, "novec", "boss");
    for path in ["/api/v1/debug/vector/scroll", "/api/v1/debug/vector/count"] {
        let r = plain.get(path, Some(&key));
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert_eq!(r.code(), "NO_VECTOR_DB");
    }
    drop(plain);

    let provider = EmbedServer::start();
    let s = Server::start(&st, with_models(&provider));
    let a = create_account(&s, "veca", "boss");
    let b = create_account(&s, "vecb", "boss");
    for i in 0..5 {
        write(
            &s,
            Some(&a),
            &format!("viking://resources/v/n{i}.md"),
            &format!("alpha {i}"),
        );
    }
    write(&s, Some(&b), "viking://resources/other.md", "beta");
    // Every record of account a, in pages of 2; none of account b.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            None => "/api/v1/debug/vector/scroll?limit=2&uri=viking://resources/v".to_string(),
            Some(c) => format!(
                "/api/v1/debug/vector/scroll?limit=2&uri=viking://resources/v&cursor={}",
                crate::harness::api::q(c)
            ),
        };
        let r = s.get(&path, Some(&a));
        assert_eq!(r.status, 200, "{:?}", r.body);
        for rec in r.result()["records"].as_array().unwrap() {
            assert_eq!(rec["account_id"], "veca");
            seen.push(rec["uri"].as_str().unwrap().to_string());
        }
        match r.result()["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let files: Vec<&String> = seen.iter().filter(|u| u.ends_with(".md")).collect();
    assert_eq!(files.len(), 5, "{seen:?}");
    let all = s.get("/api/v1/debug/vector/scroll?limit=1000", Some(&a));
    assert!(!all.body.to_string().contains("other.md"), "{:?}", all.body);

    let count = |key: &str, query: &str| {
        let r = s.get(&format!("/api/v1/debug/vector/count{query}"), Some(key));
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.result()["count"].as_u64().unwrap()
    };
    assert_eq!(count(&a, "?uri=viking://resources/v"), 5);
    let level2 = crate::harness::api::q(r#"{"op":"must","field":"level","conds":[2]}"#);
    assert_eq!(
        count(&a, &format!("?uri=viking://resources/v&filter={level2}")),
        5
    );
    assert_eq!(
        count(&b, &format!("?uri=viking://resources&filter={level2}")),
        1
    );
    let bad = s.get("/api/v1/debug/vector/count?filter=%7Bnope", Some(&a));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.code(), "INVALID_FILTER");
    let bad = s.get("/api/v1/debug/vector/scroll?limit=0", Some(&a));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
}
