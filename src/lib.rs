//! Longship: an OpenViking-compatible context database server.
//!
//! Layout: `http` (routes, extractors, envelope; no I/O) → `actors` (the AuthActor and the
//! SyncArbiter pools) → `storage` (blocking backends behind one trait and the domain logic
//! that runs on them).

pub mod actors;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod startup;
pub mod storage;
pub mod telemetry;
