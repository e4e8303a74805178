//! Reserved names (issue #26 item 1): every name a backend or the index gives meaning to
//! (`.longship-*` temp files, S3 directory markers, publishing flags, lock and move folders,
//! upstream's `.path.ovlock` …) is refused with a 400 on every path a client names, on both
//! backends, and never listed, stat'ed, read or found.

use serde_json::{json, Value};

use crate::harness::api::{err, ok, plant, Dev};
use crate::harness::{Opts, Resp, Server, Storage};

/// Assert the one refusal: 400 INVALID_ARGUMENT saying the name is reserved.
#[track_caller]
fn reserved(r: &Resp) {
    let e = err(r, 400, "INVALID_ARGUMENT");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("reserved"), "{msg}");
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[test]
fn internal_names_are_reserved_on_every_route() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/docs/a.md", "shared needle");

    let flag = "viking://resources/.longship-pub-docs";
    let temp = "viking://resources/.longship-tmp-notes.md";
    let names = [
        temp,
        flag,
        "viking://resources/docs/.longship-dir",
        "viking://resources/.longship-moves/x.json",
        "viking://resources/.longship-locks",
        "viking://resources/docs/.longship-log/0001",
        "viking://~/.longship-tmp-x",
        "viking://agent/.path.ovlock",
    ];
    for uri in names {
        reserved(&c.write(uri, "x"));
        reserved(&c.write_mode(uri, "x", "append"));
        reserved(&c.mkdir(uri, None));
        reserved(&c.rm(uri, true));
        reserved(&c.rm(uri, false));
        reserved(&c.read(uri, ""));
        reserved(&c.stat(uri));
        reserved(&c.ls(uri, "&show_all_hidden=true"));
        reserved(&c.mv("viking://resources/docs/a.md", uri));
        reserved(&c.mv(uri, "viking://resources/elsewhere.md"));
        for body in [
            json!({"from_uri": "viking://resources/docs/a.md", "to_uri": uri}),
            json!({"from_uri": "viking://resources/docs", "to_uri": uri}),
            json!({"from_uri": uri, "to_uri": "viking://resources/b.md"}),
        ] {
            reserved(&c.post("/api/v1/fs/cp", body));
        }
        reserved(&c.post(
            "/api/v1/search/grep",
            json!({"uri": uri, "pattern": "needle"}),
        ));
        // Ingestion targets: refused before any fetch or task.
        reserved(&c.post(
            "/api/v1/resources",
            json!({"path": "http://127.0.0.1:9/x.md", "to": uri}),
        ));
        reserved(&c.post(
            "/api/v1/resources",
            json!({"path": "http://127.0.0.1:9/x.md", "parent": uri}),
        ));
    }
    // Ids are path segments too: users, accounts and sessions cannot be reserved names.
    let forged_user = Dev::new(&s, "acme", ".longship-pub-alice");
    err(
        &forged_user.ls("viking://resources", ""),
        400,
        "INVALID_ARGUMENT",
    );
    let forged_account = Dev::new(&s, ".longship-locks", "alice");
    err(
        &forged_account.ls("viking://resources", ""),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &c.post("/api/v1/sessions", json!({"session_id": ".longship-dir"})),
        400,
        "INVALID_ARGUMENT",
    );

    // Nothing reached storage, and the shared directory is whole for everyone.
    assert!(!st.exists("acme/resources/.longship-pub-docs"));
    assert!(!st.exists("acme/resources/.longship-tmp-notes.md"));
    let r = c.ls("viking://resources", "&simple=true&show_all_hidden=true");
    assert!(
        ok(&r)
            .as_array()
            .unwrap()
            .contains(&json!("viking://resources/docs")),
        "{:?}",
        r.body
    );
    assert_eq!(ok(&c.stat("viking://resources/docs"))["isDir"], true);
    ok(&c.rm("viking://resources/docs", true));
    assert!(!st.exists("acme/resources/docs/a.md"));
}

#[test]
fn internal_names_left_in_storage_are_never_shown() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/kb/visible.md", "needle visible");
    // What a crash or another tool may leave beside user files (on S3 no planted publishing
    // flag: that one legitimately hides its directory).
    for name in [
        ".longship-tmp-3d4e5f",
        ".longship-probe-1",
        ".path.ovlock",
        ".sync_log.json",
    ] {
        plant(&st, &format!("acme/resources/kb/{name}"), b"needle hidden");
    }
    plant(
        &st,
        "acme/resources/kb/.longship-log/0001",
        b"needle hidden",
    );

    for extra in ["&simple=true", "&simple=true&show_all_hidden=true"] {
        let r = c.ls("viking://resources/kb", extra);
        assert!(!text(ok(&r)).contains("longship"), "{:?}", r.body);
        assert!(!text(ok(&r)).contains("ovlock"), "{:?}", r.body);
        let r = c.tree("viking://resources", extra);
        assert!(!text(ok(&r)).contains("longship"), "{:?}", r.body);
    }
    let r = c.post(
        "/api/v1/search/grep",
        json!({"uri": "viking://resources", "pattern": "needle"}),
    );
    let found = text(ok(&r));
    assert!(found.contains("visible.md"), "{found}");
    assert!(!found.contains("hidden"), "{found}");
    let r = c.post(
        "/api/v1/search/glob",
        json!({"uri": "viking://resources", "pattern": "**/.*"}),
    );
    assert!(!text(ok(&r)).contains("longship"), "{:?}", r.body);
    ok(&c.post("/api/v1/system/wait", json!({"timeout": 60})));
    let r = c.post(
        "/api/v1/search/find",
        json!({"query": "needle", "target_uri": "viking://resources"}),
    );
    let found = text(ok(&r));
    assert!(found.contains("visible.md"), "{found}");
    assert!(
        !found.contains("longship") && !found.contains("ovlock"),
        "{found}"
    );
    // A recursive copy carries user files only.
    ok(&c.post(
        "/api/v1/fs/cp",
        json!({"from_uri": "viking://resources/kb", "to_uri": "viking://resources/kb2", "recursive": true}),
    ));
    assert!(!st.exists("acme/resources/kb2/.longship-tmp-3d4e5f"));
    assert!(!st.exists("acme/resources/kb2/.path.ovlock"));
    let r = c.read("viking://resources/kb2/visible.md", "");
    assert_eq!(ok(&r), "needle visible");
}
