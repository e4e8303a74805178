//! Admin API (spec §3) and identity (spec §1.4, §2) against the real binary.

use serde_json::{json, Value};

use crate::harness::api::{announce, auth_status, create_account, register, whoami, ACCOUNTS};
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

fn err(r: &Resp) -> (&str, &str) {
    (
        r.code(),
        r.body["error"]["message"].as_str().unwrap_or_default(),
    )
}

fn users_json(st: &Storage, account: &str) -> Value {
    let raw = st
        .at(&format!("{account}/_system/users.json"))
        .read()
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[test]
fn accounts_create_list_get_delete() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    // Startup created the registry with `default` and its scaffolding.
    assert!(st.at("_system/accounts.json").is_file());
    assert!(st.at("default/user/default/memories").is_dir());

    let r = s.post(
        ACCOUNTS,
        Some(ROOT_KEY),
        json!({"account_id": "acme", "admin_user_id": "alice", "user_config": {"x": 1}}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["account_id"], "acme");
    assert_eq!(r.result()["admin_user_id"], "alice");
    let alice = r.result()["user_key"].as_str().unwrap().to_string();
    assert!(alice.starts_with("YWNtZQ.YWxpY2U."), "{alice}");
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
    assert!(st.at("acme/resources/.abstract.md").is_file());
    assert!(st.at("acme/agent/skills").is_dir());
    assert!(st.at("acme/user/alice/sessions").is_dir());
    assert!(st.at("acme/user/alice/settings/user_config.json").is_file());
    let groups = st.at("acme/_system/groups.json").read_to_string().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&groups).unwrap(),
        json!({"groups": {}})
    );
    // Pretty-printed with 2 spaces, as upstream writes it.
    let accounts_text = st.at("_system/accounts.json").read_to_string().unwrap();
    assert!(
        accounts_text.starts_with("{\n  \"accounts\": {\n    \"default\""),
        "{accounts_text}"
    );
    let u = users_json(&st, "acme");
    assert_eq!(u["users"]["alice"]["role"], "admin");
    assert_eq!(u["users"]["alice"]["key"], alice.as_str());

    let dup = s.post(
        ACCOUNTS,
        Some(ROOT_KEY),
        json!({"account_id": "acme", "admin_user_id": "x"}),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(
        err(&dup),
        ("ALREADY_EXISTS", "Account already exists: acme")
    );
    assert_eq!(
        dup.body["error"]["details"],
        json!({"resource": "acme", "type": "account"})
    );

    create_account(&s, "beta", "bob");
    create_account(&s, "bravo", "bo");

    let list = s.get(ACCOUNTS, Some(ROOT_KEY));
    assert_eq!(list.status, 200);
    let ids: Vec<&str> = list
        .result()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "acme", "beta", "bravo"]);
    let acme = &list.result()[1];
    assert_eq!(acme["user_count"], 1);
    assert_eq!(acme["status"], "active");
    assert!(acme.get("task_id").is_none());
    let created = acme["created_at"].as_str().unwrap();
    assert!(
        created.ends_with("+00:00") && created.len() == 32,
        "{created}"
    );
    let page = |q: &str| -> Vec<String> {
        let r = s.get(&format!("{ACCOUNTS}?{q}"), Some(ROOT_KEY));
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
        r.result()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(page("name=b*"), ["beta", "bravo"]);
    assert_eq!(page("query=RAV"), ["bravo"]);
    assert_eq!(page("limit=2&page=2"), ["beta", "bravo"]);
    assert_eq!(page("limit=3&page=2"), ["bravo"]);
    assert_eq!(page("name=b*&limit=1&page=2"), ["bravo"]);
    let bad = s.get(&format!("{ACCOUNTS}?limit=0"), Some(ROOT_KEY));
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["error"]["details"]["validation_errors"][0]["loc"],
        json!(["query", "limit"])
    );
    assert_eq!(
        s.get(&format!("{ACCOUNTS}?page=0&limit=1"), Some(ROOT_KEY))
            .status,
        400
    );
    assert_eq!(
        s.get(&format!("{ACCOUNTS}?limit=abc"), Some(ROOT_KEY))
            .status,
        400
    );

    let one = s.get(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY));
    assert_eq!(one.status, 200);
    assert_eq!(one.result(), acme);
    let missing = s.get(&format!("{ACCOUNTS}/nope"), Some(ROOT_KEY));
    assert_eq!(missing.status, 404);
    assert_eq!(err(&missing), ("NOT_FOUND", "Account not found: nope"));
    assert_eq!(
        missing.body["error"]["details"],
        json!({"type": "account", "resource": "nope"})
    );

    // A3: keys die, data goes, the task is pollable by ROOT.
    let del = s.delete(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY));
    assert_eq!(del.status, 202, "{:?}", del.body);
    assert_eq!(del.result()["account_id"], "acme");
    assert_eq!(del.result()["status"], "deleting");
    let task_id = del.result()["task_id"].as_str().unwrap();
    assert_eq!(whoami(&s, &alice), None);
    assert!(!st.at("acme").exists());
    let task = s.get(&format!("/api/v1/tasks/{task_id}"), Some(ROOT_KEY));
    assert_eq!(task.status, 200, "{:?}", task.body);
    assert_eq!(task.result()["status"], "completed");
    assert_eq!(task.result()["task_type"], "account_delete");
    assert_eq!(task.result()["resource_id"], "acme");
    assert_eq!(task.result()["result"], json!({"deleted": true}));
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY)).status,
        404
    );
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY)).status,
        404
    );
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/_system"), Some(ROOT_KEY))
            .status,
        404
    );
    // The id is free again.
    let again = create_account(&s, "acme", "zed");
    assert_eq!(whoami(&s, &again).as_deref(), Some("zed"));
    assert_eq!(whoami(&s, &alice), None);
}

