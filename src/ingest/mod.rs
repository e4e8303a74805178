//! Resource ingestion (`POST /api/v1/resources`, docs/API.md): temp uploads in shared
//! storage, URL fetching with SSRF rules, allow-listed server-local files and directories,
//! parsing in a sandboxed child process (Markdown, text, code, HTML, PDF, ZIP), heading-based
//! splitting, staged publication, and L0/L1 summaries — extractive by default, written by an
//! OpenAI-compatible chat model when one is configured.
//!
//! Everything here is blocking domain logic over `&dyn Storage` and local scratch space; jobs
//! in `jobs::resources` run it on pool threads. No actix, no HTTP types.

pub mod active;
pub mod archive;
pub mod chat;
pub mod convert;
pub mod fetch;
pub mod gate;
pub mod git;
pub mod local;
pub mod names;
pub mod overview;
pub mod pack;
pub mod package;
pub mod parse;
pub mod pipeline;
pub mod process;
pub mod refine;
pub mod sandbox;
pub mod scratch;
pub mod split;
pub mod summary;
pub mod uploads;
pub mod watch;
