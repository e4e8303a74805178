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
    let all = hits(&c, json!({"query": "quokka"}));
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
            json!({"query": "quokka", "filter": {"op": "must_not", "field": "search_tags", "conds": ["team=pinnipeds"]}})
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
    let mut copies = hit_uris(&c, json!({"query": "beta", "tags": ["owner=alice"]}));
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
        hit_uris(&cb, json!({"query": "numbat"})).len() == 1
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