#[test]
fn bad_input_leaves_storage_unchanged() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "alice");
    register(&s, &admin, "acme", "bob", "user");
    let before = data_digest(&st);
    let long = "a".repeat(256);
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": 5, "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "a b", "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "a/b", "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "ab\n", "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "_sys", "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": long.clone(), "admin_user_id": "x"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "ok", "admin_user_id": long.clone()})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "ok", "admin_user_id": "x", "seed": ""})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            ACCOUNTS.into(),
            Some(json!({"account_id": "acme", "admin_user_id": "x"})),
            409,
            "ALREADY_EXISTS",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "bob"})),
            409,
            "ALREADY_EXISTS",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "c d"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "c", "role": "Admin"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "c", "role": "root"})),
            403,
            "PERMISSION_DENIED",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "c", "seed": ""})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": long.clone()})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/nope/users"),
            Some(json!({"user_id": "c"})),
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"role": "user"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "PUT",
            format!("{ACCOUNTS}/acme/users/bob/role"),
            Some(json!({"role": "user"})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "PUT",
            format!("{ACCOUNTS}/acme/users/nobody/role"),
            Some(json!({"role": "admin"})),
            404,
            "NOT_FOUND",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users/bob/key"),
            Some(json!({"seed": ""})),
            400,
            "INVALID_ARGUMENT",
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users/nobody/key"),
            Some(json!({})),
            404,
            "NOT_FOUND",
        ),
        (
            "DELETE",
            format!("{ACCOUNTS}/acme/users/nobody"),
            None,
            404,
            "NOT_FOUND",
        ),
        (
            "DELETE",
            format!("{ACCOUNTS}/acme/users/alice"),
            None,
            412,
            "FAILED_PRECONDITION",
        ),
        ("DELETE", format!("{ACCOUNTS}/nope"), None, 404, "NOT_FOUND"),
        (
            "DELETE",
            format!("{ACCOUNTS}/a%20b"),
            None,
            404,
            "NOT_FOUND",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = s.call(method, &path, Some(ROOT_KEY), body.clone());
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path} {body:?}: {:?}",
            r.body
        );
    }
    let malformed = s.raw(
        "POST",
        ACCOUNTS,
        &[
            ("X-API-Key", ROOT_KEY),
            ("Content-Type", "application/json"),
        ],
        b"{not json",
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(data_digest(&st), before);
}

/// The whole store but the audit log (which records the refused requests, by design).
fn data_digest(st: &Storage) -> std::collections::BTreeMap<String, String> {
    let mut d = st.at("").digest();
    d.retain(|k, _| !k.starts_with("_system/audit"));
    d
}

