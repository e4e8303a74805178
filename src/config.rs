//! Layered configuration: built-in defaults → `--config` TOML file → `LONGSHIP_<SECTION>__<KEY>`
//! environment variables → command-line flags. Unknown keys are errors at every layer.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod audit;
mod retrieval;
mod watch;
pub use audit::AuditSettings;
pub use retrieval::{DenseSettings, EmbeddingSettings, SearchSettings};
pub use watch::WatchSettings;

/// Every setting of the server. `config/default.toml` documents each with its default; a test
/// keeps the two equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub pools: PoolSettings,
    pub auth: AuthSettings,
    pub logging: LoggingSettings,
    pub search: SearchSettings,
    pub embedding: EmbeddingSettings,
    pub resources: ResourceSettings,
    pub vlm: VlmSettings,
    pub quota: QuotaSettings,
    pub content: ContentSettings,
    pub memory: MemorySettings,
    pub audit: AuditSettings,
    pub watch: WatchSettings,
}

/// Content maintenance routes (`content/batch-write`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContentSettings {
    /// Most operations one `content/batch-write` may carry (more: 400).
    pub batch_write_max_operations: usize,
    /// Most content bytes (decoded) one `content/batch-write` may write in all (more: 413).
    pub batch_write_max_bytes: u64,
}

impl Default for ContentSettings {
    fn default() -> Self {
        ContentSettings {
            batch_write_max_operations: 1000,
            batch_write_max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Long-term memory extraction after a commit (Phase 2, `crate::memory`); it runs only when a
/// `[vlm]` chat model is configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySettings {
    /// Estimated tokens of conversation sent to the model per request; longer archives are
    /// cut into pieces of this size.
    pub max_input_tokens: u64,
    /// Repair turns for an answer that is not valid JSON or not the asked-for operations.
    pub repair_attempts: u32,
    /// Existing memories shown to the model per piece as merge candidates.
    pub candidates: usize,
    /// Extractions one account may have waiting; a commit beyond it gets 429.
    pub backlog_limit: usize,
    /// How often each instance lists every account's backlog, for extractions committed on
    /// other instances (commits on this instance, finished extractions and retries that come
    /// due look at their own account at once).
    pub poll_interval_ms: u64,
    /// Longest wait before retrying an extraction whose model was unavailable.
    pub retry_max_secs: u64,
    /// Chat tokens one account's extractions may spend per UTC day (0 = no budget). Beyond it
    /// extractions wait in the backlog until the next day; none is dropped.
    pub daily_token_budget: u64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        MemorySettings {
            max_input_tokens: 4000,
            repair_attempts: 2,
            candidates: 8,
            backlog_limit: 1000,
            poll_interval_ms: 10_000,
            retry_max_secs: 300,
            daily_token_budget: 0,
        }
    }
}

/// Per-account storage quota (`storage::quota`): what an account's content may hold. Off by
/// default (0 = no limit); over it, writes, uploads and ingestions get 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    /// Most bytes of content one account may store (0 = no limit).
    pub account_max_bytes: u64,
    /// Most files one account may store (0 = no limit).
    pub account_max_files: u64,
    /// Seconds a measured usage is trusted (plus the charges since) before the account is
    /// walked again; removals count only from the next walk.
    pub usage_max_age_secs: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            account_max_bytes: 0,
            account_max_files: 0,
            usage_max_age_secs: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; absent = number of CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    pub max_body_bytes: usize,
    /// Request-body bytes all requests together may hold; past it new bodies get 503 +
    /// `Retry-After` before they are read. At least `max_body_bytes`.
    pub max_inflight_body_bytes: usize,
    /// Of `max_inflight_body_bytes`, what one account may hold (bodies and find answers);
    /// beyond: 429 + `Retry-After`. Callers whose key does not resolve share one such share.
    /// Raised to `max_body_bytes` when lower (one whole body always fits).
    pub max_inflight_body_bytes_per_account: usize,
    /// The head of every body that may use the reserve below (an ordinary JSON body is all
    /// head).
    pub small_body_bytes: usize,
    /// Of `max_inflight_body_bytes`, what only the heads of bodies may use, so ordinary finds
    /// and writes are admitted while large bodies fill the rest. Lowered to leave room for
    /// one body of `max_body_bytes`.
    pub small_body_reserve_bytes: usize,
    /// A body with no byte arriving for this many seconds is cut off with 408; also the
    /// period over which `body_min_bytes_per_sec` is measured.
    pub body_idle_timeout_secs: u64,
    /// Least average rate of a body over each `body_idle_timeout_secs`; slower: 408.
    pub body_min_bytes_per_sec: u64,
    /// On SIGTERM/SIGINT: seconds from the signal to finish in-flight requests and then accepted
    /// storage/commit work (one deadline for both).
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "127.0.0.1".into(),
            port: 1933,
            workers: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_inflight_body_bytes: 256 * 1024 * 1024,
            max_inflight_body_bytes_per_account: 64 * 1024 * 1024,
            small_body_bytes: 64 * 1024,
            small_body_reserve_bytes: 32 * 1024 * 1024,
            body_idle_timeout_secs: 15,
            body_min_bytes_per_sec: 1024,
            shutdown_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackendKind {
    Local,
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    pub backend: StorageBackendKind,
    /// Root of the local backend; `/local` is `<data_dir>/viking`.
    pub data_dir: PathBuf,
    /// Temporary files of writes older than this many seconds belong to no live writer (a
    /// write takes seconds at most) and are swept at startup and every 10 minutes.
    pub stale_temp_secs: u64,
    /// The S3 backend (used when `backend = "s3"`).
    pub s3: S3Settings,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: StorageBackendKind::Local,
            data_dir: PathBuf::from("./data"),
            stale_temp_secs: 3600,
            s3: S3Settings::default(),
        }
    }
}

