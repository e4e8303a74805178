//! Filesystem API (spec §6): F1 ls, F2 tree, F3 stat, F4 mkdir, F5 rm, F6 mv — success and
//! error rows, in dev mode (every request is ROOT of the account named by headers).

use serde_json::{json, Value};

use crate::harness::api::{err, ok, plant, q, Dev};
use crate::harness::{Opts, Server, Storage};

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .expect("array result")
        .iter()
        .map(|e| e[key].as_str().unwrap_or("").to_string())
        .collect()
}

fn docs_fixture(c: &Dev) {
    ok(&c.mkdir("viking://resources/docs", Some("API docs directory")));
    ok(&c.mkdir("viking://resources/Beta", None));
    c.put_file("viking://resources/docs/api.md", "# API\n");
    c.put_file("viking://resources/notes.md", "notes\n");
    c.put_file("viking://resources/alpha.md", "alpha\n");
}

#[test]
fn ls_formats_order_hidden_and_paging() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    docs_fixture(&c);

    let r = c.ls("viking://resources/", "&output=original");
    let res = ok(&r);
    assert_eq!(r.body["has_more"], false);
    // Dirs first, then files, case-insensitively; the mkdir sidecar is hidden.
    assert_eq!(names(res, "name"), ["Beta", "docs", "alpha.md", "notes.md"]);
    let docs = &res[1];
    assert_eq!(docs["uri"], "viking://resources/docs");
    assert_eq!(docs["isDir"], true);
    assert_eq!(docs["mode"], 493);
    assert!(docs.get("abstract").is_none());
    let notes = &res[3];
    assert_eq!(notes["size"], 6);
    assert_eq!(notes["mode"], 420);
    let mt = notes["modTime"].as_str().unwrap();
    assert!(mt.ends_with('Z') && mt.len() == 20, "{mt}");

    // Agent output (the HTTP default): abstracts, size 0 for dirs, millisecond times.
    let r = c.ls("viking://resources", "");
    let res = ok(&r);
    assert_eq!(res[1]["abstract"], "API docs directory");
    assert_eq!(res[0]["abstract"], "# Beta");
    assert_eq!(res[1]["size"], 0);
    assert_eq!(res[3]["abstract"], "");
    assert!(res[1].get("name").is_none());
    assert_eq!(res[1]["modTime"].as_str().unwrap().len(), 24);
    let r = c.ls("viking://resources", "&abs_limit=5");
    assert_eq!(ok(&r)[1]["abstract"], "AP...");
    let r = c.ls(
        "viking://resources",
        "&output=original&include_overview=true&extra_fields=locked",
    );
    assert_eq!(
        ok(&r)[1]["overview"],
        "# viking://resources/docs\n\n[Directory overview is not ready]"
    );
    assert_eq!(ok(&r)[1]["isLocked"], false);

    // Hidden files only with show_all_hidden.
    let r = c.ls(
        "viking://resources/docs",
        "&output=original&show_all_hidden=true",
    );
    assert_eq!(names(ok(&r), "name"), [".abstract.md", "api.md"]);

    // simple=true → URIs.
    let r = c.ls("viking://resources", "&simple=true");
    assert_eq!(ok(&r)[0], "viking://resources/Beta");

    // Paging: offset, node_limit, the `limit` alias, has_more.
    let r = c.ls("viking://resources", "&output=original&node_limit=2");
    assert_eq!(names(ok(&r), "name"), ["Beta", "docs"]);
    assert_eq!(r.body["has_more"], true);
    let r = c.ls(
        "viking://resources",
        "&output=original&node_limit=2&offset=2",
    );
    assert_eq!(names(ok(&r), "name"), ["alpha.md", "notes.md"]);
    assert_eq!(r.body["has_more"], false);
    let r = c.ls(
        "viking://resources",
        "&output=original&node_limit=50&limit=1&offset=1",
    );
    assert_eq!(names(ok(&r), "name"), ["docs"]);
    assert_eq!(r.body["has_more"], true);

    // sort_order=desc keeps directories first.
    let r = c.ls(
        "viking://resources",
        "&output=original&sort_by=name&sort_order=desc",
    );
    assert_eq!(
        names(ok(&r), "name"),
        ["docs", "Beta", "notes.md", "alpha.md"]
    );
    let r = c.ls("viking://resources", "&output=original&sort_by=mtime");
    assert_eq!(ok(&r).as_array().unwrap().len(), 4);

    // recursive=true is tree-shaped.
    let r = c.ls("viking://resources", "&output=original&recursive=true");
    assert!(names(ok(&r), "rel_path").contains(&"docs/api.md".to_string()));

    // Errors.
    let e = err(&c.ls("viking://resources/nope", ""), 404, "NOT_FOUND");
    assert_eq!(e["message"], "Directory not found: viking://resources/nope");
    assert_eq!(e["details"]["type"], "directory");
    assert_eq!(e["details"]["resource"], "viking://resources/nope");
    let e = err(
        &c.ls("viking://resources/notes.md", ""),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(e["message"], "not a directory: viking://resources/notes.md");
    for bad in [
        "&output=xml",
        "&sort_by=size",
        "&sort_order=up",
        "&node_limit=0",
        "&offset=-1",
    ] {
        let e = err(&c.ls("viking://resources", bad), 400, "INVALID_ARGUMENT");
        assert!(e["details"]["validation_errors"].is_array(), "{bad}");
    }
    err(&c.get("/api/v1/fs/ls"), 400, "INVALID_ARGUMENT");
    err(&c.ls("viking://temp", ""), 400, "INVALID_URI");
    err(&c.ls("resources", ""), 400, "INVALID_URI");
}