#[test]
fn users_register_list_get_role_key_remove() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    let carol = register(&s, ROOT_KEY, "acme", "carol", "admin");
    register(&s, &alice, "acme", "bobby", "user");
    assert_eq!(whoami(&s, &bob).as_deref(), Some("bob"));
    assert!(st.at("acme/user/bob/memories/.overview.md").is_file());

    let users = |q: &str| -> Value {
        let r = s.get(&format!("{ACCOUNTS}/acme/users{q}"), Some(&alice));
        assert_eq!(r.status, 200, "{q}: {:?}", r.body);
        r.result().clone()
    };
    let all = users("");
    assert_eq!(all.as_array().unwrap().len(), 4);
    assert_eq!(
        all[1],
        json!({"user_id": "bob", "role": "user", "key_prefix": &bob[..8]})
    );
    assert!(!all.to_string().contains(&bob), "plaintext key leaked");
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&users("?name=bob*")), ["bob", "bobby"]);
    assert_eq!(ids(&users("?role=admin")), ["alice", "carol"]);
    assert_eq!(ids(&users("?query=OBB")), ["bobby"]);
    assert_eq!(ids(&users("?limit=2&page=2")), ["carol", "bobby"]);
    assert_eq!(
        users("?include_credentials=false")[0],
        json!({"user_id": "alice", "role": "admin", "api_key_available": true})
    );
    let summary = users("?include_summary=true&role=user&limit=1");
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["account_total"], 4);
    assert_eq!(summary["manager_count"], 2);
    assert_eq!(summary["key_count"], 4);
    assert_eq!(summary["users"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/acme/users?limit=0"), Some(&alice))
            .status,
        400
    );
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/nope/users"), Some(ROOT_KEY))
            .status,
        404
    );

    let one = s.get(&format!("{ACCOUNTS}/acme/users/bob"), Some(&alice));
    assert_eq!(one.result(), &json!({"user_id": "bob", "role": "user"}));
    let nobody = s.get(&format!("{ACCOUNTS}/acme/users/nobody"), Some(&alice));
    assert_eq!(nobody.status, 404);
    assert_eq!(err(&nobody), ("NOT_FOUND", "User not found: nobody"));
    assert_eq!(
        nobody.body["error"]["details"],
        json!({"type": "user", "resource": "nobody"})
    );

    // A7: promotion, effective at once for the user's key.
    let r = s.put(
        &format!("{ACCOUNTS}/acme/users/bob/role"),
        Some(&alice),
        json!({"role": "admin"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.result(),
        &json!({"account_id": "acme", "user_id": "bob", "role": "admin"})
    );
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/acme/users"), Some(&bob)).status,
        200
    );
    let r = s.put(
        &format!("{ACCOUNTS}/acme/users/bob/role"),
        Some(&alice),
        json!({"role": "user"}),
    );
    assert_eq!(
        err(&r),
        (
            "INVALID_ARGUMENT",
            "set_user_role only supports promotion to admin."
        )
    );

    // A8: old key dead at once, new key works, seeded keys derive per spec.
    let r = s.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200);
    let bob2 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(whoami(&s, &bob), None);
    assert_eq!(whoami(&s, &bob2).as_deref(), Some("bob"));
    // Empty body is accepted too.
    let r = s.raw(
        "POST",
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        &[("X-API-Key", &alice)],
        b"",
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let bob3 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(whoami(&s, &bob2), None);
    assert_eq!(whoami(&s, &bob3).as_deref(), Some("bob"));

    // A6: revoked at once, data gone, task pollable by the calling ADMIN.
    st.at("acme/user/bobby/memories/note.md").write("hi");
    let bobby_key = s.post(
        &format!("{ACCOUNTS}/acme/users/bobby/key"),
        Some(&alice),
        json!({"seed": "s"}),
    );
    let bobby_key = bobby_key.result()["user_key"].as_str().unwrap().to_string();
    let r = s.delete(&format!("{ACCOUNTS}/acme/users/bobby"), Some(&alice));
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.result()["status"], "deleting");
    assert_eq!(r.result()["deleted"], true);
    assert_eq!(r.result()["user_id"], "bobby");
    let task_id = r.result()["task_id"].as_str().unwrap().to_string();
    assert_eq!(whoami(&s, &bobby_key), None);
    assert!(!st.at("acme/user/bobby").exists());
    assert!(users_json(&st, "acme")["users"].get("bobby").is_none());
    let t = s.get(&format!("/api/v1/tasks/{task_id}"), Some(&alice));
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert_eq!(t.result()["status"], "completed");
    assert_eq!(t.result()["task_type"], "user_delete");
    assert_eq!(t.result()["resource_id"], "acme/bobby");
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/acme/users/bobby"), Some(&alice))
            .status,
        404
    );

    // Last-admin rule: alice, bob, carol are admins; remove two, the third is protected.
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/acme/users/carol"), Some(ROOT_KEY))
            .status,
        202
    );
    assert_eq!(whoami(&s, &carol), None);
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/acme/users/bob"), Some(&alice))
            .status,
        202
    );
    let last = s.delete(&format!("{ACCOUNTS}/acme/users/alice"), Some(&alice));
    assert_eq!(last.status, 412);
    assert_eq!(
        err(&last),
        (
            "FAILED_PRECONDITION",
            "Cannot delete the last active account admin"
        )
    );
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
}

