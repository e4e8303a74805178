//! Backend conformance: the SAME behavioural checks of the `Storage` trait run against the
//! local backend and the S3 backend on a real SeaweedFS (`conformance!` below makes one test
//! per backend for each check). S3-specific behaviour (leases, outages, credentials) follows.
//!
//! The S3 variants skip with a message only when `weed` is missing on a developer machine;
//! with `CI` or `IT_REQUIRE_S3` set they fail instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use longship::config::S3Settings;
use longship::storage::backend::local::LocalStorage;
use longship::storage::backend::s3::S3Storage;
use longship::storage::{EntryKind, Storage, StorageError, StorePath};

use crate::seaweed::{self, SeaweedFs};

/// One backend under test, plus a way to open a second instance over the same data (what a
/// second server process or host would see).
pub struct Fixture {
    pub store: Arc<dyn Storage>,
    reopen: Box<dyn Fn() -> Arc<dyn Storage>>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    fn another_instance(&self) -> Arc<dyn Storage> {
        (self.reopen)()
    }
}

fn local() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let open = move || -> Arc<dyn Storage> {
        Arc::new(LocalStorage::open(&path).expect("open local storage"))
    };
    Fixture {
        store: open(),
        reopen: Box::new(open),
        _dir: Some(dir),
    }
}

/// A fresh prefix on the shared SeaweedFS; `None` only on a developer machine without `weed`.
fn s3() -> Option<Fixture> {
    let sw = seaweed::shared()?;
    let settings = sw.settings(&format!("conf-{}", uuid::Uuid::new_v4().simple()));
    Some(s3_on(settings))
}

fn s3_on(settings: S3Settings) -> Fixture {
    let open = move || -> Arc<dyn Storage> {
        Arc::new(S3Storage::open(&settings).expect("open s3 storage"))
    };
    Fixture {
        store: open(),
        reopen: Box::new(open),
        _dir: None,
    }
}

fn p(s: &str) -> StorePath {
    StorePath::parse(s).expect("valid test path")
}

fn names(s: &dyn Storage, dir: &str) -> Vec<(String, EntryKind)> {
    let mut out: Vec<_> = s
        .list(&p(dir))
        .expect("list")
        .into_iter()
        .map(|e| (e.name, e.meta.kind))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod local_backend {
            $( #[test] fn $check() { super::$check(&super::local()); } )*
        }
        mod s3_backend {
            $(
                #[test]
                fn $check() {
                    if let Some(fx) = super::s3() {
                        super::$check(&fx);
                    }
                }
            )*
        }
    };
}

conformance!(
    write_read_list_remove,
    compare_and_swap,
    versions_agree_everywhere,
    concurrent_cas_increments_lose_nothing,
    cas_across_instances,
    concurrent_appends_lose_nothing,
    append_and_rename_noreplace,
    directory_semantics,
    type_errors_match,
    rename_moves_whole_trees,
    read_range_edges,
    unusual_names_round_trip,
    named_lock_excludes_and_times_out,
    lock_excludes_other_instances,
    internal_objects_stay_hidden,
);

fn write_read_list_remove(fx: &Fixture) {
    let s = &*fx.store;
    s.write(&p("a/b/c.txt"), b"hello").unwrap();
    assert_eq!(s.read(&p("a/b/c.txt")).unwrap(), b"hello");
    assert_eq!(s.read_range(&p("a/b/c.txt"), 1, 3).unwrap(), b"ell");
    assert_eq!(s.read_range(&p("a/b/c.txt"), 4, 10).unwrap(), b"o");
    assert_eq!(names(s, "a"), vec![("b".to_string(), EntryKind::Dir)]);
    assert!(s.stat(&p("a/b")).unwrap().unwrap().is_dir());
    let meta = s.stat(&p("a/b/c.txt")).unwrap().unwrap();
    assert_eq!((meta.kind, meta.size), (EntryKind::File, 5));
    assert!(s.stat(&p("a/nope")).unwrap().is_none());
    assert!(s.stat(&p("a/b/c.txt/x")).unwrap().is_none());
    assert!(matches!(
        s.remove(&p("a"), false),
        Err(StorageError::NotEmpty(_))
    ));
    s.remove(&p("a"), true).unwrap();
    assert!(s.stat(&p("a")).unwrap().is_none());
    assert!(matches!(
        s.remove(&p("a"), true),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.read(&p("a/b/c.txt")),
        Err(StorageError::NotFound(_))
    ));
}

