//! Long-term memory (Phase 2 of a session commit): the built-in user memory types
//! ([`types`]), the memory file format ([`file`]), asking the chat model and judging its
//! answers ([`model`]), and the exactly-once extraction of one archive ([`extract`]). The
//! backlog of extractions lives in `storage::sessions::backlog` (commits write it); the jobs
//! are in `jobs/memory.rs` and the scheduler that feeds them in `startup.rs`.

pub mod budget;
pub mod extract;
pub mod file;
pub mod health;
pub mod model;
pub mod scope;
pub mod stats;
pub mod templates;
pub mod types;

pub use crate::config::MemorySettings;
