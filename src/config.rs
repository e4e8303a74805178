//! Layered configuration: built-in defaults → `--config` TOML file → `LONGSHIP_<SECTION>__<KEY>`
//! environment variables → command-line flags. Unknown keys are errors at every layer.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Seconds to finish in-flight requests and accepted storage/commit work on SIGTERM.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "127.0.0.1".into(),
            port: 1933,
            workers: None,
            max_body_bytes: 32 * 1024 * 1024,
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
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: StorageBackendKind::Local,
            data_dir: PathBuf::from("./data"),
        }
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
    /// `nice` increment of pool threads (0..=19), so HTTP workers win the CPU.
    pub thread_nice: i32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            storage_threads: 4,
            commit_threads: 2,
            storage_queue_limit: 512,
            commit_queue_limit: 8,
            thread_nice: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            root_api_key: None,
            mode: None,
            api_key_hashing: false,
            refresh_interval_ms: 1000,
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
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A configuration that cannot be served.
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
        if self.pools.storage_threads == 0 || self.pools.commit_threads == 0 {
            return bad("pools.storage_threads and pools.commit_threads must be at least 1".into());
        }
        if self.pools.storage_queue_limit < self.pools.storage_threads
            || self.pools.commit_queue_limit < self.pools.commit_threads
        {
            return bad("a pool's queue limit must be at least its thread count".into());
        }
        if !(0..=19).contains(&self.pools.thread_nice) {
            return bad("pools.thread_nice must be between 0 and 19".into());
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes must be at least 1024".into());
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
        let shown = s.to_masked_toml().unwrap();
        assert!(!shown.contains("super-secret"));
        assert!(shown.contains("********"));
    }
}