/// An S3-compatible object store holding `/local` under `s3://<bucket>/<prefix>/`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// Endpoint URL of an S3-compatible store (`http://127.0.0.1:8333`); absent = AWS S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Key prefix inside the bucket (no leading or trailing `/`); empty = the bucket root.
    pub prefix: String,
    /// Path-style URLs (`<endpoint>/<bucket>/<key>`), which most self-hosted stores need.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// Credentials; absent = the standard `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Retries of a failed idempotent request (reads, listings, deletes, plain writes) before
    /// the call reports the store unavailable.
    pub max_retries: usize,
    /// Longest time in milliseconds spent retrying one request.
    pub retry_timeout_ms: u64,
    /// Timeout in milliseconds of one HTTP request to the store.
    pub request_timeout_ms: u64,
    /// Timeout in milliseconds of opening a connection to the store.
    pub connect_timeout_ms: u64,
    /// Longest time in milliseconds one storage call may take, retries included; past it the
    /// call fails (503) and new calls are shed until the store answers again.
    pub operation_timeout_ms: u64,
    /// Lifetime in milliseconds of a cross-instance lock lease; the holder renews it at a
    /// third of this, so a crashed holder blocks others for at most this long.
    pub lock_lease_ms: u64,
    /// Requests kept in flight at once when one call reads many objects (grep, glob, tree,
    /// listings with abstracts, segment logs). Bounded, from the calling thread: never a
    /// storage pool thread per object.
    pub parallel_requests: usize,
    /// How often, in seconds, each instance looks for directory moves a crashed mover left
    /// half done and settles them (also once at startup).
    pub move_recovery_secs: u64,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            max_retries: 3,
            retry_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            connect_timeout_ms: 2_000,
            operation_timeout_ms: 10_000,
            lock_lease_ms: 15_000,
            parallel_requests: 32,
            move_recovery_secs: 60,
        }
    }
}

