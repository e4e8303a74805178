//! Ingestion under hostile input (issues #25 and #26): a URL that drips its body, an archive
//! or document that multiplies itself, names the API could never reach again, and `kill -9`
//! mid-parse. The #25 cases run two accounts on one server: the attacker's ingestion must end
//! in a clear 4xx quickly while the victim's requests keep being served.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::create_account;
use crate::harness::{Opts, Resp, Server, Storage};
use crate::resources::{tree, upload_id, wait_task, zip_bytes};

const RESOURCES: &str = "/api/v1/resources";

/// A loopback site whose every response promises `length` bytes and then sends `chunk`
/// bytes every `every`, for at most 90 s or until the client hangs up.
struct Drip {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drip {
    fn start(chunk: usize, every: Duration, length: usize) -> Drip {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    stream.set_nonblocking(false).ok();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line.trim().is_empty() {
                            break;
                        }
                        line.clear();
                    }
                    let mut w = stream;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/markdown\r\n\
                         Content-Length: {length}\r\nConnection: close\r\n\r\n"
                    );
                    if w.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let until = Instant::now() + Duration::from_secs(90);
                    let mut sent = 0;
                    while sent < length && Instant::now() < until && !flag.load(Ordering::Relaxed) {
                        let n = chunk.min(length - sent);
                        if w.write_all(&vec![b'a'; n]).is_err() {
                            return;
                        }
                        sent += n;
                        std::thread::sleep(every);
                    }
                });
            }
        });
        Drip { port, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The victim's requests while `attack` runs: a write, a read and a listing in a loop (at
/// most 200 rounds), each answered 200 within 5 s. Returns the attack's outcome and the
/// slowest victim request.
fn victim_served_during<T: Send>(
    s: &Server,
    victim: &str,
    attack: impl FnOnce() -> T + Send,
) -> (T, Duration) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let victim_loop = scope.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut round = 0;
            while round < 200 && (round < 3 || !done.load(Ordering::Relaxed)) {
                let uri = format!("viking://resources/victim/note{}.md", round % 5);
                for (what, r) in [
                    (
                        "write",
                        timed(&mut slowest, || {
                            s.post(
                                "/api/v1/content/write",
                                Some(victim),
                                json!({"uri": uri, "content": format!("round {round}\n")}),
                            )
                        }),
                    ),
                    (
                        "read",
                        timed(&mut slowest, || {
                            s.get(&format!("/api/v1/content/read?uri={uri}"), Some(victim))
                        }),
                    ),
                    (
                        "ls",
                        timed(&mut slowest, || {
                            s.get("/api/v1/fs/ls?uri=viking://resources/victim", Some(victim))
                        }),
                    ),
                ] {
                    assert_eq!(r.status, 200, "victim {what}: {:?}", r.body);
                }
                round += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            slowest
        });
        let out = attack();
        done.store(true, Ordering::Relaxed);
        let slowest = victim_loop.join().unwrap();
        assert!(
            slowest < Duration::from_secs(5),
            "a victim request took {slowest:?}"
        );
        (out, slowest)
    })
}

fn timed(slowest: &mut Duration, f: impl FnOnce() -> Resp) -> Resp {
    let t = Instant::now();
    let r = f();
    *slowest = (*slowest).max(t.elapsed());
    r
}

fn message(r: &Resp) -> String {
    r.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Issue #25 item 4: a server dripping its body is cut by the minimum rate, one sending fast
/// enough for the rate but never finishing by the total deadline; both end in 400 within
/// seconds, while another account is served throughout.
#[test]
fn a_dripping_url_is_cut_by_rate_and_total_time_while_another_account_is_served() {
    // 1 byte every 0.5 s (the drip, sped up) and 1 KiB every 0.25 s (4 KiB/s).
    let drip = Drip::start(1, Duration::from_millis(500), 1_000_000);
    let steady = Drip::start(1024, Duration::from_millis(250), 50_000_000);
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default()
            .env("LONGSHIP_RESOURCES__ALLOW_PRIVATE_URLS", "true")
            .env("LONGSHIP_RESOURCES__FETCH_TIMEOUT_SECS", "4")
            .env("LONGSHIP_RESOURCES__FETCH_RATE_WINDOW_SECS", "2")
            .env("LONGSHIP_RESOURCES__FETCH_MIN_BYTES_PER_WINDOW", "1024"),
    );
    let attacker = create_account(&s, "attacker", "mallory");
    let victim = create_account(&s, "victim", "vera");
    let ((slow, endless), _) = victim_served_during(&s, &victim, || {
        let add = |url: String| {
            let t = Instant::now();
            let r = s.post(
                RESOURCES,
                Some(&attacker),
                json!({"path": url, "wait": true}),
            );
            (r, t.elapsed())
        };
        let add = &add;
        std::thread::scope(|scope| {
            let (slow_url, endless_url) = (drip.url("/slow.md"), steady.url("/endless.md"));
            let slow = scope.spawn(move || add(slow_url));
            let endless = scope.spawn(move || add(endless_url));
            (slow.join().unwrap(), endless.join().unwrap())
        })
    });
    let (r, took) = slow;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        message(&r).contains("fetch_min_bytes_per_window"),
        "{:?}",
        r.body
    );
    assert!(took < Duration::from_secs(15), "the drip lasted {took:?}");
    let (r, took) = endless;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(message(&r).contains("fetch_timeout_secs"), "{:?}", r.body);
    assert!(took < Duration::from_secs(15), "the fetch lasted {took:?}");
    // Both tasks ended failed, and nothing is left for system/wait.
    let w = s.post(
        "/api/v1/system/wait",
        Some(&attacker),
        json!({"timeout": 10}),
    );
    assert_eq!(w.status, 200, "{:?}", w.body);
}

