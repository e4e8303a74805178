//! Integration tests: every test starts the real binary (one test binary to save link time).

mod admin;
mod fs;
mod fs_content;
mod fs_safety;
mod fs_search;
mod harness;
mod metrics;
mod sessions;
mod sessions_durability;
mod system;
mod tasks;
