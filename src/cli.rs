//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "longship",
    version,
    about = "An OpenViking-compatible context database server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve(ServeArgs),
    /// Print the effective configuration as TOML (secrets masked).
    Config(ServeArgs),
    /// Internal: parse one resource in a sandboxed child process (started by the server).
    #[command(name = "parse-resource", hide = true)]
    ParseResource(ParseResourceArgs),
}

/// Arguments of the internal parser child (see `ingest::sandbox`).
#[derive(Debug, Args, Clone)]
pub struct ParseResourceArgs {
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub work: PathBuf,
    #[arg(long)]
    pub options: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind [default: 1933].
    #[arg(long)]
    pub port: Option<u16>,
    /// Data directory of the local backend [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// ROOT API key; without one the server runs in dev mode (loopback only).
    #[arg(long, value_name = "KEY")]
    pub root_api_key: Option<String>,
    /// HTTP worker threads [default: number of CPUs].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Storage SyncArbiter threads [default: 4].
    #[arg(long)]
    pub storage_threads: Option<usize>,
    /// Commit SyncArbiter threads [default: 2].
    #[arg(long)]
    pub commit_threads: Option<usize>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            data_dir: self.data_dir.clone(),
            root_api_key: self.root_api_key.clone(),
            workers: self.workers,
            storage_threads: self.storage_threads,
            commit_threads: self.commit_threads,
            log_format: self.log_format,
        }
    }
}