#[test]
fn permission_matrix_over_admin_routes() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "alice");
    let user = register(&s, &admin, "acme", "bob", "user");
    let other_admin = create_account(&s, "other", "olga");
    let victim = |s: &Server, name: &str| register(s, ROOT_KEY, "acme", name, "user");
    let root_only = "Requires role: root";
    let root_admin = "Requires role: root, admin";
    let cross = "ADMIN can only manage account: other";
    // (method, path, body) — each row is tried by every caller on fresh targets.
    let mut n = 0;
    let mut rows = |s: &Server| -> Vec<(&'static str, String, Option<Value>, bool)> {
        n += 1;
        let u = format!("t{n}");
        victim(s, &u);
        vec![
            (
                "POST",
                ACCOUNTS.into(),
                Some(json!({"account_id": format!("new{n}"), "admin_user_id": "a"})),
                true,
            ),
            ("GET", ACCOUNTS.into(), None, true),
            ("GET", format!("{ACCOUNTS}/acme"), None, true),
            ("DELETE", format!("{ACCOUNTS}/new{n}"), None, true),
            (
                "POST",
                format!("{ACCOUNTS}/acme/users"),
                Some(json!({"user_id": format!("r{n}")})),
                false,
            ),
            ("GET", format!("{ACCOUNTS}/acme/users"), None, false),
            ("GET", format!("{ACCOUNTS}/acme/users/{u}"), None, false),
            (
                "PUT",
                format!("{ACCOUNTS}/acme/users/{u}/role"),
                Some(json!({"role": "admin"})),
                false,
            ),
            (
                "POST",
                format!("{ACCOUNTS}/acme/users/{u}/key"),
                Some(json!({})),
                false,
            ),
            ("DELETE", format!("{ACCOUNTS}/acme/users/{u}"), None, false),
        ]
    };
    // ROOT: everything succeeds.
    for (m, p, b, _) in rows(&s) {
        let r = s.call(m, &p, Some(ROOT_KEY), b);
        assert!(
            r.status == 200 || r.status == 202,
            "ROOT {m} {p}: {:?}",
            r.body
        );
    }
    // ADMIN of acme: account routes 403, user routes succeed.
    for (m, p, b, root_route) in rows(&s) {
        let r = s.call(m, &p, Some(&admin), b);
        if root_route {
            assert_eq!((r.status, err(&r).1), (403, root_only), "ADMIN {m} {p}");
        } else {
            assert!(
                r.status == 200 || r.status == 202,
                "ADMIN {m} {p}: {:?}",
                r.body
            );
        }
    }
    // ADMIN of another account, USER, no key.
    for (m, p, b, root_route) in rows(&s) {
        let r = s.call(m, &p, Some(&other_admin), b.clone());
        let want = if root_route { root_only } else { cross };
        assert_eq!((r.status, err(&r).1), (403, want), "cross ADMIN {m} {p}");
        let r = s.call(m, &p, Some(&user), b.clone());
        let want = if root_route { root_only } else { root_admin };
        assert_eq!((r.status, err(&r).1), (403, want), "USER {m} {p}");
        let r = s.call(m, &p, None, b.clone());
        assert_eq!(r.status, 401, "no key {m} {p}");
        let r = s.call(m, &p, Some("not-a-key"), b);
        assert_eq!(r.status, 401, "bad key {m} {p}");
    }
    // Identity headers are ignored in api_key mode.
    let r = s.raw(
        "GET",
        "/api/v1/system/status",
        &[("X-API-Key", &user), ("X-OpenViking-User", "alice")],
        b"",
    );
    assert_eq!(r.result()["user"], "bob");
    let r = s.raw(
        "GET",
        "/api/v1/system/status",
        &[("Authorization", &format!("Bearer {user}"))],
        b"",
    );
    assert_eq!(r.result()["user"], "bob");
}

