//! Resources (docs/API.md, Resources): temp uploads, add_resource from uploads, URLs and archives,
//! summaries, tasks and system/wait, against the real binary. The small HTTP servers started
//! here on loopback stand in for real web sites and for a real OpenAI-compatible chat provider.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::{create_account, register};
use crate::harness::{Opts, Resp, Server, Storage};

const RESOURCES: &str = "/api/v1/resources";
const UPLOAD: &str = "/api/v1/resources/temp_upload";

pub(crate) fn multipart(filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "longshipboundary7d93";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"upload_mode\"\r\n\r\nshared\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

pub(crate) fn upload(s: &Server, key: &str, filename: &str, data: &[u8]) -> Resp {
    let (ct, body) = multipart(filename, data);
    s.raw(
        "POST",
        UPLOAD,
        &[("X-API-Key", key), ("Content-Type", &ct)],
        &body,
    )
}

pub(crate) fn upload_id(s: &Server, key: &str, filename: &str, data: &[u8]) -> String {
    let r = upload(s, key, filename, data);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()["temp_file_id"].as_str().unwrap().to_string()
}

/// Upload and add with wait=true; returns the result.
pub(crate) fn add_file(s: &Server, key: &str, filename: &str, data: &[u8], extra: Value) -> Value {
    let id = upload_id(s, key, filename, data);
    let mut body = json!({"temp_file_id": id, "source_name": filename, "wait": true});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = s.post(RESOURCES, Some(key), body);
    assert_eq!(r.status, 200, "{filename}: {:?}", r.body);
    r.result().clone()
}

pub(crate) fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub(crate) fn tree(s: &Server, key: &str, uri: &str) -> Vec<String> {
    let r = s.get(
        &format!("/api/v1/fs/tree?uri={uri}&output=original&level_limit=10&node_limit=1000"),
        Some(key),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rel_path"].as_str().unwrap().to_string())
        .collect()
}

fn read(s: &Server, key: &str, uri: &str) -> String {
    let r = s.get(&format!("/api/v1/content/read?uri={uri}"), Some(key));
    assert_eq!(r.status, 200, "{uri}: {:?}", r.body);
    r.result().as_str().unwrap().to_string()
}

fn sidecar(s: &Server, key: &str, which: &str, uri: &str) -> String {
    let r = s.get(&format!("/api/v1/content/{which}?uri={uri}"), Some(key));
    assert_eq!(r.status, 200, "{uri}: {:?}", r.body);
    r.result().as_str().unwrap().to_string()
}

/// URIs find returns for `query` under viking://resources.
fn find(s: &Server, key: &str, query: &str) -> Vec<String> {
    let r = s.post(
        "/api/v1/search/find",
        Some(key),
        json!({"query": query, "target_uri": "viking://resources", "limit": 20}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.result()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uri"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn wait_task(s: &Server, key: &str, task_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = s.get(&format!("/api/v1/tasks/{task_id}"), Some(key));
        assert_eq!(r.status, 200, "{:?}", r.body);
        let status = r.result()["status"].as_str().unwrap_or("").to_string();
        if status == "completed" || status == "failed" {
            return r.result().clone();
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} stuck in {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sample_pdf(text: &str) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{dictionary, Document, Object, Stream};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn long_markdown() -> String {
    let para = |seed: &str, words: usize| {
        (0..words)
            .map(|i| format!("{seed}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "# Handbook\n\nThe handbook explains operations. {}\n\n# Deploy\n\n{}\n\n# Monitor\n\n{}\n",
        para("intro", 40),
        para("deploy", 700),
        para("monitor", 700)
    )
}

#[test]
fn documents_of_every_format_land_as_0_5_2_lays_them_out() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");

    // A small Markdown file: viking://resources/<stem>/<stem>.md with L0/L1.
    let r = add_file(
        &s,
        &key,
        "Quick Start.md",
        b"# Quick Start\n\nLongship keeps context for agents. It speaks OpenViking.\n",
        json!({}),
    );
    assert_eq!(r["root_uri"], "viking://resources/Quick_Start");
    assert_eq!(r["source_path"], "Quick Start.md");
    assert_eq!(r["queue_status"]["Semantic"]["error_count"], 0);
    assert!(
        r.get("task_id").is_none(),
        "wait=true answers the queue status: {r}"
    );
    assert_eq!(
        tree(&s, &key, "viking://resources/Quick_Start"),
        ["Quick_Start.md"]
    );
    assert!(
        read(&s, &key, "viking://resources/Quick_Start/Quick_Start.md").contains("keeps context")
    );
    let abs = sidecar(&s, &key, "abstract", "viking://resources/Quick_Start");
    assert_eq!(abs, "Quick Start: Longship keeps context for agents.");
    let ov = sidecar(&s, &key, "overview", "viking://resources/Quick_Start");
    assert!(
        ov.contains("## Contents") && ov.contains("Quick_Start.md"),
        "{ov}"
    );

    // A large document is split by its headings into a directory of sections.
    let r = add_file(
        &s,
        &key,
        "handbook.md",
        long_markdown().as_bytes(),
        json!({}),
    );
    assert_eq!(r["root_uri"], "viking://resources/handbook");
    let files = tree(&s, &key, "viking://resources/handbook");
    assert!(files.len() >= 2, "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("Monitor")), "{files:?}");
    let all: String = files
        .iter()
        .filter(|f| f.ends_with(".md"))
        .map(|f| read(&s, &key, &format!("viking://resources/handbook/{f}")))
        .collect();
    assert!(all.contains("deploy699") && all.contains("monitor0") && all.contains("intro39"));
    let ov = sidecar(&s, &key, "overview", "viking://resources/handbook");
    assert!(
        ov.starts_with("# handbook") || ov.contains("Handbook"),
        "{ov}"
    );
    assert!(ov.chars().count() <= 4000);

    // HTML becomes Markdown; scripts are dropped.
    let html = b"<html><head><title>Ops Page</title><script>alert(1)</script></head>\
        <body><h2>Restart</h2><p>Use <code>systemctl restart</code> to restart.</p></body></html>";
    let r = add_file(&s, &key, "ops.html", html, json!({}));
    assert_eq!(r["root_uri"], "viking://resources/ops");
    let md = read(&s, &key, "viking://resources/ops/ops.md");
    assert!(
        md.contains("## Restart") && md.contains("`systemctl restart`"),
        "{md}"
    );
    assert!(!md.contains("alert(1)"));

    // PDF becomes text.
    let r = add_file(
        &s,
        &key,
        "paper.pdf",
        &sample_pdf("Vectors are optional here."),
        json!({}),
    );
    assert_eq!(r["meta"]["source_format"], "pdf");
    let text = read(&s, &key, "viking://resources/paper/paper.md");
    assert!(text.contains("Vectors are optional here."), "{text}");
    assert!(sidecar(&s, &key, "abstract", "viking://resources/paper").contains("Vectors"));

    // Source code is stored unchanged; the same name again gets a free name and parent.
    let code = b"//! Entry point of the tool.\nfn main() {}\n";
    let r = add_file(
        &s,
        &key,
        "main.rs",
        code,
        json!({"parent": "viking://resources/code", "create_parent": true}),
    );
    assert_eq!(r["root_uri"], "viking://resources/code/main");
    assert_eq!(
        read(&s, &key, "viking://resources/code/main/main.rs").as_bytes(),
        code
    );
    let r = add_file(
        &s,
        &key,
        "main.rs",
        code,
        json!({"parent": "viking://resources/code"}),
    );
    assert_eq!(r["root_uri"], "viking://resources/code/main_1");
    assert!(sidecar(&s, &key, "abstract", "viking://resources/code/main").contains("Entry point"));

    // An exact target that exists is a conflict; a new one is used verbatim.
    let id = upload_id(&s, &key, "x.md", b"# X\n\nx");
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "to": "viking://resources/Quick_Start"}),
    );
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "to": "viking://resources/notes/x", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(tree(&s, &key, "viking://resources/notes/x"), ["x.md"]);
    // The upload was consumed.
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "to": "viking://resources/y"}),
    );
    assert_eq!(r.status, 404, "{:?}", r.body);

    // Staging space is gone after each ingestion.
    assert!(
        st.list("acme/_system/ingest").iter().all(|n| n == "active"),
        "{:?}",
        st.list("acme/_system/ingest")
    );
}

#[test]
fn zipped_directories_honour_filters_and_survive_hostile_entries() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");
    let zip = zip_bytes(&[
        ("README.md", b"# Toolkit\n\nA toolkit for agents.\n"),
        ("src/lib.rs", b"// Library root.\npub fn f() {}\n"),
        ("src/util.py", b"# Helpers.\nx = 1\n"),
        ("node_modules/dep/index.js", b"x"),
        ("vendor/big.c", b"int x;"),
        ("notes.tmp", b"tmp"),
        ("../escape.md", b"evil"),
        ("/etc/evil.md", b"evil"),
        ("docs/a b.md", b"# One\n\none"),
        ("docs/a_b.md", b"# Two\n\ntwo"),
        ("docs/page.html", b"<h1>Page</h1><p>Hello.</p>"),
    ]);
    let r = add_file(
        &s,
        &key,
        "toolkit.zip",
        &zip,
        json!({"exclude": "*.tmp", "ignore_dirs": "vendor"}),
    );
    assert_eq!(r["root_uri"], "viking://resources/toolkit");
    let mut files = tree(&s, &key, "viking://resources/toolkit");
    files.sort();
    assert_eq!(
        files,
        // 0.5.2's directory layout: each document a directory named after it.
        [
            "README",
            "README/README.md",
            "docs",
            "docs/a_b",
            "docs/a_b/a_b.md",
            "docs/a_b_1",
            "docs/a_b_1/a_b_1.md",
            "docs/page",
            "docs/page/page.md",
            "src",
            "src/lib.rs",
            "src/util.py"
        ],
        "{r}"
    );
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("../escape.md") && warnings.contains("unsafe"),
        "{warnings}"
    );
    assert!(!st.exists("acme/resources/escape.md") && !st.exists("acme/escape.md"));
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/toolkit"),
        "Toolkit: A toolkit for agents."
    );
    assert!(sidecar(&s, &key, "overview", "viking://resources/toolkit").contains("src/: "));
    assert!(sidecar(&s, &key, "abstract", "viking://resources/toolkit/src").len() <= 256);

    // include keeps only matching files.
    let r = add_file(
        &s,
        &key,
        "toolkit.zip",
        &zip,
        json!({"include": "*.md", "to": "viking://resources/mdonly"}),
    );
    assert_eq!(r["root_uri"], "viking://resources/mdonly");
    let files = tree(&s, &key, "viking://resources/mdonly");
    assert!(
        files.iter().all(|f| f.ends_with(".md") || !f.contains('.')),
        "{files:?}"
    );

    // A zip bomb and a deeply nested archive fail with a reason, leave no tree, fail the task.
    let bomb = zip_bytes(&[("zeros.txt", &vec![b'0'; 20 * 1024 * 1024])]);
    let id = upload_id(&s, &key, "bomb.zip", &bomb);
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "wait": true}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("zip bomb"),
        "{:?}",
        r.body
    );
    assert!(!st.exists("acme/resources/bomb"));
    let deep = (0..10_000)
        .map(|i| format!("d{}", i % 10))
        .collect::<Vec<_>>()
        .join("/")
        + "/f.md";
    let nested = zip_bytes(&[(deep.as_str(), b"x")]);
    let id = upload_id(&s, &key, "nested.zip", &nested);
    let r = s.post(RESOURCES, Some(&key), json!({"temp_file_id": id}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deeper"),
        "{:?}",
        r.body
    );
    assert!(!st.exists("acme/resources/nested"));
    let tasks = s.get(
        "/api/v1/tasks?task_type=add_resource&status=failed",
        Some(&key),
    );
    assert_eq!(
        tasks.result().as_array().unwrap().len(),
        2,
        "{:?}",
        tasks.body
    );
    assert!(tasks.result()[0]["error"]
        .as_str()
        .unwrap()
        .contains("deeper"));

    // A PDF built to exhaust a recursive parser is contained: a 4xx, the server lives on.
    let mut evil = b"%PDF-1.4\n1 0 obj\n".to_vec();
    evil.extend(std::iter::repeat_n(b'[', 2_000_000));
    evil.extend(std::iter::repeat_n(b']', 2_000_000));
    evil.extend_from_slice(b"\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    let id = upload_id(&s, &key, "evil.pdf", &evil);
    let r = s.post(RESOURCES, Some(&key), json!({"temp_file_id": id}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(s.get("/health", None).status, 200);
    assert!(!st.exists("acme/resources/evil"));
}

#[test]
fn uploads_stream_into_shared_storage_with_their_own_limits() {
    let st = Storage::new();
    // The JSON body limit is tiny here; uploads have their own limit.
    let opts = Opts::default()
        .env("LONGSHIP_SERVER__MAX_BODY_BYTES", "65536")
        .env("LONGSHIP_RESOURCES__UPLOAD_MAX_BYTES", "3000000");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let alice = create_account(&a, "acme", "alice");
    let bob = register(&a, &alice, "acme", "bob", "user");

    // 2.5 MB through A (more than the JSON limit), added through B without waiting.
    let big: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("# porcupine quill {i:07}\n").into_bytes())
        .collect();
    assert!(big.len() > 2_000_000);
    // Source code is stored whole (not split), so this is one 2.4 MB file.
    let id = upload_id(&a, &alice, "big.py", &big);
    assert!(id.starts_with("upload_") && id.ends_with(".py"), "{id}");
    // Only the uploader may use it; a malformed id never reaches storage.
    let r = b.post(RESOURCES, Some(&bob), json!({"temp_file_id": id}));
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = b.post(
        RESOURCES,
        Some(&bob),
        json!({"temp_file_id": "upload_../../x"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = b.post(
        RESOURCES,
        Some(&alice),
        json!({"temp_file_id": id, "wait": false}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let task_id = r.result()["task_id"].as_str().unwrap().to_string();
    assert_eq!(r.result()["root_uri"], "viking://resources/big");
    // The tree is visible before the answer; the task finishes on its own.
    assert!(!tree(&a, &alice, "viking://resources/big").is_empty());
    let done = wait_task(&a, &alice, &task_id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["task_type"], "add_resource");
    assert_eq!(done["resource_id"], "viking://resources/big");
    assert_eq!(done["result"]["queue_status"]["Semantic"]["error_count"], 0);
    let w = a.post("/api/v1/system/wait", Some(&alice), json!({}));
    assert_eq!(w.status, 200, "{:?}", w.body);
    assert!(w.result()["Semantic"].is_object());
    // Ingested on B, findable on A within its refresh interval.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !find(&a, &alice, "porcupine quill")
        .iter()
        .any(|u| u.starts_with("viking://resources/big"))
    {
        assert!(
            Instant::now() < deadline,
            "the tree ingested on B never became findable on A (B finds {:?})",
            find(&b, &alice, "porcupine quill"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Over the upload limit → 413, and nothing is kept.
    let r = upload(&a, &alice, "huge.bin", &vec![7u8; 3_100_000]);
    assert_eq!(r.status, 413, "{:?}", r.body);
    let left = st.list("acme/_system/uploads");
    assert!(left.is_empty(), "{left:?}");
    // No file field → 400; not multipart → 400.
    let r = a.raw(
        "POST",
        UPLOAD,
        &[
            ("X-API-Key", &alice),
            ("Content-Type", "multipart/form-data; boundary=b"),
        ],
        b"--b\r\nContent-Disposition: form-data; name=\"telemetry\"\r\n\r\nfalse\r\n--b--\r\n",
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = a.raw(
        "POST",
        UPLOAD,
        &[("X-API-Key", &alice), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[test]
fn requests_are_validated_like_0_5_2() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");
    let cases = [
        (json!({}), 400, "Either 'path' or 'temp_file_id'"),
        (
            json!({"path": "https://example.com/x", "add_type": "git", "to": "viking://resources/x"}),
            501,
            "Connector",
        ),
        (
            // Watches are implemented (tests/it/watches.rs); absurd intervals are refused.
            json!({"path": "https://example.com/x", "watch_interval": 1e9}),
            400,
            "at most one year",
        ),
        (
            json!({"path": "https://example.com/x", "to": "viking://resources/a", "parent": "viking://resources"}),
            400,
            "both",
        ),
        (
            json!({"path": "https://example.com/x", "processing_mode": "fast"}),
            400,
            "processing_mode",
        ),
        (json!({"path": "/etc/passwd"}), 400, "Local paths"),
        (json!({"path": "s3://bucket/x"}), 501, "not supported"),
        (
            json!({"path": "https://example.com/x", "to": "viking://user/alice/memories/x"}),
            400,
            "viking://resources",
        ),
        (
            json!({"path": "https://example.com/x", "is_active": false}),
            400,
            "is_active",
        ),
        (json!({"path": 5}), 400, "path"),
        // 0.5.2's AddResourceRequest forbids unknown keys.
        (
            json!({"path": "https://example.com/x", "zzz": 1}),
            400,
            "extra_forbidden",
        ),
        (
            json!({"path": "https://example.com/x", "tags": ["team"]}),
            400,
            "strict k=v",
        ),
        (
            // ACLs are stored before the node appears, so they need its exact URI.
            json!({"path": "https://example.com/x", "acl": {"mode": "restricted"}}),
            400,
            "acl needs the exact target",
        ),
        (
            json!({"temp_file_id": "upload_0123456789abcdef0123456789abcdef", "parent": "viking://resources/missing"}),
            404,
            "Parent URI does not exist",
        ),
    ];
    for (body, status, needle) in cases {
        let r = s.post(RESOURCES, Some(&key), body.clone());
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
        assert!(
            r.raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{body}: {:?}",
            r.body
        );
    }
    // ROOT cannot add data in api_key mode.
    let r = s.post(
        RESOURCES,
        Some(crate::harness::ROOT_KEY),
        json!({"path": "https://example.com/x"}),
    );
    assert_eq!(r.status, 403);
    let r = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": -1}));
    assert_eq!(r.status, 400);
    let r = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 1}));
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// A tiny HTTP/1.1 server on loopback; `handler(path, body) -> (status, headers, body)`.
/// Stands in for web sites and for an OpenAI-compatible chat provider.
pub(crate) struct Fake {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(crate) type Handler = dyn Fn(&str, &str) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

impl Fake {
    pub(crate) fn start(handler: Arc<Handler>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let handler = handler.clone();
                std::thread::spawn(move || serve_one(stream, &*handler));
            }
        });
        Fake {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(stream: std::net::TcpStream, handler: &Handler) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let (status, headers, out) = handler(&path, &String::from_utf8_lossy(&body));
    let mut w = stream;
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    let endless = headers.iter().any(|(k, _)| k == "x-endless");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !endless {
        head.push_str(&format!("Content-Length: {}\r\n", out.len()));
    }
    head.push_str("\r\n");
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    if endless {
        // An endless body: the client must give up at its size limit.
        let chunk = vec![b'z'; 64 * 1024];
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && w.write_all(&chunk).is_ok() {}
        return;
    }
    let _ = w.write_all(&out);
}

#[test]
fn urls_are_fetched_with_ssrf_rules_and_limits() {
    let site = Fake::start(Arc::new(|path: &str, _body: &str| match path {
        "/guide.md" => (
            200,
            vec![("Content-Type".into(), "text/markdown".into())],
            b"# Remote Guide\n\nFetched over HTTP.\n".to_vec(),
        ),
        "/page" => (
            200,
            vec![("Content-Type".into(), "text/html".into())],
            b"<h1>Remote Page</h1><p>From HTML.</p>".to_vec(),
        ),
        "/to-file" => (
            302,
            vec![("Location".into(), "file:///etc/passwd".into())],
            vec![],
        ),
        "/to-metadata" => (
            302,
            vec![(
                "Location".into(),
                "http://169.254.169.254/latest/meta-data/".into(),
            )],
            vec![],
        ),
        "/endless" => (200, vec![("x-endless".into(), "1".into())], vec![]),
        _ => (404, vec![], b"no".to_vec()),
    }));
    let st = Storage::new();
    // Default policy: loopback is refused after resolution.
    let strict = Server::start(&st, Opts::default());
    let key = create_account(&strict, "acme", "alice");
    let r = strict.post(
        RESOURCES,
        Some(&key),
        json!({"path": site.url("/guide.md")}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Refusing"),
        "{:?}",
        r.body
    );
    drop(strict);

    // Tests allow private URLs to reach the loopback site.
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS", "true")
            .env("LONGSHIP_RESOURCES__FETCH_MAX_BYTES", "1000000")
            .env("LONGSHIP_RESOURCES__FETCH_TIMEOUT_SECS", "20"),
    );
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"path": site.url("/guide.md"), "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["root_uri"], "viking://resources/guide");
    assert_eq!(r.result()["source_path"], site.url("/guide.md"));
    assert!(read(&s, &key, "viking://resources/guide/guide.md").contains("Fetched over HTTP"));
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"path": site.url("/page"), "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(read(&s, &key, "viking://resources/page/page.md").contains("# Remote Page"));
    // Redirects to other schemes and to metadata addresses are refused hop by hop (the
    // metadata rule holds even with private URLs allowed? no: allow_private covers it, so only
    // the scheme rule is checked here).
    let r = s.post(RESOURCES, Some(&key), json!({"path": site.url("/to-file")}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.raw.windows(6).any(|w| w == b"scheme"), "{:?}", r.body);
    let started = Instant::now();
    let r = s.post(RESOURCES, Some(&key), json!({"path": site.url("/endless")}));
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(started.elapsed() < Duration::from_secs(20));
    let r = s.post(RESOURCES, Some(&key), json!({"path": site.url("/missing")}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    drop(s);

    // Without the operator setting, a public-looking redirect chain into metadata fails too.
    let strict = Server::start(&st, Opts::default());
    let r = strict.post(
        RESOURCES,
        Some(&key),
        json!({"path": "http://169.254.169.254/latest/"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = strict.post(
        RESOURCES,
        Some(&key),
        json!({"path": "http://localhost:1/x"}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
}

#[test]
fn a_configured_chat_model_writes_summaries_and_its_failure_degrades_them() {
    // Deterministic stand-in for an OpenAI-compatible provider: echoes the directory name.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let model = Fake::start(Arc::new(move |path: &str, body: &str| {
        seen.fetch_add(1, Ordering::Relaxed);
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let prompt = v["messages"][1]["content"].as_str().unwrap_or("");
        let dir = prompt
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("Directory: ");
        if path != "/v1/chat/completions" || v["model"] != "tiny-summarizer" {
            return (404, vec![], b"{}".to_vec());
        }
        if dir.starts_with("slow") {
            std::thread::sleep(Duration::from_secs(2));
        }
        let reply =
            format!("ABSTRACT: Model abstract of {dir}.\nOVERVIEW:\n# {dir}\n\nModel overview.");
        let out = json!({"choices": [{"message": {"role": "assistant", "content": reply}}]});
        (
            200,
            vec![("Content-Type".into(), "application/json".into())],
            out.to_string().into_bytes(),
        )
    }));
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_VLM__PROVIDER", "openai")
            .env("LONGSHIP_VLM__API_BASE", &model.url("/v1"))
            .env("LONGSHIP_VLM__MODEL", "tiny-summarizer")
            .env("LONGSHIP_VLM__API_KEY", "sk-test-secret-value")
            .env("LONGSHIP_VLM__MAX_RETRIES", "0"),
    );
    let key = create_account(&s, "acme", "alice");
    let zip = zip_bytes(&[("a/one.md", b"# One\n\nfirst"), ("b.md", b"# B\n\nsecond")]);
    let r = add_file(&s, &key, "kit.zip", &zip, json!({}));
    assert_eq!(r["queue_status"]["Semantic"]["error_count"], 0, "{r}");
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/kit"),
        "Model abstract of kit."
    );
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/kit/a"),
        "Model abstract of a."
    );
    assert!(sidecar(&s, &key, "overview", "viking://resources/kit").contains("Model overview."));
    // kit/, kit/a/, and the directories b.md and a/one.md become (0.5.2's layout).
    assert_eq!(calls.load(Ordering::Relaxed), 4);
    assert!(!s.log_text().contains("sk-test-secret-value"));

    // wait=false with a slow model: system/wait times out with 504, then returns once done.
    let id = upload_id(&s, &key, "slow.md", b"# Slow\n\nslow doc");
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "source_name": "slow.md"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let task_id = r.result()["task_id"].as_str().unwrap().to_string();
    let w = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 0.2}));
    assert_eq!(w.status, 504, "{:?}", w.body);
    assert_eq!(w.code(), "DEADLINE_EXCEEDED");
    let w = s.post("/api/v1/system/wait", Some(&key), json!({}));
    assert_eq!(w.status, 200, "{:?}", w.body);
    assert_eq!(wait_task(&s, &key, &task_id)["status"], "completed");
    drop(s);

    // A failing provider: extractive summaries stay, the task records a warning.
    let broken = Fake::start(Arc::new(|_: &str, _: &str| (500, vec![], b"boom".to_vec())));
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_VLM__API_BASE", &broken.url("/v1"))
            .env("LONGSHIP_VLM__MODEL", "tiny-summarizer")
            .env("LONGSHIP_VLM__MAX_RETRIES", "1"),
    );
    let r = add_file(
        &s,
        &key,
        "fallback.md",
        b"# Fallback\n\nExtractive text survives.",
        json!({}),
    );
    assert_eq!(r["queue_status"]["Semantic"]["error_count"], 1, "{r}");
    assert!(
        r["warnings"].to_string().contains("chat model failed"),
        "{r}"
    );
    assert_eq!(
        sidecar(&s, &key, "abstract", "viking://resources/fallback"),
        "Fallback: Extractive text survives."
    );
}

#[test]
fn an_ingestion_cut_by_kill_9_ends_failed_after_restart() {
    // The model stand-in never answers in time, so the task is still summarising when the
    // server is killed (its tree is already visible and whole).
    let model = Fake::start(Arc::new(|_: &str, _: &str| {
        std::thread::sleep(Duration::from_secs(20));
        (500, vec![], b"late".to_vec())
    }));
    let st = Storage::new();
    let opts = Opts::default()
        .env("LONGSHIP_VLM__API_BASE", &model.url("/v1"))
        .env("LONGSHIP_VLM__MODEL", "slow")
        .env("LONGSHIP_VLM__MAX_RETRIES", "0")
        .env("LONGSHIP_RESOURCES__STALE_AFTER_SECS", "2")
        .env("LONGSHIP_RESOURCES__SWEEP_INTERVAL_SECS", "1");
    let mut s = Server::start(&st, opts);
    let key = create_account(&s, "acme", "alice");
    let id = upload_id(&s, &key, "cut.md", b"# Cut\n\nA document cut short.");
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "source_name": "cut.md"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let task_id = r.result()["task_id"].as_str().unwrap().to_string();
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{task_id}"), Some(&key))
            .result()["status"],
        "running"
    );
    // Markers stay fresh while the work runs, so system/wait keeps waiting.
    std::thread::sleep(Duration::from_secs(3));
    let w = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 0.3}));
    assert_eq!(w.status, 504, "{:?}", w.body);
    s.kill9();
    s.restart();
    let done = wait_task(&s, &key, &task_id);
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("interrupted"),
        "{done}"
    );
    let w = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 10}));
    assert_eq!(w.status, 200, "{:?}", w.body);
    assert_eq!(tree(&s, &key, "viking://resources/cut"), ["cut.md"]);
    assert!(st.list("acme/_system/ingest").iter().all(|n| n == "active"));
}

/// Server-local paths inside `resources.local_path_allowlist`: a file, and a whole directory
/// (packed and unpacked under the archive rules: `ignore_dirs` applies, symlinks are skipped,
/// never followed). Anything outside the list, missing, or reached through `..` or a symlink
/// gets one and the same refusal, which names nothing on the server's disk.
#[test]
fn allow_listed_local_files_and_directories_are_ingested() {
    let st = Storage::new();
    let host = tempfile::tempdir().unwrap();
    let allowed = host.path().join("shared-docs");
    let outside = host.path().join("private");
    std::fs::create_dir_all(allowed.join("proj/src")).unwrap();
    std::fs::create_dir_all(allowed.join("proj/node_modules/dep")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        allowed.join("proj/README.md"),
        "# Proj\n\nThe quasar calibration tool.\n",
    )
    .unwrap();
    std::fs::write(
        allowed.join("proj/src/lib.rs"),
        "pub fn calibrate_quasar() {}\n",
    )
    .unwrap();
    std::fs::write(allowed.join("proj/node_modules/dep/index.js"), "x()\n").unwrap();
    std::fs::write(outside.join("secret.md"), "# Secret\n\nwormhole keys\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.md"), allowed.join("proj/leak.md")).unwrap();
    let config = host.path().join("longship.toml");
    std::fs::write(
        &config,
        format!(
            "[resources]\nlocal_path_allowlist = [{:?}]\n",
            allowed.to_str().unwrap()
        ),
    )
    .unwrap();
    let s = Server::start(
        &st,
        Opts::default()
            .arg("--config")
            .arg(config.to_str().unwrap()),
    );
    let key = create_account(&s, "acme", "alice");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();

    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"path": path(&allowed.join("proj")), "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["root_uri"], "viking://resources/proj");
    let mut files = tree(&s, &key, "viking://resources/proj");
    files.sort();
    assert_eq!(
        files,
        ["README", "README/README.md", "src", "src/lib.rs"],
        "{files:?}"
    );
    let warnings = r.result()["warnings"].to_string();
    assert!(warnings.contains("symbolic link"), "{warnings}");
    assert!(read(&s, &key, "viking://resources/proj/src/lib.rs").contains("calibrate_quasar"));
    assert!(find(&s, &key, "quasar calibration")
        .iter()
        .any(|u| u.starts_with("viking://resources/proj")));

    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"path": path(&allowed.join("proj/README.md")), "to": "viking://resources/readme", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!tree(&s, &key, "viking://resources/readme").is_empty());

    for refused in [
        outside.join("secret.md"),
        allowed.join("../private/secret.md"),
        allowed.join("proj/leak.md"),
        allowed.join("proj/missing.md"),
        std::path::PathBuf::from("/etc/passwd"),
    ] {
        for wait in [true, false] {
            let r = s.post(
                RESOURCES,
                Some(&key),
                json!({"path": path(&refused), "wait": wait}),
            );
            assert_eq!(r.status, 400, "{refused:?}: {:?}", r.body);
            let msg = r.body["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.starts_with("Local paths are not read"), "{msg}");
            assert!(!msg.contains("No such file"), "{msg}");
        }
    }
    let r = s.get("/api/v1/fs/ls?uri=viking://resources", Some(&key));
    let names = r.result().to_string();
    assert!(
        !names.contains("secret") && !names.contains("leak"),
        "{names}"
    );
}
