//! ACLs and groups (issue #23): the ACL and group routes, enforcement on every route over two
//! accounts × users × groups × levels, find returning exactly the permitted documents with a
//! full `limit`, grants and revocations reaching another instance within the auth bound, and
//! bad input refused with nothing changed. Runs on both storage backends.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, err, ok, q, register, ACCOUNTS};
use crate::harness::{Opts, Resp, Server, Storage};

const ACL: &str = "/api/v1/acl";
/// Generous bound for a change on one instance to hold on another (the setting is 1 s).
const BOUND: Duration = Duration::from_secs(8);

fn write(s: &Server, key: &str, uri: &str, content: &str) {
    let r = s.post(
        "/api/v1/content/write",
        Some(key),
        json!({"uri": uri, "content": content, "mode": "create"}),
    );
    assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
}

fn mkdir(s: &Server, key: &str, uri: &str) {
    let r = s.post("/api/v1/fs/mkdir", Some(key), json!({"uri": uri}));
    assert_eq!(r.status, 200, "mkdir {uri}: {:?}", r.body);
}

/// Turn the account's `acl.enabled` switch on (account configuration, ADMIN).
fn enable_acl(s: &Server, admin: &str, account: &str) {
    let r = s.call(
        "PATCH",
        &format!("{ACCOUNTS}/{account}/configuration"),
        Some(admin),
        Some(json!({"settings": {"acl": {"enabled": true}}})),
    );
    assert_eq!(r.status, 200, "enable acl: {:?}", r.body);
}

fn set_acl(s: &Server, key: &str, uri: &str, body: Value) -> Resp {
    let mut b = body;
    b["uri"] = uri.into();
    s.put(ACL, Some(key), b)
}

fn get_acl(s: &Server, key: &str, uri: &str) -> Resp {
    s.get(&format!("{ACL}?uri={}", q(uri)), Some(key))
}

fn group_path(account: &str, rest: &str) -> String {
    format!("{ACCOUNTS}/{account}/groups{rest}")
}

struct Acme {
    alice: String,
    bob: String,
    carol: String,
    dave: String,
}

/// Account `acme`: alice (admin), bob (in group `eng`), carol, dave.
fn acme(s: &Server) -> Acme {
    let alice = create_account(s, "acme", "alice");
    let bob = register(s, &alice, "acme", "bob", "user");
    let carol = register(s, &alice, "acme", "carol", "user");
    let dave = register(s, &alice, "acme", "dave", "user");
    ok(&s.post(
        &group_path("acme", ""),
        Some(&alice),
        json!({"group_id": "eng"}),
    ));
    ok(&s.put(
        &group_path("acme", "/eng/members/bob"),
        Some(&alice),
        json!({}),
    ));
    Acme {
        alice,
        bob,
        carol,
        dave,
    }
}