#[test]
fn dev_mode_refuses_admin_api() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let r = s.post(
        ACCOUNTS,
        None,
        json!({"account_id": "a", "admin_user_id": "b"}),
    );
    assert_eq!(r.status, 403);
    assert!(err(&r).1.starts_with("Admin API requires api_key mode"));
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/default/users"), None).status,
        403
    );
    assert!(!st.at("_system/accounts.json").exists());
}

#[test]
fn seeded_keys_reproduce_spec_derivation() {
    // hex(sha256("bob\0bob-seed")) and the key, computed independently with Python.
    const BOB: &str = "YWNtZQ.Ym9i.ZDJkZTc0Y2RlNWU1ZDQ1ZTkyY2RhZjExZTJiMWVkYjkzNmQwNWJhOGNhMmZiNWJiOWY2ZmFlM2QyMTNmOTdmNw";
    const ALICE: &str = "YWNtZQ.YWxpY2U.OTYxZjM1MTg4Y2E1YmJmYjNiMWZkMjliNThiOGMxYzlhNmU5MTYwZTg0MjhlOTlmZjMzZTkzMTg5YjA1NDYzZA";
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let r = s.post(
        ACCOUNTS,
        Some(ROOT_KEY),
        json!({"account_id": "acme", "admin_user_id": "alice", "seed": "s1"}),
    );
    assert_eq!(r.result()["user_key"], ALICE);
    let r = s.post(
        &format!("{ACCOUNTS}/acme/users"),
        Some(ALICE),
        json!({"user_id": "bob", "seed": "bob-seed"}),
    );
    assert_eq!(r.result()["user_key"], BOB);
    assert_eq!(whoami(&s, BOB).as_deref(), Some("bob"));
    let r = s.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(ALICE),
        json!({"seed": "bob-seed"}),
    );
    assert_eq!(r.result()["user_key"], BOB);
}

#[test]
fn hashed_mode_end_to_end_and_migration() {
    let st = Storage::new();
    // Plaintext first, then restart with hashing: existing keys are migrated and keep working.
    let mut s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    assert_eq!(
        users_json(&st, "acme")["users"]["alice"]["key"],
        alice.as_str()
    );
    s.kill9();
    let mut s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_AUTH__API_KEY_HASHING", "true"),
    );
    let stored = users_json(&st, "acme")["users"]["alice"].clone();
    assert!(
        stored["key"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$v=19$m=65536,t=3,p=2$"),
        "{stored}"
    );
    assert_eq!(stored["key_prefix"], &alice[..8]);
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));

    let bob = register(&s, &alice, "acme", "bob", "user");
    let stored = users_json(&st, "acme")["users"]["bob"].clone();
    assert!(stored["key"].as_str().unwrap().starts_with("$argon2id$"));
    assert_eq!(stored["key_prefix"], &bob[..8]);
    assert!(!st
        .at("acme/_system/users.json")
        .read_to_string()
        .unwrap()
        .contains(&bob));
    let before = auth_status(&s)["counters"].clone();
    assert_eq!(whoami(&s, &bob).as_deref(), Some("bob"));
    for _ in 0..20 {
        assert_eq!(whoami(&s, &bob).as_deref(), Some("bob"));
    }
    let after = auth_status(&s)["counters"].clone();
    let d = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(d("argon_verifications"), 1, "{after}");
    assert_eq!(d("cache_hits"), 20, "{after}");
    // A wrong secret with the right prefix is rejected after verification.
    let mut forged = bob.clone();
    forged.pop();
    forged.push(if bob.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(whoami(&s, &forged), None);
    let list = s.get(&format!("{ACCOUNTS}/acme/users"), Some(&alice));
    assert_eq!(
        list.result()[1],
        json!({"user_id": "bob", "role": "user", "key_prefix": &bob[..8]})
    );
    // Regenerate: the cached verification dies with the old hash.
    let r = s.post(
        &format!("{ACCOUNTS}/acme/users/bob/key"),
        Some(&alice),
        json!({}),
    );
    let bob2 = r.result()["user_key"].as_str().unwrap().to_string();
    assert_eq!(whoami(&s, &bob), None);
    assert_eq!(whoami(&s, &bob2).as_deref(), Some("bob"));
    s.restart();
    assert_eq!(whoami(&s, &bob2).as_deref(), Some("bob"));
    assert_eq!(whoami(&s, &alice).as_deref(), Some("alice"));
}

