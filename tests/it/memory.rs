//! Long-term memory extraction (commit Phase 2) through the real binary. The chat model is a
//! small deterministic stand-in on loopback (`chat_server.rs`), standing for any
//! OpenAI-compatible provider: it turns `remember ...` lines of the conversation into memory
//! operations, and misbehaves on cue.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::chat_server::{Answer, ChatServer};
use crate::harness::api::{ok, q, Dev};
use crate::harness::{Opts, Server, Storage};

fn with_model(model: &ChatServer) -> Opts {
    Opts::dev()
        .env("LONGSHIP_VLM__API_BASE", &model.api_base())
        .env("LONGSHIP_VLM__MODEL", "stand-in")
        .env("LONGSHIP_VLM__MAX_RETRIES", "0")
        .env("LONGSHIP_VLM__TIMEOUT", "2")
        .env("LONGSHIP_MEMORY__POLL_INTERVAL_MS", "200")
        .env("LONGSHIP_MEMORY__RETRY_MAX_SECS", "1")
}

/// Add `lines` as user messages to session `sid` and commit; the phase-2 task id.
fn commit(c: &Dev, sid: &str, lines: &[&str]) -> String {
    let r = c.post("/api/v1/sessions", json!({"session_id": sid}));
    assert!(r.status == 200 || r.status == 409, "{:?}", r.body);
    for l in lines {
        ok(&c.post(
            &format!("/api/v1/sessions/{sid}/messages"),
            json!({"role": "user", "content": l}),
        ));
    }
    let r = c.post(&format!("/api/v1/sessions/{sid}/commit"), json!({}));
    let out = ok(&r).clone();
    assert_eq!(out["status"], "accepted", "{out}");
    out["task_id"].as_str().unwrap().to_string()
}