/// Hand-written so that secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| v.as_ref().map(|_| "********");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &masked(&self.secret_access_key))
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_ms", &self.retry_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("operation_timeout_ms", &self.operation_timeout_ms)
            .field("lock_lease_ms", &self.lock_lease_ms)
            .field("parallel_requests", &self.parallel_requests)
            .field("move_recovery_secs", &self.move_recovery_secs)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// SyncArbiter threads doing storage I/O.
    pub storage_threads: usize,
    /// SyncArbiter threads reserved for long commit work.
    pub commit_threads: usize,
    /// Queued plus running jobs allowed on the storage pool before 503.
    pub storage_queue_limit: usize,
    /// Queued plus running jobs allowed on the commit pool before 503.
    pub commit_queue_limit: usize,
    /// `nice` increment of storage-pool threads (0..=19), so HTTP workers win the CPU.
    pub thread_nice: i32,
    /// `nice` increment of commit-pool threads (0..=19): commits only get the CPU that HTTP
    /// workers and short storage jobs leave over.
    pub commit_thread_nice: i32,
    /// SyncArbiter threads of the ingestion lane (fetch, parse, publish, summaries), so
    /// commits never wait behind parsing.
    pub ingest_threads: usize,
    /// Queued plus running ingestions allowed on the ingestion pool before 503.
    pub ingest_queue_limit: usize,
    /// `nice` increment of ingestion-pool threads (0..=19).
    pub ingest_thread_nice: i32,
    /// Share (percent, 1..=100) of a pool's queue limit one account may hold; beyond it that
    /// account gets 503 while others are still admitted. Each account also runs at most
    /// `threads - 1` jobs of a pool at once (at least 1).
    pub account_share_percent: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            storage_threads: 4,
            commit_threads: 2,
            storage_queue_limit: 512,
            commit_queue_limit: 8,
            thread_nice: 10,
            commit_thread_nice: 19,
            ingest_threads: 2,
            ingest_queue_limit: 8,
            ingest_thread_nice: 19,
            account_share_percent: 50,
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Absent: dev mode (loopback only). Present: api_key mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_api_key: Option<String>,
    /// Only `api_key` is supported; `trusted` is refused at startup (spec §13.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Store new keys as Argon2id hashes.
    pub api_key_hashing: bool,
    /// Longest time another instance's revocation can go unnoticed; 0 = check every request.
    pub refresh_interval_ms: u64,
    /// Seconds between sweeps for registry changes that were never announced (a writer that
    /// died between its write and its announcement).
    pub sweep_interval_secs: u64,
}

/// Never prints the root key.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "root_api_key",
                &self.root_api_key.as_ref().map(|_| "********"),
            )
            .field("mode", &self.mode)
            .field("api_key_hashing", &self.api_key_hashing)
            .field("refresh_interval_ms", &self.refresh_interval_ms)
            .field("sweep_interval_secs", &self.sweep_interval_secs)
            .finish()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            root_api_key: None,
            mode: None,
            api_key_hashing: false,
            refresh_interval_ms: 1000,
            sweep_interval_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    /// Log lines queued for the writer thread at most; beyond that lines are dropped (and
    /// counted) rather than blocking the request that logs them.
    pub buffer_lines: usize,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            format: LogFormat::Text,
            level: "info".into(),
            buffer_lines: 16384,
        }
    }
}

