//! Path safety and tenant isolation of the fs, content and search APIs (spec §5.2–§5.4):
//! a traversal corpus that every endpoint rejects without touching a file, and an isolation
//! matrix over two accounts with two users each.

use serde_json::{json, Value};

use crate::harness::api::q;
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

/// Who sends a request: a key (api_key mode) or dev-mode identity headers.
struct Client<'a> {
    s: &'a Server,
    key: Option<String>,
    account: &'a str,
    user: &'a str,
}

impl<'a> Client<'a> {
    fn dev(s: &'a Server, account: &'a str, user: &'a str) -> Self {
        Client {
            s,
            key: None,
            account,
            user,
        }
    }
    fn keyed(s: &'a Server, key: String) -> Self {
        Client {
            s,
            key: Some(key),
            account: "",
            user: "",
        }
    }
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        match &self.key {
            Some(k) => headers.push(("X-API-Key", k)),
            None => {
                headers.push(("X-OpenViking-Account", self.account));
                headers.push(("X-OpenViking-User", self.user));
            }
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.s.raw(method, path, &headers, &bytes)
    }
    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(body))
    }
    fn write(&self, uri: &str, content: &str) {
        let r = self.post(
            "/api/v1/content/write",
            json!({"uri": uri, "content": content}),
        );
        assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
    }
}

/// Every endpoint that takes a URI, aimed at `uri` (`uri` is sent exactly, fully encoded).
fn probes(c: &Client, uri: &str, with_writes: bool) -> Vec<(String, Resp)> {
    let e = q(uri);
    let mut out = vec![
        ("ls".into(), c.get(&format!("/api/v1/fs/ls?uri={e}"))),
        (
            "ls-recursive".into(),
            c.get(&format!("/api/v1/fs/ls?uri={e}&recursive=true")),
        ),
        ("tree".into(), c.get(&format!("/api/v1/fs/tree?uri={e}"))),
        ("stat".into(), c.get(&format!("/api/v1/fs/stat?uri={e}"))),
        (
            "read".into(),
            c.get(&format!("/api/v1/content/read?uri={e}")),
        ),
        (
            "abstract".into(),
            c.get(&format!("/api/v1/content/abstract?uri={e}")),
        ),
        (
            "overview".into(),
            c.get(&format!("/api/v1/content/overview?uri={e}")),
        ),
        (
            "download".into(),
            c.get(&format!("/api/v1/content/download?uri={e}")),
        ),
        (
            "grep".into(),
            c.post("/api/v1/search/grep", json!({"uri": uri, "pattern": "."})),
        ),
        (
            "glob".into(),
            c.post("/api/v1/search/glob", json!({"uri": uri, "pattern": "**"})),
        ),
    ];
    if with_writes {
        out.extend([
            (
                "write".into(),
                c.post("/api/v1/content/write", json!({"uri": uri, "content": "x"})),
            ),
            (
                "write-child".into(),
                c.post(
                    "/api/v1/content/write",
                    json!({"uri": format!("{uri}/pwn.md"), "content": "x"}),
                ),
            ),
            (
                "mkdir".into(),
                c.post("/api/v1/fs/mkdir", json!({"uri": uri})),
            ),
            (
                "rm".into(),
                c.call(
                    "DELETE",
                    &format!("/api/v1/fs?uri={e}&recursive=true"),
                    None,
                ),
            ),
            (
                "mv-from".into(),
                c.post(
                    "/api/v1/fs/mv",
                    json!({"from_uri": uri, "to_uri": "viking://resources/got"}),
                ),
            ),
            (
                "mv-to".into(),
                c.post(
                    "/api/v1/fs/mv",
                    json!({"from_uri": "viking://resources/mine.md", "to_uri": uri}),
                ),
            ),
        ]);
    }
    out
}