#[test]
fn ls_root_and_user_namespace() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    // A fresh account lists as empty rather than 404.
    let r = c.ls("viking://", "");
    assert_eq!(ok(&r), &json!([]));
    c.put_file("viking://resources/a.md", "a");
    c.put_file("viking://~/note.md", "n");
    Dev::new(&s, "acme", "bob").put_file("viking://~/note.md", "b");
    ok(&c.mkdir("viking://agent/skills", None));
    // Names outside the scopes never show at the account root.
    plant(&st, "acme/_system/users.json", b"{}");
    plant(&st, "acme/system/x.md", b"x");
    plant(&st, "acme/stray.md", b"x");
    let r = c.ls("viking://", "&output=original");
    assert_eq!(names(ok(&r), "name"), ["agent", "resources", "user"]);
    // Dev mode is ROOT: every user of the account is listed.
    let r = c.ls("viking://user", "&output=original");
    assert_eq!(names(ok(&r), "name"), ["alice", "bob"]);
    assert_eq!(ok(&r)[0]["uri"], "viking://user/alice");
    // `~` resolves to the request's user; responses echo canonical URIs.
    let r = c.ls("viking://~", "&simple=true");
    assert_eq!(ok(&r), &json!(["viking://user/alice/note.md"]));
    // Storage-internal names are never listed.
    plant(&st, "acme/resources/.path.ovlock", b"");
    let r = c.ls("viking://resources", "&show_all_hidden=true&simple=true");
    assert_eq!(ok(&r), &json!(["viking://resources/a.md"]));
}

#[test]
fn ls_large_directory_is_paged() {
    let st = Storage::new();
    // Fewer on S3, where every planted file is a PUT.
    let n = if st.is_s3() { 3_000 } else { 20_000 };
    for i in 0..n {
        plant(&st, &format!("acme/resources/big/f{i:05}.md"), b"");
    }
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    let r = c.ls(
        "viking://resources/big",
        &format!("&output=original&node_limit=100&offset={}", n - 50),
    );
    let res = ok(&r);
    assert_eq!(res.as_array().unwrap().len(), 50);
    assert_eq!(res[0]["name"], format!("f{:05}.md", n - 50));
    assert_eq!(r.body["has_more"], false);
    // The default page is bounded (1000) however big the directory is.
    let r = c.ls("viking://resources/big", "&simple=true");
    assert_eq!(ok(&r).as_array().unwrap().len(), 1000);
    assert_eq!(ok(&r)[999], "viking://resources/big/f00999.md");
    assert_eq!(r.body["has_more"], true);
    assert!(r.raw.len() < 100_000, "{} bytes", r.raw.len());
    let r = c.tree("viking://resources", "&simple=true&node_limit=10");
    assert_eq!(ok(&r).as_array().unwrap().len(), 10);
    assert_eq!(r.body["has_more"], true);
}

