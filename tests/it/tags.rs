//! Tags and attributes (issue #21) through the real binary: set_tags / fs/attrs, tags on find
//! hits and as find filters, tags moving, copying and going with their node, reaching another
//! instance, concurrent writers on two instances. Runs on both storage backends.

use std::time::Duration;

use serde_json::{json, Value};

use crate::find::eventually;
use crate::harness::api::{err, ok, q, Dev};
use crate::harness::{Opts, Server, Storage};

const SET_TAGS: &str = "/api/v1/content/set_tags";
const FIND: &str = "/api/v1/search/find";
/// Generous bound on cross-instance freshness (the setting below is 1000 ms).
const BOUND: Duration = Duration::from_secs(10);

fn attrs(c: &Dev, uri: &str) -> Vec<String> {
    let r = c.get(&format!("/api/v1/fs/attrs?uri={}", q(uri)));
    ok(&r)["attrs"]["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", r.body))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn set(c: &Dev, body: Value) -> Value {
    let r = c.post(SET_TAGS, body);
    ok(&r).clone()
}

/// (uri, tags) of every hit.
fn hits(c: &Dev, body: Value) -> Vec<(String, Vec<String>)> {
    let r = c.post(FIND, body);
    let res = ok(&r);
    ["memories", "resources", "skills"]
        .iter()
        .flat_map(|k| res[*k].as_array().cloned().unwrap_or_default())
        .map(|h| {
            let tags = h["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            (h["uri"].as_str().unwrap().to_string(), tags)
        })
        .collect()
}

fn hit_uris(c: &Dev, body: Value) -> Vec<String> {
    hits(c, body).into_iter().map(|(u, _)| u).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn tags_round_trip_filter_find_and_refuse_bad_input() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/zoo/lion.md", "the quokka lion roars");
    c.put_file("viking://resources/zoo/seal.md", "the quokka seal swims");

    // Round trip: normalised (trimmed, lower-cased), one value per key, modes merge by key.
    let r = set(
        &c,
        json!({"uri": "viking://resources/zoo/lion.md", "tags": [" Team=Cats ", "size=big", "team=felines"]}),
    );
    assert_eq!(r["tags"], json!(["team=felines", "size=big"]));
    assert_eq!(r["mode"], "replace");
    assert_eq!(r["updated_uris"], json!(["viking://resources/zoo/lion.md"]));
    assert_eq!(r["root_uri"], "viking://resources/zoo");
    assert_eq!(r["context_type"], "resource");
    assert_eq!(r["tags_updated"], true);
    assert_eq!(
        attrs(&c, "viking://resources/zoo/lion.md"),
        strings(&["team=felines", "size=big"])
    );
    // fs/attrs/set_tags is the same operation.
    let r = c.post(
        "/api/v1/fs/attrs/set_tags",
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["size=huge", "diet=meat"], "mode": "append"}),
    );
    ok(&r);
    assert_eq!(
        attrs(&c, "viking://resources/zoo/lion.md"),
        strings(&["team=felines", "size=huge", "diet=meat"])
    );
    // Replacing with nothing is a no-op (0.5.2); clear removes.
    let r = set(
        &c,
        json!({"uri": "viking://resources/zoo/lion.md", "tags": []}),
    );
    assert_eq!(r["skipped_count"], 1);
    assert_eq!(r["tags_updated"], false);
    assert_eq!(attrs(&c, "viking://resources/zoo/lion.md").len(), 3);
    set(
        &c,
        json!({"uri": "viking://resources/zoo/seal.md", "tags": ["team=pinnipeds", "x=1"]}),
    );
    set(
        &c,
        json!({"uri": "viking://resources/zoo/seal.md", "mode": "clear"}),
    );
    assert!(attrs(&c, "viking://resources/zoo/seal.md").is_empty());
    set(
        &c,
        json!({"uri": "viking://resources/zoo/seal.md", "tags": ["team=pinnipeds"]}),
    );

    // find: each hit reports its tags; `tags` and filter conditions select by them.
    // Level 2: the directory summaries (refreshed in the background) may mention it too.
    let all = hits(&c, json!({"query": "quokka", "level": 2}));
    assert_eq!(all.len(), 2, "{all:?}");
    let lion = all
        .iter()
        .find(|(u, _)| u.ends_with("lion.md"))
        .expect("lion hit");
    assert_eq!(lion.1, strings(&["team=felines", "size=huge", "diet=meat"]));
    assert_eq!(
        hit_uris(&c, json!({"query": "quokka", "tags": ["TEAM=felines"]})),
        ["viking://resources/zoo/lion.md"]
    );
    assert_eq!(
        hit_uris(
            &c,
            json!({"query": "quokka", "tags": ["team=felines", "diet=grass"]})
        ),
        Vec::<String>::new(),
        "every tag must match"
    );
    assert_eq!(
        hit_uris(
            &c,
            json!({"query": "quokka", "filter": {"op": "must", "field": "search_tags", "conds": ["team=pinnipeds"]}})
        ),
        ["viking://resources/zoo/seal.md"]
    );
    assert_eq!(
        hit_uris(
            &c,
            json!({"query": "quokka", "level": 2, "filter": {"op": "must_not", "field": "search_tags", "conds": ["team=pinnipeds"]}})
        ),
        ["viking://resources/zoo/lion.md"]
    );
    // A directory's tags are on its summaries' hits.
    c.mkdir("viking://resources/den", Some("a quokka den for sleeping"));
    set(
        &c,
        json!({"uri": "viking://resources/den", "tags": ["place=den"]}),
    );
    assert_eq!(attrs(&c, "viking://resources/den"), ["place=den"]);
    let den = hit_uris(&c, json!({"query": "quokka", "tags": ["place=den"]}));
    assert_eq!(den, ["viking://resources/den/.abstract.md"], "{den:?}");

    // Bad input: 400 in the envelope, nothing changed.
    for bad in [
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["novalue"]}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["a=b=c"]}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["=v"]}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": [format!("k={}", "v".repeat(300))]}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["k=v"], "mode": "merge"}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": "k=v"}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": ["k=v"], "bogus": 1}),
        json!({"tags": ["k=v"]}),
        json!({"uri": "viking://resources/zoo/lion.md", "tags": (0..65).map(|i| format!("k{i}=v")).collect::<Vec<_>>()}),
    ] {
        err(&c.post(SET_TAGS, bad.clone()), 400, "INVALID_ARGUMENT");
    }
    // Reserved keys are the server's.
    let e = err(
        &c.post(
            SET_TAGS,
            json!({"uri": "viking://resources/zoo/lion.md", "tags": ["memory_type=events"]}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    assert_eq!(attrs(&c, "viking://resources/zoo/lion.md").len(), 3);
    // Missing node: 404; a tag filter that is not k=v: 400.
    err(
        &c.post(
            SET_TAGS,
            json!({"uri": "viking://resources/zoo/none.md", "tags": ["k=v"]}),
        ),
        404,
        "NOT_FOUND",
    );
    err(
        &c.get(&format!(
            "/api/v1/fs/attrs?uri={}",
            q("viking://resources/none")
        )),
        404,
        "NOT_FOUND",
    );
    err(
        &c.post(FIND, json!({"query": "quokka", "tags": ["nope"]})),
        400,
        "INVALID_ARGUMENT",
    );
    // content/write carries tags too (tag_mode as set_tags); a bad tag refuses the write.
    ok(&c.post(
        "/api/v1/content/write",
        json!({"uri": "viking://resources/zoo/owl.md", "content": "quokka owl", "tags": ["Bird=Owl"]}),
    ));
    assert_eq!(attrs(&c, "viking://resources/zoo/owl.md"), ["bird=owl"]);
    ok(&c.post(
        "/api/v1/content/write",
        json!({"uri": "viking://resources/zoo/owl.md", "content": "quokka owl!", "tags": ["night=yes"], "tag_mode": "append"}),
    ));
    assert_eq!(
        attrs(&c, "viking://resources/zoo/owl.md"),
        strings(&["bird=owl", "night=yes"])
    );
    assert_eq!(
        hits(&c, json!({"query": "owl", "tags": ["night=yes"]})),
        vec![(
            "viking://resources/zoo/owl.md".to_string(),
            strings(&["bird=owl", "night=yes"])
        )]
    );
    for bad in [json!(["memory_type=x"]), json!(["owl"])] {
        err(
            &c.post(
                "/api/v1/content/write",
                json!({"uri": "viking://resources/zoo/bad.md", "content": "x", "tags": bad}),
            ),
            400,
            "INVALID_ARGUMENT",
        );
    }
    err(
        &c.read("viking://resources/zoo/bad.md", ""),
        404,
        "NOT_FOUND",
    );
    ok(&c.post(
        "/api/v1/content/write",
        json!({"uri": "viking://resources/zoo/owl.md", "content": "quokka owl", "tag_mode": "clear"}),
    ));
    assert!(attrs(&c, "viking://resources/zoo/owl.md").is_empty());
    // The map itself is never visible.
    let names: Vec<String> = ok(&c.ls("viking://resources/zoo", "&show_all_hidden=true"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.contains("longship")), "{names:?}");
}

#[test]
fn tags_move_and_copy_with_their_node_and_go_with_it() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    c.put_file("viking://resources/proj/a.md", "alpha wombat");
    c.put_file("viking://resources/proj/sub/b.md", "beta wombat");
    set(
        &c,
        json!({"uri": "viking://resources/proj", "tags": ["kind=project"]}),
    );
    set(
        &c,
        json!({"uri": "viking://resources/proj/a.md", "tags": ["file=a"]}),
    );
    // Recursive: every node below gets the tags too (merged under append).
    let r = set(
        &c,
        json!({"uri": "viking://resources/proj", "tags": ["owner=alice"], "mode": "append", "recursive": true}),
    );
    assert_eq!(r["success_count"], 4, "{r}");
    assert_eq!(
        attrs(&c, "viking://resources/proj/a.md"),
        strings(&["file=a", "owner=alice"])
    );
    assert_eq!(
        attrs(&c, "viking://resources/proj/sub/b.md"),
        ["owner=alice"]
    );

    // mv of the directory: its own tags and its subtree's move with it.
    ok(&c.mv("viking://resources/proj", "viking://resources/moved"));
    assert_eq!(
        attrs(&c, "viking://resources/moved"),
        strings(&["kind=project", "owner=alice"])
    );
    assert_eq!(
        attrs(&c, "viking://resources/moved/a.md"),
        strings(&["file=a", "owner=alice"])
    );
    assert_eq!(
        attrs(&c, "viking://resources/moved/sub/b.md"),
        ["owner=alice"]
    );
    assert_eq!(
        hit_uris(&c, json!({"query": "wombat", "tags": ["file=a"]})),
        ["viking://resources/moved/a.md"]
    );
    // mv of a file into another directory.
    c.mkdir("viking://resources/elsewhere", None);
    ok(&c.mv(
        "viking://resources/moved/a.md",
        "viking://resources/elsewhere/a2.md",
    ));
    assert_eq!(
        attrs(&c, "viking://resources/elsewhere/a2.md"),
        strings(&["file=a", "owner=alice"])
    );
    // cp: the copy carries the tags, the source keeps them.
    ok(&c.post(
        "/api/v1/fs/cp",
        json!({"from_uri": "viking://resources/moved", "to_uri": "viking://resources/copy", "recursive": true}),
    ));
    assert_eq!(
        attrs(&c, "viking://resources/copy"),
        strings(&["kind=project", "owner=alice"])
    );
    assert_eq!(
        attrs(&c, "viking://resources/copy/sub/b.md"),
        ["owner=alice"]
    );
    assert_eq!(
        attrs(&c, "viking://resources/moved/sub/b.md"),
        ["owner=alice"]
    );
    let mut copies = hit_uris(
        &c,
        json!({"query": "beta", "tags": ["owner=alice"], "level": 2}),
    );
    copies.sort();
    assert_eq!(
        copies,
        [
            "viking://resources/copy/sub/b.md",
            "viking://resources/moved/sub/b.md"
        ]
    );

    // rm: the tags go with the node; a new node of the same name starts bare.
    ok(&c.rm("viking://resources/elsewhere/a2.md", false));
    c.put_file("viking://resources/elsewhere/a2.md", "fresh");
    assert!(attrs(&c, "viking://resources/elsewhere/a2.md").is_empty());
    ok(&c.rm("viking://resources/copy", true));
    c.put_file("viking://resources/copy/sub/b.md", "fresh");
    assert!(attrs(&c, "viking://resources/copy").is_empty());
    assert!(attrs(&c, "viking://resources/copy/sub/b.md").is_empty());
}

#[test]
fn tags_reach_instance_b_and_concurrent_writers_on_two_instances_keep_all() {
    let st = Storage::new();
    let opts = Opts::dev().env("LONGSHIP_SEARCH__REFRESH_INTERVAL_MS", "1000");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let ca = Dev::new(&a, "acme", "alice");
    let cb = Dev::new(&b, "acme", "alice");
    ca.put_file("viking://resources/shared/n.md", "numbat notes");
    eventually(BOUND, || {
        hit_uris(&cb, json!({"query": "numbat", "level": 2})).len() == 1
    })
    .expect("the file reaches B");
    set(
        &ca,
        json!({"uri": "viking://resources/shared/n.md", "tags": ["stage=draft"]}),
    );
    // The tag change reaches B's index through the change records.
    eventually(BOUND, || {
        hits(&cb, json!({"query": "numbat", "tags": ["stage=draft"]}))
            == vec![(
                "viking://resources/shared/n.md".to_string(),
                strings(&["stage=draft"]),
            )]
    })
    .expect("the tag filter matches on B within the bound");
    assert_eq!(
        attrs(&cb, "viking://resources/shared/n.md"),
        ["stage=draft"]
    );

    // Two instances appending different keys to one node at once: nothing is lost.
    let rounds = 15;
    std::thread::scope(|scope| {
        for (who, c) in [("a", &ca), ("b", &cb)] {
            scope.spawn(move || {
                for i in 0..rounds {
                    let r = c.post(
                        SET_TAGS,
                        json!({"uri": "viking://resources/shared/n.md", "tags": [format!("{who}{i}=v")], "mode": "append"}),
                    );
                    assert_eq!(r.status, 200, "{:?}", r.body);
                }
            });
        }
    });
    let tags = attrs(&ca, "viking://resources/shared/n.md");
    assert_eq!(tags.len(), 1 + 2 * rounds, "{tags:?}");
}

fn tag_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("no tags: {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn listings_filter_and_report_tags_and_add_resource_stores_them() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = crate::harness::api::create_account(&s, "acme", "alice");
    let zip = crate::resources::zip_bytes(&[
        ("README.md", b"# Kit\n\nA kit of tools for koalas.\n"),
        ("docs/guide.md", b"# Guide\n\nkoala guide text\n"),
    ]);
    let r = crate::resources::add_file(
        &s,
        &key,
        "kit.zip",
        &zip,
        json!({"tags": ["Source=Upload", "team=docs"]}),
    );
    let root = r["root_uri"].as_str().unwrap().to_string();
    let get = |path: &str| {
        let r = s.get(path, Some(&key));
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        r.result().clone()
    };
    let attrs_of =
        |uri: &str| tag_list(&get(&format!("/api/v1/fs/attrs?uri={}", q(uri)))["attrs"]["tags"]);
    // Every node of the ingested tree carries the tags.
    let tagged = strings(&["source=upload", "team=docs"]);
    assert_eq!(attrs_of(&root), tagged);
    assert_eq!(attrs_of(&format!("{root}/docs")), tagged);
    let files: Vec<String> = crate::resources::tree(&s, &key, &q(&root))
        .into_iter()
        .filter(|p| p.ends_with(".md") && !p.contains("/.") && !p.starts_with('.'))
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(attrs_of(&format!("{root}/{f}")), tagged, "{f}");
    }
    // A find filtered by them sees the tree.
    let r = s.post(
        FIND,
        Some(&key),
        json!({"query": "koala", "tags": ["team=docs"]}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        !r.result()["resources"].as_array().unwrap().is_empty(),
        "{:?}",
        r.body
    );

    // One file gets an extra tag; ls/tree/grep/glob filter on it and report tags.
    let guide = files
        .iter()
        .find(|f| f.contains("guide"))
        .map(|f| format!("{root}/{f}"))
        .expect("guide file");
    let r = s.post(
        SET_TAGS,
        Some(&key),
        json!({"uri": guide, "tags": ["star=yes"], "mode": "append"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let guide_dir = guide.rsplit_once('/').unwrap().0.to_string();
    let ls = get(&format!(
        "/api/v1/fs/ls?uri={}&tags=star%3Dyes&include_tags=true&output=original",
        q(&guide_dir)
    ));
    let ls = ls.as_array().unwrap();
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["uri"], guide.as_str());
    assert_eq!(
        tag_list(&ls[0]["tags"]),
        strings(&["source=upload", "team=docs", "star=yes"])
    );
    // Without include_tags no tags field; without a filter every entry.
    let plain = get(&format!(
        "/api/v1/fs/ls?uri={}&output=original",
        q(&guide_dir)
    ));
    assert!(plain
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e.get("tags").is_none()));
    let tree = get(&format!(
        "/api/v1/fs/tree?uri={}&tags=star%3Dyes&tags=team%3Ddocs&output=original",
        q(&root)
    ));
    let tree_uris: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["uri"].as_str().unwrap())
        .collect();
    assert_eq!(tree_uris, [guide.as_str()]);
    let grep = s.post(
        "/api/v1/search/grep",
        Some(&key),
        json!({"uri": root, "pattern": "koala", "tags": ["star=yes"]}),
    );
    let grep = ok(&grep);
    let matches = grep["matches"].as_array().unwrap();
    assert!(!matches.is_empty(), "{grep}");
    assert!(matches.iter().all(|m| m["uri"] == guide.as_str()), "{grep}");
    assert_eq!(
        tag_list(&matches[0]["tags"]),
        strings(&["source=upload", "team=docs", "star=yes"])
    );
    let grep_all = s.post(
        "/api/v1/search/grep",
        Some(&key),
        json!({"uri": root, "pattern": "koala", "include_tags": true}),
    );
    let grep_all = ok(&grep_all);
    assert!(grep_all["count"].as_u64().unwrap() >= 2, "{grep_all}");
    assert!(grep_all["matches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| tag_list(&m["tags"]).contains(&"team=docs".to_string())));
    let glob = s.post(
        "/api/v1/search/glob",
        Some(&key),
        json!({"uri": root, "pattern": "**/*.md", "tags": ["star=yes"]}),
    );
    let glob = ok(&glob);
    assert_eq!(glob["count"], 1, "{glob}");
    assert_eq!(glob["matches"][0]["uri"], guide.as_str());
    assert_eq!(tag_list(&glob["matches"][0]["tags"]).len(), 3);
    // Bad tag filters: 400.
    for path in [
        format!("/api/v1/fs/ls?uri={}&tags=nope", q(&root)),
        format!("/api/v1/fs/tree?uri={}&tags=a%3Db%3Dc", q(&root)),
    ] {
        err(&s.get(&path, Some(&key)), 400, "INVALID_ARGUMENT");
    }
    err(
        &s.post(
            "/api/v1/search/glob",
            Some(&key),
            json!({"pattern": "*", "tags": ["x"]}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
}

const BATCH: &str = "/api/v1/content/batch-write";

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn read(c: &Dev, uri: &str) -> String {
    ok(&c.read(uri, "")).as_str().unwrap().to_string()
}

#[test]
fn batch_write_checks_revisions_skips_conflicts_keeps_earlier_writes_and_is_bounded() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::dev()
            .env("LONGSHIP_CONTENT__BATCH_WRITE_MAX_OPERATIONS", "5")
            .env("LONGSHIP_CONTENT__BATCH_WRITE_MAX_BYTES", "4096"),
    );
    let c = Dev::new(&s, "acme", "alice");
    let root = "viking://resources/bw";
    c.put_file("viking://resources/bw/a.md", "one");
    // Revisions match: every operation written, created/updated reported, tags stored.
    let r = c.post(
        BATCH,
        json!({"root_uri": root, "operations": [
            {"uri": "viking://resources/bw/b.md", "content": "bandicoot", "mode": "create", "tags": ["k=v"]},
            {"uri": "viking://resources/bw/a.md", "content": "two", "expected_sha256": sha("one")},
            {"uri": "viking://resources/bw/bin/c.dat", "content_base64": "AAEC"},
            {"uri": "viking://resources/bw/a.md.log", "content": "x", "mode": "append"},
        ]}),
    );
    let res = ok(&r);
    assert_eq!(res["root_uri"], root);
    assert_eq!(res["updated"], json!(["viking://resources/bw/a.md"]));
    assert_eq!(
        res["created"],
        json!([
            "viking://resources/bw/a.md.log",
            "viking://resources/bw/b.md",
            "viking://resources/bw/bin/c.dat"
        ])
    );
    assert!(res.get("conflicts").is_none());
    assert_eq!(read(&c, "viking://resources/bw/a.md"), "two");
    assert_eq!(attrs(&c, "viking://resources/bw/b.md"), ["k=v"]);
    assert_eq!(
        hit_uris(&c, json!({"query": "bandicoot", "tags": ["k=v"]})),
        ["viking://resources/bw/b.md"]
    );
    let dl = c.get(&format!(
        "/api/v1/content/download?uri={}",
        q("viking://resources/bw/bin/c.dat")
    ));
    assert_eq!(dl.raw, [0u8, 1, 2]);

    // A stale revision: 409 and nothing of the batch written (checked before any write).
    let stale = json!({"root_uri": root, "operations": [
        {"uri": "viking://resources/bw/a.md", "content": "three", "expected_sha256": sha("one")},
        {"uri": "viking://resources/bw/d.md", "content": "d"},
        {"uri": "viking://resources/bw/gone.md", "content": "g", "expected_sha256": sha("x")},
    ]});
    err(&c.post(BATCH, stale.clone()), 409, "CONFLICT");
    assert_eq!(read(&c, "viking://resources/bw/a.md"), "two");
    err(&c.read("viking://resources/bw/d.md", ""), 404, "NOT_FOUND");
    // skip_conflicts: conflicting targets reported per item and left alone, the rest written;
    // an unchanged body under a matching revision is reported unchanged.
    let mut skip = stale;
    skip["skip_conflicts"] = json!(true);
    skip["operations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"uri": "viking://resources/bw/b.md", "content": "bandicoot", "expected_sha256": sha("bandicoot")}));
    let r = c.post(BATCH, skip);
    let res = ok(&r);
    assert_eq!(res["created"], json!(["viking://resources/bw/d.md"]));
    assert_eq!(res["unchanged"], json!(["viking://resources/bw/b.md"]));
    let conflicts = res["conflicts"].as_array().unwrap();
    let conflict_uris: Vec<&str> = conflicts
        .iter()
        .map(|c| c["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        conflict_uris,
        [
            "viking://resources/bw/a.md",
            "viking://resources/bw/gone.md"
        ]
    );
    assert!(
        conflicts.iter().all(|c| c["code"] == "CONFLICT"),
        "{conflicts:?}"
    );
    assert_eq!(read(&c, "viking://resources/bw/a.md"), "two");
    assert_eq!(read(&c, "viking://resources/bw/d.md"), "d");

    // Bounds: more operations than allowed is 400, more bytes 413; nothing written.
    let many: Vec<Value> = (0..6)
        .map(|i| json!({"uri": format!("viking://resources/bw/m{i}.md"), "content": "m"}))
        .collect();
    err(
        &c.post(BATCH, json!({"root_uri": root, "operations": many})),
        400,
        "INVALID_ARGUMENT",
    );
    let big = json!({"root_uri": root, "operations": [
        {"uri": "viking://resources/bw/big1.md", "content": "x".repeat(3000)},
        {"uri": "viking://resources/bw/big2.md", "content": "x".repeat(3000)},
    ]});
    err(&c.post(BATCH, big), 413, "RESOURCE_EXHAUSTED");
    err(
        &c.read("viking://resources/bw/big1.md", ""),
        404,
        "NOT_FOUND",
    );
    err(&c.read("viking://resources/bw/m0.md", ""), 404, "NOT_FOUND");

    // Bad input: clear 400s.
    for bad in [
        json!({"root_uri": root, "operations": []}),
        json!({"root_uri": "viking://resources", "operations": [{"uri": "viking://resources/x.md", "content": "x"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/other/x.md", "content": "x"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "content_base64": "eA=="}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content_base64": "%%%"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "mode": "merge"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "expected_sha256": "ABC"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "tags": ["bad"]}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "tags": ["memory_type=events"]}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x"}, {"uri": "viking://resources/bw/x.md", "content": "y"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/bin", "content": "x"}]}),
        json!({"root_uri": "viking://resources/bw/a.md", "operations": [{"uri": "viking://resources/bw/a.md/x.md", "content": "x"}]}),
        json!({"root_uri": root, "operations": [{"uri": "viking://resources/bw/x.md", "content": "x", "zzz": 1}]}),
    ] {
        let r = c.post(BATCH, bad.clone());
        assert_eq!(r.status, 400, "{bad}: {:?}", r.body);
    }
    err(&c.read("viking://resources/bw/x.md", ""), 404, "NOT_FOUND");

    // A later operation failing keeps the earlier ones: the quota admits the first, not the
    // second.
    let q_st = Storage::new();
    let qs = Server::start(
        &q_st,
        Opts::dev().env("LONGSHIP_QUOTA__ACCOUNT_MAX_BYTES", "2000"),
    );
    let qc = Dev::new(&qs, "acme", "alice");
    qc.put_file("viking://resources/q/seed.md", "seed");
    let r = qc.post(
        BATCH,
        json!({"root_uri": "viking://resources/q", "operations": [
            {"uri": "viking://resources/q/a.md", "content": "small"},
            {"uri": "viking://resources/q/b.md", "content": "x".repeat(5000)},
        ]}),
    );
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert_eq!(
        r.body["error"]["details"]["written"],
        json!(["viking://resources/q/a.md"])
    );
    assert_eq!(read(&qc, "viking://resources/q/a.md"), "small");
    err(&qc.read("viking://resources/q/b.md", ""), 404, "NOT_FOUND");
    // And the kept write is findable.
    assert_eq!(
        hit_uris(&qc, json!({"query": "small", "level": 2})),
        ["viking://resources/q/a.md"]
    );
}

const REINDEX: &str = "/api/v1/content/reindex";

fn find_with_key(s: &Server, key: &str, query: &str) -> Vec<String> {
    let r = s.post(FIND, Some(key), json!({"query": query, "level": 2}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    ["memories", "resources", "skills"]
        .iter()
        .flat_map(|k| r.result()[*k].as_array().cloned().unwrap_or_default())
        .map(|h| h["uri"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn reindex_rebuilds_a_subtree_waiting_or_as_a_task_and_users_only_their_own() {
    let st = Storage::new();
    // Summaries refreshed as shipped (the harness defers them): semantic reindex uses them.
    let s = Server::start(&st, crate::layout::with_summaries(Opts::default()));
    let admin = crate::harness::api::create_account(&s, "acme", "alice");
    let bob = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    let write = |key: &str, uri: &str, content: &str| {
        let r = s.post(
            "/api/v1/content/write",
            Some(key),
            json!({"uri": uri, "content": content}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    };
    write(&admin, "viking://resources/lib/seen.md", "visible platypus");
    // Files put in storage behind the server's back are not indexed (no change record)...
    crate::harness::api::plant(&st, "acme/resources/lib/planted.md", b"hidden echidna");
    assert!(find_with_key(&s, &admin, "echidna").is_empty());
    // ...until a reindex of their subtree: wait=true answers when the index has them.
    let r = s.post(
        REINDEX,
        Some(&admin),
        json!({"uri": "viking://resources/lib"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let res = r.result();
    assert_eq!(res["status"], "completed");
    assert_eq!(res["mode"], "vectors_only");
    assert_eq!(res["object_type"], "resource");
    assert!(res["scanned_records"].as_u64().unwrap() >= 2, "{res}");
    assert_eq!(
        find_with_key(&s, &admin, "echidna"),
        ["viking://resources/lib/planted.md"]
    );
    // Tags planted with it (a restored map) come back with the rebuild too.
    crate::harness::api::plant(
        &st,
        "acme/resources/lib/.longship-tags",
        br#"{"nodes":{"planted.md":["restored=yes"]}}"#,
    );
    let r = s.post(
        REINDEX,
        Some(&admin),
        json!({"uri": "viking://resources/lib/planted.md", "mode": "semantic_and_vectors"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = s.post(
        FIND,
        Some(&admin),
        json!({"query": "echidna", "tags": ["restored=yes"], "level": 2}),
    );
    assert_eq!(
        r.result()["resources"][0]["uri"],
        "viking://resources/lib/planted.md"
    );

    // wait=false: a task that completes with the result.
    crate::harness::api::plant(&st, "acme/resources/lib/late.md", b"late wombat");
    let r = s.post(
        REINDEX,
        Some(&admin),
        json!({"uri": "viking://resources/lib", "wait": false}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["status"], "accepted");
    let task = r.result()["task_id"].as_str().unwrap().to_string();
    let done = eventually(BOUND, || {
        let t = s.get(&format!("/api/v1/tasks/{task}"), Some(&admin));
        t.status == 200 && t.result()["status"] == "completed"
    });
    assert!(done.is_some(), "the reindex task completes");
    assert!(eventually(BOUND, || find_with_key(&s, &admin, "wombat").len() == 1).is_some());

    // semantic_and_vectors also regenerates the subtree's directory summaries.
    let r = s.post(
        "/api/v1/fs/mkdir",
        Some(&admin),
        json!({"uri": "viking://resources/sem"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    crate::harness::api::plant(
        &st,
        "acme/resources/sem/numbat-facts.md",
        b"# Numbat facts\n\nNumbats eat termites.\n",
    );
    let overview = || {
        let r = s.get(
            &format!(
                "/api/v1/content/overview?uri={}",
                q("viking://resources/sem")
            ),
            Some(&admin),
        );
        r.result().as_str().unwrap_or_default().to_string()
    };
    assert!(!overview().contains("numbat"), "{}", overview());
    let r = s.post(
        REINDEX,
        Some(&admin),
        json!({"uri": "viking://resources/sem", "mode": "semantic_and_vectors"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        eventually(BOUND, || overview().to_lowercase().contains("numbat")).is_some(),
        "summary regenerated: {}",
        overview()
    );

    // A USER may reindex only their own namespace.
    write(&bob, "viking://user/bob/memories/facts/f.md", "bob fact");
    let r = s.post(
        REINDEX,
        Some(&bob),
        json!({"uri": "viking://resources/lib"}),
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = s.post(REINDEX, Some(&bob), json!({"uri": "viking://user/alice"}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = s.post(REINDEX, Some(&bob), json!({"uri": "viking://user/bob"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["object_type"], "user_namespace");

    // Bad input: 400 / 404.
    for (body, status) in [
        (
            json!({"uri": "viking://resources/lib", "mode": "everything"}),
            400,
        ),
        (json!({"uri": "viking://user", "recursive": false}), 400),
        (
            json!({"uri": "viking://resources/lib", "tags": ["bad"]}),
            400,
        ),
        (
            json!({"uri": "viking://resources/lib", "wait": "perhaps"}),
            400,
        ),
        (json!({"mode": "vectors_only"}), 400),
        (json!({"uri": "viking://resources/none"}), 404),
    ] {
        let r = s.post(REINDEX, Some(&admin), body.clone());
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
    }
}

/// A removed user's tags go with them: the user directory's own entry lives in its parent's
/// tag file, so a user registered later under the same id must start with no tags.
#[test]
fn a_removed_users_tags_are_not_inherited_by_a_new_user_of_that_id() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = crate::harness::api::create_account(&s, "acme", "alice");
    let bob = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    let attrs_of = |key: &str| {
        let r = s.get(
            &format!("/api/v1/fs/attrs?uri={}", q("viking://user/bob")),
            Some(key),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        tag_list(&r.result()["attrs"]["tags"])
    };
    let r = s.post(
        SET_TAGS,
        Some(&bob),
        json!({"uri": "viking://user/bob", "tags": ["team=red"]}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(attrs_of(&bob), ["team=red"]);
    let r = s.delete(
        "/api/v1/admin/accounts/acme/users/bob",
        Some(crate::harness::ROOT_KEY),
    );
    assert!(r.status == 200 || r.status == 202, "{:?}", r.body);
    let task = r.result()["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let done = std::time::Instant::now();
    while done.elapsed() < BOUND {
        let t = s.get(
            &format!("/api/v1/tasks/{task}"),
            Some(crate::harness::ROOT_KEY),
        );
        if t.result()["status"] == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let bob_again = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    assert!(attrs_of(&bob_again).is_empty());
}