fn corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "viking://..",
        "viking://../other/resources/secret.md",
        "viking://resources/..",
        "viking://resources/../../other/resources/secret.md",
        "viking://resources/./secret.md",
        "viking://resources/.",
        "viking://~/..",
        "viking://~/../bob",
        "viking://session/../../..",
        "viking://user/alice/../bob",
        "viking://resources/%2e%2e",
        "viking://resources/%2E%2E/%2e%2e/other",
        "viking://resources/%2e%2e%2f%2e%2e%2fother",
        "viking://resources/..%2fother",
        "viking://resources/%252e%252e/other",
        "viking://resources/%2e",
        "viking://resources/a%5c..%5cother",
        "viking://resources/..\\..\\other",
        "viking://resources/a\\b",
        "viking://resources/C:",
        "viking://resources/c:\\windows",
        "viking://resources/a\0b",
        "viking://resources/%00",
        "viking://resources/a\nb",
        "viking://resources/tab\there",
        "viking://resources/\u{1b}[31m",
        "viking://resources/\u{2024}\u{2024}",
        "viking://resources/\u{2024}\u{2024}/\u{2024}\u{2024}/other",
        "viking://resources/\u{FF0E}\u{FF0E}/other",
        "viking://resources/\u{FE52}\u{FE52}",
        "viking://resources/\u{2025}",
        "viking://resources/\u{2025}\u{FF0F}other",
        "viking://resources/a\u{FF3C}..",
        "viking://resources/C\u{FF1A}",
        "viking://_system/accounts.json",
        "viking://temp/x",
        "viking://system",
        "/resources/../../other",
        "../other",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push(format!("viking://resources/{}", "x".repeat(256)));
    c.push(format!("viking://resources/{}/..", "é".repeat(200)));
    c
}

#[test]
fn traversal_corpus_is_rejected_everywhere() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Client::dev(&s, "acme", "alice");
    c.write("viking://resources/mine.md", "mine");
    c.write("viking://resources/secret.md", "acme secret");
    Client::dev(&s, "other", "eve").write("viking://resources/secret.md", "OTHER-SECRET");
    // A file outside the /local mount (local disk only; an S3 store has no outside).
    std::fs::write(st.path().join("outside.md"), "outside").unwrap();
    let before = st.stored_digest("");

    for uri in corpus() {
        for (op, r) in probes(&c, &uri, true) {
            assert!(
                r.status == 400 || r.status == 403,
                "{op} {uri:?} answered {}: {:?}",
                r.status,
                r.body
            );
            assert!(matches!(
                r.code(),
                "INVALID_URI" | "INVALID_ARGUMENT" | "PERMISSION_DENIED"
            ));
            let raw = String::from_utf8_lossy(&r.raw);
            assert!(
                !raw.contains("OTHER-SECRET") && !raw.contains("/local"),
                "{op} {uri:?}: {raw}"
            );
        }
    }
    // The same, sent raw in the query string (so the server does the one decoding).
    for raw_query in [
        "viking://resources/../../other",
        "viking://resources/%2e%2e/%2e%2e/other",
        "viking://resources/%2E%2E",
        "viking://resources/..%5c..%5cother",
        "viking://resources/%00",
        "viking://resources/%E2%80%A4%E2%80%A4",
        "viking://resources/%EF%BC%8E%EF%BC%8E",
        "viking://resources/%252e%252e",
    ] {
        for path in [
            "/api/v1/fs/ls",
            "/api/v1/fs/stat",
            "/api/v1/content/read",
            "/api/v1/content/download",
        ] {
            let r = c.get(&format!("{path}?uri={raw_query}"));
            assert!(
                r.status == 400 || r.status == 403,
                "{path} {raw_query}: {:?}",
                r.body
            );
        }
    }
    // Glob patterns cannot climb out of the start directory either.
    for pattern in ["../**", "../../other/**", "..", "/**", "**/../**"] {
        let r = c.post(
            "/api/v1/search/glob",
            json!({"uri": "viking://resources", "pattern": pattern}),
        );
        let raw = String::from_utf8_lossy(&r.raw);
        assert!(
            !raw.contains("other") && !raw.contains("OTHER"),
            "{pattern}: {raw}"
        );
    }
    assert_eq!(
        st.stored_digest(""),
        before,
        "a rejected request changed storage"
    );
}

