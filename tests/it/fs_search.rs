//! Search API (spec §8): S1 grep, S2 glob; a server that keeps answering /health while
//! unlimited greps run.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{err, ok, plant, Dev};
use crate::harness::{Opts, Server, Storage};

fn grep(c: &Dev, body: Value) -> crate::harness::Resp {
    c.post("/api/v1/search/grep", body)
}

fn glob(c: &Dev, body: Value) -> crate::harness::Resp {
    c.post("/api/v1/search/glob", body)
}

fn fixture(c: &Dev) {
    c.put_file(
        "viking://resources/docs/auth.md",
        "# Auth\n## Login\nUser authentication is handled by...\nAUTH tokens\n",
    );
    c.put_file("viking://resources/docs/guide.md", "guide\nno match here\n");
    c.put_file(
        "viking://resources/docs/deep/a/b/c.md",
        "authentication deep\n",
    );
    c.put_file(
        "viking://resources/docs/.hidden.md",
        "authentication hidden\n",
    );
    c.put_file("viking://resources/other/x.md", "authentication other\n");
}

#[test]
fn grep_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    fixture(&c);
    let r = grep(
        &c,
        json!({"uri": "viking://resources/docs", "pattern": "auth(entication)?"}),
    );
    let res = ok(&r);
    assert_eq!(
        res["matches"],
        json!([
            {"uri": "viking://resources/docs/auth.md", "line": 3, "content": "User authentication is handled by..."},
            {"uri": "viking://resources/docs/deep/a/b/c.md", "line": 1, "content": "authentication deep"},
        ])
    );
    assert_eq!(res["count"], 2);
    assert_eq!(res["match_count"], 2);
    assert_eq!(res["files_scanned"], 3, "hidden files are skipped");

    let r = grep(
        &c,
        json!({"uri": "viking://resources/docs", "pattern": "auth", "case_insensitive": true}),
    );
    assert_eq!(ok(&r)["count"], 4);
    let r = grep(
        &c,
        json!({"uri": "viking://resources", "pattern": "auth", "case_insensitive": true, "node_limit": 2}),
    );
    assert_eq!(ok(&r)["count"], 2);
    let r = grep(
        &c,
        json!({"uri": "viking://resources", "pattern": "authentication", "node_limit": 0}),
    );
    assert_eq!(ok(&r)["count"], 3);
    let r = grep(
        &c,
        json!({"uri": "viking://resources", "pattern": "authentication", "node_limit": null, "exclude_uri": "viking://resources/docs/deep"}),
    );
    assert_eq!(ok(&r)["count"], 2);
    let r = grep(
        &c,
        json!({"uri": "viking://resources/docs", "pattern": "authentication", "level_limit": 1}),
    );
    assert_eq!(ok(&r)["count"], 1);
    // A file URI greps that file.
    let r = grep(
        &c,
        json!({"uri": "viking://resources/docs/auth.md", "pattern": "^#"}),
    );
    assert_eq!(ok(&r)["count"], 2);
    assert_eq!(ok(&r)["files_scanned"], 1);
    // Context lines.
    let r = grep(
        &c,
        json!({"uri": "viking://resources/docs/auth.md", "pattern": "handled", "before_context": 1, "after_context": 5}),
    );
    assert_eq!(
        ok(&r)["matches"][0],
        json!({"uri": "viking://resources/docs/auth.md", "line": 3, "content": "User authentication is handled by...",
               "before_context": [{"line": 2, "content": "## Login"}],
               "after_context": [{"line": 4, "content": "AUTH tokens"}, {"line": 5, "content": ""}]})
    );

    let e = err(
        &grep(&c, json!({"uri": "viking://resources", "pattern": "a("})),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid operation: Invalid regex pattern: regex parse error"),
        "{e}"
    );
    assert_eq!(e["details"]["resource"], "viking://resources");
    // A pathological pattern is refused by the compiled-size limit, quickly.
    let t = Instant::now();
    let e = err(
        &grep(
            &c,
            json!({"uri": "viking://resources", "pattern": "(\\w{500}){500}"}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    assert!(e["message"].as_str().unwrap().contains("size limit"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let e = err(
        &grep(
            &c,
            json!({"uri": "viking://resources/none", "pattern": "x"}),
        ),
        404,
        "NOT_FOUND",
    );
    assert_eq!(e["message"], "File not found: viking://resources/none");
    assert_eq!(e["details"]["type"], "file");
    err(
        &grep(
            &c,
            json!({"uri": "viking://resources", "pattern": "x", "before_context": -1}),
        ),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &grep(&c, json!({"uri": "viking://resources"})),
        400,
        "INVALID_ARGUMENT",
    );
    err(
        &grep(&c, json!({"uri": "viking://temp", "pattern": "x"})),
        400,
        "INVALID_URI",
    );
}

#[test]
fn glob_rows() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::dev());
    let c = Dev::new(&s, "acme", "alice");
    fixture(&c);
    let r = glob(
        &c,
        json!({"pattern": "**", "uri": "viking://resources/docs"}),
    );
    assert_eq!(
        ok(&r),
        &json!({"matches": [
            "viking://resources/docs/auth.md",
            "viking://resources/docs/deep/",
            "viking://resources/docs/deep/a/",
            "viking://resources/docs/deep/a/b/",
            "viking://resources/docs/deep/a/b/c.md",
            "viking://resources/docs/guide.md"], "count": 6})
    );
    let r = glob(
        &c,
        json!({"pattern": "*.md", "uri": "viking://resources/docs"}),
    );
    assert_eq!(
        ok(&r)["matches"],
        json!([
            "viking://resources/docs/auth.md",
            "viking://resources/docs/guide.md"
        ])
    );
    let r = glob(
        &c,
        json!({"pattern": "**/*.md", "uri": "viking://resources", "node_limit": 2}),
    );
    assert_eq!(
        ok(&r)["matches"],
        json!([
            "viking://resources/docs/auth.md",
            "viking://resources/docs/deep/a/b/c.md"
        ])
    );
    // The default uri is the account root; literal prefixes are honoured.
    let r = glob(&c, json!({"pattern": "resources/docs/*.md"}));
    assert_eq!(ok(&r)["count"], 2);
    let r = glob(
        &c,
        json!({"pattern": "resources/o?her/[x-z].md", "node_limit": -1}),
    );
    assert_eq!(ok(&r)["matches"], json!(["viking://resources/other/x.md"]));
    let r = glob(
        &c,
        json!({"pattern": "{docs,other}/*.md", "uri": "viking://resources"}),
    );
    assert_eq!(ok(&r)["count"], 3);
    let r = glob(
        &c,
        json!({"pattern": "*.md", "uri": "viking://resources/docs", "extra_fields": ["locked"]}),
    );
    let first = &ok(&r)["matches"][0];
    assert_eq!(first["name"], "auth.md");
    assert_eq!(first["uri"], "viking://resources/docs/auth.md");
    assert_eq!(first["isDir"], false);
    assert_eq!(first["isLocked"], false);

    let e = err(&glob(&c, json!({"pattern": ""})), 400, "INVALID_ARGUMENT");
    assert_eq!(e["message"], "Search query or image_url must not be empty.");
    err(
        &glob(&c, json!({"pattern": "a[", "uri": "viking://resources"})),
        400,
        "INVALID_ARGUMENT",
    );
    let long = "a".repeat(5000);
    err(
        &glob(&c, json!({"pattern": long, "uri": "viking://resources"})),
        400,
        "INVALID_ARGUMENT",
    );
    let e = err(
        &glob(
            &c,
            json!({"pattern": "*", "uri": "viking://resources/none"}),
        ),
        404,
        "NOT_FOUND",
    );
    assert_eq!(e["details"]["type"], "directory");
    err(
        &glob(&c, json!({"uri": "viking://resources"})),
        400,
        "INVALID_ARGUMENT",
    );
    // find answers from the keyword index (tests/it/find.rs covers it).
    assert_eq!(
        c.post("/api/v1/search/find", json!({"query": "x"})).status,
        200
    );
}

#[test]
fn health_answers_during_unlimited_greps() {
    let st = Storage::new();
    // 3,000 files of ~4 KiB, written directly to disk.
    let line = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n";
    let body = line.repeat(52);
    for d in 0..30 {
        for f in 0..100 {
            let rel = format!("acme/resources/corpus/d{d:02}/f{f:03}.md");
            plant(&st, &rel, body.as_bytes());
        }
    }
    let s = Server::start(&st, Opts::dev());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut samples: Vec<Duration> = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let c = Dev::new(&s, "acme", "alice");
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                    let r = grep(&c, json!({"uri": "viking://resources/corpus", "pattern": "tempor$", "node_limit": 0}));
                    assert_eq!(ok(&r)["files_scanned"], 3000);
                    runs += 1;
                }
                assert!(runs > 0);
            });
        }
        let started = Instant::now();
        while samples.len() < 300 && started.elapsed() < Duration::from_secs(15) {
            let t = Instant::now();
            let h = s.get("/health", None);
            samples.push(t.elapsed());
            assert_eq!(h.status, 200);
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Liveness only, with a generous bound that holds on a loaded 2-core CI: the latency
    // itself (p50/p99 during these greps) is measured by bench/fs_bench.py.
    assert!(
        samples.len() >= 10,
        "only {} /health samples",
        samples.len()
    );
    let slowest = samples.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(5),
        "a /health took {slowest:?} during greps"
    );
}