impl S3Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.bucket.trim().is_empty() {
            return bad("storage.backend = \"s3\" requires storage.s3.bucket".into());
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.contains("//")
        {
            return bad(format!(
                "storage.s3.prefix {:?} must not start or end with '/' or contain '//'",
                self.prefix
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if lower.starts_with("http://") && !self.allow_http {
                return bad(format!(
                    "storage.s3.endpoint {endpoint} is plain http; set storage.s3.allow_http = true"
                ));
            }
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return bad(format!(
                    "storage.s3.endpoint {endpoint} must start with http:// or https://"
                ));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad(
                "storage.s3.access_key_id and storage.s3.secret_access_key go together".into(),
            );
        }
        if self.request_timeout_ms == 0
            || self.connect_timeout_ms == 0
            || self.operation_timeout_ms == 0
        {
            return bad("storage.s3 timeouts must be at least 1 ms".into());
        }
        if self.lock_lease_ms < 300 {
            return bad("storage.s3.lock_lease_ms must be at least 300".into());
        }
        if self.move_recovery_secs == 0 {
            return bad("storage.s3.move_recovery_secs must be at least 1".into());
        }
        if !(1..=1024).contains(&self.parallel_requests) {
            return bad("storage.s3.parallel_requests must be between 1 and 1024".into());
        }
        Ok(())
    }
}

/// A configuration that cannot be served.
/// Resource ingestion (`POST /api/v1/resources`, temp uploads): limits and operator policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSettings {
    /// Largest accepted temp upload in bytes (413 beyond it).
    pub upload_max_bytes: u64,
    /// Seconds an unused temp upload is kept before the sweep removes it.
    pub upload_ttl_secs: u64,
    /// Seconds between sweeps of expired uploads and abandoned ingestion work.
    pub sweep_interval_secs: u64,
    /// A working ingestion refreshes its marker at least 4 times in this many seconds; a
    /// marker older than this belongs to a dead instance (its task is failed by the sweep).
    pub stale_after_secs: u64,
    /// Fetch `path` URLs that resolve to loopback, private, link-local or metadata addresses.
    pub allow_private_urls: bool,
    /// Server-local directories whose files `path` may name; empty = local paths refused.
    pub local_path_allowlist: Vec<PathBuf>,
    /// Largest body fetched from a `path` URL, in bytes.
    pub fetch_max_bytes: u64,
    /// Seconds a URL fetch may take in total (connect, redirects and body).
    pub fetch_timeout_secs: u64,
    /// Fewest bytes a URL fetch must receive in every `fetch_rate_window_secs` (0 = no
    /// minimum rate).
    pub fetch_min_bytes_per_window: u64,
    /// Length of the window of the minimum transfer rate, in seconds.
    pub fetch_rate_window_secs: u64,
    /// Redirects followed by a URL fetch (each hop is checked again).
    pub fetch_max_redirects: usize,
    /// Most entries an archive may have.
    pub archive_max_entries: usize,
    /// Most bytes an archive may unpack to in total.
    pub archive_max_total_bytes: u64,
    /// Largest uncompressed/compressed ratio of one archive entry above 64 KiB, and of the
    /// whole archive (unpacked bytes / archive size) once it unpacked more than 1 MiB.
    pub archive_max_ratio: u64,
    /// Deepest directory nesting accepted inside an archive.
    pub archive_max_depth: usize,
    /// Address-space limit of the parser child process, in MiB.
    pub parser_memory_mb: u64,
    /// CPU-seconds limit of the parser child process.
    pub parser_cpu_secs: u64,
    /// Wall-clock seconds before the parser child process is killed.
    pub parser_timeout_secs: u64,
    /// Ingestions one account may run at once on one instance (429 beyond it).
    pub max_concurrent_per_account: usize,
    /// Documents above this many estimated tokens are split by headings.
    pub split_max_tokens: usize,
    /// Most files and directories one ingestion may produce after splitting (400 beyond).
    pub ingest_max_nodes: usize,
    /// Most bytes one ingestion may produce after splitting and conversion (400 beyond).
    pub ingest_max_bytes: u64,
    /// Local scratch directory for parsing; empty = the system temp directory.
    pub work_dir: String,
    /// A directory whose children changed has its `.abstract.md`/`.overview.md` rewritten
    /// once no further change came for this many milliseconds (at most 10 times this after
    /// the first change, however busy the directory).
    pub overview_debounce_ms: u64,
    /// Seconds between scans for directories marked for a refresh that no instance did
    /// (its instance died); a mark seen in two scans in a row is refreshed here.
    pub overview_sweep_secs: u64,
}

impl Default for ResourceSettings {
    fn default() -> Self {
        ResourceSettings {
            upload_max_bytes: 512 * 1024 * 1024,
            upload_ttl_secs: 12 * 3600,
            sweep_interval_secs: 300,
            stale_after_secs: 600,
            allow_private_urls: false,
            local_path_allowlist: Vec::new(),
            fetch_max_bytes: 64 * 1024 * 1024,
            fetch_timeout_secs: 30,
            fetch_min_bytes_per_window: 1024,
            fetch_rate_window_secs: 10,
            fetch_max_redirects: 5,
            archive_max_entries: 20_000,
            archive_max_total_bytes: 1024 * 1024 * 1024,
            archive_max_ratio: 200,
            archive_max_depth: 48,
            parser_memory_mb: 2048,
            parser_cpu_secs: 120,
            parser_timeout_secs: 180,
            max_concurrent_per_account: 2,
            split_max_tokens: 1024,
            ingest_max_nodes: 50_000,
            ingest_max_bytes: 1024 * 1024 * 1024,
            work_dir: String::new(),
            overview_debounce_ms: 1000,
            overview_sweep_secs: 30,
        }
    }
}