fn wait_task(c: &Dev, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let t = ok(&c.get(&format!("/api/v1/tasks/{id}"))).clone();
        if t["status"] == "completed" || t["status"] == "failed" {
            return t;
        }
        assert!(Instant::now() < deadline, "task {id} not done: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const MEM: &str = "acme/user/alice/memories";

/// The start files every extraction with a model writes once (soul, identity): left out of
/// [`memory_files`], checked by their own test.
fn is_start_file(p: &str) -> bool {
    p == format!("{MEM}/soul.md") || p == format!("{MEM}/identity.md")
}

/// Memory files of alice (her own and her peers'), start files left out.
fn memory_files(st: &Storage) -> Vec<String> {
    fn walk(st: &Storage, rel: &str, out: &mut Vec<String>) {
        for name in st.list(rel) {
            let p = format!("{rel}/{name}");
            if st.at(&p).is_dir() {
                walk(st, &p, out);
            } else if !name.starts_with('.') {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    if st.exists(MEM) {
        walk(st, MEM, &mut out);
    }
    let peers = "acme/user/alice/peers";
    if st.exists(peers) {
        walk(st, peers, &mut out);
    }
    out.retain(|p| !is_start_file(p));
    out.sort();
    out
}

fn body_of(st: &Storage, rel: &str) -> String {
    let text = st.read_string(rel);
    text.split("<!-- MEMORY_FIELDS")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn no_model_completes_with_the_reason() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);
    let id = commit(&c, "nm", &["remember pref tea = Likes green tea"]);
    let t = wait_task(&c, &id, Duration::from_secs(30));
    assert_eq!(t["status"], "completed");
    let r = &t["result"];
    assert_eq!(r["extraction_outcome"]["kind"], "skipped");
    assert_eq!(
        r["extraction_outcome"]["reason"],
        "no chat model configured"
    );
    assert_eq!(r["memories_extracted"]["total"], 0);
    assert_eq!(r["memory_extraction"]["skipped"], 0);
    assert!(memory_files(&st).is_empty());
}

#[test]
fn each_type_is_extracted_and_the_same_fact_twice_updates_one_file() {
    let model = ChatServer::start();
    let st = Storage::new();
    // Directory summaries refreshed as shipped (the harness defers them): checked below.
    let s = Server::start(&st, crate::layout::with_summaries(with_model(&model)));
    let c = Dev::alice(&s);
    let id = commit(
        &c,
        "s1",
        &[
            "remember pref coffee = Drinks oat milk flat whites",
            "remember entity pet/rex = Rex is the user's beagle",
            "remember event dentist_booked = Alice booked a dentist visit",
            "remember profile - = Lives in Lisbon",
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["status"], "completed", "{t}");
    let r = &t["result"];
    assert_eq!(r["extraction_outcome"]["kind"], "ok", "{r}");
    assert_eq!(r["memories_extracted"]["total"], 4, "{r}");
    // Tokens as the stand-in reports them (one request: 100 prompt + 20 completion), in the
    // result and in the session's counters that 0.5.2's clients show (`ov session get`).
    assert_eq!(r["token_usage"]["llm"]["prompt_tokens"], 100, "{r}");
    assert_eq!(r["token_usage"]["llm"]["completion_tokens"], 20, "{r}");
    assert_eq!(r["token_usage"]["llm"]["total_tokens"], 120, "{r}");
    let meta = ok(&c.get("/api/v1/sessions/s1")).clone();
    assert_eq!(meta["llm_token_usage"]["total_tokens"], 120, "{meta}");
    assert_eq!(meta["llm_token_usage"]["prompt_tokens"], 100, "{meta}");
    for ty in ["preferences", "entities", "events", "profile"] {
        assert_eq!(r["memories_extracted"][ty], 1, "{ty}: {r}");
    }
    let files = memory_files(&st);
    assert_eq!(files.len(), 4, "{files:?}");
    let pref = format!("{MEM}/preferences/alice/coffee.md");
    assert!(files.contains(&pref), "{files:?}");
    assert!(
        files.contains(&format!("{MEM}/entities/pet/rex.md")),
        "{files:?}"
    );
    assert!(files.contains(&format!("{MEM}/profile.md")), "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{MEM}/events/")) && f.ends_with("/dentist_booked.md")),
        "{files:?}"
    );
    assert_eq!(body_of(&st, &pref), "- Drinks oat milk flat whites");
    let text = st.read_string(&pref);
    assert!(text.contains("\"memory_type\": \"preferences\""), "{text}");
    // The memory directories' summaries follow (the layout refresher, marked by the record).
    let sidecar = format!("{MEM}/preferences/alice/.abstract.md");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !st.exists(&sidecar) {
        assert!(Instant::now() < deadline, "{sidecar} never written");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Tagged memory_type=<type> through the tag store (fs/attrs reports it, find filters it).
    let r = c.get(&format!(
        "/api/v1/fs/attrs?uri={}",
        q("viking://user/alice/memories/entities/pet/rex.md")
    ));
    assert_eq!(
        ok(&r)["attrs"]["tags"],
        json!(["memory_type=entities"]),
        "{r:?}"
    );
    // The archive's memory_diff.json lists the adds with their URIs.
    let diff: Value = serde_json::from_str(
        &st.read_string("acme/user/alice/sessions/s1/history/archive_001/memory_diff.json"),
    )
    .unwrap();
    assert_eq!(diff["summary"]["total_adds"], 4, "{diff}");
    assert!(diff["operations"]["adds"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["uri"] == "viking://user/alice/memories/preferences/alice/coffee.md"));
    assert_eq!(diff["extraction_outcome"]["counts"]["ok"], 1);

    // The same preference again plus a new line on the topic: one file, updated.
    let id = commit(
        &c,
        "s2",
        &[
            "remember pref coffee = Drinks oat milk flat whites",
            "remember pref coffee = Avoids coffee after 3pm",
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["preferences"], 1, "{t}");
    assert_eq!(memory_files(&st).len(), 4);
    assert_eq!(
        body_of(&st, &pref),
        "- Drinks oat milk flat whites\n- Avoids coffee after 3pm"
    );
    let diff: Value = serde_json::from_str(
        &st.read_string("acme/user/alice/sessions/s2/history/archive_001/memory_diff.json"),
    )
    .unwrap();
    assert_eq!(diff["summary"]["total_updates"], 1, "{diff}");
    assert_eq!(diff["summary"]["total_adds"], 0, "{diff}");

    // Exactly the same fact a third time: nothing changes.
    let before = st.read_string(&pref);
    let id = commit(
        &c,
        "s3",
        &["remember pref coffee = drinks oat milk flat whites."],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 0, "{t}");
    assert_eq!(t["result"]["extraction_outcome"]["kind"], "empty", "{t}");
    assert_eq!(st.read_string(&pref), before);

    // find returns the memory under `memories`.
    let r = c.post(
        "/api/v1/search/find",
        json!({"query": "oat milk flat whites"}),
    );
    let found = ok(&r)["memories"].as_array().cloned().unwrap_or_default();
    assert!(
        found
            .iter()
            .any(|m| m["uri"] == "viking://user/alice/memories/preferences/alice/coffee.md"),
        "{r:?}"
    );
    // /metrics counts the outcomes and tokens.
    let m = s.get("/metrics", None);
    let text = String::from_utf8_lossy(&m.raw).to_string();
    assert!(
        text.contains("longship_memory_extraction_calls_total{kind=\"ok\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("longship_memory_extraction_tokens_total{account=\"acme\"} 360"),
        "{text}"
    );
}

#[test]
fn a_retrieved_memory_echoed_by_the_conversation_is_not_added_again() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    // Stored by an agent through content/write: indexed as a memory at once.
    let uri = "viking://user/alice/memories/preferences/alice/drinks.md";
    ok(&c.post(
        "/api/v1/content/write",
        json!({"uri": uri, "content": "- Drinks oat milk flat whites", "mode": "create"}),
    ));
    let r = c.post(
        "/api/v1/search/find",
        json!({"query": "oat milk flat whites", "context_type": "memory"}),
    );
    assert!(
        ok(&r)["memories"].to_string().contains("drinks.md"),
        "{r:?}"
    );
    // The conversation repeats it under another topic name.
    let id = commit(
        &c,
        "echo",
        &["remember pref beverages = Drinks oat milk flat whites"],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 0, "{t}");
    assert_eq!(
        memory_files(&st),
        vec![format!("{MEM}/preferences/alice/drinks.md")]
    );
    // The stand-in was shown the stored memory as a candidate.
    let bodies = model.script.bodies.lock().unwrap().clone();
    assert!(bodies[0].to_string().contains(uri), "{}", bodies[0]);
}

#[test]
fn bad_answers_are_repaired_or_reported_by_kind_never_written() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);

    // Prose, then truncated JSON, then a good answer: repaired within the 2 repair turns.
    model.push(&[Answer::Prose, Answer::Truncated]);
    let id = commit(&c, "r1", &["remember pref tea = Likes green tea"]);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    let o = &t["result"]["extraction_outcome"];
    assert_eq!(o["kind"], "ok", "{t}");
    assert_eq!(o["counts"]["parse_error"], 2, "{o}");
    assert_eq!(o["counts"]["ok"], 1, "{o}");
    assert_eq!(memory_files(&st).len(), 1);

    // Wrong schema three times: reported, nothing written.
    model.push(&[
        Answer::WrongSchema,
        Answer::WrongSchema,
        Answer::WrongSchema,
    ]);
    let id = commit(&c, "r2", &["remember pref juice = Likes orange juice"]);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    let r = &t["result"];
    assert_eq!(r["extraction_outcome"]["kind"], "schema_error", "{t}");
    assert!(
        r["extraction_outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("operations"),
        "{r}"
    );
    assert_eq!(r["memories_extracted"]["total"], 0);
    assert_eq!(r["memory_extraction"]["skipped"], 1, "{r}");
    assert_eq!(memory_files(&st).len(), 1);

    // A provider without json_schema support: asked again in JSON mode, works.
    model
        .script
        .refuse_schema
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let id = commit(&c, "r3", &["remember pref bread = Likes rye bread"]);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    let last = model.script.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["response_format"]["type"], "json_object", "{last}");
    assert_eq!(memory_files(&st).len(), 2);

    // HTTP 500 and a slow answer (past vlm.timeout): the task waits (never completes empty,
    // never slows other requests), then succeeds once the model answers.
    model.push(&[Answer::Error500, Answer::Slow(Duration::from_secs(4))]);
    let id = commit(&c, "r4", &["remember pref cake = Likes carrot cake"]);
    // Polled until the waiting stage shows (it lasts seconds: a retry backoff, the 2 s
    // timeout, another backoff) or the task ends; when the extractor first picks the entry up
    // depends on the load, so no fixed window.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_waiting = false;
    while !saw_waiting && Instant::now() < deadline {
        let h = s.get("/health", None);
        assert_eq!(h.status, 200);
        let t = ok(&c.get(&format!("/api/v1/tasks/{id}"))).clone();
        if t["stage"]
            .as_str()
            .unwrap_or("")
            .contains("waiting for the model")
        {
            saw_waiting = true;
        }
        if t["status"] == "completed" || t["status"] == "failed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    assert!(saw_waiting, "the task should show it waits for the model");
    let m = String::from_utf8_lossy(&s.get("/metrics", None).raw).to_string();
    assert!(
        m.contains("longship_memory_extraction_calls_total{kind=\"provider_error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("longship_memory_extraction_calls_total{kind=\"timeout\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("longship_memory_extraction_calls_total{kind=\"schema_error\"} 3"),
        "{m}"
    );
    // Every memory file is whole Markdown with its fields.
    for f in memory_files(&st) {
        let text = st.read_string(&f);
        assert!(text.trim_end().ends_with("-->"), "{f}: {text}");
    }
    assert_eq!(memory_files(&st).len(), 3);
}

#[test]
fn model_down_then_up_drains_the_backlog() {
    let model = ChatServer::start();
    model.set_default(Some(Answer::Error500));
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            commit(
                &c,
                &format!("d{i}"),
                &[&format!("remember pref topic{i} = Fact number {i}")],
            )
        })
        .collect();
    // Down: the backlog holds them, visible in /metrics; the tasks are not completed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = String::from_utf8_lossy(&s.get("/metrics", None).raw).to_string();
        if m.contains("longship_memory{name=\"backlog\"} 3")
            && model.requests.load(std::sync::atomic::Ordering::Relaxed) >= 3
        {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &ids {
        let t = ok(&c.get(&format!("/api/v1/tasks/{id}"))).clone();
        assert_ne!(t["status"], "completed", "{t}");
    }
    // The observer shows it too (dev mode: no key needed).
    let o = s.get("/api/v1/observer/system?format=json", None);
    assert_eq!(
        o.result()["components"]["memory"]["status"]["backlog"],
        3,
        "{:?}",
        o.body
    );
    assert!(
        o.result()["components"]["memory"]["status"]["calls"]["provider_error"]
            .as_u64()
            .unwrap()
            >= 3
    );
    // A restart keeps the backlog.
    let mut s = s;
    s.restart();
    let c = Dev::alice(&s);
    model.set_default(None);
    for id in &ids {
        let t = wait_task(&c, id, Duration::from_secs(60));
        assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    }
    assert_eq!(memory_files(&st).len(), 3);
    // The entries go right after their tasks complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !st.list("acme/_system/memory/backlog").is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            st.list("acme/_system/memory/backlog")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_mid_extraction_extracts_exactly_once_after_restart() {
    let model = ChatServer::start();
    let st = Storage::new();
    let mut s = Server::start(&st, with_model(&model).env("LONGSHIP_VLM__TIMEOUT", "30"));
    model.push(&[Answer::Slow(Duration::from_secs(3))]);
    let c = Dev::alice(&s);
    let id = commit(
        &c,
        "k1",
        &[
            "remember pref tea = Likes green tea",
            "remember entity pet/rex = A beagle",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.requests.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    s.restart(); // kill -9, then start on the same storage
    let c = Dev::alice(&s);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 2, "{t}");
    let files = memory_files(&st);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        body_of(&st, &format!("{MEM}/preferences/alice/tea.md")),
        "- Likes green tea"
    );
    // Restarting again does not extract it a second time.
    let asked = model.requests.load(std::sync::atomic::Ordering::Relaxed);
    s.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        model.requests.load(std::sync::atomic::Ordering::Relaxed),
        asked
    );
    assert_eq!(memory_files(&st).len(), 2);
}

#[test]
fn two_instances_never_lose_each_others_updates() {
    let model = ChatServer::start();
    let st = Storage::new();
    let a = Server::start(&st, with_model(&model));
    let b = Server::start(&st, with_model(&model));
    let (ca, cb) = (Dev::alice(&a), Dev::alice(&b));
    let mut ids = Vec::new();
    for i in 0..4 {
        let (c, name) = if i % 2 == 0 { (&ca, "a") } else { (&cb, "b") };
        ids.push(commit(
            c,
            &format!("{name}{i}"),
            &[
                &format!("remember pref music = Listens to album {i}"),
                &format!("remember entity place/spot{i} = Place {i}"),
            ],
        ));
    }
    for id in &ids {
        let t = wait_task(&ca, id, Duration::from_secs(90));
        assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    }
    let files = memory_files(&st);
    assert_eq!(files.len(), 5, "{files:?}");
    let music = body_of(&st, &format!("{MEM}/preferences/alice/music.md"));
    for i in 0..4 {
        assert!(music.contains(&format!("Listens to album {i}")), "{music}");
    }
    assert_eq!(music.lines().count(), 4, "{music}");
    // Another user sees none of alice's memories.
    let bob = Dev::new(&a, "acme", "bob");
    let r = bob.post("/api/v1/search/find", json!({"query": "album"}));
    assert!(
        ok(&r)["memories"].as_array().is_none_or(|m| m.is_empty()),
        "{r:?}"
    );
}

#[test]
fn stats_config_and_tool_results_routes() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let id = commit(
        &c,
        "st",
        &[
            "remember pref tea = Likes green tea",
            "remember event trip_booked = Alice booked a trip",
        ],
    );
    wait_task(&c, &id, Duration::from_secs(60));
    let r = c.get("/api/v1/stats/memories");
    let v = ok(&r);
    assert_eq!(v["total_memories"], 2, "{v}");
    assert_eq!(v["by_category"]["preferences"], 1, "{v}");
    assert_eq!(v["by_category"]["events"], 1, "{v}");
    assert_eq!(v["hotness_distribution"]["warm"], 2, "{v}");
    let v = ok(&c.get("/api/v1/stats/memories?category=events")).clone();
    assert_eq!(v["total_memories"], 1, "{v}");
    let r = c.get("/api/v1/stats/memories?category=nope");
    assert_eq!(r.status, 400, "{:?}", r.body);
    let v = ok(&c.get("/api/v1/stats/sessions/st")).clone();
    assert_eq!(
        v,
        json!({"session_id": "st", "total_turns": 2, "memories_extracted": 2})
    );
    assert_eq!(c.get("/api/v1/stats/sessions/missing").status, 404);

    // PATCH config changes only what it names.
    let r = c.call(
        "PATCH",
        "/api/v1/sessions/st/config",
        Some(json!({"memory_extraction_config": {"events": {"tags": ["trip=yes"]}}})),
    );
    let v = ok(&r).clone();
    assert_eq!(
        v["memory_extraction_config"],
        json!({"events": {"tags": ["trip=yes"]}})
    );
    let r = c.call(
        "PATCH",
        "/api/v1/sessions/st/config",
        Some(json!({"auto_commit_policy": {"message_count_threshold": 5}})),
    );
    let v = ok(&r).clone();
    assert_eq!(v["auto_commit_policy"]["message_count_threshold"], 5);
    assert_eq!(
        v["memory_extraction_config"],
        json!({"events": {"tags": ["trip=yes"]}})
    );
    let r = c.call(
        "PATCH",
        "/api/v1/sessions/st/config",
        Some(json!({"other": 1})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = c.call("PATCH", "/api/v1/sessions/nope/config", Some(json!({})));
    assert_eq!(r.status, 404, "{:?}", r.body);

    for path in [
        "/api/v1/sessions/st/tool-results",
        "/api/v1/sessions/st/tool-results/t1",
        "/api/v1/sessions/st/tool-results/t1/search",
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 501, "{path}: {:?}", r.body);
        assert!(
            r.body.to_string().contains("tool outputs inline"),
            "{:?}",
            r.body
        );
    }
}

#[test]
fn account_memory_templates_edit_what_the_model_reads_and_memories_stay_private() {
    use crate::harness::api::{create_account, register};
    let model = ChatServer::start();
    let st = Storage::new();
    let mut opts = with_model(&model);
    opts.root_key = Opts::default().root_key;
    let s = Server::start(&st, opts);
    let admin = create_account(&s, "acme", "alice");
    let other = create_account(&s, "zeta", "zed");
    let bob = register(&s, &admin, "acme", "bob", "user");
    let base = "/api/v1/admin/accounts/acme/memory-templates";

    let list = s.get(base, Some(&admin));
    let names: Vec<String> = ok(&list)["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["memory_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "profile",
            "events",
            "preferences",
            "entities",
            "soul",
            "identity"
        ]
    );
    let one = ok(&s.get(&format!("{base}/preferences"), Some(&admin))).clone();
    assert_eq!(one["status"], "system_default");
    assert_eq!(one["effective"], one["defaults"]);
    assert_eq!(
        one["defaults"]["filename_template"],
        "{{ user|lower }}/{{ topic|lower }}.md"
    );

    let body = json!({"description": "Only what the user likes to eat and drink.",
        "fields": [{"name": "topic", "description": "The dish or drink, one or two words."}]});
    let r = s.put(&format!("{base}/preferences"), Some(&admin), body);
    assert_eq!(ok(&r)["status"], "custom", "{:?}", r.body);
    assert_eq!(
        ok(&r)["effective"]["description"],
        "Only what the user likes to eat and drink."
    );
    // Locked values, unknown fields and other accounts are refused.
    let r = s.put(
        &format!("{base}/preferences"),
        Some(&admin),
        json!({"filename_template": "x.md"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = s.put(
        &format!("{base}/preferences"),
        Some(&admin),
        json!({"fields": [{"name": "user", "description": "x"}]}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(s.get(&format!("{base}/cases"), Some(&admin)).status, 404);
    assert_eq!(s.get(base, Some(&other)).status, 403);
    assert_eq!(s.get(base, Some(&bob)).status, 403);
    assert_eq!(
        s.get("/api/v1/admin/accounts/nope/memory-templates", None)
            .status,
        401
    );

    // Extraction reads the account's wording.
    let sid = "tpl";
    ok(&s.post("/api/v1/sessions", Some(&bob), json!({"session_id": sid})));
    ok(&s.post(
        &format!("/api/v1/sessions/{sid}/messages"),
        Some(&bob),
        json!({"role": "user", "content": "remember pref soup = Likes miso soup"}),
    ));
    let r = s.post(
        &format!("/api/v1/sessions/{sid}/commit"),
        Some(&bob),
        json!({}),
    );
    let task = ok(&r)["task_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = ok(&s.get(&format!("/api/v1/tasks/{task}"), Some(&bob))).clone();
        if t["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let system = model.script.bodies.lock().unwrap()[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        system.contains("Only what the user likes to eat and drink."),
        "{system}"
    );
    assert!(
        system.contains("The dish or drink, one or two words."),
        "{system}"
    );

    // bob's memory is bob's: alice (same account) neither finds nor reads it.
    let uri = "viking://user/bob/memories/preferences/alice/soup.md";
    let r = s.get(&format!("/api/v1/content/read?uri={}", q(uri)), Some(&bob));
    assert!(
        ok(&r).to_string().contains("Likes miso soup"),
        "{:?}",
        r.body
    );
    let r = s.get(
        &format!("/api/v1/content/read?uri={}", q(uri)),
        Some(&admin),
    );
    assert!(r.status == 403 || r.status == 404, "{:?}", r.body);
    let r = s.post(
        "/api/v1/search/find",
        Some(&admin),
        json!({"query": "miso soup"}),
    );
    assert!(
        ok(&r)["memories"].as_array().is_none_or(|m| m.is_empty()),
        "{:?}",
        r.body
    );

    // DELETE goes back to the default.
    let r = s.delete(&format!("{base}/preferences"), Some(&admin));
    assert_eq!(ok(&r)["status"], "system_default", "{:?}", r.body);
}

#[test]
fn a_deleted_session_leaves_no_extraction_behind() {
    let model = ChatServer::start();
    model.set_default(Some(Answer::Error500));
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let id = commit(&c, "gone", &["remember pref tea = Likes green tea"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while model.requests.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&c.delete("/api/v1/sessions/gone"));
    model.set_default(None);
    let t = wait_task(&c, &id, Duration::from_secs(30));
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t["error"].as_str().unwrap().contains("deleted"), "{t}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !st.list("acme/_system/memory/backlog").is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(memory_files(&st).is_empty());
}

/// Create session `sid` (with `policy` as its `memory_policy`), add `msgs`, commit; the task.
fn commit_messages(c: &Dev, sid: &str, policy: Option<Value>, msgs: &[Value]) -> String {
    let mut body = json!({"session_id": sid});
    if let Some(p) = policy {
        body["memory_policy"] = p;
    }
    ok(&c.post("/api/v1/sessions", body));
    for m in msgs {
        ok(&c.post(&format!("/api/v1/sessions/{sid}/messages"), m.clone()));
    }
    let out = ok(&c.post(&format!("/api/v1/sessions/{sid}/commit"), json!({}))).clone();
    assert_eq!(out["status"], "accepted", "{out}");
    out["task_id"].as_str().unwrap().to_string()
}

fn fields_of(st: &Storage, rel: &str) -> Value {
    let text = st.read_string(rel);
    let json = text
        .split("<!-- MEMORY_FIELDS")
        .nth(1)
        .and_then(|r| r.rsplit_once("-->"))
        .map(|(j, _)| j.trim().to_string())
        .unwrap_or_default();
    serde_json::from_str(&json).unwrap_or(Value::Null)
}

#[test]
fn soul_and_identity_are_kept_and_the_policy_picks_the_types() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let id = commit(
        &c,
        "s1",
        &[
            "remember identity name = Nova",
            "remember identity creature = robot",
            "remember pref tea = Likes green tea",
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    let r = &t["result"];
    // 0.5.2's default types for a plain user session (agent evolution off: no cases).
    assert_eq!(
        r["effective_memory_types"],
        json!([
            "entities",
            "events",
            "identity",
            "preferences",
            "profile",
            "soul"
        ]),
        "{r}"
    );
    assert_eq!(r["memories_extracted"]["identity"], 1, "{r}");
    assert_eq!(r["memories_extracted"]["preferences"], 1, "{r}");
    // Both single-file types exist in 0.5.2's places, with their fields.
    let soul = format!("{MEM}/soul.md");
    let identity = format!("{MEM}/identity.md");
    assert!(
        body_of(&st, &soul).contains("## Core truths"),
        "{}",
        st.read_string(&soul)
    );
    assert_eq!(fields_of(&st, &soul)["memory_type"], "soul");
    let f = fields_of(&st, &identity);
    assert_eq!(f["name"], "Nova", "{f}");
    assert_eq!(f["creature"], "robot", "{f}");
    assert!(body_of(&st, &identity).contains("- Name: Nova"));
    let r = c.get(&format!(
        "/api/v1/fs/attrs?uri={}",
        q("viking://user/alice/memories/soul.md")
    ));
    assert_eq!(
        ok(&r)["attrs"]["tags"],
        json!(["memory_type=soul"]),
        "{r:?}"
    );
    // The name is immutable once set.
    let id = commit(&c, "s2", &["remember identity name = Other"]);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 0, "{t}");
    assert_eq!(fields_of(&st, &identity)["name"], "Nova");

    // A session listing only events extracts only events, and says so.
    let id = commit_messages(
        &c,
        "only-events",
        Some(json!({"memory_types": ["events"]})),
        &[
            json!({"role": "user", "content": "remember pref jam = Likes jam"}),
            json!({"role": "user", "content": "remember event trip_booked = Alice booked a trip"}),
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(
        t["result"]["effective_memory_types"],
        json!(["events"]),
        "{t}"
    );
    assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
    assert_eq!(t["result"]["memories_extracted"]["events"], 1, "{t}");
    assert!(!memory_files(&st).iter().any(|f| f.ends_with("/jam.md")));
    // Only the listed types were offered to the model.
    let bodies = model.script.bodies.lock().unwrap().clone();
    let last = bodies.last().unwrap()["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        last.contains("\n## events\n") && !last.contains("\n## preferences\n"),
        "{last}"
    );
    // An unknown type is refused as 0.5.2 refuses it.
    let r = c.post(
        "/api/v1/sessions",
        json!({"session_id": "bad", "memory_policy": {"memory_types": ["nope"]}}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r
        .body
        .to_string()
        .contains("Unknown memory_policy.memory_types: nope"));
}

#[test]
fn peer_memories_go_to_the_peers_space_as_the_policy_allows() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let bob = |text: &str| json!({"role": "user", "content": text, "peer_id": "bob"});
    let me = |text: &str| json!({"role": "user", "content": text});
    let id = commit_messages(
        &c,
        "p1",
        None,
        &[
            me("remember pref tea = Likes green tea"),
            bob("remember pref coffee = Drinks espresso"),
            bob("remember event moved_house = Bob moved to Porto"),
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 3, "{t}");
    let files = memory_files(&st);
    let peer = "acme/user/alice/peers/bob/memories";
    assert!(
        files.contains(&format!("{MEM}/preferences/alice/tea.md")),
        "{files:?}"
    );
    let coffee = format!("{peer}/preferences/bob/coffee.md");
    assert!(files.contains(&coffee), "{files:?}");
    assert_eq!(fields_of(&st, &coffee)["peer_id"], "bob");
    // The event's owner comes from who wrote the messages of its ranges.
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(&format!("{peer}/events/")) && f.ends_with("/moved_house.md")),
        "{files:?}"
    );
    // The model was told who the peer is.
    let bodies = model.script.bodies.lock().unwrap().clone();
    let prompt = bodies[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("user (peer bob): remember pref coffee"),
        "{prompt}"
    );

    // Self memory off: the peer's memory is written; the user's own event (its ranges name
    // the user's message) is skipped with the reason.
    let id = commit_messages(
        &c,
        "p2",
        Some(json!({"self": {"enabled": false}})),
        &[
            me("remember event jam_made = Alice made jam"),
            bob("remember pref music = Plays jazz"),
        ],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
    assert!(st.exists(&format!("{peer}/preferences/bob/music.md")));
    assert!(!memory_files(&st)
        .iter()
        .any(|f| f.ends_with("/jam_made.md")));
    let skipped = t["result"]["memory_extraction"]["skipped_operations"].to_string();
    assert!(skipped.contains("self memory is off"), "{t}");

    // Peer memory off: the peer's line is not the user's either.
    let id = commit_messages(
        &c,
        "p3",
        Some(json!({"peer": {"enabled": false}})),
        &[bob("remember pref books = Reads sci-fi")],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 0, "{t}");
    assert!(!memory_files(&st).iter().any(|f| f.ends_with("/books.md")));
}

#[test]
fn a_changed_profile_fact_replaces_the_stale_one() {
    let model = ChatServer::start();
    let st = Storage::new();
    let s = Server::start(&st, with_model(&model));
    let c = Dev::alice(&s);
    let id = commit(
        &c,
        "f1",
        &["remember profile - = Residence: Berlin (as of 2025-01-02)"],
    );
    wait_task(&c, &id, Duration::from_secs(60));
    let id = commit(
        &c,
        "f2",
        &["remember profile - = Occupation: nurse (as of 2025-03-01)"],
    );
    wait_task(&c, &id, Duration::from_secs(60));
    let id = commit(
        &c,
        "f3",
        &["remember profile - = Residence: Lisbon (as of 2026-12-07)"],
    );
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["profile"], 1, "{t}");
    // The old residence is gone, the untouched fact stays: one current value per attribute.
    assert_eq!(
        body_of(&st, &format!("{MEM}/profile.md")),
        "# alice\n- Residence: Lisbon (as of 2026-12-07)\n- Occupation: nurse (as of 2025-03-01)"
    );
}

#[test]
fn a_spent_daily_token_budget_defers_extraction_and_loses_nothing() {
    let model = ChatServer::start();
    let st = Storage::new();
    // The stand-in reports 120 tokens per call: the first extraction spends the budget.
    let s = Server::start(
        &st,
        with_model(&model).env("LONGSHIP_MEMORY__DAILY_TOKEN_BUDGET", "100"),
    );
    let c = Dev::alice(&s);
    let id = commit(&c, "b1", &["remember pref tea = Likes green tea"]);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
    let day: String = longship::time::millis_z_now().chars().take(10).collect();
    let usage = format!("acme/_system/memory/usage/{day}.json");
    assert_eq!(
        serde_json::from_str::<Value>(&st.read_string(&usage)).unwrap()["tokens"],
        120
    );
    let asked = model.requests.load(std::sync::atomic::Ordering::Relaxed);
    let id = commit(&c, "b2", &["remember pref jam = Likes jam"]);
    // The task says why it waits; the model is not asked; the entry stays in the backlog.
    let deadline = Instant::now() + Duration::from_secs(30);
    let entry = format!("acme/_system/memory/backlog/{id}.json");
    loop {
        let t = ok(&c.get(&format!("/api/v1/tasks/{id}"))).clone();
        if t["stage"]
            .as_str()
            .is_some_and(|s| s.contains("daily token budget spent (120 of 100 tokens today)"))
        {
            assert_eq!(t["status"], "running", "{t}");
            break;
        }
        assert!(Instant::now() < deadline, "never deferred: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(st.exists(&entry));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        model.requests.load(std::sync::atomic::Ordering::Relaxed),
        asked
    );
    let m = String::from_utf8_lossy(&s.get("/metrics", None).raw).to_string();
    assert!(
        m.contains("longship_memory{name=\"budget_deferred\"} 1"),
        "{m}"
    );
    // The next UTC day (simulated: the day's figure and the entry's wait are cleared, as the
    // clock would): the extraction runs and says it waited.
    let mut e: Value = serde_json::from_str(&st.read_string(&entry)).unwrap();
    assert_eq!(e["budget_waits"], 1, "{e}");
    e["not_before"] = json!(0.0);
    st.write(&usage, br#"{"tokens": 0}"#);
    st.write(&entry, e.to_string().as_bytes());
    drop(s);
    let s = Server::start(
        &st,
        with_model(&model).env("LONGSHIP_MEMORY__DAILY_TOKEN_BUDGET", "100"),
    );
    let c = Dev::alice(&s);
    let t = wait_task(&c, &id, Duration::from_secs(60));
    assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
    assert_eq!(t["result"]["extraction_outcome"]["budget_waits"], 1, "{t}");
    assert!(st.exists(&format!("{MEM}/preferences/alice/jam.md")));
    // The backlog entry goes right after the task completes (a crash between the two only
    // repeats the clean-up), so it may still be there for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while st.exists(&entry) {
        assert!(
            Instant::now() < deadline,
            "the backlog entry stayed after the task"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn local_commits_and_retries_run_without_waiting_for_the_full_backlog_scan() {
    let model = ChatServer::start();
    let st = Storage::new();
    // A full scan every 10 minutes: only the account's own wake-ups and due times drive this.
    let s = Server::start(
        &st,
        with_model(&model).env("LONGSHIP_MEMORY__POLL_INTERVAL_MS", "600000"),
    );
    let c = Dev::alice(&s);
    // Let the start-up full scan pass, so the rest depends on wake-ups and timers.
    std::thread::sleep(Duration::from_millis(500));
    model.push(&[Answer::Error500]);
    let started = Instant::now();
    let id = commit(&c, "w1", &["remember pref tea = Likes green tea"]);
    let t = wait_task(&c, &id, Duration::from_secs(30));
    assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Two commits of one user in a row: the second runs when the first ends.
    let a = commit(&c, "w2", &["remember pref jam = Likes jam"]);
    let b = commit(&c, "w3", &["remember pref bread = Likes rye bread"]);
    for id in [a, b] {
        let t = wait_task(&c, &id, Duration::from_secs(30));
        assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
    }
}

/// A session created without a `memory_policy` follows its user's stored one (admin
/// `users/{id}/settings`, 0.5.2), read at commit: a user whose policy extracts nothing gets
/// commits that skip extraction; a session's own policy still wins.
#[test]
fn the_users_memory_policy_applies_when_the_session_has_none() {
    use crate::harness::api::{create_account, ACCOUNTS};
    let model = ChatServer::start();
    let st = Storage::new();
    let opts = Opts::default()
        .env("LONGSHIP_VLM__API_BASE", &model.api_base())
        .env("LONGSHIP_VLM__MODEL", "stand-in")
        .env("LONGSHIP_VLM__MAX_RETRIES", "0")
        .env("LONGSHIP_VLM__TIMEOUT", "2")
        .env("LONGSHIP_MEMORY__POLL_INTERVAL_MS", "200");
    let s = Server::start(&st, opts);
    let key = create_account(&s, "acme", "alice");
    let r = s.call(
        "PATCH",
        &format!("{ACCOUNTS}/acme/users/alice/settings"),
        Some(&key),
        Some(json!({"memory_policy": {"self": {"enabled": false}, "peer": {"enabled": false}}})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let commit_as = |sid: &str, policy: Option<Value>| {
        let mut body = json!({"session_id": sid});
        if let Some(p) = policy {
            body["memory_policy"] = p;
        }
        ok(&s.post("/api/v1/sessions", Some(&key), body));
        ok(&s.post(
            &format!("/api/v1/sessions/{sid}/messages"),
            Some(&key),
            json!({"role": "user", "content": "remember pref tea = Likes green tea"}),
        ));
        let out = ok(&s.post(
            &format!("/api/v1/sessions/{sid}/commit"),
            Some(&key),
            json!({}),
        ))
        .clone();
        let id = out["task_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = ok(&s.get(&format!("/api/v1/tasks/{id}"), Some(&key))).clone();
            if t["status"] == "completed" || t["status"] == "failed" {
                return t;
            }
            assert!(Instant::now() < deadline, "task {id} not done: {t}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let t = commit_as("by-user-policy", None);
    let r = &t["result"];
    assert_eq!(r["extraction_outcome"]["kind"], "skipped", "{t}");
    assert_eq!(
        r["extraction_outcome"]["reason"],
        "memory_policy extracts no memory types"
    );
    assert!(memory_files(&st).is_empty());
    // The session's own policy wins over the user's.
    let t = commit_as("own-policy", Some(json!({"memory_types": ["preferences"]})));
    assert_eq!(t["result"]["extraction_outcome"]["kind"], "ok", "{t}");
    assert_eq!(t["result"]["memories_extracted"]["total"], 1, "{t}");
}