#[test]
fn group_routes_as_0_5_2() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    let zed = create_account(&s, "beta", "zed");

    let r = ok(&s.post(
        &group_path("acme", ""),
        Some(&alice),
        json!({"group_id": "eng"}),
    ))
    .clone();
    assert_eq!(r, json!({"group_id": "eng", "member_count": 0}));
    err(
        &s.post(
            &group_path("acme", ""),
            Some(&alice),
            json!({"group_id": "eng"}),
        ),
        409,
        "ALREADY_EXISTS",
    );
    err(
        &s.post(
            &group_path("acme", ""),
            Some(&alice),
            json!({"group_id": "a b"}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &s.post(
            &group_path("acme", ""),
            Some(&alice),
            json!({"group_id": "x", "extra": 1}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        ok(&s.put(
            &group_path("acme", "/eng/members/bob"),
            Some(&alice),
            json!({})
        )),
        &json!({"added": true})
    );
    // Adding again is still `added: true` (0.5.2); an unknown user is 404.
    assert_eq!(
        ok(&s.put(
            &group_path("acme", "/eng/members/bob"),
            Some(&alice),
            json!({})
        )),
        &json!({"added": true})
    );
    err(
        &s.put(
            &group_path("acme", "/eng/members/ghost"),
            Some(&alice),
            json!({}),
        ),
        404,
        "NOT_FOUND",
    );
    err(
        &s.put(
            &group_path("acme", "/nope/members/bob"),
            Some(&alice),
            json!({}),
        ),
        404,
        "NOT_FOUND",
    );
    assert_eq!(
        ok(&s.get(&group_path("acme", "/eng/members"), Some(&alice))),
        &json!({"group_id": "eng", "members": ["bob"]})
    );
    assert_eq!(
        ok(&s.get(&group_path("acme", ""), Some(&alice))),
        &json!([{"group_id": "eng", "member_count": 1}])
    );
    // A USER may not manage groups; another account's ADMIN neither, and learns nothing.
    err(
        &s.get(&group_path("acme", ""), Some(&bob)),
        403,
        "PERMISSION_DENIED",
    );
    let e = err(
        &s.get(&group_path("acme", "/eng/members"), Some(&zed)),
        403,
        "PERMISSION_DENIED",
    );
    assert!(!e.to_string().contains("bob"), "{e}");
    assert_eq!(ok(&s.get(&group_path("beta", ""), Some(&zed))), &json!([]));
    assert_eq!(
        ok(&s.delete(&group_path("acme", "/eng/members/bob"), Some(&alice))),
        &json!({"removed": true})
    );
    assert_eq!(
        ok(&s.delete(&group_path("acme", "/eng/members/bob"), Some(&alice))),
        &json!({"removed": false})
    );
    assert_eq!(
        ok(&s.delete(&group_path("acme", "/eng"), Some(&alice))),
        &json!({"deleted": true})
    );
    err(
        &s.delete(&group_path("acme", "/eng"), Some(&alice)),
        404,
        "NOT_FOUND",
    );
    // Stored as 0.5.2 stores it.
    let stored: Value = serde_json::from_str(&st.read_string("acme/_system/groups.json")).unwrap();
    assert_eq!(stored["groups"], json!({}));
}

#[test]
fn acl_routes_and_bad_input() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    mkdir(&s, &a.alice, "viking://resources/team");
    write(&s, &a.alice, "viking://resources/team/plan.md", "the plan");

    // The root's fixed ACL.
    let root = ok(&get_acl(&s, &a.alice, "viking://resources")).clone();
    assert_eq!(root["acl_mode"], "inherit");
    assert_eq!(
        root["direct_entries"],
        json!([{"principal": "user:*", "level": "manage"}])
    );

    let r = ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/team",
        json!({"acl_mode": "restricted", "entries": [
            {"principal": "group:eng", "level": "read"},
            {"principal": "user:carol", "level": "write"},
            {"principal": "user:carol", "level": "read"}
        ]}),
    ))
    .clone();
    assert_eq!(r["uri"], "viking://resources/team");
    assert_eq!(r["acl_mode"], "restricted");
    // One entry per principal, its highest level, sorted.
    assert_eq!(
        r["direct_entries"],
        json!([{"principal": "group:eng", "level": "read"}, {"principal": "user:carol", "level": "write"}])
    );
    assert_eq!(r["effective_entries"], r["direct_entries"]);
    assert_eq!(
        r["inherited_entries"],
        json!([{"principal": "user:*", "level": "manage"}])
    );
    // A child inherits.
    let child = ok(&get_acl(&s, &a.alice, "viking://resources/team/plan.md")).clone();
    assert_eq!(child["acl_mode"], "inherit");
    assert_eq!(child["direct_entries"], json!([]));
    assert_eq!(child["effective_entries"], r["direct_entries"]);
    // grant raises, revoke drops.
    let g = ok(&s.post(
        &format!("{ACL}/grant"),
        Some(&a.alice),
        json!({"uri": "viking://resources/team", "principal": "user:dave", "level": "manage"}),
    ))
    .clone();
    assert!(g["direct_entries"]
        .as_array()
        .unwrap()
        .contains(&json!({"principal": "user:dave", "level": "manage"})));
    let r = ok(&s.post(
        &format!("{ACL}/revoke"),
        Some(&a.alice),
        json!({"uri": "viking://resources/team", "principal": "user:dave"}),
    ))
    .clone();
    assert_eq!(r["direct_entries"].as_array().unwrap().len(), 2);
    let before = st.read_string("acme/_system/acl.json");

    // Bad input: a clear 4xx and nothing changed.
    let team = "viking://resources/team";
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": [{"principal": "user:ghost", "level": "read"}]}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": [{"principal": "group:ghosts", "level": "read"}]}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": [{"principal": "group:*", "level": "read"}]}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": [{"principal": "bob", "level": "read"}]}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": [{"principal": "user:bob", "level": "admin"}]}),
            400,
        ),
        ("PUT", ACL, json!({"uri": team, "acl_mode": "none"}), 400),
        ("PUT", ACL, json!({"uri": team}), 400),
        (
            "PUT",
            ACL,
            json!({"uri": team, "acl_mode": "restricted", "extra": 1}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": team, "entries": (0..300).map(|i| json!({"principal": format!("user:u{i}"), "level": "read"})).collect::<Vec<_>>()}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": "viking://resources", "acl_mode": "restricted"}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": "viking://user/bob/memories", "acl_mode": "restricted"}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": "viking://agent", "acl_mode": "restricted"}),
            400,
        ),
        (
            "PUT",
            ACL,
            json!({"uri": "viking://resources/missing", "acl_mode": "restricted"}),
            404,
        ),
        (
            "POST",
            "/api/v1/acl/grant",
            json!({"uri": team, "principal": "user:ghost", "level": "read"}),
            400,
        ),
        (
            "POST",
            "/api/v1/acl/grant",
            json!({"uri": team, "principal": "user:bob", "level": "owner"}),
            400,
        ),
        (
            "POST",
            "/api/v1/acl/grant",
            json!({"uri": "viking://user/alice", "principal": "user:bob", "level": "read"}),
            400,
        ),
        (
            "POST",
            "/api/v1/acl/revoke",
            json!({"uri": team, "principal": "nobody"}),
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let r = s.call(method, path, Some(&a.alice), Some(body.clone()));
        assert_eq!(r.status, status, "{method} {path} {body}: {:?}", r.body);
        assert_eq!(r.body["status"], "error");
    }
    // Another account's admin cannot reach acme's nodes: its URIs are its own account's.
    let zed = create_account(&s, "beta", "zed");
    let r = set_acl(&s, &zed, team, json!({"acl_mode": "restricted"}));
    assert_eq!(r.status, 404, "{:?}", r.body);
    // A USER may not manage ACLs while the switch is off (0.5.2).
    let r = set_acl(&s, &a.bob, team, json!({"acl_mode": "inherit"}));
    err(&r, 403, "PERMISSION_DENIED");
    assert_eq!(st.read_string("acme/_system/acl.json"), before);

    // delete = plain inheritance again; the row goes.
    let r = ok(&s.delete(&format!("{ACL}?uri={}", q(team)), Some(&a.alice))).clone();
    assert_eq!(r["acl_mode"], "inherit");
    assert_eq!(r["direct_entries"], json!([]));
    let stored: Value = serde_json::from_str(&st.read_string("acme/_system/acl.json")).unwrap();
    assert_eq!(stored["nodes"], json!({}));
}