#[test]
fn persistence_across_restart_and_openviking_data_dirs() {
    let st = Storage::new();
    // A registry as OpenViking writes it: plaintext new-format, legacy hex and Argon2 keys,
    // unknown fields, no generation marker.
    let new_fmt = "YWNtZQ.Ym9i.ZDJkZTc0Y2RlNWU1ZDQ1ZTkyY2RhZjExZTJiMWVkYjkzNmQwNWJhOGNhMmZiNWJiOWY2ZmFlM2QyMTNmOTdmNw";
    let legacy = "0123456789abcdef".repeat(4);
    let hashed_key = "YWNtZQ.ZGF2ZQ.c2VjcmV0";
    let phc = longship::storage::keys::hash(hashed_key).unwrap();
    st.at("_system/accounts.json").write(
        serde_json::to_vec_pretty(&json!({"accounts": {
            "default": {"created_at": "2026-02-12T10:00:00.123456+00:00"},
            "acme": {"created_at": "2026-02-13T08:00:00.000001+00:00", "tier": "gold"}
        }, "schema": 2}))
        .unwrap(),
    );
    st.at("acme/_system/users.json").write(
        serde_json::to_vec_pretty(&json!({"users": {
            "bob": {"role": "admin", "key": new_fmt},
            "carl": {"role": "user", "key": legacy, "nickname": "c"},
            "dave": {"role": "user", "key": phc, "key_prefix": &hashed_key[..8]},
            "erin": {"role": "user", "key": ""}
        }}))
        .unwrap(),
    );
    let mut s = Server::start(&st, Opts::default());
    assert_eq!(whoami(&s, new_fmt).as_deref(), Some("bob"));
    assert_eq!(whoami(&s, &legacy).as_deref(), Some("carl"));
    assert_eq!(whoami(&s, hashed_key).as_deref(), Some("dave"));
    assert_eq!(whoami(&s, &"0123456789abcdef".repeat(3)), None);
    let frank = register(&s, new_fmt, "acme", "frank", "user");
    s.restart();
    for (key, who) in [
        (new_fmt, "bob"),
        (legacy.as_str(), "carl"),
        (hashed_key, "dave"),
        (frank.as_str(), "frank"),
    ] {
        assert_eq!(whoami(&s, key).as_deref(), Some(who));
    }
    // Unknown fields and order survived our rewrites.
    let accounts: Value =
        serde_json::from_slice(&st.at("_system/accounts.json").read().unwrap()).unwrap();
    assert_eq!(accounts["schema"], 2);
    assert_eq!(accounts["accounts"]["acme"]["tier"], "gold");
    let u = users_json(&st, "acme");
    assert_eq!(u["users"]["carl"]["nickname"], "c");
    let order: Vec<&String> = u["users"].as_object().unwrap().keys().collect();
    assert_eq!(order, ["bob", "carl", "dave", "erin", "frank"]);
    let list = s.get(&format!("{ACCOUNTS}/acme/users"), Some(ROOT_KEY));
    assert_eq!(list.result()[3], json!({"user_id": "erin", "role": "user"}));
}

