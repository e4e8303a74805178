//! Account and cluster settings (issue #23 "Settings"): round trip, validation (bad values are
//! refused with nothing changed), roles, and reaching another instance within the auth bound.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, register, ACCOUNTS};
use crate::harness::{Opts, Resp, Server, Storage, ROOT_KEY};

fn config_path(account: &str) -> String {
    format!("{ACCOUNTS}/{account}/configuration")
}

fn patch(s: &Server, key: &str, account: &str, settings: Value) -> Resp {
    s.call(
        "PATCH",
        &config_path(account),
        Some(key),
        Some(json!({ "settings": settings })),
    )
}

fn effective(s: &Server, key: &str, account: &str) -> Value {
    let r = s.get(&config_path(account), Some(key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()["effective"].clone()
}

#[test]
fn account_configuration_round_trip_validation_and_roles() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "alice");
    let user = register(&s, &admin, "acme", "bob", "user");
    let other = create_account(&s, "other", "olga");

    // Defaults: nothing stored, ACL off, audit on (the server default).
    let r = s.get(&config_path("acme"), Some(&admin));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["account_id"], "acme");
    assert_eq!(r.result()["settings"], json!({}));
    assert_eq!(r.result()["effective"]["acl"]["enabled"], false);
    assert_eq!(r.result()["effective"]["audit"]["enabled"], true);

    // Set, merge, remove (three-state PATCH).
    let r = patch(&s, &admin, "acme", json!({"acl": {"enabled": true}}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["settings"], json!({"acl": {"enabled": true}}));
    assert_eq!(r.result()["effective"]["acl"]["enabled"], true);
    let r = patch(
        &s,
        &admin,
        "acme",
        json!({"acl": {"hide_denied": true}, "memory": {"candidates": 3}}),
    );
    assert_eq!(
        r.result()["settings"],
        json!({"acl": {"enabled": true, "hide_denied": true}, "memory": {"candidates": 3}})
    );
    assert_eq!(r.result()["effective"]["memory"]["candidates"], 3);
    let r = patch(&s, &admin, "acme", json!({"memory": null}));
    assert_eq!(
        r.result()["settings"],
        json!({"acl": {"enabled": true, "hide_denied": true}})
    );
    let stored = st.read_string("acme/_system/setting.json");
    assert!(stored.contains("hide_denied"), "{stored}");

    // Bad values: 4xx, nothing changed.
    let before = st.read_string("acme/_system/setting.json");
    for (body, status) in [
        (json!({"acl": {"enabled": "yes"}}), 400),
        (json!({"acl": {"level": "read"}}), 400),
        (json!({"acl": true}), 400),
        (json!({"nonsense": {}}), 400),
        (json!({"memory": {"candidates": 100000}}), 400),
        (json!({"memory": {"max_input_tokens": -5}}), 400),
        (json!({"audit": {"enabled": 1}}), 400),
        (json!({"agent_evolution": {"enabled": true}}), 501),
    ] {
        let r = patch(&s, &admin, "acme", body.clone());
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
    }
    let r = s.call(
        "PATCH",
        &config_path("acme"),
        Some(&admin),
        Some(json!({"settings": [1]})),
    );
    assert!(r.status == 400 || r.status == 422, "{:?}", r.body);
    // Model sections: ROOT only (403 for ADMIN); for ROOT a per-account embedding model
    // would split the shared index, so 501 saying why.
    let r = patch(&s, &admin, "acme", json!({"embedding": {"model": "x"}}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = patch(&s, ROOT_KEY, "acme", json!({"embedding": {"model": "x"}}));
    assert_eq!(r.status, 501, "{:?}", r.body);
    assert!(r.body.to_string().contains("vector spaces"), "{:?}", r.body);
    assert_eq!(st.read_string("acme/_system/setting.json"), before);

    // Roles: a USER may not; an ADMIN not another account's; ROOT any; unknown account 404.
    assert_eq!(s.get(&config_path("acme"), Some(&user)).status, 403);
    assert_eq!(s.get(&config_path("acme"), Some(&other)).status, 403);
    assert_eq!(patch(&s, &other, "acme", json!({"acl": null})).status, 403);
    assert_eq!(s.get(&config_path("acme"), Some(ROOT_KEY)).status, 200);
    assert_eq!(s.get(&config_path("nobody"), Some(ROOT_KEY)).status, 404);
    assert_eq!(st.read_string("acme/_system/setting.json"), before);

    // The deprecated settings routes, as 0.5.2 shapes them.
    let r = s.get(&format!("{ACCOUNTS}/acme/settings"), Some(&admin));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["settings"]["acl"]["enabled"], true);
    assert_eq!(r.result()["settings"]["agent_evolution"]["enabled"], false);
    assert_eq!(
        r.result()["overrides"],
        json!({"acl": {"enabled": true, "hide_denied": true}})
    );
    // An empty ACL object means off; the extension switch beside it stays.
    let r = s.call(
        "PATCH",
        &format!("{ACCOUNTS}/acme/settings"),
        Some(&admin),
        Some(json!({"acl": {}})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["settings"]["acl"]["enabled"], false);
    assert_eq!(effective(&s, &admin, "acme")["acl"]["hide_denied"], true);
    let r = s.call(
        "PATCH",
        &format!("{ACCOUNTS}/acme/settings"),
        Some(&admin),
        Some(json!({"acl": {"enabled": true, "extra": 1}})),
    );
    assert!(r.status == 400 || r.status == 422, "{:?}", r.body);
    assert_eq!(effective(&s, &admin, "acme")["acl"]["enabled"], false);

    // Survives a restart (stored, not in memory).
    drop(s);
    let s = Server::start(&st, Opts::default());
    assert_eq!(effective(&s, &admin, "acme")["acl"]["hide_denied"], true);
}

/// Poll B until the account's effective `acl.enabled` is `want`; returns how long it took.
fn until_effective(b: &Server, key: &str, want: bool, within: Duration) -> Duration {
    let since = Instant::now();
    loop {
        let sent = since.elapsed();
        if effective(b, key, "acme")["acl"]["enabled"] == want {
            return sent;
        }
        assert!(since.elapsed() < within, "not applied after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_setting_changed_on_a_reaches_b_within_the_refresh_bound() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::default());
    let b = Server::start(&st, Opts::default());
    let admin = create_account(&a, "acme", "alice");
    assert_eq!(effective(&b, &admin, "acme")["acl"]["enabled"], false);

    assert_eq!(
        patch(&a, &admin, "acme", json!({"acl": {"enabled": true}})).status,
        200
    );
    let took = until_effective(&b, &admin, true, Duration::from_secs(5));
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
    assert_eq!(patch(&a, &admin, "acme", json!({"acl": null})).status, 200);
    let took = until_effective(&b, &admin, false, Duration::from_secs(5));
    assert!(took <= Duration::from_millis(1500), "took {took:?}");

    // Strict mode: the very next request on B sees it.
    let strict = Opts::default().env("LONGSHIP_AUTH__REFRESH_INTERVAL_MS", "0");
    let c = Server::start(&st, strict);
    assert_eq!(effective(&c, &admin, "acme")["acl"]["enabled"], false);
    for want in [true, false, true] {
        let r = patch(&a, &admin, "acme", json!({"acl": {"enabled": want}}));
        assert_eq!(r.status, 200);
        assert_eq!(effective(&c, &admin, "acme")["acl"]["enabled"], want);
    }
}

/// A user's stored add locations take effect as in 0.5.2: `add_resource` with neither `to`
/// nor `parent` ingests under the stored `resource_uri` (created when missing), a skill added
/// without `target_uri` goes to the stored `skill_uri`; explicit targets still win, and a
/// location the user can no longer write to is refused at use.
#[test]
fn stored_add_locations_are_where_resources_and_skills_go() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let alice = create_account(&s, "acme", "alice");
    let bob = register(&s, &alice, "acme", "bob", "user");
    const LOCATIONS: &str = "/api/v1/user-settings/add-locations";
    let r = s.call(
        "PATCH",
        LOCATIONS,
        Some(&bob),
        Some(json!({"resource_uri": "viking://resources/inbox", "skill_uri": "viking://agent/skills"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let added =
        crate::resources::add_file(&s, &bob, "notes.md", b"# Notes\n\nkoala facts\n", json!({}));
    let root = added["root_uri"].as_str().unwrap().to_string();
    assert!(root.starts_with("viking://resources/inbox/"), "{added}");
    assert!(st.exists("acme/resources/inbox"));
    // An explicit parent wins.
    let added = crate::resources::add_file(
        &s,
        &bob,
        "other.md",
        b"# Other\n\nwombat facts\n",
        json!({"parent": "viking://resources"}),
    );
    let root = added["root_uri"].as_str().unwrap();
    assert!(!root.starts_with("viking://resources/inbox/"), "{added}");
    // Skills: without a stored location, the user's own skills; with one, there.
    let skill = "---\nname: tidy\ndescription: Tidy a folder.\n---\n\nSort files by type.\n";
    let r = s.post(
        "/api/v1/skills",
        Some(&alice),
        json!({"data": skill, "wait": true}),
    );
    assert_eq!(
        r.result()["root_uri"],
        "viking://user/alice/skills/tidy",
        "{:?}",
        r.body
    );
    let r = s.call(
        "PATCH",
        LOCATIONS,
        Some(&alice),
        Some(json!({"skill_uri": "viking://agent/skills"})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let skill2 = "---\nname: sweep\ndescription: Sweep a folder.\n---\n\nDelete temp files.\n";
    let r = s.post(
        "/api/v1/skills",
        Some(&alice),
        json!({"data": skill2, "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.result()["root_uri"],
        "viking://agent/skills/sweep",
        "{:?}",
        r.body
    );
}