#[test]
fn tree_order_levels_and_limits() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/docs/api.md", "x");
    c.put_file("viking://resources/docs/deep/l2/l3/file.md", "x");
    c.put_file("viking://resources/docs/.hidden.md", "x");
    c.put_file("viking://resources/z.md", "x");
    ok(&c.mkdir("viking://resources/a-dir", Some("A")));

    let r = c.tree("viking://resources", "&output=original");
    let rels = names(ok(&r), "rel_path");
    assert_eq!(
        rels,
        [
            "a-dir",
            "docs",
            "docs/deep",
            "docs/deep/l2",
            "docs/api.md",
            "z.md"
        ],
        "pre-order, dirs first, level_limit 3 by default"
    );
    assert_eq!(r.body["has_more"], false);
    let e = &ok(&r)[4];
    assert_eq!(e["uri"], "viking://resources/docs/api.md");
    assert_eq!(e["name"], "api.md");

    let r = c.tree("viking://resources", "&output=original&level_limit=10");
    assert!(names(ok(&r), "rel_path").contains(&"docs/deep/l2/l3/file.md".to_string()));
    let r = c.tree("viking://resources", "&level_limit=1&simple=true");
    assert_eq!(
        ok(&r),
        &json!([
            "viking://resources/a-dir",
            "viking://resources/docs",
            "viking://resources/z.md"
        ])
    );
    let r = c.tree(
        "viking://resources",
        "&show_all_hidden=true&output=original",
    );
    assert!(names(ok(&r), "rel_path").contains(&"docs/.hidden.md".to_string()));
    let r = c.tree(
        "viking://resources",
        "&directories_only=true&output=original",
    );
    assert_eq!(
        names(ok(&r), "rel_path"),
        ["a-dir", "docs", "docs/deep", "docs/deep/l2"]
    );
    let r = c.tree(
        "viking://resources",
        "&node_limit=2&offset=1&output=original",
    );
    assert_eq!(names(ok(&r), "rel_path"), ["docs", "docs/deep"]);
    assert_eq!(r.body["has_more"], true);
    // Agent entries carry rel_path and abstract.
    let r = c.tree("viking://resources", "&level_limit=1");
    assert_eq!(ok(&r)[0]["rel_path"], "a-dir");
    assert_eq!(ok(&r)[0]["abstract"], "A");

    let e = err(&c.tree("viking://resources/none", ""), 404, "NOT_FOUND");
    assert_eq!(e["details"]["type"], "directory");
    err(
        &c.tree("viking://resources/z.md", ""),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &c.tree("viking://resources", "&level_limit=0"),
        400,
        "INVALID_ARGUMENT",
    );
}

#[test]
fn stat_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/docs/api.md", "0123456789");
    let r = c.stat("viking://resources/docs/api.md");
    let res = ok(&r);
    assert_eq!(res["name"], "api.md");
    assert_eq!(res["size"], 10);
    assert_eq!(res["mode"], 420);
    assert_eq!(res["isDir"], false);
    assert_eq!(res["uri"], "viking://resources/docs/api.md");
    assert_eq!(res["isLocked"], false);
    let r = c.stat("viking://resources/docs/");
    assert_eq!(ok(&r)["isDir"], true);
    assert_eq!(ok(&r)["mode"], 493);
    assert_eq!(ok(&r)["uri"], "viking://resources/docs");
    let e = err(&c.stat("viking://resources/missing.md"), 404, "NOT_FOUND");
    assert_eq!(
        e["message"],
        "File not found: viking://resources/missing.md"
    );
    assert_eq!(
        e["details"],
        json!({"type": "file", "resource": "viking://resources/missing.md"})
    );
    // A path through a file is simply missing.
    err(
        &c.stat("viking://resources/docs/api.md/x"),
        404,
        "NOT_FOUND",
    );
    err(&c.stat("viking://queue"), 400, "INVALID_URI");
    err(&c.get("/api/v1/fs/stat"), 400, "INVALID_ARGUMENT");
}