fn compare_and_swap(fx: &Fixture) {
    let s = &*fx.store;
    let path = p("_system/accounts.json");
    let v1 = s.write_if(&path, b"one", None).unwrap();
    assert!(matches!(
        s.write_if(&path, b"x", None),
        Err(StorageError::Conflict(_))
    ));
    let (_, seen) = s.read_versioned(&path).unwrap();
    assert_eq!(seen, v1);
    let v2 = s.write_if(&path, b"two", Some(&v1)).unwrap();
    assert_ne!(v1, v2);
    assert!(matches!(
        s.write_if(&path, b"three", Some(&v1)),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(s.read(&path).unwrap(), b"two");
    // Expecting a version of a file that is gone loses too.
    s.remove(&path, false).unwrap();
    assert!(matches!(
        s.write_if(&path, b"four", Some(&v2)),
        Err(StorageError::Conflict(_))
    ));
    assert!(s.stat(&path).unwrap().is_none());
}

fn versions_agree_everywhere(fx: &Fixture) {
    let s = &*fx.store;
    let v = s.write(&p("d/f.json"), b"{}").unwrap();
    assert_eq!(s.read_versioned(&p("d/f.json")).unwrap().1, v);
    assert_eq!(
        s.stat(&p("d/f.json")).unwrap().unwrap().version,
        Some(v.clone())
    );
    let listed = s.list(&p("d")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.version, Some(v.clone()));
    // A version from any of them is accepted by write_if.
    let v2 = s.write_if(&p("d/f.json"), b"{\"a\":1}", Some(&v)).unwrap();
    let a = s.append(&p("d/f.json"), b"\n").unwrap();
    assert_ne!(a, v2);
    assert_eq!(s.read_versioned(&p("d/f.json")).unwrap().1, a);
}

/// Read-modify-write loops on one counter from several threads: no increment is lost.
fn cas_increment_loop(s: Arc<dyn Storage>, path: StorePath, times: usize) {
    for _ in 0..times {
        loop {
            let (data, v) = s.read_versioned(&path).unwrap();
            let n: u64 = String::from_utf8(data).unwrap().parse().unwrap();
            match s.write_if(&path, (n + 1).to_string().as_bytes(), Some(&v)) {
                Ok(_) => break,
                Err(StorageError::Conflict(_)) => continue,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
}

fn concurrent_cas_increments_lose_nothing(fx: &Fixture) {
    let path = p("counter");
    fx.store.write(&path, b"0").unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (s, path) = (fx.store.clone(), path.clone());
            std::thread::spawn(move || cas_increment_loop(s, path, 25))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fx.store.read(&path).unwrap(), b"100");
}

fn cas_across_instances(fx: &Fixture) {
    let path = p("shared/counter");
    fx.store.write(&path, b"0").unwrap();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (s, path) = (fx.another_instance(), path.clone());
            std::thread::spawn(move || cas_increment_loop(s, path, 20))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(fx.store.read(&path).unwrap(), b"60");
}

fn concurrent_appends_lose_nothing(fx: &Fixture) {
    let path = p("log/messages.jsonl");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = if t % 2 == 0 {
                fx.store.clone()
            } else {
                fx.another_instance()
            };
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    s.append(&path, format!("{t}-{i}\n").as_bytes()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = String::from_utf8(fx.store.read(&path).unwrap()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 60, "{text}");
    // Each writer's lines are in its own order, whole.
    for t in 0..4 {
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("{t}-")))
            .collect();
        let want: Vec<String> = (0..15).map(|i| format!("{t}-{i}")).collect();
        assert_eq!(mine, want);
    }
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 60);
}

fn append_and_rename_noreplace(fx: &Fixture) {
    let s = &*fx.store;
    s.append(&p("log/x.jsonl"), b"a\n").unwrap();
    s.append(&p("log/x.jsonl"), b"b\n").unwrap();
    assert_eq!(s.read(&p("log/x.jsonl")).unwrap(), b"a\nb\n");
    s.write(&p("y.md"), b"y").unwrap();
    assert!(matches!(
        s.rename(&p("log/x.jsonl"), &p("y.md")),
        Err(StorageError::AlreadyExists(_))
    ));
    assert_eq!(s.read(&p("y.md")).unwrap(), b"y", "target untouched");
    s.rename(&p("log"), &p("moved/log")).unwrap();
    assert_eq!(s.read(&p("moved/log/x.jsonl")).unwrap(), b"a\nb\n");
    assert!(s.stat(&p("log")).unwrap().is_none());
    assert!(matches!(
        s.rename(&p("nope"), &p("z")),
        Err(StorageError::NotFound(_))
    ));
    s.rename(&p("y.md"), &p("moved/y2.md")).unwrap();
    assert!(s.stat(&p("y.md")).unwrap().is_none());
    assert_eq!(s.read(&p("moved/y2.md")).unwrap(), b"y");
}

fn directory_semantics(fx: &Fixture) {
    let s = &*fx.store;
    // Empty directories exist, persist and list.
    s.mkdir(&p("acme/user/bob/memories")).unwrap();
    s.mkdir(&p("acme/user/bob/memories")).unwrap(); // idempotent
    assert!(s.stat(&p("acme/user")).unwrap().unwrap().is_dir());
    assert!(s.list(&p("acme/user/bob/memories")).unwrap().is_empty());
    s.write(&p("acme/user/bob/.abstract.md"), b"abs").unwrap();
    assert_eq!(
        names(s, "acme/user/bob"),
        vec![
            (".abstract.md".to_string(), EntryKind::File),
            ("memories".to_string(), EntryKind::Dir)
        ]
    );
    // Removing a directory's last file leaves the directory (it was made by the write).
    s.write(&p("acme/resources/docs/a.md"), b"a").unwrap();
    s.remove(&p("acme/resources/docs/a.md"), false).unwrap();
    assert!(s.stat(&p("acme/resources/docs")).unwrap().unwrap().is_dir());
    assert!(s.list(&p("acme/resources/docs")).unwrap().is_empty());
    // An empty directory goes without `recursive`; a full one needs it.
    s.remove(&p("acme/resources/docs"), false).unwrap();
    assert!(s.stat(&p("acme/resources/docs")).unwrap().is_none());
    assert!(s.stat(&p("acme/resources")).unwrap().unwrap().is_dir());
    assert!(matches!(
        s.remove(&p("acme/user"), false),
        Err(StorageError::NotEmpty(_))
    ));
    s.remove(&p("acme/user"), true).unwrap();
    assert_eq!(
        names(s, "acme"),
        vec![("resources".to_string(), EntryKind::Dir)]
    );
    assert!(matches!(
        s.list(&p("acme/user")),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        s.list(&p("acme/user/bob")),
        Err(StorageError::NotFound(_))
    ));
    // The root lists top-level entries.
    assert_eq!(names(s, ""), vec![("acme".to_string(), EntryKind::Dir)]);
    assert!(s.stat(&StorePath::root()).unwrap().unwrap().is_dir());
    assert!(matches!(
        s.list(&p("missing")),
        Err(StorageError::NotFound(_))
    ));
}

fn type_errors_match(fx: &Fixture) {
    let s = &*fx.store;
    s.write(&p("t/file.md"), b"x").unwrap();
    s.mkdir(&p("t/dir")).unwrap();
    assert!(matches!(
        s.list(&p("t/file.md")),
        Err(StorageError::NotADirectory(_))
    ));
    assert!(matches!(
        s.mkdir(&p("t/file.md")),
        Err(StorageError::NotADirectory(_))
    ));
    assert!(matches!(
        s.write(&p("t/file.md/under"), b"x"),
        Err(StorageError::NotADirectory(_))
    ));
    assert!(matches!(
        s.mkdir(&p("t/file.md/sub")),
        Err(StorageError::NotADirectory(_))
    ));
    assert!(matches!(
        s.write(&p("t/dir"), b"x"),
        Err(StorageError::IsADirectory(_))
    ));
    assert!(matches!(
        s.write_if(&p("t/dir"), b"x", None),
        Err(StorageError::IsADirectory(_))
    ));
    assert!(matches!(
        s.read(&p("t/dir")),
        Err(StorageError::IsADirectory(_))
    ));
    assert!(matches!(
        s.write(&StorePath::root(), b"x"),
        Err(StorageError::InvalidPath(_))
    ));
    assert!(matches!(
        s.remove(&StorePath::root(), true),
        Err(StorageError::InvalidPath(_))
    ));
    assert_eq!(s.read(&p("t/file.md")).unwrap(), b"x");
}

fn rename_moves_whole_trees(fx: &Fixture) {
    let s = &*fx.store;
    s.write(&p("src/a.md"), b"a").unwrap();
    s.write(&p("src/deep/b.md"), b"b").unwrap();
    s.mkdir(&p("src/empty")).unwrap();
    s.mkdir(&p("other")).unwrap();
    assert!(matches!(
        s.rename(&p("src"), &p("other")),
        Err(StorageError::AlreadyExists(_))
    ));
    s.rename(&p("src"), &p("dst/moved")).unwrap();
    assert!(s.stat(&p("src")).unwrap().is_none());
    assert_eq!(s.read(&p("dst/moved/a.md")).unwrap(), b"a");
    assert_eq!(s.read(&p("dst/moved/deep/b.md")).unwrap(), b"b");
    assert_eq!(
        names(s, "dst/moved"),
        vec![
            ("a.md".to_string(), EntryKind::File),
            ("deep".to_string(), EntryKind::Dir),
            ("empty".to_string(), EntryKind::Dir)
        ]
    );
    assert!(s.list(&p("dst/moved/empty")).unwrap().is_empty());
    // An empty directory moves too.
    s.rename(&p("dst/moved/empty"), &p("dst/empty2")).unwrap();
    assert!(s.stat(&p("dst/empty2")).unwrap().unwrap().is_dir());
    assert!(s.stat(&p("dst/moved/empty")).unwrap().is_none());
    // Never into itself.
    assert!(s.rename(&p("dst"), &p("dst/moved/inner")).is_err());
    assert_eq!(s.read(&p("dst/moved/a.md")).unwrap(), b"a");
}

fn read_range_edges(fx: &Fixture) {
    let s = &*fx.store;
    s.write(&p("r.bin"), b"0123456789").unwrap();
    assert_eq!(s.read_range(&p("r.bin"), 0, 3).unwrap(), b"012");
    assert_eq!(s.read_range(&p("r.bin"), 8, 100).unwrap(), b"89");
    assert!(s.read_range(&p("r.bin"), 10, 5).unwrap().is_empty());
    assert!(s.read_range(&p("r.bin"), 50, 5).unwrap().is_empty());
    assert!(s.read_range(&p("r.bin"), 3, 0).unwrap().is_empty());
    s.write(&p("empty.bin"), b"").unwrap();
    assert!(s.read(&p("empty.bin")).unwrap().is_empty());
    assert!(s.read_range(&p("empty.bin"), 0, 10).unwrap().is_empty());
    assert!(matches!(
        s.read_range(&p("missing.bin"), 0, 1),
        Err(StorageError::NotFound(_))
    ));
}

fn unusual_names_round_trip(fx: &Fixture) {
    let s = &*fx.store;
    let odd = [
        "a b.md",
        "100%.md",
        "q?x#y.md",
        "ünïcødé.md",
        "[x]{y}~.md",
        "+plus&amp",
    ];
    for name in odd {
        s.write(&p(&format!("odd/{name}")), name.as_bytes())
            .unwrap();
    }
    let listed: Vec<String> = names(s, "odd").into_iter().map(|(n, _)| n).collect();
    let mut want: Vec<String> = odd.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(listed, want);
    for name in odd {
        assert_eq!(s.read(&p(&format!("odd/{name}"))).unwrap(), name.as_bytes());
    }
    s.remove(&p("odd"), true).unwrap();
    assert!(s.stat(&p("odd")).unwrap().is_none());
}

fn named_lock_excludes_and_times_out(fx: &Fixture) {
    let s = &*fx.store;
    let held = s.lock("session:a", Duration::from_secs(1)).unwrap();
    let started = Instant::now();
    assert!(matches!(
        s.lock("session:a", Duration::from_millis(100)),
        Err(StorageError::Busy(_))
    ));
    assert!(started.elapsed() >= Duration::from_millis(100));
    let _other = s.lock("session:b", Duration::from_millis(100)).unwrap();
    drop(held);
    s.lock("session:a", Duration::from_millis(100)).unwrap();
}

fn lock_excludes_other_instances(fx: &Fixture) {
    let other = fx.another_instance();
    let held = fx.store.lock("registry", Duration::from_secs(1)).unwrap();
    assert!(matches!(
        other.lock("registry", Duration::from_millis(100)),
        Err(StorageError::Busy(_))
    ));
    // A waiter gets the lock as soon as the holder lets go.
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let got = other.lock("registry", Duration::from_secs(10)).map(drop);
        (got, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(held);
    let (got, waited) = waiter.join().unwrap();
    got.unwrap();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

fn internal_objects_stay_hidden(fx: &Fixture) {
    let s = &*fx.store;
    s.mkdir(&p("visible")).unwrap();
    let _held = s.lock("some-lock", Duration::from_secs(1)).unwrap();
    s.probe().unwrap();
    assert_eq!(names(s, ""), vec![("visible".to_string(), EntryKind::Dir)]);
    assert!(s.list(&p("visible")).unwrap().is_empty());
}

// ---- S3 only -------------------------------------------------------------------------------

/// A lock whose holder died (no renewal, no release) frees itself once its lease expires.
#[test]
fn s3_lease_of_a_crashed_holder_expires() {
    let Some(sw) = seaweed::shared() else { return };
    let mut settings = sw.settings(&format!("lease-{}", uuid::Uuid::new_v4().simple()));
    settings.lock_lease_ms = 900;
    let crashed = S3Storage::open(&settings).unwrap();
    let guard = crashed.lock("session:x", Duration::from_secs(1)).unwrap();
    // Neither released nor renewed: forget the guard and stop the holder's runtime.
    std::mem::forget(guard);
    drop(crashed);
    let other = S3Storage::open(&settings).unwrap();
    assert!(matches!(
        other.lock("session:x", Duration::from_millis(50)),
        Err(StorageError::Busy(_))
    ));
    let started = Instant::now();
    other.lock("session:x", Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A live holder keeps its lease past the lease time by renewing it.
#[test]
fn s3_lease_is_renewed_while_held() {
    let Some(sw) = seaweed::shared() else { return };
    let mut settings = sw.settings(&format!("renew-{}", uuid::Uuid::new_v4().simple()));
    settings.lock_lease_ms = 600;
    let a = S3Storage::open(&settings).unwrap();
    let b = S3Storage::open(&settings).unwrap();
    let held = a.lock("long-commit", Duration::from_secs(1)).unwrap();
    assert!(matches!(
        b.lock("long-commit", Duration::from_millis(1500)),
        Err(StorageError::Busy(_))
    ));
    drop(held);
    b.lock("long-commit", Duration::from_secs(1)).unwrap();
}

#[test]
fn s3_bad_credentials_are_unavailable_with_a_clear_message() {
    let Some(sw) = seaweed::shared() else { return };
    let mut settings = sw.settings("creds");
    settings.secret_access_key = Some("wrong-secret".into());
    let s = S3Storage::open(&settings).unwrap();
    for result in [s.probe(), s.write(&p("x"), b"x").map(drop)] {
        match result {
            Err(StorageError::Unavailable(msg)) => {
                assert!(msg.contains(&sw.endpoint), "{msg}");
                assert!(
                    msg.contains("credentials") || msg.contains("denied"),
                    "{msg}"
                );
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[test]
fn s3_unreachable_store_is_unavailable_quickly() {
    if seaweed::available().is_none() {
        return;
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let settings = S3Settings {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        bucket: "nowhere".into(),
        allow_http: true,
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        max_retries: 2,
        retry_timeout_ms: 1_000,
        connect_timeout_ms: 300,
        ..S3Settings::default()
    };
    let s = S3Storage::open(&settings).unwrap();
    let started = Instant::now();
    for result in [
        s.probe(),
        s.read(&p("a")).map(drop),
        s.stat(&p("a")).map(drop),
    ] {
        assert!(
            matches!(result, Err(StorageError::Unavailable(ref m)) if m.contains(&port.to_string())),
            "{result:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// An outage loses no acknowledged write, fails calls as Unavailable while it lasts, and the
/// same backend object recovers when the store comes back (no reopen, no restart).
#[test]
fn s3_outage_loses_nothing_and_recovers_without_reopening() {
    let Some(sw) = SeaweedFs::start() else { return };
    let s = S3Storage::open(&sw.settings("outage")).unwrap();
    let v = s.write(&p("acked/one.json"), b"{\"n\":1}").unwrap();
    s.append(&p("acked/log.jsonl"), b"a\n").unwrap();
    sw.stop();
    assert!(matches!(s.probe(), Err(StorageError::Unavailable(_))));
    assert!(matches!(
        s.write_if(&p("acked/one.json"), b"{\"n\":2}", Some(&v)),
        Err(StorageError::Unavailable(_))
    ));
    assert!(matches!(
        s.read(&p("acked/one.json")),
        Err(StorageError::Unavailable(_))
    ));
    sw.resume();
    s.probe().unwrap();
    assert_eq!(s.read(&p("acked/one.json")).unwrap(), b"{\"n\":1}");
    assert_eq!(s.read_versioned(&p("acked/one.json")).unwrap().1, v);
    s.append(&p("acked/log.jsonl"), b"b\n").unwrap();
    assert_eq!(s.read(&p("acked/log.jsonl")).unwrap(), b"a\nb\n");
    s.write_if(&p("acked/one.json"), b"{\"n\":2}", Some(&v))
        .unwrap();
}

/// A lock held by a process that was killed -9 on this machine is taken over at once, long
/// before its lease would expire (as `flock` is released by the kernel on local disk).
#[test]
fn s3_lease_of_a_killed_holder_is_taken_over_at_once() {
    let Some(sw) = seaweed::shared() else { return };
    let prefix = format!("killed-{}", uuid::Uuid::new_v4().simple());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture"])
        .arg("storage_backends::lock_holder_child_process")
        .env("LOCK_CHILD_ENDPOINT", &sw.endpoint)
        .env("LOCK_CHILD_PREFIX", &prefix)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded by the child's own 60 s) for the child to say it holds the lock.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LOCKED") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "child exited before taking the lock");
    }
    let mut settings = sw.settings(&prefix);
    settings.lock_lease_ms = 60_000;
    let me = S3Storage::open(&settings).unwrap();
    assert!(matches!(
        me.lock("shared", Duration::from_millis(200)),
        Err(StorageError::Busy(_))
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    me.lock("shared", Duration::from_secs(5)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Child-process half of the test above: takes the lock, says so, and waits to be killed.
#[test]
#[ignore = "child process of s3_lease_of_a_killed_holder_is_taken_over_at_once"]
fn lock_holder_child_process() {
    let (Ok(endpoint), Ok(prefix)) = (
        std::env::var("LOCK_CHILD_ENDPOINT"),
        std::env::var("LOCK_CHILD_PREFIX"),
    ) else {
        panic!("run only by s3_lease_of_a_killed_holder_is_taken_over_at_once");
    };
    let settings = S3Settings {
        endpoint: Some(endpoint),
        bucket: seaweed::BUCKET.into(),
        prefix,
        allow_http: true,
        access_key_id: Some(seaweed::ACCESS_KEY.into()),
        secret_access_key: Some(seaweed::SECRET_KEY.into()),
        lock_lease_ms: 60_000,
        ..S3Settings::default()
    };
    let s = S3Storage::open(&settings).unwrap();
    let _held = s.lock("shared", Duration::from_secs(5)).unwrap();
    println!("LOCKED");
    std::thread::sleep(Duration::from_secs(60));
}

// ---- S3 directory moves: visible whole or not at all (issue 14) ----------------------------

/// Every file under `dir`, recursively, through the backend.
fn files_under(s: &dyn Storage, dir: &StorePath) -> usize {
    s.list(dir)
        .expect("list")
        .into_iter()
        .map(|e| match e.meta.kind {
            EntryKind::Dir => files_under(s, &dir.join(&e.name).unwrap()),
            EntryKind::File => 1,
        })
        .sum()
}

/// While one instance moves a tree of hundreds of files, another lists its destination's
/// parent in a loop: it sees nothing or the whole tree, never part of it.
#[test]
fn s3_a_moving_tree_appears_whole_or_not_at_all() {
    const FILES: usize = 400;
    let Some(sw) = seaweed::shared() else { return };
    let prefix = format!("publish-{}", uuid::Uuid::new_v4().simple());
    let settings = sw.settings(&prefix);
    let mover = Arc::new(S3Storage::open(&settings).unwrap());
    let reader = S3Storage::open(&settings).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let mover = &mover;
            scope.spawn(move || {
                for i in (t..FILES).step_by(8) {
                    let path = p(&format!("staging/tree/d{}/f{i}.md", i % 10));
                    mover.write(&path, format!("file {i}").as_bytes()).unwrap();
                }
            });
        }
    });
    reader.mkdir(&p("pub")).unwrap();
    let started = Instant::now();
    let moving = {
        let mover = mover.clone();
        std::thread::spawn(move || mover.rename(&p("staging/tree"), &p("pub/doc")))
    };
    let (mut absent_while_moving, mut whole) = (0, 0);
    for _ in 0..100_000 {
        let still_moving = !moving.is_finished();
        if names(&reader, "pub").iter().any(|(n, _)| n == "doc") {
            assert_eq!(files_under(&reader, &p("pub/doc")), FILES, "a partial tree");
            whole += 1;
        } else if reader.stat(&p("pub/doc")).unwrap().is_some() {
            // Committed between the two calls: whole as well.
            assert_eq!(files_under(&reader, &p("pub/doc")), FILES, "a partial tree");
        } else {
            absent_while_moving += usize::from(still_moving);
        }
        if (moving.is_finished() && whole > 0) || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    moving.join().unwrap().unwrap();
    let moved_in = started.elapsed();
    assert!(whole > 0, "the tree appeared");
    assert!(
        absent_while_moving > 0,
        "the reader looked while the move ran ({moved_in:?})"
    );
    assert_eq!(files_under(&reader, &p("pub/doc")), FILES);
    assert!(reader.stat(&p("staging/tree")).unwrap().is_none());
    let leftovers = sw.raw(&prefix).move_leftovers();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!(
        "moved {FILES} files in {moved_in:?}; {absent_while_moving} listings saw nothing meanwhile"
    );
}

/// Moves whose mover died are settled by recovery on another instance: a flagged (possibly
/// partial) destination is deleted before its flag, a committed one loses its sources, and a
/// move whose lease is still held is left alone.
#[test]
fn s3_recovery_settles_moves_whose_mover_is_gone() {
    let Some(sw) = seaweed::shared() else { return };
    let prefix = format!("recover-{}", uuid::Uuid::new_v4().simple());
    let s = S3Storage::open(&sw.settings(&prefix)).unwrap();
    let raw = sw.raw(&prefix);
    let intent = |id: &str, from: &str, to: &str| {
        let body = serde_json::json!({"id": id, "from": from, "to": to, "started_ms": 0});
        raw.put(
            &format!(".longship-moves/{id}.json"),
            body.to_string().as_bytes(),
        );
    };
    for src in ["src1", "src2", "src3"] {
        s.write(&p(&format!("{src}/a.md")), b"a").unwrap();
        s.write(&p(&format!("{src}/deep/b.md")), b"b").unwrap();
    }
    s.mkdir(&p("pub")).unwrap();
    // 1: crashed mid-copy: flag and claim are its own, one object copied.
    intent("m1", "src1", "pub/r1");
    raw.put("pub/.longship-pub-r1", b"m1");
    raw.put("pub/r1/.longship-dir", b"m1");
    raw.put("pub/r1/a.md", b"a");
    // 2: crashed after the commit (flag gone), before deleting its sources.
    intent("m2", "src2", "pub/r2");
    raw.put("pub/r2/.longship-dir", b"m2");
    raw.put("pub/r2/a.md", b"a");
    raw.put("pub/r2/deep/b.md", b"b");
    // 3: alive (its lease is held by another instance) and mid-copy.
    intent("m3", "src3", "pub/r3");
    raw.put("pub/.longship-pub-r3", b"m3");
    raw.put("pub/r3/.longship-dir", b"m3");
    raw.put("pub/r3/a.md", b"a");
    let alive = S3Storage::open(&sw.settings(&prefix)).unwrap();
    let lease = alive.lock("move:m3", Duration::from_secs(1)).unwrap();
    // 4: lost the race for its name to another mover's flag before it crashed.
    intent("m4", "src4", "pub/r3");

    // Flagged destinations are invisible, whatever they hold.
    assert_eq!(names(&s, "pub"), vec![("r2".to_string(), EntryKind::Dir)]);
    for hidden in ["pub/r1", "pub/r3"] {
        assert!(s.stat(&p(hidden)).unwrap().is_none(), "{hidden}");
        assert!(matches!(s.list(&p(hidden)), Err(StorageError::NotFound(_))));
        assert!(matches!(
            s.remove(&p(hidden), true),
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            s.rename(&p("src1"), &p(hidden)),
            Err(StorageError::AlreadyExists(_))
        ));
    }

    assert_eq!(s.recover_moves().unwrap(), 3, "m1, m2 and m4; m3 is alive");
    let keys = raw.keys();
    assert!(!keys.iter().any(|k| k.starts_with("pub/r1/")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.contains("longship-pub-r1")),
        "{keys:?}"
    );
    assert_eq!(s.read(&p("src1/deep/b.md")).unwrap(), b"b", "sources kept");
    assert!(s.stat(&p("src2")).unwrap().is_none(), "sources removed");
    assert_eq!(s.read(&p("pub/r2/deep/b.md")).unwrap(), b"b");
    assert!(
        keys.contains(&"pub/.longship-pub-r3".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&".longship-moves/m3.json".to_string()));
    assert!(!keys
        .iter()
        .any(|k| k.contains("m1.json") || k.contains("m2.json") || k.contains("m4.json")));
    assert_eq!(names(&s, "pub"), vec![("r2".to_string(), EntryKind::Dir)]);

    // Its holder gone, the live one is rolled back too.
    drop(lease);
    assert_eq!(s.recover_moves().unwrap(), 1);
    assert!(raw.keys().iter().all(|k| !k.starts_with("pub/r3/")
        && !k.contains("longship-pub")
        && !k.contains("moves/")));
    // The names are free again.
    s.rename(&p("src1"), &p("pub/r1")).unwrap();
    s.rename(&p("src3"), &p("pub/r3")).unwrap();
    assert_eq!(files_under(&s, &p("pub")), 6);
}

/// Two instances move different trees to one name at once: exactly one wins, the tree there is
/// entirely the winner's, and the loser's sources are untouched.
#[test]
fn s3_racing_moves_to_one_name_leave_one_whole_tree() {
    const FILES: usize = 100;
    let Some(sw) = seaweed::shared() else { return };
    let prefix = format!("race-{}", uuid::Uuid::new_v4().simple());
    let settings = sw.settings(&prefix);
    let a: Arc<dyn Storage> = Arc::new(S3Storage::open(&settings).unwrap());
    let b: Arc<dyn Storage> = Arc::new(S3Storage::open(&settings).unwrap());
    for (s, tag) in [(&a, "a"), (&b, "b")] {
        for i in 0..FILES {
            s.write(&p(&format!("src-{tag}/d{}/f{i}.md", i % 5)), tag.as_bytes())
                .unwrap();
        }
    }
    let results: Vec<(&str, Result<(), StorageError>)> = std::thread::scope(|scope| {
        let runs: Vec<_> = [(&a, "a"), (&b, "b")]
            .into_iter()
            .map(|(s, tag)| {
                scope.spawn(move || (tag, s.rename(&p(&format!("src-{tag}")), &p("pub/same"))))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<&str> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let loser = results.iter().find(|(_, r)| r.is_err()).unwrap();
    assert!(
        matches!(loser.1, Err(StorageError::AlreadyExists(_))),
        "{results:?}"
    );
    let s = &*a;
    assert_eq!(files_under(s, &p("pub/same")), FILES);
    for i in 0..FILES {
        let got = s.read(&p(&format!("pub/same/d{}/f{i}.md", i % 5))).unwrap();
        assert_eq!(got, winners[0].as_bytes());
    }
    assert_eq!(files_under(s, &p(&format!("src-{}", loser.0))), FILES);
    assert!(s
        .stat(&p(&format!("src-{}", winners[0])))
        .unwrap()
        .is_none());
}