/// A ZIP of `count` entries, each the same 1 MiB of repetitive Markdown (compressed once,
/// then copied raw: the archive is small, its content huge).
fn multiplying_zip(count: usize) -> Vec<u8> {
    let section = format!("# Section\n\n{}\n\n", "lorem ipsum dolor ".repeat(60));
    let mut doc = String::new();
    while doc.len() < 1024 * 1024 {
        doc.push_str(&section);
    }
    doc.truncate(1024 * 1024);
    let mut one = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let best = zip::write::SimpleFileOptions::default().compression_level(Some(9));
    one.start_file("doc0.md", best).unwrap();
    one.write_all(doc.as_bytes()).unwrap();
    let one = one.finish().unwrap().into_inner();
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(one)).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for n in 0..count {
        let entry = src.by_index_raw(0).unwrap();
        w.raw_copy_file_rename(entry, format!("doc{n}.md")).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Issue #25 item 5: an archive of 1,000 small repetitive entries (each once exempt from the
/// ratio) and a document that splits into more sections than allowed are refused with 400
/// within seconds, while another account is served; an ordinary archive still goes in.
#[test]
fn an_archive_or_document_that_multiplies_itself_is_refused_while_another_account_is_served() {
    let st = Storage::new();
    let s = Server::start(
        &st,
        Opts::default().env("LONGSHIP_RESOURCES__INGEST_MAX_NODES", "200"),
    );
    let attacker = create_account(&s, "attacker", "mallory");
    let victim = create_account(&s, "victim", "vera");
    let bomb = multiplying_zip(1000);
    assert!(bomb.len() < 4 * 1024 * 1024, "{}", bomb.len());
    // 400 sections of ~600 tokens each: every one stays its own file.
    let many: String = (0..400)
        .map(|i| format!("# Part {i}\n\n{}\n\n", "word ".repeat(500)))
        .collect();
    let bomb_id = upload_id(&s, &attacker, "bomb.zip", &bomb);
    let many_id = upload_id(&s, &attacker, "many.md", many.as_bytes());
    let ((zip_r, doc_r), _) = victim_served_during(&s, &victim, || {
        let add = |id: &str, name: &str| {
            let t = Instant::now();
            let r = s.post(
                RESOURCES,
                Some(&attacker),
                json!({"temp_file_id": id, "source_name": name, "wait": true}),
            );
            (r, t.elapsed())
        };
        let add = &add;
        std::thread::scope(|scope| {
            let (bomb_id, many_id) = (&bomb_id, &many_id);
            let z = scope.spawn(move || add(bomb_id, "bomb.zip"));
            let d = scope.spawn(move || add(many_id, "many.md"));
            (z.join().unwrap(), d.join().unwrap())
        })
    });
    let (r, took) = zip_r;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(message(&r).contains("zip bomb"), "{:?}", r.body);
    assert!(took < Duration::from_secs(60), "the archive took {took:?}");
    let (r, took) = doc_r;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(message(&r).contains("ingest_max_nodes"), "{:?}", r.body);
    assert!(took < Duration::from_secs(60), "the document took {took:?}");
    let r = s.get("/api/v1/fs/ls?uri=viking://resources", Some(&attacker));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result().as_array().map(Vec::len), Some(0), "{:?}", r.body);
    // Ordinary content of the same account is still accepted.
    let fine = zip_bytes(&[
        ("kit/a.md", b"# A\n\nFirst note.\n"),
        ("kit/b.md", b"# B\n\nSecond note.\n"),
    ]);
    let id = upload_id(&s, &attacker, "kit.zip", &fine);
    let r = s.post(
        RESOURCES,
        Some(&attacker),
        json!({"temp_file_id": id, "source_name": "kit.zip", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // 0.5.2's directory layout: each document a directory named after it.
    assert_eq!(
        tree(&s, &attacker, "viking://resources/kit"),
        ["a", "a/a.md", "b", "b/b.md"]
    );
}

/// Replace every occurrence of `from` with `to` (same length) in a ZIP's bytes: entry names
/// the ZIP writer would refuse (duplicates).
fn rename_in_place(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    for i in 0..=bytes.len() - from.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
        }
    }
}

/// Issue #26 item 5: an entry `%2e%2e/enc.md` is skipped (the API could never read or remove
/// it), a path longer than the file system allows is skipped with a warning instead of
/// failing the archive, and two entries with one name are warned about.
#[test]
fn archive_entries_are_stored_only_under_names_the_api_can_reach() {
    let st = Storage::new();
    let s = Server::start(&st, Opts::default());
    let key = create_account(&s, "acme", "alice");
    let long = vec!["x".repeat(250); 17].join("/") + "/deep.md";
    let mut zip = zip_bytes(&[
        ("%2e%2e/enc.md", b"# Enc\n\nzanzibarquokka hidden text.\n"),
        (long.as_str(), b"# Deep\n\nToo deep.\n"),
        ("ok.md", b"# Ok\n\nFirst copy.\n"),
        ("qq.md", b"# Ok\n\nSecond copy.\n"),
    ]);
    rename_in_place(&mut zip, b"qq.md", b"ok.md");
    let id = upload_id(&s, &key, "names.zip", &zip);
    let r = s.post(
        RESOURCES,
        Some(&key),
        json!({"temp_file_id": id, "source_name": "names.zip", "wait": true}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let warnings = r.result()["warnings"].to_string();
    assert!(warnings.contains("%2e%2e"), "{warnings}");
    assert!(warnings.contains("longer than"), "{warnings}");
    assert!(warnings.contains("more than once"), "{warnings}");
    assert_eq!(
        tree(&s, &key, "viking://resources/names"),
        ["ok", "ok/ok.md"]
    );
    let r = s.get(
        "/api/v1/content/read?uri=viking://resources/names/ok/ok.md",
        Some(&key),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.result().as_str().unwrap().contains("Second copy"));
    let w = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 30}));
    assert_eq!(w.status, 200, "{:?}", w.body);
    let r = s.post(
        "/api/v1/search/find",
        Some(&key),
        json!({"query": "zanzibarquokka", "target_uri": "viking://resources"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.result()["resources"], json!([]), "{:?}", r.body);
}

/// `parse-resource` children of `parent` (pid, state) from /proc.
fn parser_children(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let is_parser = cmd.split(|b| *b == 0).nth(1) == Some(b"parse-resource".as_slice());
        if is_parser && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push((pid, fields[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// Is `pid` gone (or a zombie nobody reaped: it runs no more)?
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn scratch_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("longship-ingest-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue #26 item 2: `kill -9` while the parser child works. The child dies with the server,
/// the restarted instance removes the scratch directory at startup and fails the dead task at
/// once (not after `stale_after_secs`, left at its 600 s default), and `system/wait` answers
/// promptly.
#[test]
fn kill_9_mid_parse_leaves_no_orphan_parser_scratch_or_waiting_task() {
    let work = tempfile::tempdir().unwrap();
    let st = Storage::new();
    let mut s = Server::start(
        &st,
        Opts::default()
            .env(
                "LONGSHIP_RESOURCES__WORK_DIR",
                &work.path().display().to_string(),
            )
            .env("LONGSHIP_RESOURCES__INGEST_MAX_NODES", "1000000"),
    );
    let key = create_account(&s, "acme", "alice");
    // A large document of many sections keeps the parser busy for a while.
    let big: String = (0..40_000)
        .map(|i| format!("# Part {i}\n\n{}\n\n", "word ".repeat(120)))
        .collect();
    let id = upload_id(&s, &key, "big.md", big.as_bytes());
    // add_resource answers when the tree is published: send it from a thread of its own,
    // which sees the connection drop at the kill.
    let (url, k) = (s.url(RESOURCES), key.clone());
    let body = json!({"temp_file_id": id, "source_name": "big.md"});
    let pending = std::thread::spawn(move || {
        let _ = ureq::post(&url)
            .set("X-API-Key", &k)
            .timeout(Duration::from_secs(120))
            .send_json(body);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let child = loop {
        if let Some((pid, _)) = parser_children(s.pid()).first() {
            break *pid;
        }
        assert!(!pending.is_finished(), "parsed before the kill");
        assert!(Instant::now() < deadline, "no parser child appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = s.get("/api/v1/tasks", Some(&key));
    assert_eq!(r.status, 200, "{:?}", r.body);
    let task_id = r.result()[0]["task_id"].as_str().unwrap().to_string();
    s.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_gone(child) {
        assert!(
            Instant::now() < deadline,
            "the parser {child} outlived its server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pending.join().unwrap();
    assert_eq!(
        scratch_dirs(work.path()).len(),
        1,
        "the crash left its scratch"
    );
    s.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !scratch_dirs(work.path()).is_empty() {
        assert!(Instant::now() < deadline, "scratch space was not swept");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let done: Value = wait_task(&s, &key, &task_id);
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("interrupted"),
        "{done}"
    );
    let w = s.post("/api/v1/system/wait", Some(&key), json!({"timeout": 20}));
    assert_eq!(w.status, 200, "{:?}", w.body);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the dead ingestion held things up for {:?}",
        t.elapsed()
    );
    assert!(st.list("acme/_system/ingest").iter().all(|n| n == "active"));
}

/// Issue #25 item 5 (quota): with `quota.account_max_bytes` set, one account filling its
/// quota through two instances on shared storage gets 429 on both (usage is shared), an
/// ingestion whose unpacked tree would exceed it is refused before anything is published,
/// another account keeps writing, and removed content counts again after the next measurement.
#[test]
fn a_storage_quota_holds_across_instances_for_writes_uploads_and_ingestion() {
    let st = Storage::new();
    let opts = Opts::default()
        .env("LONGSHIP_QUOTA__ACCOUNT_MAX_BYTES", "100000")
        .env("LONGSHIP_QUOTA__USAGE_MAX_AGE_SECS", "2");
    let a = Server::start(&st, opts.clone());
    let b = Server::start(&st, opts);
    let attacker = create_account(&a, "attacker", "mallory");
    let victim = create_account(&a, "victim", "vera");
    let write = |s: &Server, key: &str, name: &str, len: usize| {
        s.post(
            "/api/v1/content/write",
            Some(key),
            json!({"uri": format!("viking://resources/fill/{name}.md"), "content": "q".repeat(len)}),
        )
    };
    // A tree that unpacks to 150 kB from a small upload: refused before publishing.
    let lines: String = (0..3000)
        .map(|i| format!("line {i} of the kit\n"))
        .collect();
    let kit = zip_bytes(&[
        ("kit/a.md", lines.as_bytes()),
        ("kit/b.md", lines.as_bytes()),
    ]);
    assert!(kit.len() < 60_000, "{}", kit.len());
    let id = upload_id(&a, &attacker, "kit.zip", &kit);
    let r = b.post(
        RESOURCES,
        Some(&attacker),
        json!({"temp_file_id": id, "source_name": "kit.zip", "wait": true}),
    );
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert!(message(&r).contains("quota"), "{:?}", r.body);
    let r = a.get("/api/v1/fs/ls?uri=viking://resources", Some(&attacker));
    assert_eq!(r.result().as_array().map(Vec::len), Some(0), "{:?}", r.body);
    // 10 kB writes alternating between the instances: refused on both once the quota is full.
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        let r = write(s, &attacker, &format!("f{i}"), 10_000);
        match r.status {
            200 if refused == 0 => accepted += 1,
            429 => refused += 1,
            other => panic!("write {i}: {other} {:?}", r.body),
        }
        let v = write(s, &victim, "note", 100);
        assert_eq!(v.status, 200, "victim: {:?}", v.body);
    }
    assert!((5..=10).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + refused, 20);
    // Uploads of an account at its quota are refused as well.
    let r = crate::resources::upload(&b, &attacker, "more.md", &[b'x'; 20_000]);
    assert_eq!(r.status, 429, "{:?}", r.body);
    // Removed content counts again once usage is measured anew (usage_max_age_secs = 2).
    let r = a.delete(
        "/api/v1/fs?uri=viking://resources/fill&recursive=true",
        Some(&attacker),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    std::thread::sleep(Duration::from_secs(3));
    let r = write(&b, &attacker, "again", 10_000);
    assert_eq!(r.status, 200, "{:?}", r.body);
}