#[test]
fn mkdir_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    let r = c.mkdir(
        "viking://resources/new-project/",
        Some("  API docs directory \n"),
    );
    assert_eq!(ok(&r), &json!({"uri": "viking://resources/new-project"}));
    let text = st.read_string("acme/resources/new-project/.abstract.md");
    assert_eq!(
        text,
        "---\ndirectory: viking://resources/new-project/\ngenerated_by:\n  component: FSService\n  trigger: mkdir\nfreshness:\n  total_entries: 0\n  sampled_entries: 0\n  unsampled_entries: 0\n  pending_child_changes: 0\n---\n\nAPI docs directory\n"
    );
    assert!(!st.exists("acme/resources/new-project/.overview.md"));
    // mkdir -p; without a description the abstract is "# <name>".
    ok(&c.mkdir("viking://resources/a/b/c", None));
    let r = c.get(&format!(
        "/api/v1/content/abstract?uri={}",
        q("viking://resources/a/b/c")
    ));
    assert_eq!(ok(&r), "# c");
    // ~ expands.
    let r = c.mkdir("viking://~/memories/facts", None);
    assert_eq!(ok(&r)["uri"], "viking://user/alice/memories/facts");

    let e = err(
        &c.mkdir("viking://resources/new-project", None),
        409,
        "CONFLICT",
    );
    assert_eq!(e["details"]["resource"], "viking://resources/new-project");
    assert!(!e["message"].as_str().unwrap().contains("/local"), "{e}");
    c.put_file("viking://resources/file.md", "x");
    err(
        &c.mkdir("viking://resources/file.md", None),
        409,
        "CONFLICT",
    );
    err(
        &c.mkdir("viking://resources/file.md/sub", None),
        400,
        "INVALID_ARGUMENT",
    );
    let e = err(
        &c.mkdir("viking://resources/.path.ovlock", None),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("cannot use storage internal name"));
    err(&c.mkdir("viking://user", None), 403, "PERMISSION_DENIED");
    err(&c.mkdir("viking://temp/x", None), 400, "INVALID_URI");
    err(&c.mkdir("viking://", None), 409, "CONFLICT");
    err(
        &c.post("/api/v1/fs/mkdir", json!({})),
        400,
        "INVALID_ARGUMENT",
    );
}

#[test]
fn rm_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/old/a.md", "a");
    c.put_file("viking://resources/old/sub/b.md", "b");
    c.put_file("viking://resources/one.md", "1");

    let r = c.rm("viking://resources/one.md", false);
    assert_eq!(
        ok(&r),
        &json!({"uri": "viking://resources/one.md", "estimated_deleted_count": 1})
    );
    assert!(!st.exists("acme/resources/one.md"));
    // Missing target: idempotent success.
    let r = c.rm("viking://resources/one.md", false);
    assert_eq!(ok(&r)["estimated_deleted_count"], 0);

    let e = err(
        &c.rm("viking://resources/old", false),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        e["message"],
        "Cannot remove directory without --recursive: viking://resources/old"
    );
    assert_eq!(
        e["details"],
        json!({"resource": "viking://resources/old", "expected_flag": "recursive"})
    );
    ok(&c.mkdir("viking://resources/empty", None));
    err(
        &c.rm("viking://resources/empty", false),
        400,
        "INVALID_ARGUMENT",
    );

    let r = c.rm("viking://resources/old/", true);
    assert_eq!(ok(&r)["estimated_deleted_count"], 4);
    assert!(!st.exists("acme/resources/old"));
    // wait is accepted, timeout ignored.
    ok(&c.delete(&format!(
        "/api/v1/fs?uri={}&recursive=true&wait=true&timeout=3",
        q("viking://resources/empty")
    )));

    for forbidden in ["viking://", "viking://user", "viking://agent"] {
        err(&c.rm(forbidden, true), 403, "PERMISSION_DENIED");
    }
    // Dev mode is ROOT: namespace roots of the account may go.
    ok(&c.rm("viking://user/alice", true));
    err(
        &c.rm("viking://resources/.path.ovlock", false),
        400,
        "INVALID_ARGUMENT",
    );
    err(&c.delete("/api/v1/fs"), 400, "INVALID_ARGUMENT");
}