/// Names of the entries of a listing result, with `access` for placeholders.
fn names(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let last = e["uri"].as_str().and_then(|u| u.rsplit('/').next());
            let name = e["rel_path"]
                .as_str()
                .or(e["name"].as_str())
                .or(last)
                .unwrap_or_default();
            match e["access"].as_str() {
                Some(a) => format!("{name}:{a}"),
                None => name.to_string(),
            }
        })
        .collect()
}

#[test]
fn enforcement_matrix_over_routes() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    // A second account with the same layout and a user named like acme's.
    let zed = create_account(&s, "beta", "zed");
    let bob_b = register(&s, &zed, "beta", "bob", "user");
    for (key, acct) in [(&a.alice, "acme"), (&zed, "beta")] {
        mkdir(&s, key, "viking://resources/team");
        mkdir(&s, key, "viking://resources/open");
        write(
            &s,
            key,
            "viking://resources/team/plan.md",
            &format!("plan of {acct} zebra"),
        );
        write(
            &s,
            key,
            "viking://resources/open/notes.md",
            &format!("notes of {acct} zebra"),
        );
        mkdir(&s, key, "viking://resources/team/secret");
        write(
            &s,
            key,
            "viking://resources/team/secret/key.md",
            &format!("secret of {acct} zebra"),
        );
    }
    // acme: team readable by group eng (bob), writable by carol, managed by dave;
    // team/secret only for carol. beta: no ACLs at all.
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/team",
        json!({"acl_mode": "restricted", "entries": [
            {"principal": "group:eng", "level": "read"},
            {"principal": "user:carol", "level": "write"},
            {"principal": "user:dave", "level": "manage"}
        ]}),
    ));
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/team/secret",
        json!({"acl_mode": "restricted", "entries": [
            {"principal": "user:carol", "level": "read"}
        ]}),
    ));
    // Off: stored, not enforced.
    ok(&s.get(
        "/api/v1/content/read?uri=viking://resources/team/secret/key.md",
        Some(&a.bob),
    ));
    enable_acl(&s, &a.alice, "acme");

    let read = |key: &str, uri: &str| {
        s.get(&format!("/api/v1/content/read?uri={}", q(uri)), Some(key))
            .status
    };
    let plan = "viking://resources/team/plan.md";
    let key_md = "viking://resources/team/secret/key.md";
    // read (and abstract/overview/stat/download) per user and level.
    for (who, key, plan_ok, secret_ok) in [
        ("alice(admin)", &a.alice, 200, 200),
        ("bob(eng)", &a.bob, 200, 403),
        ("carol", &a.carol, 200, 200),
        ("dave", &a.dave, 200, 403),
    ] {
        assert_eq!(read(key, plan), plan_ok, "{who} read plan");
        assert_eq!(read(key, key_md), secret_ok, "{who} read secret");
        let st_code = s
            .get(&format!("/api/v1/fs/stat?uri={}", q(key_md)), Some(key))
            .status;
        assert_eq!(st_code, secret_ok, "{who} stat secret");
        let dl = s
            .get(
                &format!("/api/v1/content/download?uri={}", q(key_md)),
                Some(key),
            )
            .status;
        assert_eq!(dl, secret_ok, "{who} download secret");
        let ab = s
            .get(
                &format!(
                    "/api/v1/content/abstract?uri={}",
                    q("viking://resources/team/secret")
                ),
                Some(key),
            )
            .status;
        assert!(
            ab == secret_ok || (secret_ok == 200 && ab == 404),
            "{who} abstract: {ab}"
        );
        let ov = s
            .get(
                &format!(
                    "/api/v1/content/overview?uri={}",
                    q("viking://resources/team/secret")
                ),
                Some(key),
            )
            .status;
        assert!(
            ov == secret_ok || (secret_ok == 200 && ov == 404),
            "{who} overview: {ov}"
        );
    }
    // 0.5.2's message on a direct read.
    let e = err(
        &s.get(
            &format!("/api/v1/content/read?uri={}", q(key_md)),
            Some(&a.bob),
        ),
        403,
        "PERMISSION_DENIED",
    );
    assert_eq!(
        e["message"],
        format!("Access denied for {key_md}: read permission required")
    );
    // Outside any ACL everyone reads; beta's same-named user sees beta's data only.
    assert_eq!(read(&a.dave, "viking://resources/open/notes.md"), 200);
    let r = s.get(
        &format!("/api/v1/content/read?uri={}", q(key_md)),
        Some(&bob_b),
    );
    assert!(String::from_utf8_lossy(&r.raw).contains("secret of beta"));

    // ls: denied children are placeholders; tree does not enter a denied directory.
    let ls =
        |key: &str, uri: &str| names(&s.get(&format!("/api/v1/fs/ls?uri={}", q(uri)), Some(key)));
    assert_eq!(
        ls(&a.bob, "viking://resources/team"),
        ["secret:denied", "plan.md"]
    );
    assert_eq!(
        ls(&a.carol, "viking://resources/team"),
        ["secret", "plan.md"]
    );
    assert_eq!(ls(&a.dave, "viking://resources"), ["open", "team"]);
    let r = s.get(
        &format!("/api/v1/fs/ls?uri={}", q("viking://resources/team")),
        Some(&a.bob),
    );
    let placeholder = r.result().as_array().unwrap()[0].clone();
    assert_eq!(
        placeholder,
        json!({"name": "secret", "isDir": true, "uri": "viking://resources/team/secret", "access": "denied"})
    );
    err(
        &s.get(
            &format!("/api/v1/fs/ls?uri={}", q("viking://resources/team/secret")),
            Some(&a.bob),
        ),
        403,
        "PERMISSION_DENIED",
    );
    let tree = |key: &str| {
        names(&s.get(
            &format!("/api/v1/fs/tree?uri={}", q("viking://resources")),
            Some(key),
        ))
    };
    let bob_tree = tree(&a.bob);
    assert!(
        bob_tree.contains(&"team/secret:denied".to_string()),
        "{bob_tree:?}"
    );
    assert!(
        !bob_tree.iter().any(|n| n.contains("key.md")),
        "{bob_tree:?}"
    );
    assert!(tree(&a.carol).contains(&"team/secret/key.md".to_string()));
    // dave manages `team` (so reads it) but not `team/secret`.
    let dave_tree = tree(&a.dave);
    assert!(
        dave_tree.contains(&"team/plan.md".to_string()),
        "{dave_tree:?}"
    );
    assert!(
        dave_tree.contains(&"team/secret:denied".to_string()),
        "{dave_tree:?}"
    );

    // grep / glob: denied files are not searched, not named.
    let grep = |key: &str| {
        let r = s.post(
            "/api/v1/search/grep",
            Some(key),
            json!({"uri": "viking://resources", "pattern": "zebra"}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        String::from_utf8_lossy(&r.raw).to_string()
    };
    let g = grep(&a.bob);
    assert!(
        g.contains("plan.md") && g.contains("notes.md") && !g.contains("key.md"),
        "{g}"
    );
    let g = grep(&a.dave);
    assert!(
        g.contains("plan.md") && !g.contains("key.md") && g.contains("notes.md"),
        "{g}"
    );
    assert!(grep(&a.carol).contains("key.md"));
    let glob = |key: &str| {
        let r = s.post(
            "/api/v1/search/glob",
            Some(key),
            json!({"uri": "viking://resources", "pattern": "**/*.md"}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        String::from_utf8_lossy(&r.raw).to_string()
    };
    assert!(!glob(&a.bob).contains("key.md"));
    assert!(glob(&a.carol).contains("key.md"));

    // find: only what the caller may read, never counted otherwise.
    let found = |key: &str| {
        let r = s.post(
            "/api/v1/search/find",
            Some(key),
            json!({"query": "zebra", "limit": 10}),
        );
        crate::find::uris(&r)
    };
    let bob_found = found(&a.bob);
    assert!(bob_found.contains(&plan.to_string()), "{bob_found:?}");
    assert!(
        !bob_found.iter().any(|u| u.contains("secret")),
        "{bob_found:?}"
    );
    let dave_found = found(&a.dave);
    assert!(
        !dave_found.iter().any(|u| u.contains("secret")),
        "{dave_found:?}"
    );
    assert!(found(&a.carol).contains(&key_md.to_string()));
    // A denied target finds nothing (0.5.2), not a 403.
    let r = s.post(
        "/api/v1/search/find",
        Some(&a.bob),
        json!({"query": "zebra", "target_uri": "viking://resources/team/secret"}),
    );
    assert_eq!(crate::find::uris(&r), Vec::<String>::new());

    // write: carol may, bob (read) may not; mkdir inside likewise.
    let w = |key: &str, uri: &str| {
        s.post(
            "/api/v1/content/write",
            Some(key),
            json!({"uri": uri, "content": "x", "mode": "replace"}),
        )
        .status
    };
    assert_eq!(w(&a.bob, plan), 403);
    assert_eq!(w(&a.carol, plan), 200);
    assert_eq!(
        s.post(
            "/api/v1/fs/mkdir",
            Some(&a.bob),
            json!({"uri": "viking://resources/team/new"})
        )
        .status,
        403
    );
    // cp: reading the source and writing the target.
    let cp = |key: &str, from: &str, to: &str| {
        s.post(
            "/api/v1/fs/cp",
            Some(key),
            json!({"from_uri": from, "to_uri": to}),
        )
        .status
    };
    assert_eq!(cp(&a.bob, key_md, "viking://resources/open/stolen.md"), 403);
    assert_eq!(
        cp(&a.bob, plan, "viking://resources/open/plan-copy.md"),
        200
    );
    assert_eq!(
        cp(
            &a.carol,
            "viking://resources/open/notes.md",
            "viking://resources/team/secret/n.md"
        ),
        403
    );
    // mv / rm need manage (of the whole subtree): dave manages team but not team/secret.
    let mv = |key: &str, from: &str, to: &str| {
        s.post(
            "/api/v1/fs/mv",
            Some(key),
            json!({"from_uri": from, "to_uri": to}),
        )
        .status
    };
    assert_eq!(mv(&a.carol, plan, "viking://resources/open/p.md"), 403);
    assert_eq!(
        mv(
            &a.dave,
            "viking://resources/team",
            "viking://resources/team2"
        ),
        403
    );
    let rm = |key: &str, uri: &str| {
        s.delete(
            &format!("/api/v1/fs?uri={}&recursive=true", q(uri)),
            Some(key),
        )
        .status
    };
    assert_eq!(rm(&a.dave, "viking://resources/team"), 403);
    assert_eq!(rm(&a.bob, plan), 403);
    assert!(st.exists("acme/resources/team/secret/key.md"));
    // The ACL follows a moved node: alice moves team, bob still cannot read the secret there.
    assert_eq!(
        mv(
            &a.alice,
            "viking://resources/team",
            "viking://resources/moved"
        ),
        200
    );
    assert_eq!(read(&a.bob, "viking://resources/moved/secret/key.md"), 403);
    assert_eq!(read(&a.bob, "viking://resources/moved/plan.md"), 200);
    assert_eq!(read(&a.dave, "viking://resources/moved/secret/key.md"), 403);
    // A node removed and created again starts from its parent's permissions.
    assert_eq!(rm(&a.alice, "viking://resources/moved/secret"), 200);
    write(
        &s,
        &a.carol,
        "viking://resources/moved/secret/again.md",
        "x",
    );
    assert_eq!(
        read(&a.bob, "viking://resources/moved/secret/again.md"),
        200
    );
    let stored: Value = serde_json::from_str(&st.read_string("acme/_system/acl.json")).unwrap();
    assert_eq!(
        stored["nodes"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["moved"]
    );

    // A manager (dave on `moved`) manages its ACL; bob (read) may not.
    err(
        &get_acl(&s, &a.bob, "viking://resources/moved"),
        403,
        "PERMISSION_DENIED",
    );
    ok(&get_acl(&s, &a.dave, "viking://resources/moved"));
    // Beta is untouched by all of this.
    assert_eq!(read(&bob_b, "viking://resources/team/secret/key.md"), 200);
}

#[test]
fn find_returns_exactly_the_permitted_documents_with_a_full_limit() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    // 60 documents; the 6 under `vault` (10%) are carol's only, and rank highest.
    for i in 0..54 {
        write(
            &s,
            &a.alice,
            &format!("viking://resources/pub/d{i:02}.md"),
            "falcon report",
        );
    }
    mkdir(&s, &a.alice, "viking://resources/vault");
    for i in 0..6 {
        write(
            &s,
            &a.alice,
            &format!("viking://resources/vault/v{i}.md"),
            "falcon falcon falcon falcon",
        );
    }
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/vault",
        json!({"acl_mode": "restricted", "entries": [
            {"principal": "user:carol", "level": "read"}
        ]}),
    ));
    enable_acl(&s, &a.alice, "acme");
    let find = |key: &str, limit: usize| {
        let r = s.post(
            "/api/v1/search/find",
            Some(key),
            json!({"query": "falcon", "limit": limit}),
        );
        let got = crate::find::uris(&r);
        assert_eq!(r.result()["total"], got.len(), "{:?}", r.body);
        got
    };
    let bob = find(&a.bob, 10);
    assert_eq!(bob.len(), 10, "limit stays full: {bob:?}");
    assert!(bob.iter().all(|u| u.contains("/pub/")), "{bob:?}");
    let all = find(&a.bob, 100);
    assert_eq!(all.len(), 54, "{all:?}");
    let carol = find(&a.carol, 6);
    assert!(carol.iter().all(|u| u.contains("/vault/")), "{carol:?}");
    assert_eq!(find(&a.carol, 100).len(), 60);
    assert_eq!(find(&a.alice, 100).len(), 60);
}

#[test]
fn grants_and_revocations_reach_another_instance_within_the_bound() {
    let st = Storage::new();
    let a_srv = Server::start(&st, Opts::default());
    let b_srv = Server::start(&st, Opts::default());
    let a = acme(&a_srv);
    mkdir(&a_srv, &a.alice, "viking://resources/vault");
    write(&a_srv, &a.alice, "viking://resources/vault/x.md", "x");
    enable_acl(&a_srv, &a.alice, "acme");
    ok(&set_acl(
        &a_srv,
        &a.alice,
        "viking://resources/vault",
        json!({"acl_mode": "restricted", "entries": []}),
    ));
    let read_on = |s: &Server, key: &str| {
        s.get(
            "/api/v1/content/read?uri=viking://resources/vault/x.md",
            Some(key),
        )
        .status
    };
    // Restricted on A: B denies within the bound.
    let since = Instant::now();
    while read_on(&b_srv, &a.bob) != 403 {
        assert!(
            since.elapsed() < BOUND,
            "B still serves the restricted node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A group grant on A, then membership: B honours both.
    ok(&a_srv.post(
        &format!("{ACL}/grant"),
        Some(&a.alice),
        json!({"uri": "viking://resources/vault", "principal": "group:eng", "level": "read"}),
    ));
    let since = Instant::now();
    while read_on(&b_srv, &a.bob) != 200 {
        assert!(since.elapsed() < BOUND, "B ignores the grant");
        std::thread::sleep(Duration::from_millis(20));
    }
    let granted = since.elapsed();
    ok(&a_srv.delete(&group_path("acme", "/eng/members/bob"), Some(&a.alice)));
    let since = Instant::now();
    while read_on(&b_srv, &a.bob) != 403 {
        assert!(
            since.elapsed() < BOUND,
            "B still honours a removed membership"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let revoked = since.elapsed();
    // The local instance holds each change at once.
    assert_eq!(read_on(&a_srv, &a.bob), 403);
    eprintln!("grant reached B after {granted:?}, membership removal after {revoked:?}");
}

/// WebDAV goes through the same checks: a restricted directory is neither listed by PROPFIND
/// nor readable or writable for a user outside its ACL.
#[test]
fn webdav_honours_acls() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    mkdir(&s, &a.alice, "viking://resources/open");
    mkdir(&s, &a.alice, "viking://resources/team");
    write(&s, &a.alice, "viking://resources/team/plan.md", "plan");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/team",
        json!({"acl_mode": "restricted", "entries": [
            {"principal": "group:eng", "level": "read"}
        ]}),
    ));
    enable_acl(&s, &a.alice, "acme");
    let dav = |key: &str, method: &str, path: &str, depth: &str, body: &[u8]| {
        s.raw(
            method,
            &format!("/webdav/resources{path}"),
            &[("X-API-Key", key), ("Depth", depth)],
            body,
        )
    };
    let listing = |key: &str| {
        let r = dav(key, "PROPFIND", "/", "1", b"");
        assert_eq!(r.status, 207);
        String::from_utf8_lossy(&r.raw).into_owned()
    };
    // bob (group eng) sees and reads it; carol sees neither the directory nor its file.
    assert!(listing(&a.bob).contains("/team/"));
    assert_eq!(dav(&a.bob, "GET", "/team/plan.md", "0", b"").status, 200);
    let carol_sees = listing(&a.carol);
    assert!(carol_sees.contains("/open/"), "{carol_sees}");
    assert!(!carol_sees.contains("team"), "{carol_sees}");
    assert_eq!(dav(&a.carol, "GET", "/team/plan.md", "0", b"").status, 403);
    assert_eq!(dav(&a.carol, "PUT", "/team/new.md", "0", b"x").status, 403);
    // Read is not write, even for bob.
    assert_eq!(dav(&a.bob, "PUT", "/team/new.md", "0", b"x").status, 403);
}

/// The node paths (below `viking://resources`) that have an ACL row in storage.
fn rows(st: &Storage) -> Vec<String> {
    let stored: Value = serde_json::from_str(&st.read_string("acme/_system/acl.json")).unwrap();
    let mut keys: Vec<String> = stored["nodes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

fn read_status(s: &Server, key: &str, uri: &str) -> u16 {
    s.get(&format!("/api/v1/content/read?uri={}", q(uri)), Some(key))
        .status
}

/// Every path that moves or removes content keeps the ACL table right, as `fs mv`/`rm` do
/// (0.5.2: a moved node keeps its own ACL; a removed or replaced node's ACL goes, and what is
/// created in its place starts from its parent's): WebDAV MOVE (new target, onto a file, a
/// directory), a snapshot restore that deletes a file, and a pack import that replaces a tree
/// (which also needs the right to remove that tree).
#[test]
fn acl_rows_follow_webdav_moves_restores_and_imports() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    enable_acl(&s, &a.alice, "acme");
    let only_carol = json!({"acl_mode": "restricted", "entries": [
        {"principal": "user:carol", "level": "read"}
    ]});
    mkdir(&s, &a.alice, "viking://resources/open");
    write(&s, &a.alice, "viking://resources/open/a.md", "a");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/a.md",
        only_carol.clone(),
    ));
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/a.md"), 403);

    let host = format!("127.0.0.1:{}", s.port);
    let mv = |from: &str, to: &str, overwrite: Option<&str>| {
        let dest = format!("http://{host}/webdav/resources{to}");
        let mut h = vec![
            ("X-API-Key", a.alice.as_str()),
            ("Destination", dest.as_str()),
        ];
        if let Some(o) = overwrite {
            h.push(("Overwrite", o));
        }
        s.raw("MOVE", &format!("/webdav/resources{from}"), &h, b"")
    };
    // MOVE to a new name: the row goes with the node.
    assert_eq!(mv("/open/a.md", "/open/b.md", None).status, 201);
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/b.md"), 403);
    assert_eq!(
        read_status(&s, &a.carol, "viking://resources/open/b.md"),
        200
    );
    // A node created where the source was starts from its parent's permissions.
    write(&s, &a.alice, "viking://resources/open/a.md", "new a");
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/a.md"), 200);
    // MOVE onto an existing file: the target takes the source's rows.
    write(&s, &a.alice, "viking://resources/open/c.md", "c");
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/c.md"), 200);
    assert_eq!(mv("/open/b.md", "/open/c.md", Some("T")).status, 204);
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/c.md"), 403);
    assert_eq!(
        read_status(&s, &a.carol, "viking://resources/open/c.md"),
        200
    );
    // ... and a source without rows onto a file with one: the target's row goes.
    write(&s, &a.alice, "viking://resources/open/d.md", "d");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/d.md",
        only_carol.clone(),
    ));
    write(&s, &a.alice, "viking://resources/open/e.md", "e");
    assert_eq!(mv("/open/e.md", "/open/d.md", Some("T")).status, 204);
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/d.md"), 200);
    // A directory: the rows below it move too.
    mkdir(&s, &a.alice, "viking://resources/open/dir");
    write(&s, &a.alice, "viking://resources/open/dir/x.md", "x");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/dir/x.md",
        only_carol.clone(),
    ));
    assert_eq!(mv("/open/dir", "/open/dir2", None).status, 201);
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/dir2/x.md"),
        403
    );
    assert_eq!(rows(&st), ["open/c.md", "open/dir2/x.md"]);

    // A snapshot restore that deletes a file drops its row.
    write(&s, &a.alice, "viking://resources/open/snap/s.md", "s");
    let v1 = s.post(
        "/api/v1/snapshot/commit",
        Some(&a.alice),
        json!({"message": "v1", "paths": ["viking://resources/open/snap"]}),
    );
    let c1 = ok(&v1)["commit_oid"].as_str().unwrap().to_string();
    write(&s, &a.alice, "viking://resources/open/snap/t.md", "t");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/snap/t.md",
        only_carol.clone(),
    ));
    let r = s.post(
        "/api/v1/snapshot/restore",
        Some(&a.alice),
        json!({"project_dir": "viking://resources/open/snap", "source_commit": c1}),
    );
    assert_eq!(ok(&r)["deleted"], 1, "{:?}", r.body);
    assert_eq!(rows(&st), ["open/c.md", "open/dir2/x.md"]);
    write(&s, &a.alice, "viking://resources/open/snap/t.md", "t again");
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/snap/t.md"),
        200
    );

    // A pack import that replaces a tree: its rows go with it (imported nodes inherit).
    write(&s, &a.alice, "viking://resources/open/pk/p.md", "p");
    let r = s.post(
        "/api/v1/pack/export",
        Some(&a.alice),
        json!({"uri": "viking://resources/open/pk"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pack = r.raw;
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/pk/p.md",
        only_carol.clone(),
    ));
    // Replacing it needs the right to remove it: write access alone is refused, nothing changes.
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/pk",
        json!({"entries": [{"principal": "user:bob", "level": "write"}]}),
    ));
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open",
        json!({"acl_mode": "restricted", "entries": [{"principal": "user:*", "level": "read"}]}),
    ));
    let import = |key: &str| {
        let id = crate::resources::upload_id(&s, key, "p.ovpack", &pack);
        s.post(
            "/api/v1/pack/import",
            Some(key),
            json!({"temp_file_id": id, "parent": "viking://resources/open", "on_conflict": "overwrite"}),
        )
    };
    let before = rows(&st);
    assert_eq!(import(&a.bob).status, 403);
    assert_eq!(rows(&st), before);
    assert_eq!(
        read_status(&s, &a.carol, "viking://resources/open/pk/p.md"),
        200
    );
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/pk/p.md"),
        403
    );
    ok(&import(&a.alice));
    assert_eq!(rows(&st), ["open", "open/c.md", "open/dir2/x.md"]);
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/pk/p.md"),
        200
    );
}

