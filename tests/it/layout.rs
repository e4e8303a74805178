//! Fidelity with 0.5.2's tree (issue #21) through the real binary, on both backends:
//! directory summaries that follow their children across instances, the layout of ingested
//! directories and archives, and what of a committed session find reports.

use std::time::Duration;

use serde_json::json;

use crate::find::eventually;
use crate::harness::api::create_account;
use crate::harness::{Opts, Server, Storage};

const WRITE: &str = "/api/v1/content/write";
/// Generous bound for a debounced refresh (debounce 300 ms here) to be visible.
const BOUND: Duration = Duration::from_secs(20);

/// Wait until every directory-summary refresh of `account` is done (no mark left, seen twice
/// a moment apart: a refresh clears its marks just before it records its sidecars), so a test
/// can snapshot storage or rankings that the refresh would otherwise change under it.
pub(crate) fn wait_summaries_settled(st: &Storage, account: &str) {
    let marks = format!("{account}/_system/overviews");
    let settled = eventually(Duration::from_secs(60), || {
        st.list(&marks).is_empty() && {
            std::thread::sleep(Duration::from_millis(500));
            st.list(&marks).is_empty()
        }
    });
    assert!(
        settled.is_some(),
        "directory summaries of {account} never settled"
    );
}

/// `opts` with directory summaries refreshed as shipped (the harness turns them off).
pub(crate) fn with_summaries(opts: Opts) -> Opts {
    opts.env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "1000")
        .env("LONGSHIP_RESOURCES__OVERVIEW_SWEEP_SECS", "30")
}

fn quick() -> Opts {
    with_summaries(Opts::default()).env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "300")
}

fn sidecar(s: &Server, key: &str, which: &str, uri: &str) -> String {
    let r = s.get(&format!("/api/v1/content/{which}?uri={uri}"), Some(key));
    assert_eq!(r.status, 200, "{which} {uri}: {:?}", r.body);
    r.result().as_str().unwrap_or_default().to_string()
}

fn write(s: &Server, key: &str, uri: &str, content: &str) {
    let r = s.post(WRITE, Some(key), json!({"uri": uri, "content": content}));
    assert_eq!(r.status, 200, "write {uri}: {:?}", r.body);
}