#[test]
fn deletion_in_progress_answers_412() {
    let st = Storage::new();
    // Strict freshness, so the hand-made change below is seen by the next request.
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "0"),
    );
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    // Another instance is mid-way through deleting the account (its mark is on disk).
    let path = st.at("_system/accounts.json");
    let mut accounts: Value = serde_json::from_slice(&path.read().unwrap()).unwrap();
    let task = "11111111-2222-4333-8444-555555555555";
    accounts["accounts"]["acme"]["deletion"] =
        json!({"task_id": task, "owner_account_id": "_system", "owner_user_id": "root"});
    path.write(serde_json::to_vec_pretty(&accounts).unwrap());
    assert_eq!(
        whoami(&s, &bob).as_deref(),
        Some("bob"),
        "not announced yet"
    );
    announce(&st, "acme");
    assert_eq!(whoami(&s, &bob), None);
    assert_eq!(whoami(&s, &alice), None);
    for (m, p, b) in [
        (
            "POST",
            format!("{ACCOUNTS}/acme/users"),
            Some(json!({"user_id": "x"})),
        ),
        (
            "PUT",
            format!("{ACCOUNTS}/acme/users/bob/role"),
            Some(json!({"role": "admin"})),
        ),
        (
            "POST",
            format!("{ACCOUNTS}/acme/users/bob/key"),
            Some(json!({})),
        ),
        ("DELETE", format!("{ACCOUNTS}/acme/users/bob"), None),
    ] {
        let r = s.call(m, &p, Some(ROOT_KEY), b);
        assert_eq!(r.status, 412, "{m} {p}: {:?}", r.body);
        assert_eq!(
            err(&r),
            ("FAILED_PRECONDITION", "Account deletion is in progress")
        );
        assert_eq!(r.body["error"]["details"]["task_id"], task);
    }
    let a = s.get(&format!("{ACCOUNTS}/acme"), Some(ROOT_KEY));
    assert_eq!(a.result()["status"], "deleting");
    assert_eq!(a.result()["task_id"], task);
    let dup = s.post(
        ACCOUNTS,
        Some(ROOT_KEY),
        json!({"account_id": "acme", "admin_user_id": "z"}),
    );
    assert_eq!(dup.status, 409);
}

/// An instance died in the middle of removing a user (deletion mark and pending task on disk,
/// nobody holding the deletion lock): repeating A6 resumes that task instead of starting a
/// second one, and finishes it.
#[test]
fn orphaned_user_deletion_is_resumed_with_the_same_task() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "0"),
    );
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    let task = "22222222-3333-4444-8555-666666666666";
    let now = 1_770_000_000.0;
    st.at(&format!("_system/tasks/root/{task}.json")).write(
        serde_json::to_vec(&json!({
            "task_id": task, "task_type": "user_delete", "status": "running",
            "created_at": now, "updated_at": now, "resource_id": "acme/bob",
            "account_id": "_system", "user_id": "root", "meta": {},
            "execution_events": {"items": []}
        }))
        .unwrap(),
    );
    let path = st.at("acme/_system/users.json");
    let mut users: Value = serde_json::from_slice(&path.read().unwrap()).unwrap();
    users["users"]["bob"]["key"] = json!("");
    users["users"]["bob"]["deletion"] =
        json!({"task_id": task, "owner_account_id": "_system", "owner_user_id": "root"});
    path.write(serde_json::to_vec_pretty(&users).unwrap());
    announce(&st, "acme");
    assert_eq!(whoami(&s, &bob), None);
    // A5 leaves pending deletions out; A5b still shows the user.
    let list = s.get(&format!("{ACCOUNTS}/acme/users"), Some(&alice));
    assert_eq!(list.result().as_array().unwrap().len(), 1);
    assert_eq!(
        s.get(&format!("{ACCOUNTS}/acme/users/bob"), Some(&alice))
            .status,
        200
    );
    let r = s.put(
        &format!("{ACCOUNTS}/acme/users/bob/role"),
        Some(&alice),
        json!({"role": "admin"}),
    );
    assert_eq!(
        err(&r),
        ("FAILED_PRECONDITION", "User deletion is in progress")
    );
    assert_eq!(r.body["error"]["details"]["task_id"], task);

    let r = s.delete(&format!("{ACCOUNTS}/acme/users/bob"), Some(&alice));
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.result()["task_id"], task);
    assert_eq!(r.result()["deleted"], true);
    assert!(!st.at("acme/user/bob").exists());
    assert!(users_json(&st, "acme")["users"].get("bob").is_none());
    let t = s.get(&format!("/api/v1/tasks/{task}"), Some(ROOT_KEY));
    assert_eq!(t.result()["status"], "completed", "{:?}", t.body);
    assert_eq!(
        s.delete(&format!("{ACCOUNTS}/acme/users/bob"), Some(&alice))
            .status,
        404
    );
}
