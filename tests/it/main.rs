//! Integration tests: every test starts the real binary (one test binary to save link time).

mod harness;
mod metrics;
mod sessions;
mod sessions_durability;
mod system;
mod tasks;
