//! Sessions API (spec §9, SE1–SE9) and its tasks (§10), success and error rows. Dev mode: every
//! request is ROOT in the account/user named by the identity headers.

use serde_json::{json, Value};

use crate::harness::api::{err, ok, Dev};
use crate::harness::{Opts, Server, Storage};

#[test]
fn create_list_get_delete() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);

    // SE1: empty body → generated id; the user's dirs are scaffolded.
    let r = c.call("POST", "/api/v1/sessions", None);
    let gen = ok(&r)["session_id"].as_str().unwrap().to_string();
    assert_eq!(gen.len(), 32, "{gen}");
    assert_eq!(
        r.result()["uri"],
        format!("viking://user/alice/sessions/{gen}")
    );
    assert_eq!(
        r.result()["user"],
        json!({"account_id": "acme", "user_id": "alice"})
    );
    assert_eq!(r.result()["auto_commit_policy"], Value::Null);
    assert_eq!(
        r.result()["memory_extraction_config"],
        json!({"events": {"tags": []}})
    );
    assert!(st.exists("acme/user/alice/memories/.abstract.md"));
    assert!(st.exists(&format!("acme/user/alice/sessions/{gen}/messages.jsonl")));

    let r = c.post(
        "/api/v1/sessions",
        json!({"session_id": "s1", "auto_commit_policy": {"message_count_threshold": 5000},
               "memory_policy": {"working_memory": {"enabled": true}},
               "memory_extraction_config": {"events": {"tags": ["k=v"]}}}),
    );
    let res = ok(&r);
    assert_eq!(res["session_id"], "s1");
    assert_eq!(res["auto_commit_policy"]["message_count_threshold"], 1000);
    assert_eq!(res["auto_commit_policy"]["idle_timeout_seconds"], 86400);
    assert_eq!(
        res["memory_extraction_config"]["events"]["tags"],
        json!(["k=v"])
    );

    // SE1 errors.
    let r = c.post("/api/v1/sessions", json!({"session_id": "s1"}));
    err(&r, 409, "ALREADY_EXISTS");
    assert_eq!(r.body["error"]["message"], "Session already exists: s1");
    assert_eq!(
        r.body["error"]["details"],
        json!({"resource": "s1", "type": "session"})
    );
    for bad in [
        json!({"session_id": "a b"}),
        json!({"session_id": ".."}),
        json!({"session_id": "x".repeat(256)}),
        json!({"session_id": 5}),
        json!({"auto_commit_policy": {"nope": 1}}),
        json!({"auto_commit_policy": {"keep_recent_count": null}}),
        json!({"auto_commit_policy": {"idle_timeout_seconds": 10}}),
        json!({"memory_policy": {"other": {}}}),
        json!({"memory_extraction_config": {"events": {"tags": [], "x": 1}}}),
    ] {
        err(
            &c.post("/api/v1/sessions", bad.clone()),
            400,
            "INVALID_ARGUMENT",
        );
    }
    let r = c.post(
        "/api/v1/sessions",
        json!({"auto_commit_policy": {"idle_timeout_seconds": 10}}),
    );
    assert!(r.body["error"]["message"].as_str().unwrap().contains(
        "Value error, auto_commit_policy.idle_timeout_seconds must be 0 or at least 300"
    ));

    // SE2: newest first; another user sees nothing.
    let r = c.get("/api/v1/sessions");
    let list = ok(&r).as_array().unwrap().clone();
    let names: Vec<&str> = list
        .iter()
        .map(|e| e["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"s1") && names.contains(&gen.as_str()));
    assert_eq!(list[0]["is_dir"], true);
    assert!(list[0]["mod_time"].as_str().unwrap().ends_with('Z'));
    let other = Dev {
        s: &s,
        account: "acme",
        user: "bob",
    };
    assert_eq!(ok(&other.get("/api/v1/sessions")), &json!([]));

    // SE3.
    let r = c.get("/api/v1/sessions/s1");
    let m = ok(&r);
    assert_eq!(m["session_id"], "s1");
    assert_eq!(m["message_count"], 0);
    assert_eq!(m["total_message_count"], 0);
    assert_eq!(m["commit_count"], 0);
    assert_eq!(m["pending_tokens"], 0);
    assert_eq!(m["min_raw_tail_steps"], 1);
    assert_eq!(m["memories_extracted"], json!({"total": 0}));
    assert_eq!(m["llm_token_usage"]["total_tokens"], 0);
    assert_eq!(m["memory_policy"]["working_memory"]["enabled"], true);
    assert_eq!(m["uri"], "viking://user/alice/sessions/s1");
    assert_eq!(m["user"]["user_id"], "alice");
    assert_eq!(
        m["memory_extraction_config"]["events"]["tags"],
        json!(["k=v"])
    );
    assert!(m.get("event_search_tags").is_none() && m.get("_longship").is_none());
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    let r = c.get("/api/v1/sessions/nope");
    err(&r, 404, "NOT_FOUND");
    assert_eq!(r.body["error"]["message"], "Session nope not found");
    assert_eq!(other.get("/api/v1/sessions/s1").status, 404);
    let r = c.get("/api/v1/sessions/auto1?auto_create=true");
    assert_eq!(ok(&r)["session_id"], "auto1");
    assert_eq!(ok(&c.get("/api/v1/sessions/auto1"))["message_count"], 0);
    err(
        &c.get("/api/v1/sessions/auto1?auto_create=maybe"),
        400,
        "INVALID_ARGUMENT",
    );

    // Percent-decoded ids; an encoded slash or a bad character is refused.
    ok(&c.post("/api/v1/sessions", json!({"session_id": "a@b:c"})));
    assert_eq!(
        ok(&c.get("/api/v1/sessions/a%40b%3Ac"))["session_id"],
        "a@b:c"
    );
    err(&c.get("/api/v1/sessions/a%2Fb"), 400, "INVALID_ARGUMENT");
    err(&c.get("/api/v1/sessions/a%20b"), 400, "INVALID_ARGUMENT");
    err(&c.get("/api/v1/sessions/a%00b"), 400, "INVALID_ARGUMENT");

    // SE4.
    assert_eq!(
        ok(&c.delete("/api/v1/sessions/s1")),
        &json!({"session_id": "s1"})
    );
    assert!(!st.exists("acme/user/alice/sessions/s1"));
    let r = c.delete("/api/v1/sessions/s1");
    err(&r, 404, "NOT_FOUND");
    assert_eq!(r.body["error"]["message"], "Session not found: s1");
    assert_eq!(
        r.body["error"]["details"],
        json!({"type": "session", "resource": "s1"})
    );
    let r = c.call("PATCH", "/api/v1/sessions/s1", Some(json!({})));
    assert_eq!(r.status, 405);
}

#[test]
fn add_messages_and_batches() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);

    // SE5 auto-creates the session.
    let r = c.post(
        "/api/v1/sessions/m1/messages",
        json!({"role": "user", "content": "Hello there"}),
    );
    assert_eq!(
        ok(&r),
        &json!({"session_id": "m1", "message_count": 1, "pending_tokens": 3})
    );
    let r = c.post(
        "/api/v1/sessions/m1/messages",
        json!({"role": "assistant", "parts": [{"type": "text", "text": "abcd"},
               {"type": "context", "uri": "viking://~/memories/x", "abstract": "efgh"}],
               "created_at": "2026-05-01T12:00:00Z", "peer_id": " web ", "turn_id": "t1",
               "message_kind": "assistant_step", "source_message_ids": ["msg_a"], "unknown": 1}),
    );
    assert_eq!(ok(&r)["message_count"], 2);
    assert_eq!(r.result()["pending_tokens"], 5);

    // SE6 with a tool-only user message that splits in two.
    let r = c.post(
        "/api/v1/sessions/m1/messages/batch",
        json!({"messages": [
            {"role": "user", "parts": [{"type": "tool", "tool_id": "a", "tool_name": "n", "tool_output": "out"},
                                       {"type": "tool", "tool_id": "b", "tool_status": "completed"}]},
            {"role": "assistant", "content": "done"}]}),
    );
    let res = ok(&r);
    assert_eq!(res["session_id"], "m1");
    assert_eq!(res["message_count"], 5);
    assert_eq!(res["added"], 3);
    let keys: Vec<&String> = res.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["session_id", "message_count", "added", "pending_tokens"]
    );

    // The stored lines are exactly what spec §9.1 says.
    let text = String::from_utf8(st.session_live("acme/user/alice/sessions/m1")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(text.ends_with('\n'));
    let id = lines[0]["id"].as_str().unwrap();
    assert!(
        id.starts_with("msg_") && id.len() == 36 && id[4..].chars().all(|c| c.is_ascii_hexdigit())
    );
    assert_eq!(
        lines[0]["parts"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert!(lines[0]["created_at"].as_str().unwrap().ends_with("+00:00"));
    assert!(lines[0].get("peer_id").is_none());
    assert_eq!(lines[1]["peer_id"], "web");
    assert_eq!(lines[1]["created_at"], "2026-05-01T12:00:00Z");
    assert_eq!(
        lines[1]["parts"][1]["uri"],
        "viking://user/alice/memories/x"
    );
    assert_eq!(lines[1]["parts"][1]["context_type"], "memory");
    assert!(lines[1].get("unknown").is_none());
    assert_eq!(lines[2]["message_kind"], "tool_transport");
    assert_eq!(
        lines[3]["parts"][0],
        json!({"type": "tool", "tool_id": "b", "tool_status": "completed"})
    );

    let m = c.get("/api/v1/sessions/m1");
    assert_eq!(ok(&m)["message_count"], 5);
    assert_eq!(m.result()["total_message_count"], 5);
    assert!(!m.result()["last_message_at"].as_str().unwrap().is_empty());

    // Validation rows.
    let bad = [
        (json!({"content": "x"}), "body.role: Field required"),
        (
            json!({"role": "user"}),
            "Either 'content' or 'parts' must be provided",
        ),
        (json!({"role": "user", "content": 5}), "body.content"),
        (
            json!({"role": "user", "content": "x", "message_kind": "nope"}),
            "body.message_kind",
        ),
        (
            json!({"role": "user", "content": "x", "peer_id": "a/b"}),
            "Invalid peer_id",
        ),
        (
            json!({"role": "user", "parts": [{"type": "image_url", "image_url": {"url": ""}}]}),
            "image_url part requires a non-empty URL",
        ),
        (
            json!({"role": "user", "parts": [{"type": "context", "uri": "http://x"}]}),
            "viking://",
        ),
    ];
    for (body, needle) in bad {
        let r = c.post("/api/v1/sessions/m1/messages", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", String::from_utf8_lossy(&r.raw));
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    err(
        &c.call("POST", "/api/v1/sessions/m1/messages", None),
        400,
        "INVALID_ARGUMENT",
    );
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"role": "user", "content": format!("{i}")}))
        .collect();
    err(
        &c.post(
            "/api/v1/sessions/m1/messages/batch",
            json!({"messages": many}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    let r = c.post(
        "/api/v1/sessions/m1/messages/batch",
        json!({"messages": [{"role": "user", "content": "ok"}, {"content": "x"}]}),
    );
    err(&r, 400, "INVALID_ARGUMENT");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("body.messages.1.role"));
    err(
        &c.post("/api/v1/sessions/m1/messages/batch", json!({})),
        400,
        "INVALID_ARGUMENT",
    );
    // Nothing of a rejected batch was stored.
    assert_eq!(ok(&c.get("/api/v1/sessions/m1"))["message_count"], 5);
    err(
        &c.post(
            "/api/v1/sessions/bad%20id/messages",
            json!({"role": "user", "content": "x"}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
}

fn wait_task(c: &Dev, id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = c.get(&format!("/api/v1/tasks/{id}"));
        let t = ok(&r).clone();
        if t["status"] == "completed"
            || t["status"] == "failed"
            || std::time::Instant::now() > deadline
        {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn commit_archives_context_and_tasks() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);
    ok(&c.post("/api/v1/sessions", json!({"session_id": "c1"})));

    // Nothing live → skipped, null task_id/archive_uri present.
    let r = c.call("POST", "/api/v1/sessions/c1/commit", None);
    assert_eq!(
        ok(&r),
        &json!({"session_id": "c1", "status": "skipped", "task_id": null, "archive_uri": null,
                "archived": false, "effective_enable_working_memory": false, "reason": "no_messages", "trace_id": ""})
    );
    err(
        &c.post("/api/v1/sessions/none/commit", json!({})),
        404,
        "NOT_FOUND",
    );
    for bad in [
        json!({"keep_recent_count": -1}),
        json!({"keep_recent_count": 10001}),
        json!({"retention_mode": "x"}),
        json!({"keep_recent_turn_count": 1}),
        json!({"enable_working_memory": "yes"}),
        json!({"reset_context": true, "keep_recent_count": 1}),
        json!({"reset_context": "true"}),
        json!({"extraction_metadata": {"event": {"tags": [], "more": 1}}}),
    ] {
        err(
            &c.post("/api/v1/sessions/c1/commit", bad.clone()),
            400,
            "INVALID_ARGUMENT",
        );
    }

    let batch = json!({"messages": [
        {"role": "user", "content": "Archive me"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "Keep me live"}]});
    ok(&c.post("/api/v1/sessions/c1/messages/batch", batch));
    let r = c.post(
        "/api/v1/sessions/c1/commit",
        json!({"keep_recent_count": 1, "unknown_top": true}),
    );
    let res = ok(&r).clone();
    assert_eq!(res["status"], "accepted");
    assert_eq!(res["archived"], true);
    assert_eq!(
        res["archive_uri"],
        "viking://user/alice/sessions/c1/history/archive_001"
    );
    assert_eq!(res["effective_enable_working_memory"], false);
    assert_eq!(res["budget_exceeded"], false);
    assert_eq!(res["estimated_active_tokens"], 3);
    let task_id = res["task_id"].as_str().unwrap();

    // T1: the task is persisted and completed with the spec's result.
    let t = wait_task(&c, task_id);
    assert_eq!(t["status"], "completed");
    assert_eq!(t["task_type"], "session_commit");
    assert_eq!(t["resource_id"], "c1");
    assert_eq!(t["result"]["archive_uri"], res["archive_uri"]);
    assert_eq!(t["result"]["session_id"], "c1");
    // T2 by resource; T3 on a finished commit is refused.
    let r = c.get("/api/v1/tasks?task_type=session_commit&resource_id=c1");
    assert_eq!(ok(&r).as_array().unwrap().len(), 1);
    // (Dev-mode callers are ROOT, who may not cancel; a USER gets 412 for a finished commit.)
    err(
        &c.post(&format!("/api/v1/tasks/{task_id}/cancel"), json!({})),
        403,
        "PERMISSION_DENIED",
    );
    // (Dev mode callers are ROOT, who may read any task; per-user visibility is T1's own test.)

    // SE3 after the commit.
    let m = c.get("/api/v1/sessions/c1");
    let m = ok(&m);
    assert_eq!(m["message_count"], 1);
    assert_eq!(m["total_message_count"], 4);
    assert_eq!(m["commit_count"], 1);
    assert_eq!(m["keep_recent_count"], 1);
    assert_eq!(m["pending_tokens"], 0);
    assert!(!m["last_commit_at"].as_str().unwrap().is_empty());
    let dir = "acme/user/alice/sessions/c1/history/archive_001";
    assert!(st.exists(&format!("{dir}/.done")));
    let rec: Value = serde_json::from_str(&st.read_string(&format!("{dir}/.meta.json"))).unwrap();
    assert_eq!(rec["phase1"]["status"], "ready");
    assert_eq!(
        rec["phase1"]["archived_message_ids"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(st.exists("acme/user/alice/sessions/c1/.overview.md"));

    // SE8: working memory off → empty overview/abstract.
    let r = c.get("/api/v1/sessions/c1/archives/archive_001");
    let a = ok(&r);
    assert_eq!(a["archive_id"], "archive_001");
    assert_eq!(a["overview"], "");
    assert_eq!(a["abstract"], "");
    let texts: Vec<&str> = a["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["parts"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Archive me", "ok", "second"]);
    for bad in ["archive_002", "archive_1", "nope", "..%2F.."] {
        let r = c.get(&format!("/api/v1/sessions/c1/archives/{bad}"));
        assert!(r.status == 404 || r.status == 400, "{bad}: {}", r.status);
    }
    let r = c.get("/api/v1/sessions/c1/archives/archive_002");
    assert_eq!(r.body["error"]["message"], "Archive archive_002 not found");
    err(
        &c.get("/api/v1/sessions/none/archives/archive_001"),
        404,
        "NOT_FOUND",
    );

    // Within the keep window → skipped with the turn-budget fields.
    let r = c.post(
        "/api/v1/sessions/c1/commit",
        json!({"keep_recent_count": 5}),
    );
    let res = ok(&r);
    assert_eq!(res["status"], "skipped");
    assert_eq!(res["reason"], "all_within_keep_window");
    assert_eq!(res["task_id"], Value::Null);
    assert_eq!(res["estimated_active_tokens"], 3);

    // Working memory on → archive summaries, SE9 shows the overview.
    ok(&c.post(
        "/api/v1/sessions/c1/messages",
        json!({"role": "user", "content": "Keep me live"}),
    ));
    let r = c.post(
        "/api/v1/sessions/c1/commit",
        json!({"keep_recent_count": 1, "enable_working_memory": true}),
    );
    let res = ok(&r).clone();
    assert_eq!(
        res["archive_uri"],
        "viking://user/alice/sessions/c1/history/archive_002"
    );
    assert_eq!(res["effective_enable_working_memory"], true);
    wait_task(&c, res["task_id"].as_str().unwrap());
    let r = c.get("/api/v1/sessions/c1/archives/archive_002");
    let a = ok(&r);
    assert_eq!(
        a["overview"],
        "# Session Summary\n\n**Overview**: 0 turns, 1 messages"
    );
    assert_eq!(a["abstract"], "0 turns, 1 messages");
    let overview_file =
        st.read_string("acme/user/alice/sessions/c1/history/archive_002/.overview.md");
    assert!(overview_file
        .starts_with("---\ndirectory: viking://user/alice/sessions/c1/history/archive_002/\n"));

    let r = c.get("/api/v1/sessions/c1/context");
    let ctx = ok(&r);
    assert_eq!(
        ctx["latest_archive_overview"],
        "# Session Summary\n\n**Overview**: 0 turns, 1 messages"
    );
    assert_eq!(ctx["pre_archive_abstracts"], json!([]));
    let live: Vec<&str> = ctx["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["parts"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["Keep me live"]);
    assert_eq!(
        ctx["stats"],
        json!({"totalArchives": 2, "includedArchives": 0, "droppedArchives": 2,
                                   "failedArchives": 0, "activeTokens": 3, "archiveTokens": 13})
    );
    assert_eq!(ctx["estimatedTokens"], 16);
    // A budget too small for the overview leaves it out.
    let r = c.get("/api/v1/sessions/c1/context?token_budget=5");
    assert_eq!(ok(&r)["latest_archive_overview"], "");
    assert_eq!(r.result()["estimatedTokens"], 3);
    let r = c.get("/api/v1/sessions/c1/context?token_budget=-1");
    err(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(
        r.body["error"]["message"],
        "token_budget must be greater than or equal to 0"
    );
    assert_eq!(
        r.body["error"]["details"],
        json!({"field": "token_budget", "value": -1})
    );
    err(
        &c.get("/api/v1/sessions/c1/context?token_budget=abc"),
        400,
        "INVALID_ARGUMENT",
    );
    err(&c.get("/api/v1/sessions/none/context"), 404, "NOT_FOUND");

    // reset_context: a boundary archive that SE9 never reads past and SE8 never returns.
    let r = c.post("/api/v1/sessions/c1/commit", json!({"reset_context": true}));
    let res = ok(&r);
    assert_eq!(res["status"], "accepted");
    assert_eq!(res["reset_context"], true);
    assert_eq!(
        res["archive_uri"],
        "viking://user/alice/sessions/c1/history/archive_003"
    );
    let done: Value = serde_json::from_str(
        &st.read_string("acme/user/alice/sessions/c1/history/archive_004/.done"),
    )
    .unwrap();
    assert_eq!(
        done,
        json!({"context_reset": true, "enable_working_memory": false})
    );
    err(
        &c.get("/api/v1/sessions/c1/archives/archive_004"),
        404,
        "NOT_FOUND",
    );
    let r = c.get("/api/v1/sessions/c1/context");
    let ctx = ok(&r);
    assert_eq!(ctx["latest_archive_overview"], "");
    assert_eq!(ctx["messages"], json!([]));
    assert_eq!(ctx["stats"]["totalArchives"], 4);
    assert_eq!(ok(&c.get("/api/v1/sessions/c1"))["commit_count"], 4);
    // A second reset with nothing live adds no second boundary.
    let r = c.post("/api/v1/sessions/c1/commit", json!({"reset_context": true}));
    assert_eq!(ok(&r)["status"], "skipped");
    assert_eq!(r.result()["reset_context"], true);
    assert!(!st.exists("acme/user/alice/sessions/c1/history/archive_005"));
}

#[test]
fn turn_budget_commit_keeps_newest_turns() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);
    let mut msgs = Vec::new();
    for t in 0..4 {
        msgs.push(json!({"role": "user", "content": format!("q{t}")}));
        msgs.push(json!({"role": "assistant", "content": "a".repeat(400)}));
    }
    ok(&c.post(
        "/api/v1/sessions/tb/messages/batch",
        json!({"messages": msgs}),
    ));
    // Two newest turns fit 300 tokens? each turn = 1 + 100 = 101 → both kept.
    let r = c.post("/api/v1/sessions/tb/commit", json!({"retention_mode": "turn_budget", "keep_recent_turn_count": 2, "retained_message_token_budget": 300}));
    let res = ok(&r);
    assert_eq!(res["status"], "accepted");
    assert_eq!(res["estimated_active_tokens"], 202);
    assert_eq!(res["budget_exceeded"], false);
    assert_eq!(ok(&c.get("/api/v1/sessions/tb"))["message_count"], 4);
    // Over budget: the oldest kept turn goes, the newest never does.
    let r = c.post("/api/v1/sessions/tb/commit", json!({"retention_mode": "turn_budget", "keep_recent_turn_count": 2, "retained_message_token_budget": 50}));
    let res = ok(&r);
    assert_eq!(res["estimated_active_tokens"], 101);
    assert_eq!(res["budget_exceeded"], true);
    let m = c.get("/api/v1/sessions/tb");
    assert_eq!(ok(&m)["message_count"], 2);
    assert_eq!(m.result()["retention_mode"], "turn_budget");
    // Context fitting by turns with a budget smaller than the newest turn shortens it.
    let r = c.get("/api/v1/sessions/tb/context?token_budget=40");
    let ctx = ok(&r);
    assert!(ctx["estimatedTokens"].as_u64().unwrap() <= 40);
    let msgs = ctx["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert!(msgs[1]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .contains("\n…\n"));
}

#[test]
fn api_key_mode_refuses_root_and_anonymous_callers() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let r = s.post(
        "/api/v1/sessions",
        Some(crate::harness::ROOT_KEY),
        json!({}),
    );
    err(&r, 403, "PERMISSION_DENIED");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("ROOT API keys cannot access tenant-scoped data APIs"));
    err(&s.get("/api/v1/sessions", None), 401, "UNAUTHENTICATED");
    err(
        &s.post("/api/v1/sessions/x/commit", Some("bogus"), json!({})),
        401,
        "UNAUTHENTICATED",
    );
    assert!(!st.exists("default/user/default/sessions/x"));
}

#[test]
fn user_keys_own_their_sessions_and_commit_tasks_across_instances() {
    use crate::harness::api::{create_account, register};
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    let alice = create_account(&a, "acme", "alice");
    let bob = register(&a, &alice, "acme", "bob", "user");

    let r = a.post("/api/v1/sessions", Some(&bob), json!({"session_id": "k1"}));
    assert_eq!(ok(&r)["uri"], "viking://user/bob/sessions/k1");
    let r = a.post(
        "/api/v1/sessions/k1/messages",
        Some(&bob),
        json!({"role": "user", "content": "Hello there"}),
    );
    assert_eq!(ok(&r)["message_count"], 1);
    // Sessions belong to their user: alice (an ADMIN of the same account) has no "k1".
    err(
        &b.get("/api/v1/sessions/k1", Some(&alice)),
        404,
        "NOT_FOUND",
    );
    let r = a.post("/api/v1/sessions/k1/commit", Some(&bob), json!({}));
    let task_id = ok(&r)["task_id"].as_str().unwrap().to_string();

    // T1 from the other instance: the task is persisted and complete.
    let t = b.get(&format!("/api/v1/tasks/{task_id}"), Some(&bob));
    assert_eq!(ok(&t)["status"], "completed");
    assert_eq!(t.result()["resource_id"], "k1");
    // Only its owner sees it.
    err(
        &b.get(&format!("/api/v1/tasks/{task_id}"), Some(&alice)),
        404,
        "NOT_FOUND",
    );
    // T2 on the other instance; T3 of a finished commit → 412.
    let l = b.get("/api/v1/tasks?task_type=session_commit", Some(&bob));
    assert_eq!(ok(&l).as_array().unwrap().len(), 1);
    err(
        &b.post(
            &format!("/api/v1/tasks/{task_id}/cancel"),
            Some(&bob),
            json!({}),
        ),
        412,
        "FAILED_PRECONDITION",
    );
    // The archive and the emptied live file are seen by B too.
    let ar = b.get("/api/v1/sessions/k1/archives/archive_001", Some(&bob));
    assert_eq!(ok(&ar)["messages"][0]["parts"][0]["text"], "Hello there");
    assert_eq!(
        ok(&b.get("/api/v1/sessions/k1", Some(&bob)))["message_count"],
        0
    );
}

/// The first validation error of a 400 answer: `(loc joined by '.', type)`.
fn first_error(r: &crate::harness::Resp) -> (String, String) {
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.raw));
    let e = &r.body["error"]["details"]["validation_errors"][0];
    let loc: Vec<String> = e["loc"]
        .as_array()
        .unwrap_or_else(|| panic!("no validation error: {}", r.body))
        .iter()
        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string))
        .collect();
    (loc.join("."), e["type"].as_str().unwrap_or("").to_string())
}

/// Issue 19 item 3: the session bodies are typed; a failure deep inside one names its location,
/// unknown keys follow each 0.5.2 model (ignored or refused, struct by struct), and a
/// malformed or oversized body is a 4xx without harm to the server.
#[test]
fn typed_bodies_name_locations_and_follow_the_models() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::alice(&s);
    let text = json!({"type": "text", "text": "a"});
    let located = [
        // (body of SE5, location, type)
        (
            json!({"role": "user", "parts": [text.clone(), {"type": "text", "text": 5}]}),
            "body.parts.1.text",
            "string_type",
        ),
        (
            json!({"role": "user", "parts": [text.clone(), {"type": "context", "uri": ["x"]}]}),
            "body.parts.1.uri",
            "string_type",
        ),
        (
            json!({"role": "user", "parts": [text.clone(), {"type": "context", "context_type": "nope"}]}),
            "body.parts.1.context_type",
            "literal_error",
        ),
        (
            json!({"role": "user", "parts": [{"type": "image_url", "image_url": {"url": 5}}]}),
            "body.parts.0.image_url.url",
            "string_type",
        ),
        (
            json!({"role": "user", "parts": [{"type": "image_url", "image_url": " "}]}),
            "body.parts.0.image_url",
            "value_error",
        ),
        (
            json!({"role": "user", "parts": [text.clone(), {"type": "tool", "tool_id": 7}]}),
            "body.parts.1.tool_id",
            "string_type",
        ),
        (
            json!({"role": "user", "parts": [text.clone(), 1]}),
            "body.parts.1",
            "dict_type",
        ),
        (
            json!({"role": "user", "parts": "x"}),
            "body.parts",
            "list_type",
        ),
        (
            json!({"role": "user", "content": "x", "source_message_ids": ["a", 2]}),
            "body.source_message_ids.1",
            "string_type",
        ),
        (json!({"content": "x"}), "body.role", "missing"),
        (json!({"role": "user"}), "body", "value_error"),
    ];
    for (body, loc, kind) in located {
        let r = c.post("/api/v1/sessions/t1/messages", body.clone());
        assert_eq!(
            first_error(&r),
            (loc.to_string(), kind.to_string()),
            "{body}"
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(loc)),
            "{body}: {}",
            r.body
        );
    }
    // The same rules inside a batch, one level down.
    let r = c.post(
        "/api/v1/sessions/t1/messages/batch",
        json!({"messages": [{"role": "user", "content": "ok"},
                            {"role": "user", "parts": [{"type": "text", "text": {}}]}]}),
    );
    assert_eq!(
        first_error(&r),
        ("body.messages.1.parts.0.text".into(), "string_type".into())
    );
    let r = c.post(
        "/api/v1/sessions/t1/messages/batch",
        json!({"messages": [{"role": "user", "content": "ok"}, {"role": "user"}]}),
    );
    assert_eq!(
        first_error(&r),
        ("body.messages.1".into(), "value_error".into())
    );
    // Nothing of a refused body was stored (SE5 auto-creates only on success).
    err(&c.get("/api/v1/sessions/t1"), 404, "NOT_FOUND");

    // Unknown keys: ignored where 0.5.2's model ignores them (messages, parts, batch, create,
    // commit) ...
    let r = c.post(
        "/api/v1/sessions/t1/messages",
        json!({"role": "user", "zzz": 1, "telemetry": true,
               "parts": [{"type": "text", "text": "hi", "zzz": 2},
                         {"type": "tool", "tool_id": "a", "duration_ms": 3}]}),
    );
    assert_eq!(ok(&r)["message_count"], 1);
    let r = c.post(
        "/api/v1/sessions/t1/messages/batch",
        json!({"messages": [{"role": "user", "content": "x", "zzz": 1}], "zzz": 1}),
    );
    assert_eq!(ok(&r)["added"], 1);
    let live = String::from_utf8(st.session_live("acme/user/alice/sessions/t1")).unwrap();
    let first: Value = serde_json::from_str(live.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["parts"],
        json!([{"type": "text", "text": "hi"},
               {"type": "tool", "tool_id": "a", "tool_status": "pending", "duration_ms": 3}])
    );
    let r = c.post(
        "/api/v1/sessions",
        json!({"session_id": "t2", "zzz": 1, "memory_policy": {"self": {"enabled": false, "zzz": 1}}}),
    );
    ok(&r);
    ok(&c.post(
        "/api/v1/sessions/t1/commit",
        json!({"zzz": 1, "keep_recent_count": 1}),
    ));
    // ... and refused where it forbids them (config PATCH, policies, extraction configs).
    let refused = [
        (
            "PATCH",
            "/api/v1/sessions/t2/config",
            json!({"zzz": 1}),
            "body.zzz",
        ),
        (
            "PATCH",
            "/api/v1/sessions/t2/config",
            json!({"auto_commit_policy": {"zzz": 1}}),
            "body.auto_commit_policy.zzz",
        ),
        (
            "PATCH",
            "/api/v1/sessions/t2/config",
            json!({"memory_extraction_config": {"events": {"tags": [], "zzz": 1}}}),
            "body.memory_extraction_config.events.zzz",
        ),
        (
            "POST",
            "/api/v1/sessions",
            json!({"auto_commit_policy": {"zzz": 1}}),
            "body.auto_commit_policy.zzz",
        ),
        (
            "POST",
            "/api/v1/sessions/t2/commit",
            json!({"extraction_metadata": {"event": {"zzz": 1}}}),
            "body.extraction_metadata.event.zzz",
        ),
    ];
    for (method, path, body, loc) in refused {
        let r = c.call(method, path, Some(body.clone()));
        assert_eq!(
            first_error(&r),
            (loc.to_string(), "extra_forbidden".to_string()),
            "{method} {path} {body}"
        );
    }
    // A PATCH that only sets the known keys works; `null` switches automatic commits off.
    let r = c.call(
        "PATCH",
        "/api/v1/sessions/t2/config",
        Some(json!({"auto_commit_policy": null, "telemetry": false})),
    );
    assert_eq!(ok(&r)["auto_commit_policy"], Value::Null);

    // Malformed and oversized bodies: a 4xx, the server unharmed.
    let headers = [
        ("X-OpenViking-Account", "acme"),
        ("X-OpenViking-User", "alice"),
        ("Content-Type", "application/json"),
    ];
    let deep = format!(
        r#"{{"role":"user","parts":[{{"type":"tool","tool_input":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = s.raw(
        "POST",
        "/api/v1/sessions/t1/messages",
        &headers,
        deep.as_bytes(),
    );
    assert_eq!(first_error(&r), ("body".into(), "json_invalid".into()));
    let n = 150_000;
    let mut huge = String::from(r#"{"messages":["#);
    for i in 0..n {
        if i > 0 {
            huge.push(',');
        }
        huge.push_str(r#"{"role":"user","content":"x"}"#);
    }
    huge.push_str("]}");
    let r = s.raw(
        "POST",
        "/api/v1/sessions/t1/messages/batch",
        &headers,
        huge.as_bytes(),
    );
    assert_eq!(first_error(&r), ("body.messages".into(), "too_long".into()));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("at most 100 items after validation, not {n}"))),
        "{}",
        r.body
    );
    let r = s.raw(
        "POST",
        "/api/v1/sessions/t1/messages",
        &headers,
        br#"{"role":"user","content":"x""#,
    );
    assert_eq!(first_error(&r), ("body".into(), "json_invalid".into()));
    assert_eq!(ok(&c.get("/api/v1/sessions/t1"))["message_count"], 1);
    assert_eq!(c.get("/health").status, 200);
}