#[test]
fn accounts_are_isolated_in_dev_mode() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let acme = Client::dev(&s, "acme", "alice");
    acme.write("viking://resources/acme-only/secret.md", "ACME-SECRET");
    acme.write("viking://~/private.md", "ALICE-PRIVATE");
    let acme_before = st.stored_digest("acme");
    let other = Client::dev(&s, "globex", "dave");
    other.write("viking://resources/mine.md", "mine");
    for uri in [
        "viking://resources/acme-only/secret.md",
        "viking://resources/acme-only",
        "viking://user/alice/private.md",
    ] {
        for (op, r) in probes(&other, uri, false) {
            assert_eq!(r.status, 404, "{op} {uri}: {:?}", r.body);
        }
    }
    for r in [
        other.get(&format!(
            "/api/v1/fs/tree?uri={}&level_limit=9",
            q("viking://")
        )),
        other.post("/api/v1/search/glob", json!({"pattern": "**"})),
        other.post(
            "/api/v1/search/grep",
            json!({"uri": "viking://resources", "pattern": "SECRET"}),
        ),
    ] {
        let raw = String::from_utf8_lossy(&r.raw);
        assert_eq!(r.status, 200, "{raw}");
        assert!(
            !raw.contains("acme") && !raw.contains("SECRET") && !raw.contains("alice"),
            "{raw}"
        );
    }
    assert_eq!(st.stored_digest("acme"), acme_before);
}

/// A1 as ROOT; returns the admin's key.
fn create_account(s: &Server, account: &str, admin: &str) -> String {
    let r = s.post(
        "/api/v1/admin/accounts",
        Some(ROOT_KEY),
        json!({"account_id": account, "admin_user_id": admin}),
    );
    assert_eq!(r.status, 200, "create {account}: {:?}", r.body);
    r.result()["user_key"].as_str().unwrap().to_string()
}

/// A4 as ROOT; returns the user's key.
fn register(s: &Server, account: &str, user: &str) -> String {
    let r = s.post(
        &format!("/api/v1/admin/accounts/{account}/users"),
        Some(ROOT_KEY),
        json!({"user_id": user, "role": "user"}),
    );
    assert_eq!(r.status, 200, "register {account}/{user}: {:?}", r.body);
    r.result()["user_key"].as_str().unwrap().to_string()
}

/// Names a response must never contain when somebody asks about somebody else's data; `echo`
/// (the URI the caller sent itself) is not a leak.
fn assert_no_leak(raw: &[u8], echo: &str, forbidden: &[&str], context: &str) {
    let text = String::from_utf8_lossy(raw).replace(echo, "");
    for f in forbidden {
        assert!(!text.contains(f), "{context}: leaked {f:?} in {text}");
    }
}

