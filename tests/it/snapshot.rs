//! Snapshots (issue #22) through the real binary, on both storage backends: commit, show, diff,
//! diff-paths, log and restore over a tree with edits, moves and deletes; restored content
//! reaching find; a restore undone; two instances committing at once; bad input refused with
//! nothing written.

use std::time::Duration;

use serde_json::{json, Value};

use crate::find::eventually;
use crate::harness::api::{create_account, err, ok, q, register, Dev};
use crate::harness::{Opts, Resp, Server, Storage};

const COMMIT: &str = "/api/v1/snapshot/commit";
const RESTORE: &str = "/api/v1/snapshot/restore";
const BOUND: Duration = Duration::from_secs(20);

fn commit(c: &Dev, paths: &[&str], message: &str) -> Value {
    let r = c.post(COMMIT, json!({"message": message, "paths": paths}));
    ok(&r).clone()
}

fn read(c: &Dev, uri: &str) -> Option<String> {
    let r = c.get(&format!("/api/v1/content/read?uri={}", q(uri)));
    (r.status == 200).then(|| r.result().as_str().unwrap_or_default().to_string())
}

fn changed(result: &Value) -> Vec<(String, String)> {
    let list = result["changed"]
        .as_array()
        .or(result["changes"].as_array());
    list.unwrap_or_else(|| panic!("{result}"))
        .iter()
        .map(|c| {
            (
                c["uri"].as_str().unwrap().to_string(),
                c["change_type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn found(c: &Dev, word: &str) -> Vec<String> {
    let r = c.post("/api/v1/search/find", json!({"query": word}));
    let res = ok(&r);
    ["memories", "resources", "skills"]
        .iter()
        .flat_map(|k| res[*k].as_array().cloned().unwrap_or_default())
        .map(|h| h["uri"].as_str().unwrap().to_string())
        .collect()
}

fn git_blob_id(data: &[u8]) -> String {
    gix_object::compute_hash(gix_hash::Kind::Sha1, gix_object::Kind::Blob, data)
        .unwrap()
        .to_string()
}

fn log(c: &Dev, extra: &str) -> Vec<Value> {
    let r = c.get(&format!("/api/v1/snapshot/log?limit=500{extra}"));
    ok(&r).as_array().unwrap().clone()
}

#[test]
fn commit_show_diff_restore_over_edits_moves_and_deletes_and_undo() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    let proj = "viking://resources/proj";
    c.put_file("viking://resources/proj/a.md", "alpha\n");
    c.put_file("viking://resources/proj/b.md", "beta zebrafinch\n");
    c.put_file("viking://resources/proj/sub/c.md", "gamma\n");
    c.put_file("viking://resources/other/keep.md", "outside the scope\n");

    let v1 = commit(&c, &[proj], "v1");
    assert_eq!(v1["result"], "created", "{v1}");
    let c1 = v1["commit_oid"].as_str().unwrap().to_string();
    assert_eq!(c1.len(), 40);
    assert_eq!(
        changed(&v1),
        pairs(&[
            ("viking://resources/proj/a.md", "added"),
            ("viking://resources/proj/b.md", "added"),
            ("viking://resources/proj/sub/c.md", "added"),
        ])
    );
    // Nothing changed: no new version.
    let again = commit(&c, &[proj], "again");
    assert_eq!(again["result"], "noop");
    assert_eq!(again["commit_oid"], c1.as_str());

    // Edit, move, delete, add.
    c.put_file("viking://resources/proj/a.md", "alpha 2\n");
    ok(&c.mv(
        "viking://resources/proj/sub",
        "viking://resources/proj/moved",
    ));
    ok(&c.rm("viking://resources/proj/b.md", false));
    c.put_file("viking://resources/proj/d.md", "delta\n");
    let v2 = commit(&c, &[proj], "v2");
    let c2 = v2["commit_oid"].as_str().unwrap().to_string();
    assert_eq!(
        changed(&v2),
        pairs(&[
            ("viking://resources/proj/a.md", "modified"),
            ("viking://resources/proj/b.md", "deleted"),
            ("viking://resources/proj/d.md", "added"),
            ("viking://resources/proj/moved/c.md", "added"),
            ("viking://resources/proj/sub/c.md", "deleted"),
        ])
    );

    // show: commit metadata and files, with git's blob ids.
    let meta = ok(&c.get(&format!("/api/v1/snapshot/show?target_ref={c2}"))).clone();
    assert_eq!(meta["oid"], c2.as_str());
    assert_eq!(meta["parents"], json!([c1]));
    assert_eq!(meta["message"], "v2");
    assert_eq!(meta["author"]["name"], "viking-bot");
    let by_branch = ok(&c.get("/api/v1/snapshot/show?target_ref=main")).clone();
    assert_eq!(by_branch["oid"], c2.as_str());
    let r = c.get(&format!(
        "/api/v1/snapshot/show?target_ref={c1}&path={}",
        q("viking://resources/proj/a.md")
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.raw.as_slice(), b"alpha\n");
    assert_eq!(
        r.header("x-snapshot-oid"),
        Some(git_blob_id(b"alpha\n").as_str())
    );
    assert_eq!(r.header("x-snapshot-size"), Some("6"));
    let r = c.get(&format!(
        "/api/v1/snapshot/show?target_ref={c2}&path={}",
        q("viking://resources/proj/b.md")
    ));
    err(&r, 404, "NOT_FOUND");

    // diff of one file.
    let d = ok(&c.get(&format!(
        "/api/v1/snapshot/diff?path={}&from={c1}&to={c2}",
        q("viking://resources/proj/a.md")
    )))
    .clone();
    assert_eq!(d["change_type"], "modified");
    assert_eq!(d["from_commit"], c1.as_str());
    let text = d["diff_text"].as_str().unwrap();
    assert!(
        text.contains("-alpha\n") && text.contains("+alpha 2\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("viking://resources/proj/a.md@{c1}")),
        "{text}"
    );
    let d = ok(&c.get(&format!(
        "/api/v1/snapshot/diff?path={}&from={c1}&to={c2}",
        q("viking://resources/proj/b.md")
    )))
    .clone();
    assert_eq!(d["change_type"], "deleted");
    let d = ok(&c.get(&format!(
        "/api/v1/snapshot/diff?path={}&to={c2}",
        q("viking://resources/proj/d.md")
    )))
    .clone();
    assert_eq!(d["change_type"], "added");

    // diff-paths, paged.
    let base = format!(
        "/api/v1/snapshot/diff-paths?paths={}&from={c1}&to={c2}",
        q(proj)
    );
    let page = ok(&c.get(&format!("{base}&limit=2"))).clone();
    assert_eq!(page["total"], 5);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_offset"], 2);
    let all = ok(&c.get(&base)).clone();
    assert_eq!(changed(&all), changed(&v2));
    let rest = ok(&c.get(&format!("{base}&offset=4&limit=2"))).clone();
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1);

    // log, filtered by a path.
    let history: Vec<Value> = log(&c, "").into_iter().map(|v| v["oid"].clone()).collect();
    assert_eq!(history, vec![json!(c2), json!(c1)]);
    let only_d = log(&c, &format!("&paths={}", q("viking://resources/proj/d.md")));
    assert_eq!(only_d.len(), 1);
    assert_eq!(only_d[0]["oid"], c2.as_str());

    // Dry run: the plan, nothing written.
    let plan = ok(&c.post(
        RESTORE,
        json!({"project_dir": proj, "source_commit": c1, "dry_run": true}),
    ))
    .clone();
    assert_eq!(plan["result"], "dry_run");
    let mut to_write: Vec<String> = plan["diff"]["to_write"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap().to_string())
        .collect();
    to_write.sort();
    assert_eq!(to_write, ["a.md", "b.md", "sub/c.md"]);
    assert_eq!(plan["diff"]["to_delete"], json!(["d.md", "moved/c.md"]));
    assert_eq!(
        read(&c, "viking://resources/proj/a.md").as_deref(),
        Some("alpha 2\n")
    );

    // Restore v1: the live tree is v1's again, recorded as a forward commit on top of v2.
    let restored = ok(&c.post(RESTORE, json!({"project_dir": proj, "source_commit": c1}))).clone();
    assert_eq!(restored["result"], "applied", "{restored}");
    assert_eq!(restored["parent_commit"], c2.as_str());
    let c3 = restored["new_commit_oid"].as_str().unwrap().to_string();
    assert_eq!(
        read(&c, "viking://resources/proj/a.md").as_deref(),
        Some("alpha\n")
    );
    assert_eq!(
        read(&c, "viking://resources/proj/b.md").as_deref(),
        Some("beta zebrafinch\n")
    );
    assert_eq!(
        read(&c, "viking://resources/proj/sub/c.md").as_deref(),
        Some("gamma\n")
    );
    assert_eq!(read(&c, "viking://resources/proj/d.md"), None);
    err(&c.stat("viking://resources/proj/moved"), 404, "NOT_FOUND");
    assert_eq!(
        read(&c, "viking://resources/other/keep.md").as_deref(),
        Some("outside the scope\n")
    );
    let meta = ok(&c.get(&format!("/api/v1/snapshot/show?target_ref={c3}"))).clone();
    assert_eq!(meta["parents"], json!([c2]));
    let same = ok(&c.get(&format!(
        "/api/v1/snapshot/diff-paths?paths={}&from={c1}&to={c3}",
        q(proj)
    )))
    .clone();
    assert_eq!(same["total"], 0, "{same}");
    // The restored file is findable again.
    eventually(BOUND, || {
        found(&c, "zebrafinch") == ["viking://resources/proj/b.md"]
    })
    .expect("restored content reaches find");

    ok(&c.post(
        "/api/v1/content/set_tags",
        json!({"uri": "viking://resources/proj/b.md", "tags": ["stage=old"]}),
    ));

    // Undo: restore the version the restore was made on.
    let undone = ok(&c.post(
        RESTORE,
        json!({"project_dir": proj, "source_commit": c2, "message": "undo"}),
    ))
    .clone();
    assert_eq!(undone["result"], "applied");
    assert_eq!(
        read(&c, "viking://resources/proj/a.md").as_deref(),
        Some("alpha 2\n")
    );
    assert_eq!(
        read(&c, "viking://resources/proj/moved/c.md").as_deref(),
        Some("gamma\n")
    );
    assert_eq!(read(&c, "viking://resources/proj/b.md"), None);
    eventually(BOUND, || found(&c, "zebrafinch").is_empty()).expect("deleted content leaves find");
    let head = ok(&c.get("/api/v1/snapshot/show?target_ref=main")).clone();
    assert_eq!(head["message"], "undo");

    // Uncommitted edits are recorded before a restore overwrites them, so it can be undone.
    c.put_file("viking://resources/proj/a.md", "never committed\n");
    let r = ok(&c.post(RESTORE, json!({"project_dir": proj, "source_commit": c1}))).clone();
    let before = r["parent_commit"].as_str().unwrap().to_string();
    // b.md came back; the tags it had when a restore deleted it went with it (as with rm).
    let attrs = c.get(&format!(
        "/api/v1/fs/attrs?uri={}",
        q("viking://resources/proj/b.md")
    ));
    assert_eq!(ok(&attrs)["attrs"]["tags"], json!([]), "{:?}", attrs.body);
    let saved = c.get(&format!(
        "/api/v1/snapshot/show?target_ref={before}&path={}",
        q("viking://resources/proj/a.md")
    ));
    assert_eq!(saved.raw.as_slice(), b"never committed\n");

    // The stat cache never hides an edit: same length, written right after a commit.
    c.put_file("viking://resources/proj/a.md", "alpha X\n");
    commit(&c, &[proj], "x");
    c.put_file("viking://resources/proj/a.md", "alpha Y\n");
    let y = commit(&c, &[proj], "y");
    assert_eq!(
        changed(&y),
        pairs(&[("viking://resources/proj/a.md", "modified")])
    );
    let r = c.get(&format!(
        "/api/v1/snapshot/show?target_ref=main&path={}",
        q("viking://resources/proj/a.md")
    ));
    assert_eq!(r.raw.as_slice(), b"alpha Y\n");
}

#[test]
fn two_instances_committing_at_once_lose_nothing() {
    let st = Storage::new();
    let a = Server::start(&st, Opts::dev());
    let b = Server::start(&st, Opts::dev());
    let ca = Dev::new(&a, "acme", "alice");
    let cb = Dev::new(&b, "acme", "alice");
    let rounds = 8;
    let created: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = [("a", &ca), ("b", &cb)]
            .into_iter()
            .map(|(who, c)| {
                scope.spawn(move || {
                    let mut created = 0;
                    for i in 0..rounds {
                        let dir = format!("viking://resources/{who}");
                        c.put_file(&format!("{dir}/f{i}.md"), &format!("{who} {i}\n"));
                        let r = c.post(
                            COMMIT,
                            json!({"message": format!("{who}{i}"), "paths": [dir]}),
                        );
                        let res = ok(&r);
                        if res["result"] == "created" {
                            created += 1;
                        }
                    }
                    created
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(created, 2 * rounds);
    // Every commit is in the history, one after another, and the head has every file.
    let history = log(&ca, "");
    assert_eq!(history.len(), 2 * rounds);
    for who in ["a", "b"] {
        for i in 0..rounds {
            let r = cb.get(&format!(
                "/api/v1/snapshot/show?target_ref=main&path={}",
                q(&format!("viking://resources/{who}/f{i}.md"))
            ));
            assert_eq!(r.status, 200, "{who}{i}: {:?}", r.body);
            assert_eq!(r.raw.as_slice(), format!("{who} {i}\n").as_bytes());
        }
    }
}

fn status_4xx(r: &Resp) {
    assert!((400..500).contains(&r.status), "{} {:?}", r.status, r.body);
}

#[test]
fn bad_input_is_refused_with_nothing_written() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin_key = create_account(&s, "acme", "boss");
    let user_key = register(&s, &admin_key, "acme", "bob", "user");
    let admin = |m: &str, p: &str, b: Option<Value>| s.call(m, p, Some(&admin_key), b);
    let user = |m: &str, p: &str, b: Option<Value>| s.call(m, p, Some(&user_key), b);
    let write = |key: &str, uri: &str, content: &str| {
        let r = s.post(
            "/api/v1/content/write",
            Some(key),
            json!({"uri": uri, "content": content, "mode": "create"}),
        );
        assert_eq!(r.status, 200, "{uri}: {:?}", r.body);
    };
    write(
        &admin_key,
        "viking://user/boss/resources/secret.md",
        "boss only\n",
    );
    write(&user_key, "viking://resources/p/x.md", "x1\n");

    // Roles as 0.5.2: a non-ROOT caller names paths.
    err(
        &user("POST", COMMIT, Some(json!({"message": "all"}))),
        403,
        "PERMISSION_DENIED",
    );
    err(
        &user("GET", "/api/v1/snapshot/log", None),
        403,
        "PERMISSION_DENIED",
    );
    err(
        &user("GET", "/api/v1/snapshot/show?target_ref=main", None),
        403,
        "PERMISSION_DENIED",
    );
    let v1 = user(
        "POST",
        COMMIT,
        Some(json!({"message": "v1", "paths": ["viking://resources/p"]})),
    );
    let c1 = ok(&v1)["commit_oid"].as_str().unwrap().to_string();
    // A commit of a path the caller may not write.
    err(
        &user(
            "POST",
            COMMIT,
            Some(json!({"message": "x", "paths": ["viking://user/boss/resources"]})),
        ),
        403,
        "PERMISSION_DENIED",
    );
    let boss = admin(
        "POST",
        COMMIT,
        Some(json!({"message": "boss", "paths": ["viking://user/boss/resources"]})),
    );
    let c2 = ok(&boss)["commit_oid"].as_str().unwrap().to_string();

    // Unknown and malformed versions.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let show = |t: &str| {
        user(
            "GET",
            &format!(
                "/api/v1/snapshot/show?target_ref={}&path={}",
                q(t),
                q("viking://resources/p/x.md")
            ),
            None,
        )
    };
    err(&show(unknown), 404, "NOT_FOUND");
    err(&show("no-such-branch"), 404, "NOT_FOUND");
    err(&show("bad..ref"), 400, "INVALID_ARGUMENT");
    err(&show("refs/heads/../../x"), 400, "INVALID_ARGUMENT");
    err(&show(&"a".repeat(39)), 404, "NOT_FOUND");
    err(
        &user(
            "POST",
            RESTORE,
            Some(json!({"project_dir": "viking://resources/p", "source_commit": unknown})),
        ),
        404,
        "NOT_FOUND",
    );
    err(
        &user(
            "POST",
            COMMIT,
            Some(json!({"message": "m", "paths": ["viking://resources/p"], "branch": "../main"})),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    status_4xx(&user(
        "POST",
        RESTORE,
        Some(json!({"project_dir": "viking://resources/p"})),
    ));
    status_4xx(&user(
        "POST",
        RESTORE,
        Some(json!({"project_dir": "viking://resources/p", "source_commit": c1, "bogus": 1})),
    ));

    // Restore into a path the caller may not write: 403, nothing written.
    write(
        &admin_key,
        "viking://user/boss/resources/later.md",
        "later\n",
    );
    for dir in ["viking://user/boss/resources", "viking://user/boss"] {
        err(
            &user(
                "POST",
                RESTORE,
                Some(json!({"project_dir": dir, "source_commit": c2})),
            ),
            403,
            "PERMISSION_DENIED",
        );
    }
    let r = admin(
        "GET",
        &format!(
            "/api/v1/content/read?uri={}",
            q("viking://user/boss/resources/later.md")
        ),
        None,
    );
    assert_eq!(r.result(), "later\n");
    let head = admin(
        "GET",
        "/api/v1/snapshot/log?paths=viking://user/boss/resources",
        None,
    );
    let history = ok(&head).as_array().unwrap();
    assert_eq!(history.len(), 1, "no restore commit recorded: {history:?}");
    assert_eq!(history[0]["oid"], c2.as_str());

    // Bounds: a huge diff is refused (413), pages and counts are bounded.
    let many_lines = "x\n".repeat(100_001);
    write(&user_key, "viking://resources/p/big.md", &many_lines);
    let v2 = user(
        "POST",
        COMMIT,
        Some(json!({"message": "big", "paths": ["viking://resources/p"]})),
    );
    let c3 = ok(&v2)["commit_oid"].as_str().unwrap().to_string();
    err(
        &user(
            "GET",
            &format!(
                "/api/v1/snapshot/diff?path={}&to={c3}",
                q("viking://resources/p/big.md")
            ),
            None,
        ),
        413,
        "RESOURCE_EXHAUSTED",
    );
    let dp = |extra: &str| {
        user(
            "GET",
            &format!(
                "/api/v1/snapshot/diff-paths?paths={}&to={c3}{extra}",
                q("viking://resources/p")
            ),
            None,
        )
    };
    status_4xx(&dp("&limit=1001"));
    status_4xx(&dp("&limit=0"));
    status_4xx(&dp("&offset=-1"));
    status_4xx(&dp("&from="));
    status_4xx(&user("GET", "/api/v1/snapshot/diff-paths?to=main", None));
    status_4xx(&user(
        "GET",
        "/api/v1/snapshot/log?paths=viking://resources/p&limit=501",
        None,
    ));
    let too_many: String = (0..33)
        .map(|i| format!("&paths={}", q(&format!("viking://resources/p{i}"))))
        .collect();
    status_4xx(&user(
        "GET",
        &format!("/api/v1/snapshot/log?limit=5{too_many}"),
        None,
    ));

    // Compile is out of scope.
    err(
        &user(
            "GET",
            "/api/v1/snapshot/versions?uri=viking://resources/p/x.md",
            None,
        ),
        501,
        "UNIMPLEMENTED",
    );
    err(
        &user(
            "POST",
            RESTORE,
            Some(
                json!({"path": "viking://resources/p/x.md", "restore_version": "a", "current_version": "b"}),
            ),
        ),
        501,
        "UNIMPLEMENTED",
    );

    // Ignore rules: admins only; matching files stay out of commits.
    err(
        &user("GET", "/api/v1/snapshot/ignore", None),
        403,
        "PERMISSION_DENIED",
    );
    err(
        &user(
            "PUT",
            "/api/v1/snapshot/ignore",
            Some(json!({"content": "*.log"})),
        ),
        403,
        "PERMISSION_DENIED",
    );
    status_4xx(&admin(
        "PUT",
        "/api/v1/snapshot/ignore",
        Some(json!({"content": "x".repeat(64 * 1024 + 1)})),
    ));
    ok(&admin(
        "PUT",
        "/api/v1/snapshot/ignore",
        Some(json!({"content": "drafts/\n"})),
    ));
    assert_eq!(
        ok(&admin("GET", "/api/v1/snapshot/ignore", None)),
        "drafts/\n"
    );
    write(&user_key, "viking://resources/p/drafts/d.md", "noise\n");
    write(&user_key, "viking://resources/p/y.md", "y\n");
    let v3 = user(
        "POST",
        COMMIT,
        Some(json!({"message": "v3", "paths": ["viking://resources/p"]})),
    );
    let res = ok(&v3);
    assert_eq!(res["ignored"], 1, "{res}");
    assert_eq!(
        changed(res),
        pairs(&[("viking://resources/p/y.md", "added")])
    );
    ok(&admin("DELETE", "/api/v1/snapshot/ignore", None));
    assert_eq!(ok(&admin("GET", "/api/v1/snapshot/ignore", None)), "");
}

/// kill -9 while a restore builds or publishes the restored directory (observed through its
/// staging directory: killed once the replacement's journal appears or most files are
/// staged): after the restart the directory is the pre-restore tree or the restored one,
/// whole — never a mix, never nothing once the sweep settled the dead restore.
#[test]
fn kill9_during_restore_leaves_old_or_new_whole() {
    use std::collections::BTreeMap;
    use std::time::Instant;
    let st = Storage::new();
    let mut s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "ann");
    let n = 300;
    let dir = "viking://resources/big";
    let r = s.post("/api/v1/fs/mkdir", Some(&key), json!({"uri": dir}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let batch = |body: &str, mode: &str| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"uri": format!("{dir}/f{i:04}.md"), "content": format!("{body} {i}\n").repeat(100), "mode": mode}))
            .collect()
    };
    let write_all = |ops: Vec<Value>| {
        let r = s.post(
            "/api/v1/content/batch-write",
            Some(&key),
            json!({"root_uri": dir, "operations": ops}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    write_all(batch("first", "create"));
    let visible = |m: BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.into_iter()
            .filter(|(k, _)| !k.ends_with('/') && !k.contains("/.") && !k.starts_with('.'))
            .collect()
    };
    let tree = |st: &Storage| visible(st.at("acme/resources/big").digest());
    let r = s.post(COMMIT, Some(&key), json!({"message": "v1", "paths": [dir]}));
    let c1 = ok(&r)["commit_oid"].as_str().unwrap().to_string();
    let restored_tree = tree(&st);
    write_all(batch("second", "replace"));
    let r = s.post(
        "/api/v1/content/write",
        Some(&key),
        json!({"uri": format!("{dir}/only-now.md"), "content": "x\n", "mode": "create", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let live_tree = tree(&st);
    assert_ne!(live_tree, restored_tree);

    let url = s.url(RESTORE);
    let k = key.clone();
    let body = json!({"project_dir": dir, "source_commit": c1});
    let client = std::thread::spawn(move || {
        let _ = ureq::post(&url)
            .set("X-API-Key", &k)
            .timeout(Duration::from_secs(120))
            .send_json(body);
    });
    let works = |st: &Storage| -> Vec<String> {
        st.list("acme/_system/ingest")
            .into_iter()
            .filter(|n| n.starts_with("restore_"))
            .collect()
    };
    // Progress: the staging directory filling, or (a restore writing in place) the first
    // live file changing.
    let first = "acme/resources/big/f0000.md";
    let before = st.read(first);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = false;
    loop {
        let ready = works(&st).iter().any(|w| {
            seen = true;
            st.exists(&format!("acme/_system/ingest/{w}/replace.json"))
                || st.list(&format!("acme/_system/ingest/{w}/tree/0")).len() >= n * 3 / 4
        }) || st.read(first) != before;
        if ready {
            seen = true;
        }
        if ready || Instant::now() > deadline || (seen && works(&st).is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    s.kill9();
    let _ = client.join();
    assert!(seen, "the restore showed no progress within the bound");
    s.restart();
    let whole = |got: &BTreeMap<String, String>| *got == live_tree || *got == restored_tree;
    let got = tree(&st);
    assert!(
        got.is_empty() || whole(&got),
        "a mix is visible after restart: {} files",
        got.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !works(&st).is_empty() {
        assert!(Instant::now() < deadline, "staging left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = tree(&st);
    assert!(
        whole(&got),
        "not whole after the sweep: {} files",
        got.len()
    );
}