impl ResourceSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.upload_max_bytes == 0 || self.fetch_max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "resources.upload_max_bytes and resources.fetch_max_bytes must be positive".into(),
            ));
        }
        if self.overview_sweep_secs == 0 {
            return Err(ConfigError::Invalid(
                "resources.overview_sweep_secs must be >= 1".into(),
            ));
        }
        if self.stale_after_secs < 2 || self.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "resources.stale_after_secs must be >= 2 and sweep_interval_secs >= 1".into(),
            ));
        }
        if self.max_concurrent_per_account == 0 || self.split_max_tokens < 64 {
            return Err(ConfigError::Invalid(
                "resources.max_concurrent_per_account must be >= 1 and split_max_tokens >= 64"
                    .into(),
            ));
        }
        if self.parser_timeout_secs == 0 || self.parser_cpu_secs == 0 || self.parser_memory_mb < 64
        {
            return Err(ConfigError::Invalid(
                "resources.parser_* limits must be positive (memory at least 64 MiB)".into(),
            ));
        }
        Ok(())
    }
}

/// The optional chat model that writes L0/L1 summaries (OpenAI-compatible
/// `/v1/chat/completions`; names as OpenViking's `vlm` section). Absent `api_base` or
/// `model` = extractive summaries only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VlmSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Chat requests in flight at once (per instance).
    pub max_concurrent: usize,
    /// Seconds one chat request may take.
    pub timeout: f64,
    /// Retries of a failed chat request before falling back to extractive text.
    pub max_retries: u32,
    /// `max_tokens` sent with each request.
    pub max_tokens: u32,
    pub temperature: f64,
}

impl Default for VlmSettings {
    fn default() -> Self {
        VlmSettings {
            provider: None,
            api_base: None,
            model: None,
            api_key: None,
            max_concurrent: 4,
            timeout: 60.0,
            max_retries: 2,
            max_tokens: 1024,
            temperature: 0.0,
        }
    }
}

/// Never prints the API key.
impl std::fmt::Debug for VlmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlmSettings")
            .field("provider", &self.provider)
            .field("api_base", &self.api_base)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "********"))
            .field("max_concurrent", &self.max_concurrent)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .finish()
    }
}