#[test]
fn isolation_matrix_two_accounts_two_users_each() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let acme_admin = create_account(&s, "acme", "alice");
    let acme_user = register(&s, "acme", "bob");
    let globex_admin = create_account(&s, "globex", "carol");
    let globex_user = register(&s, "globex", "dave");
    let tenants = [
        ("acme", "alice", acme_admin),
        ("acme", "bob", acme_user),
        ("globex", "carol", globex_admin),
        ("globex", "dave", globex_user),
    ];
    // Everyone stores a private file, and each account a shared one.
    for (account, user, key) in &tenants {
        let c = Client::keyed(&s, key.clone());
        c.write(
            &format!("viking://user/{user}/resources/secret.md"),
            &format!("PRIVATE-{user}"),
        );
        c.write("viking://resources/mine.md", "mine");
        c.write(
            &format!("viking://resources/shared-{account}-{}.md", user.len()),
            &format!("SHARED-{account}"),
        );
    }
    // ROOT has no data access in api_key mode.
    let root = Client::keyed(&s, ROOT_KEY.to_string());
    for (op, r) in probes(&root, "viking://resources", true) {
        assert_eq!(r.status, 403, "root {op}: {:?}", r.body);
    }

    for (account, user, key) in &tenants {
        let me = Client::keyed(&s, key.clone());
        let before = st.stored_digest("");
        for (v_account, v_user, _) in &tenants {
            if v_user == user {
                continue;
            }
            let same_account = v_account == account;
            let target = format!("viking://user/{v_user}/resources/secret.md");
            let private = format!("PRIVATE-{v_user}");
            let other_tenant_names: Vec<&str> = if same_account {
                vec![&private]
            } else {
                vec![v_account, &private, "SHARED-"]
            };
            for (op, r) in probes(&me, &target, true) {
                let context = format!("{user} {op} {target}");
                if same_account {
                    // Another user's space in my account: forbidden, whatever the role.
                    assert_eq!(r.status, 403, "{context}: {:?}", r.body);
                    assert_eq!(r.code(), "PERMISSION_DENIED", "{context}");
                } else {
                    // Another account does not exist from here: the URI names my own account,
                    // where the user is not me (403) — never the other tenant's file.
                    assert!(
                        r.status == 403 || r.status == 404,
                        "{context}: {:?}",
                        r.body
                    );
                }
                assert_no_leak(&r.raw, &target, &other_tenant_names, &context);
            }
            if !same_account {
                // The other account's shared files are invisible under the same URI.
                let uri = format!("viking://resources/shared-{v_account}-{}.md", v_user.len());
                for (op, r) in probes(&me, &uri, false) {
                    let context = format!("{user} {op} {uri}");
                    assert_eq!(r.status, 404, "{context}: {:?}", r.body);
                    assert_no_leak(
                        &r.raw,
                        &uri,
                        &[v_account, v_user, "SHARED-", "PRIVATE-"],
                        &context,
                    );
                }
            }
        }
        assert_eq!(
            st.stored_digest(""),
            before,
            "{user}'s forbidden requests changed storage"
        );

        // Listings and searches across everything the caller can see show nothing foreign.
        let others: Vec<&str> = tenants
            .iter()
            .filter(|(_, u, _)| u != user)
            .map(|(_, u, _)| *u)
            .collect();
        let foreign_account = if *account == "acme" { "globex" } else { "acme" };
        let privates: Vec<String> = others.iter().map(|u| format!("PRIVATE-{u}")).collect();
        let mut forbidden = others.clone();
        forbidden.push(foreign_account);
        forbidden.extend(privates.iter().map(String::as_str));
        let views = [
            me.get(&format!(
                "/api/v1/fs/ls?uri={}&output=original",
                q("viking://user")
            )),
            me.get(&format!(
                "/api/v1/fs/tree?uri={}&level_limit=9",
                q("viking://")
            )),
            me.get(&format!(
                "/api/v1/fs/ls?uri={}&recursive=true",
                q("viking://")
            )),
            me.post("/api/v1/search/glob", json!({"pattern": "**"})),
            me.post(
                "/api/v1/search/grep",
                json!({"uri": "viking://", "pattern": "PRIVATE|SHARED", "node_limit": 0}),
            ),
        ];
        for r in &views {
            assert_eq!(r.status, 200, "{user}: {:?}", r.body);
            assert_no_leak(&r.raw, "\u{0}", &forbidden, &format!("{user} view"));
        }
        let ls_users = &views[0].body["result"];
        assert_eq!(ls_users.as_array().map(Vec::len), Some(1), "{ls_users}");
        assert_eq!(ls_users[0]["name"], *user);
        let grep = &views[4].body["result"];
        let own = format!("viking://user/{user}/resources/secret.md");
        assert!(grep["matches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["uri"] == own.as_str()));
    }
}
