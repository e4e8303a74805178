//! Longship: an OpenViking-compatible context database server.
//!
//! Layout (see docs/ARCHITECTURE.md): `http` (routes, extractors, envelope; no I/O) submits
//! `jobs` (one struct per blocking operation) to the pools in `actors`; a job's `run` calls the
//! domain logic in `storage`, which works over the blocking `Storage` trait and its backends.

pub mod actors;
pub mod cli;
pub mod config;
pub mod decode;
pub mod error;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod jobs;
pub mod memory;
pub mod net;
pub mod reserved;
pub mod search;
pub mod skills;
pub mod slots;
pub mod snapshot;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod time;