#[test]
fn mv_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/a.md", "a");
    c.put_file("viking://resources/b.md", "b");
    c.put_file("viking://resources/dir/x.md", "x");
    ok(&c.mkdir("viking://resources/dir2", Some("moving")));

    let r = c.mv("viking://resources/a.md", "viking://resources/dir/a2.md");
    assert_eq!(
        ok(&r),
        &json!({"from": "viking://resources/a.md", "to": "viking://resources/dir/a2.md"})
    );
    assert_eq!(st.read_string("acme/resources/dir/a2.md"), "a");
    // A directory moves with its sidecars.
    ok(&c.mkdir("viking://~/resources", None));
    ok(&c.mv("viking://resources/dir2", "viking://~/resources/dir2"));
    assert!(st.exists("acme/user/alice/resources/dir2/.abstract.md"));

    let e = err(
        &c.mv("viking://resources/nope.md", "viking://resources/n.md"),
        404,
        "NOT_FOUND",
    );
    assert_eq!(
        e["message"],
        "Resource not found: viking://resources/nope.md"
    );
    assert_eq!(e["details"]["type"], "resource");
    let e = err(
        &c.mv("viking://resources/b.md", "viking://resources/b.md/"),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(e["message"], "mv source and target must be different");
    let e = err(
        &c.mv("viking://resources/dir", "viking://resources/dir/sub"),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        e["message"],
        "mv source and target subtrees must not overlap"
    );
    err(
        &c.mv("viking://resources/dir/x.md", "viking://resources"),
        400,
        "INVALID_ARGUMENT",
    );
    let e = err(
        &c.mv("viking://resources/b.md", "viking://resources/no/such/b.md"),
        404,
        "NOT_FOUND",
    );
    assert_eq!(
        e["message"],
        "Directory not found: viking://resources/no/such"
    );
    assert_eq!(e["details"]["type"], "directory");
    err(
        &c.mv(
            "viking://resources/b.md",
            "viking://resources/dir/x.md/y.md",
        ),
        400,
        "INVALID_ARGUMENT",
    );
    let e = err(
        &c.mv("viking://resources/b.md", "viking://resources/dir"),
        400,
        "INVALID_ARGUMENT",
    );
    assert_eq!(
        e["message"],
        "transfer source and target types differ: viking://resources/dir"
    );
    // §13.5: an existing destination of the same type is a 409, never overwritten.
    c.put_file("viking://resources/c.md", "c");
    let e = err(
        &c.mv("viking://resources/b.md", "viking://resources/c.md"),
        409,
        "CONFLICT",
    );
    assert_eq!(e["details"]["resource"], "viking://resources/c.md");
    assert_eq!(st.read_string("acme/resources/c.md"), "c");
    assert_eq!(st.read_string("acme/resources/b.md"), "b");
    ok(&c.mkdir("viking://resources/d1", None));
    ok(&c.mkdir("viking://resources/d2", None));
    err(
        &c.mv("viking://resources/d1", "viking://resources/d2"),
        409,
        "CONFLICT",
    );

    err(
        &c.mv(
            "viking://resources/b.md",
            "viking://resources/.redirect.json",
        ),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &c.mv("viking://agent", "viking://resources/agent2"),
        403,
        "PERMISSION_DENIED",
    );
    err(
        &c.mv("viking://resources/b.md", "viking://user"),
        403,
        "PERMISSION_DENIED",
    );
    err(
        &c.mv("viking://resources/b.md", "viking://temp/b.md"),
        400,
        "INVALID_URI",
    );
    err(
        &c.post(
            "/api/v1/fs/mv",
            json!({"from_uri": "viking://resources/b.md"}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
}
