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

fn quick() -> Opts {
    Opts::default().env("LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS", "300")
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
        Opts::default().env("LONGSHIP_RESOURCES__OVERVIEW_SWEEP_SECS", "1"),
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