impl VlmSettings {
    /// True when a chat model is configured.
    pub fn enabled(&self) -> bool {
        self.api_base
            .as_deref()
            .is_some_and(|b| !b.trim().is_empty())
            && self.model.as_deref().is_some_and(|m| !m.trim().is_empty())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = self.provider.as_deref() {
            if !matches!(p, "openai" | "openai-compatible" | "litellm" | "volcengine") {
                return Err(ConfigError::Invalid(format!(
                    "vlm.provider {p:?}: only OpenAI-compatible chat APIs are supported (use \"openai\")"
                )));
            }
        }
        // The slots are a channel of that capacity, allocated up front.
        if !(1..=256).contains(&self.max_concurrent) || self.timeout.is_nan() || self.timeout <= 0.0
        {
            return Err(ConfigError::Invalid(
                "vlm.max_concurrent must be between 1 and 256 and vlm.timeout positive".into(),
            ));
        }
        if let Some(base) = self.api_base.as_deref() {
            let lower = base.to_ascii_lowercase();
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "vlm.api_base {base} must start with http:// or https://"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Command-line values that override every other layer (absent = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub data_dir: Option<PathBuf>,
    pub root_api_key: Option<String>,
    pub workers: Option<usize>,
    pub storage_threads: Option<usize>,
    pub commit_threads: Option<usize>,
    pub log_format: Option<LogFormat>,
}

impl Settings {
    /// Build the effective settings from every layer and validate them.
    pub fn load(file: Option<&std::path::Path>, cli: &Overrides) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "cannot read config file {}",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path.to_path_buf())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("LONGSHIP")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        let mut set = |key: &str, value: Option<config::Value>| -> Result<(), ConfigError> {
            if let Some(v) = value {
                builder = std::mem::take(&mut builder).set_override(key, v)?;
            }
            Ok(())
        };
        set("server.host", cli.host.clone().map(Into::into))?;
        set("server.port", cli.port.map(|p| i64::from(p).into()))?;
        set(
            "storage.data_dir",
            cli.data_dir
                .as_ref()
                .map(|d| d.display().to_string().into()),
        )?;
        set(
            "auth.root_api_key",
            cli.root_api_key.clone().map(Into::into),
        )?;
        set("server.workers", cli.workers.map(|n| (n as i64).into()))?;
        set(
            "pools.storage_threads",
            cli.storage_threads.map(|n| (n as i64).into()),
        )?;
        set(
            "pools.commit_threads",
            cli.commit_threads.map(|n| (n as i64).into()),
        )?;
        set(
            "logging.format",
            cli.log_format.map(|f| match f {
                LogFormat::Text => "text".into(),
                LogFormat::Json => "json".into(),
            }),
        )?;
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rules that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.server.workers == Some(0) {
            return bad("server.workers must be at least 1".into());
        }
        if self.pools.storage_threads == 0
            || self.pools.commit_threads == 0
            || self.pools.ingest_threads == 0
        {
            return bad(
                "pools.storage_threads, pools.commit_threads and pools.ingest_threads must be at \
                 least 1"
                    .into(),
            );
        }
        if self.pools.storage_queue_limit < self.pools.storage_threads
            || self.pools.commit_queue_limit < self.pools.commit_threads
            || self.pools.ingest_queue_limit < self.pools.ingest_threads
        {
            return bad("a pool's queue limit must be at least its thread count".into());
        }
        if !(0..=19).contains(&self.pools.thread_nice) {
            return bad("pools.thread_nice must be between 0 and 19".into());
        }
        if !(0..=19).contains(&self.pools.commit_thread_nice) {
            return bad("pools.commit_thread_nice must be between 0 and 19".into());
        }
        if !(0..=19).contains(&self.pools.ingest_thread_nice) {
            return bad("pools.ingest_thread_nice must be between 0 and 19".into());
        }
        if !(1..=100).contains(&self.pools.account_share_percent) {
            return bad("pools.account_share_percent must be between 1 and 100".into());
        }
        if self.storage.backend == StorageBackendKind::S3 {
            self.storage.s3.validate()?;
        }
        if self.storage.stale_temp_secs < 60 {
            return bad("storage.stale_temp_secs must be at least 60".into());
        }
        self.search.validate()?;
        self.audit.validate()?;
        self.watch.validate()?;
        self.embedding.validate()?;
        self.resources.validate()?;
        self.vlm.validate()?;
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes must be at least 1024".into());
        }
        if self.server.max_inflight_body_bytes < self.server.max_body_bytes {
            return bad(
                "server.max_inflight_body_bytes must be at least server.max_body_bytes".into(),
            );
        }
        let srv = &self.server;
        if srv.body_idle_timeout_secs == 0 {
            return bad("server.body_idle_timeout_secs must be at least 1".into());
        }
        match self.auth.mode.as_deref() {
            None | Some("api_key") | Some("dev") => {}
            Some("trusted") => {
                return bad(
                    "auth.mode = \"trusted\" is not supported in this version; use api_key".into(),
                )
            }
            Some(other) => return bad(format!("unknown auth.mode {other:?}; use api_key")),
        }
        if self.auth.sweep_interval_secs == 0 {
            return bad("auth.sweep_interval_secs must be at least 1".into());
        }
        if self.auth.root_api_key.as_deref() == Some("") {
            return bad("auth.root_api_key must not be empty (omit it for dev mode)".into());
        }
        if self.auth.mode.as_deref() == Some("api_key") && self.auth.root_api_key.is_none() {
            return bad("auth.mode = \"api_key\" requires auth.root_api_key".into());
        }
        if self.auth.root_api_key.is_none() && !self.host_is_loopback() {
            return bad(format!(
                "dev mode (no auth.root_api_key) may only bind a loopback host, not {}",
                self.server.host
            ));
        }
        Ok(())
    }