/// Every (uri, level) find returns for `query` under viking://resources.
fn find_levels(s: &Server, key: &str, query: &str) -> Vec<(String, u64)> {
    let r = s.post(
        "/api/v1/search/find",
        Some(key),
        json!({"query": query, "target_uri": "viking://resources", "limit": 20}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()["resources"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|h| {
            (
                h["uri"].as_str().unwrap_or_default().to_string(),
                h["level"].as_u64().unwrap_or(9),
            )
        })
        .collect()
}

#[test]
fn a_directory_overview_follows_its_children_on_every_instance() {
    let st = Storage::new();
    let a = Server::start(&st, quick());
    let b = Server::start(&st, quick());
    let key = create_account(&a, "acme", "admin1");
    let dir = "viking://resources/notes";
    let r = a.post("/api/v1/fs/mkdir", Some(&key), json!({"uri": dir}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(sidecar(&a, &key, "overview", dir).contains("[Directory overview is not ready]"));

    // Children written on both instances both reach the overview, read on either.
    write(
        &a,
        &key,
        "viking://resources/notes/alpha.md",
        "# Alpha\n\nAlpha describes the quokkawhistle protocol in detail.\n",
    );
    write(
        &b,
        &key,
        "viking://resources/notes/beta.md",
        "# Beta\n\nBeta lists the release steps.\n",
    );
    let both = eventually(BOUND, || {
        let o = sidecar(&b, &key, "overview", dir);
        o.contains("alpha.md") && o.contains("beta.md")
    });
    let overview = sidecar(&a, &key, "overview", dir);
    assert!(
        both.is_some(),
        "overview never listed both children: {overview}"
    );
    assert!(
        overview.contains("quokkawhistle"),
        "the overview carries the children's abstracts: {overview}"
    );
    let abs = sidecar(&a, &key, "abstract", dir);
    assert_ne!(abs, "# notes", "the mkdir default abstract was refreshed");
    assert!(!abs.contains("not ready"), "{abs}");

    // The refreshed sidecars are indexed: the directory itself is found on B by its summary.
    let found = eventually(BOUND, || {
        find_levels(&b, &key, "quokkawhistle")
            .iter()
            .any(|(u, level)| u.starts_with(dir) && *level <= 1)
    });
    assert!(
        found.is_some(),
        "directory not found by its summary on B: {:?}",
        find_levels(&b, &key, "quokkawhistle")
    );

    // A removal on B and a new subdirectory on A: the overview follows, and the child
    // directory's own summary reaches its parent's overview.
    let r = b.delete(
        "/api/v1/fs?uri=viking%3A%2F%2Fresources%2Fnotes%2Fbeta.md",
        Some(&key),
    );
    assert!(r.status == 200, "{:?}", r.body);
    write(
        &a,
        &key,
        "viking://resources/notes/deep/gamma.md",
        "# Gamma\n\nGamma covers the zephyrquill cache.\n",
    );
    let followed = eventually(BOUND, || {
        let o = sidecar(&a, &key, "overview", dir);
        !o.contains("beta.md") && o.contains("deep/") && o.contains("zephyrquill")
    });
    assert!(
        followed.is_some(),
        "overview did not follow rm and a new subdirectory: {}",
        sidecar(&a, &key, "overview", dir)
    );
    assert!(sidecar(&b, &key, "overview", "viking://resources/notes/deep").contains("gamma.md"));
    // No mark is left behind once everything is refreshed.
    let left = eventually(BOUND, || st.list("acme/_system/overviews").is_empty());
    assert!(
        left.is_some(),
        "marks left: {:?}",
        st.list("acme/_system/overviews")
    );
}

#[test]
fn a_refresh_an_instance_never_did_is_done_by_another() {
    let st = Storage::new();
    // A debounces far beyond the test: only B's scan for left marks can refresh.
    let mut a = Server::start(
        &st,
        Opts::default().env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "600000"),
    );
    let key = create_account(&a, "acme", "admin1");
    let dir = "viking://resources/left";
    write(
        &a,
        &key,
        "viking://resources/left/doc.md",
        "# Doc\n\nThe doc names the marmotlantern service.\n",
    );
    a.kill9();
    let b = Server::start(
        &st,
        with_summaries(Opts::default()).env("LONGSHIP_RESOURCES__OVERVIEW_SWEEP_SECS", "1"),
    );
    let done = eventually(BOUND, || {
        sidecar(&b, &key, "overview", dir).contains("marmotlantern")
    });
    assert!(
        done.is_some(),
        "left mark never refreshed: {}",
        sidecar(&b, &key, "overview", dir)
    );
}

#[test]
fn a_committed_sessions_archive_is_not_found_as_a_resource() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let admin = create_account(&s, "acme", "admin1");
    let bob = crate::harness::api::register(&s, &admin, "acme", "bob", "user");
    let r = s.post("/api/v1/sessions", Some(&bob), json!({"session_id": "s1"}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    for text in [
        "we planned the wombatfjord migration",
        "the wombatfjord cutover is on friday",
    ] {
        let r = s.post(
            "/api/v1/sessions/s1/messages",
            Some(&bob),
            json!({"role": "user", "content": text}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    let r = s.post("/api/v1/sessions/s1/commit", Some(&bob), json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    // The archive exists (the commit answered after writing it)…
    let r = s.get(
        "/api/v1/fs/ls?uri=viking://user/bob/sessions/s1/history&output=original",
        Some(&bob),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        !r.result().as_array().map(Vec::is_empty).unwrap_or(true),
        "no archive: {:?}",
        r.body
    );
    // …and a document with the same word is found, so the index has caught up.
    write(
        &s,
        &bob,
        "viking://resources/control.md",
        "wombatfjord control document",
    );
    for route in ["/api/v1/search/find", "/api/v1/search/search"] {
        let r = s.post(
            route,
            Some(&bob),
            json!({"query": "wombatfjord", "limit": 50}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        let res = r.result();
        let hits: Vec<(String, String)> = ["memories", "resources", "skills"]
            .iter()
            .flat_map(|k| res[*k].as_array().cloned().unwrap_or_default())
            .map(|h| {
                (
                    h["uri"].as_str().unwrap_or_default().to_string(),
                    h["context_type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert!(
            hits.iter()
                .any(|(u, _)| u == "viking://resources/control.md"),
            "{route}: {hits:?}"
        );
        assert!(
            hits.iter().all(|(u, _)| !u.contains("/sessions/")),
            "{route}: session internals reported: {hits:?}"
        );
    }
}

/// The files of a project as a client has them on disk (and zips them, as the SDK does).
const PROJECT: &[(&str, &str)] = &[
    ("README.md", "# Kit\n\nThe kit builds marmoset pipelines.\n"),
    (
        "docs/Getting Started.md",
        "# Getting Started\n\nInstall the kit.\n",
    ),
    ("docs/api.md", "# API\n\nThe API reference.\n"),
    ("docs/api/auth.md", "# Auth\n\nKeys are hashed.\n"),
    ("docs/notes.txt", "plain notes about releases\n"),
    ("docs/page.html", "<h1>Page</h1><p>Rendered page body.</p>"),
    ("src/lib.rs", "// Library root.\npub fn build() {}\n"),
    ("data/table.csv", "a,b\n1,2\n"),
];

/// 0.5.2's layout of PROJECT under its root, node by node (directories and files).
const PROJECT_LAYOUT: &[&str] = &[
    "README",
    "README/README.md",
    "data",
    "data/table.csv",
    "docs",
    "docs/Getting_Started",
    "docs/Getting_Started/Getting_Started.md",
    "docs/api",
    "docs/api/api.md",
    "docs/api/auth",
    "docs/api/auth/auth.md",
    "docs/notes",
    "docs/notes/notes.md",
    "docs/page",
    "docs/page/page.md",
    "src",
    "src/lib.rs",
];

fn sorted_tree(s: &Server, key: &str, uri: &str) -> Vec<String> {
    let mut t = crate::resources::tree(s, key, uri);
    t.sort();
    t
}

#[test]
fn ingested_directories_and_zips_are_laid_out_as_0_5_2() {
    let host = tempfile::tempdir().unwrap();
    let allowed = host.path().join("shared");
    for (rel, text) in PROJECT {
        let path = allowed.join("kit").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let config = host.path().join("longship.toml");
    std::fs::write(
        &config,
        format!(
            "[resources]\nlocal_path_allowlist = [{:?}]\n",
            allowed.to_str().unwrap()
        ),
    )
    .unwrap();
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .arg("--config")
            .arg(config.to_str().unwrap()),
    );
    let key = create_account(&s, "acme", "admin1");

    // A ZIP (what the SDK uploads for a directory).
    let entries: Vec<(&str, &[u8])> = PROJECT.iter().map(|(p, t)| (*p, t.as_bytes())).collect();
    let zip = crate::resources::zip_bytes(&entries);
    let r = crate::resources::add_file(&s, &key, "kit.zip", &zip, json!({}));
    assert_eq!(r["root_uri"], "viking://resources/kit", "{r}");
    assert_eq!(
        sorted_tree(&s, &key, "viking://resources/kit"),
        PROJECT_LAYOUT
    );

    // The same directory from the server's disk.
    let r = s.post(
        "/api/v1/resources",
        Some(&key),
        json!({"path": allowed.join("kit").to_str().unwrap(), "wait": true,
               "to": "viking://resources/kit_local"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        sorted_tree(&s, &key, "viking://resources/kit_local"),
        PROJECT_LAYOUT
    );

    // Each document node holds the document as Markdown and has its own summaries; code and
    // other files keep their names and bytes.
    let read = |uri: &str| {
        let r = s.get(&format!("/api/v1/content/read?uri={uri}"), Some(&key));
        assert_eq!(r.status, 200, "{uri}: {:?}", r.body);
        r.result().as_str().unwrap_or_default().to_string()
    };
    assert!(read("viking://resources/kit/docs/page/page.md").contains("Rendered page body."));
    assert_eq!(read("viking://resources/kit/src/lib.rs"), PROJECT[6].1);
    assert_eq!(
        read("viking://resources/kit/docs/notes/notes.md").trim(),
        "plain notes about releases"
    );
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/kit/docs/api/auth"),
        "Auth: Keys are hashed."
    );
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/kit"),
        "Kit: The kit builds marmoset pipelines."
    );

    // preserve_structure=false: every document node and file directly under the root.
    let r = crate::resources::add_file(
        &s,
        &key,
        "kit.zip",
        &zip,
        json!({"preserve_structure": false, "to": "viking://resources/flat"}),
    );
    assert_eq!(r["root_uri"], "viking://resources/flat", "{r}");
    assert_eq!(
        sorted_tree(&s, &key, "viking://resources/flat"),
        [
            "Getting_Started",
            "Getting_Started/Getting_Started.md",
            "README",
            "README/README.md",
            "api",
            "api/api.md",
            "auth",
            "auth/auth.md",
            "lib.rs",
            "notes",
            "notes/notes.md",
            "page",
            "page/page.md",
            "table.csv",
        ]
    );
}
