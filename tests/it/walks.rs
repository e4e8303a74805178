//! Walks over many directories (issue #19 item 7): tree, glob and grep list directories in
//! batches on S3 (`storage.s3.parallel_requests` listings in flight) and must still return
//! exactly what was stored, in the documented order, and stop at `node_limit`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::harness::api::{ok, q, Dev};
use crate::harness::{Opts, Server, Storage};

const DIRS: usize = 48;
const SUBDIRS: usize = 3;
const FILES: usize = 2;

fn uris(v: &Value, field: Option<&str>) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| match field {
            Some(f) => e[f].as_str().expect("uri").to_string(),
            None => e.as_str().expect("uri").to_string(),
        })
        .collect()
}

#[test]
fn walks_over_many_directories_return_every_entry() {
    let st = Storage::new();
    let mut files = Vec::new();
    let mut expected_files = Vec::new();
    for d in 0..DIRS {
        for s in 0..SUBDIRS {
            for f in 0..FILES {
                let rel = format!("d{d:02}/s{s}/f{f}.md");
                expected_files.push(format!("viking://resources/many/{rel}"));
                files.push((rel, format!("needle {d} {s} {f}\n").into_bytes()));
            }
        }
    }
    st.at("acme/resources/many").seed(files);
    // A small fan-out on S3, so a walk spans many batches.
    let s = Server::start(
        &st,
        Opts::dev().env("LONGSHIP_STORAGE__S3__PARALLEL_REQUESTS", "8"),
    );
    let c = Dev::new(&s, "acme", "alice");
    expected_files.sort();

    // glob: every file, sorted component-wise.
    let r = c.post(
        "/api/v1/search/glob",
        json!({"uri": "viking://resources/many", "pattern": "**/*.md", "node_limit": 0}),
    );
    assert_eq!(uris(&ok(&r)["matches"], None), expected_files);

    // grep: every file once, and node_limit still stops the walk.
    let r = c.post(
        "/api/v1/search/grep",
        json!({"uri": "viking://resources/many", "pattern": "needle", "node_limit": 0}),
    );
    let found: BTreeSet<String> = uris(&ok(&r)["matches"], Some("uri")).into_iter().collect();
    assert_eq!(found.len(), expected_files.len());
    assert_eq!(found, expected_files.iter().cloned().collect());
    let r = c.post(
        "/api/v1/search/grep",
        json!({"uri": "viking://resources/many", "pattern": "needle", "node_limit": 5}),
    );
    assert_eq!(ok(&r)["matches"].as_array().map(Vec::len), Some(5));

    // tree: pre-order, directories first, every level.
    let r = c.get(&format!(
        "/api/v1/fs/tree?uri={}&output=original&level_limit=5&node_limit=100000",
        q("viking://resources/many")
    ));
    let got = uris(ok(&r), Some("rel_path"));
    let mut want = Vec::new();
    for d in 0..DIRS {
        want.push(format!("d{d:02}"));
        for s in 0..SUBDIRS {
            want.push(format!("d{d:02}/s{s}"));
            for f in 0..FILES {
                want.push(format!("d{d:02}/s{s}/f{f}.md"));
            }
        }
    }
    assert_eq!(got, want);
    let r = c.get(&format!(
        "/api/v1/fs/tree?uri={}&output=original&level_limit=5&node_limit=7",
        q("viking://resources/many")
    ));
    assert_eq!(uris(ok(&r), Some("rel_path")), want[..7].to_vec());
}