/// A WebDAV COPY with `Overwrite: T` keeps the target's ACL as 0.5.2's copy does: rows on
/// the nodes the copy writes again stay (a restricted file stays restricted with the new
/// bytes), rows of target nodes the copy does not recreate go, and a new target inherits.
#[test]
fn webdav_copy_over_a_target_keeps_its_acl() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    enable_acl(&s, &a.alice, "acme");
    let only_carol = json!({"acl_mode": "restricted", "entries": [
        {"principal": "user:carol", "level": "read"}
    ]});
    let host = format!("127.0.0.1:{}", s.port);
    let copy = |from: &str, to: &str, overwrite: &str| {
        let dest = format!("http://{host}/webdav/resources{to}");
        let h = [
            ("X-API-Key", a.alice.as_str()),
            ("Destination", dest.as_str()),
            ("Overwrite", overwrite),
        ];
        s.raw("COPY", &format!("/webdav/resources{from}"), &h, b"")
    };
    let read =
        |key: &str, uri: &str| s.get(&format!("/api/v1/content/read?uri={}", q(uri)), Some(key));
    // A file onto a restricted file.
    mkdir(&s, &a.alice, "viking://resources/open");
    write(
        &s,
        &a.alice,
        "viking://resources/open/src.md",
        "from the source",
    );
    write(&s, &a.alice, "viking://resources/open/t.md", "old target");
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/open/t.md",
        only_carol.clone(),
    ));
    assert_eq!(copy("/open/src.md", "/open/t.md", "T").status, 204);
    assert_eq!(read_status(&s, &a.bob, "viking://resources/open/t.md"), 403);
    let r = read(&a.carol, "viking://resources/open/t.md");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["result"], "from the source");
    assert_eq!(
        ok(&get_acl(&s, &a.alice, "viking://resources/open/t.md"))["acl_mode"],
        "restricted"
    );
    // A directory onto a directory: x.md is written again and keeps its row; z.md exists
    // only in the old target, so it and its row go; y.md is new and inherits.
    for f in ["srcdir/x.md", "srcdir/y.md", "tdir/x.md", "tdir/z.md"] {
        write(&s, &a.alice, &format!("viking://resources/open/{f}"), f);
    }
    for f in ["tdir/x.md", "tdir/z.md"] {
        let uri = format!("viking://resources/open/{f}");
        ok(&set_acl(&s, &a.alice, &uri, only_carol.clone()));
    }
    assert_eq!(copy("/open/srcdir", "/open/tdir", "T").status, 204);
    assert_eq!(rows(&st), ["open/t.md", "open/tdir/x.md"]);
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/tdir/x.md"),
        403
    );
    assert_eq!(
        read_status(&s, &a.carol, "viking://resources/open/tdir/x.md"),
        200
    );
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/tdir/y.md"),
        200
    );
    assert_eq!(
        read_status(&s, &a.alice, "viking://resources/open/tdir/z.md"),
        404
    );
    // A new target starts from its parent's permissions.
    assert_eq!(copy("/open/t.md", "/open/new.md", "T").status, 201);
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/open/new.md"),
        200
    );
    assert_eq!(rows(&st), ["open/t.md", "open/tdir/x.md"]);
}