    fn host_is_loopback(&self) -> bool {
        self.server.host == "localhost"
            || self
                .server
                .host
                .parse::<IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
    }

    pub fn auth_mode(&self) -> crate::identity::AuthMode {
        if self.auth.root_api_key.is_some() {
            crate::identity::AuthMode::ApiKey
        } else {
            crate::identity::AuthMode::Dev
        }
    }

    pub fn workers(&self) -> usize {
        self.server
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The effective settings as TOML with secrets masked (for `longship config`).
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        let mut shown = self.clone();
        if shown.auth.root_api_key.is_some() {
            shown.auth.root_api_key = Some("********".into());
        }
        if shown.embedding.dense.api_key.is_some() {
            shown.embedding.dense.api_key = Some("********".into());
        }
        if shown.storage.s3.secret_access_key.is_some() {
            shown.storage.s3.secret_access_key = Some("********".into());
        }
        if shown.vlm.api_key.is_some() {
            shown.vlm.api_key = Some("********".into());
        }
        toml::to_string_pretty(&shown).map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_matches_builtin_defaults() {
        let text = include_str!("../config/default.toml");
        let parsed: Settings = toml::from_str(text).expect("config/default.toml parses");
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn chat_model_key_is_masked_and_settings_checked() {
        let mut s = Settings::default();
        s.vlm.api_base = Some("http://127.0.0.1:9/v1".into());
        s.vlm.model = Some("m".into());
        s.vlm.api_key = Some("sk-very-secret".into());
        assert!(s.vlm.enabled());
        assert!(!format!("{s:?}").contains("sk-very-secret"));
        assert!(!s.to_masked_toml().unwrap().contains("sk-very-secret"));
        s.vlm.provider = Some("anthropic".into());
        assert!(s.validate().is_err());
        s.vlm.provider = Some("openai".into());
        s.vlm.api_base = Some("ftp://x".into());
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.resources.max_concurrent_per_account = 0;
        assert!(s.validate().is_err());
    }

    #[test]
    fn validation_rules() {
        let mut s = Settings::default();
        assert!(s.validate().is_ok());
        s.server.host = "0.0.0.0".into();
        assert!(s.validate().is_err(), "dev mode on a public host");
        s.auth.root_api_key = Some("k".into());
        assert!(s.validate().is_ok());
        s.auth.root_api_key = Some(String::new());
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.pools.storage_threads = 0;
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.auth.mode = Some("trusted".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn masks_secrets() {
        let mut s = Settings::default();
        s.auth.root_api_key = Some("super-secret".into());
        s.storage.s3.access_key_id = Some("AKIDVISIBLE".into());
        s.storage.s3.secret_access_key = Some("s3-secret-value".into());
        s.embedding.dense.api_key = Some("sk-embedding-secret".into());
        let shown = s.to_masked_toml().unwrap();
        assert!(!shown.contains("sk-embedding-secret"));
        assert!(!format!("{s:?}").contains("sk-embedding-secret"));
        assert!(!format!("{s:?}").contains("super-secret"));
        assert!(!shown.contains("super-secret"));
        assert!(!shown.contains("s3-secret-value"));
        assert!(shown.contains("AKIDVISIBLE"), "the key id is not secret");
        assert!(shown.contains("********"));
        assert!(!format!("{s:?}").contains("s3-secret-value"));
    }

    #[test]
    fn s3_settings_are_validated_only_for_the_s3_backend() {
        let mut s = Settings::default();
        s.storage.s3.prefix = "/bad/".into();
        assert!(s.validate().is_ok(), "ignored while the backend is local");
        s.storage.backend = StorageBackendKind::S3;
        assert!(s.validate().is_err(), "no bucket, bad prefix");
        s.storage.s3.bucket = "longship".into();
        s.storage.s3.prefix = "team/a".into();
        assert!(s.validate().is_ok());
        s.storage.s3.endpoint = Some("http://127.0.0.1:8333".into());
        assert!(s.validate().is_err(), "plain http needs allow_http");
        s.storage.s3.allow_http = true;
        assert!(s.validate().is_ok());
        s.storage.s3.access_key_id = Some("id".into());
        assert!(s.validate().is_err(), "key id without secret");
    }
}