/// Changes to acl.json, groups.json and setting.json written to storage but never announced
/// (their writer died before bumping the registry marker) reach every instance through the
/// registry sweep, like an unannounced key change: within the sweep interval plus one refresh.
#[test]
fn unannounced_acl_group_and_setting_changes_reach_every_instance() {
    let st = Storage::new();
    let opts = || Opts::default().env("LONGSHIP_AUTH__SWEEP_INTERVAL_SECS", "1");
    let a_srv = Server::start(&st, opts());
    let b_srv = Server::start(&st, opts());
    let a = acme(&a_srv);
    mkdir(&a_srv, &a.alice, "viking://resources/vault");
    write(&a_srv, &a.alice, "viking://resources/vault/x.md", "x");
    ok(&set_acl(
        &a_srv,
        &a.alice,
        "viking://resources/vault",
        json!({"acl_mode": "restricted", "entries": [{"principal": "group:eng", "level": "read"}]}),
    ));
    enable_acl(&a_srv, &a.alice, "acme");
    ok(&a_srv.delete(&group_path("acme", "/eng/members/bob"), Some(&a.alice)));
    let x = "viking://resources/vault/x.md";
    // Sweep interval (1 s) + one refresh interval + the sweep's own wait, with room for load.
    let bound = Duration::from_secs(20);
    let until_both = |want: u16, what: &str| {
        let since = Instant::now();
        while read_status(&a_srv, &a.bob, x) != want || read_status(&b_srv, &a.bob, x) != want {
            assert!(
                since.elapsed() < bound,
                "{what}: not applied on both within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        since.elapsed()
    };
    until_both(403, "announced membership removal");
    let edit = |rel: &str, f: &dyn Fn(&mut Value)| {
        let mut doc: Value = serde_json::from_str(&st.read_string(rel)).unwrap();
        f(&mut doc);
        st.write(rel, &serde_json::to_vec_pretty(&doc).unwrap());
    };
    edit("acme/_system/groups.json", &|d| {
        d["groups"]["eng"]["members"] = json!(["bob"]);
    });
    let groups = until_both(200, "groups.json");
    edit("acme/_system/acl.json", &|d| {
        d["nodes"]["vault"]["entries"] = json!([]);
    });
    let acl = until_both(403, "acl.json");
    edit("acme/_system/setting.json", &|d| {
        d["acl"]["enabled"] = json!(false);
    });
    let setting = until_both(200, "setting.json");
    eprintln!(
        "unannounced changes applied after: groups {groups:?}, acl {acl:?}, settings {setting:?}"
    );
}

/// `content/batch-write` applies each operation's `acl` as 0.5.2 does: manage on the target
/// is needed (checked before anything is written), the written nodes carry their ACLs from
/// the moment they exist, a target left untouched (a skipped conflict) keeps its old ACL, and
/// `defer_processing` refuses ACLs.
#[test]
fn batch_write_applies_acls() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let a = acme(&s);
    enable_acl(&s, &a.alice, "acme");
    mkdir(&s, &a.alice, "viking://resources/kb");
    write(&s, &a.alice, "viking://resources/kb/old.md", "old");
    const BATCH: &str = "/api/v1/content/batch-write";
    let only_carol = json!({"acl_mode": "restricted", "entries": [
        {"principal": "user:carol", "level": "read"}
    ]});
    let r = s.post(
        BATCH,
        Some(&a.alice),
        json!({"root_uri": "viking://resources/kb", "operations": [
            {"uri": "viking://resources/kb/secret.md", "content": "s", "acl": only_carol},
            {"uri": "viking://resources/kb/open.md", "content": "o"},
        ]}),
    );
    assert_eq!(
        ok(&r)["created"].as_array().unwrap().len(),
        2,
        "{:?}",
        r.body
    );
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/kb/secret.md"),
        403
    );
    assert_eq!(
        read_status(&s, &a.carol, "viking://resources/kb/secret.md"),
        200
    );
    assert_eq!(
        read_status(&s, &a.bob, "viking://resources/kb/open.md"),
        200
    );
    let got = ok(&get_acl(&s, &a.alice, "viking://resources/kb/secret.md")).clone();
    assert_eq!(got["acl_mode"], "restricted", "{got}");

    // A skipped conflict keeps its old ACL (none): the staged row is put back.
    let r = s.post(
        BATCH,
        Some(&a.alice),
        json!({"root_uri": "viking://resources/kb", "skip_conflicts": true, "operations": [
            {"uri": "viking://resources/kb/old.md", "content": "x", "acl": only_carol,
             "expected_sha256": "0".repeat(64)},
        ]}),
    );
    assert_eq!(
        ok(&r)["conflicts"].as_array().unwrap().len(),
        1,
        "{:?}",
        r.body
    );
    assert_eq!(read_status(&s, &a.bob, "viking://resources/kb/old.md"), 200);
    assert_eq!(rows(&st), ["kb/secret.md"]);

    // Without manage on the target: 403 and nothing written; unknown principals: 400.
    let before = st.stored_digest("acme/resources/kb");
    let r = s.post(
        BATCH,
        Some(&a.carol),
        json!({"root_uri": "viking://resources/kb", "operations": [
            {"uri": "viking://resources/kb/open.md", "content": "c", "acl": {"acl_mode": "restricted"}},
        ]}),
    );
    assert_eq!(
        r.status, 200,
        "carol has manage under the root by default: {:?}",
        r.body
    );
    ok(&set_acl(
        &s,
        &a.alice,
        "viking://resources/kb",
        json!({"acl_mode": "restricted", "entries": [{"principal": "user:bob", "level": "write"}]}),
    ));
    let digest = st.stored_digest("acme/resources/kb");
    let r = s.post(
        BATCH,
        Some(&a.bob),
        json!({"root_uri": "viking://resources/kb", "operations": [
            {"uri": "viking://resources/kb/b.md", "content": "b", "acl": {"acl_mode": "restricted"}},
        ]}),
    );
    err(&r, 403, "PERMISSION_DENIED");
    let r = s.post(
        BATCH,
        Some(&a.alice),
        json!({"root_uri": "viking://resources/kb", "operations": [
            {"uri": "viking://resources/kb/b.md", "content": "b",
             "acl": {"entries": [{"principal": "user:ghost", "level": "read"}]}},
        ]}),
    );
    err(&r, 400, "INVALID_ARGUMENT");
    let r = s.post(
        BATCH,
        Some(&a.alice),
        json!({"root_uri": "viking://resources/kb", "defer_processing": true, "operations": [
            {"uri": "viking://resources/kb/b.md", "content": "b", "acl": {"acl_mode": "restricted"}},
        ]}),
    );
    err(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(st.stored_digest("acme/resources/kb"), digest);
    assert_ne!(digest, before);
    assert!(!rows(&st).contains(&"kb/b.md".to_string()));
}
