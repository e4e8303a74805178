//! Integration tests: every test starts the real binary (one test binary to save link time).

mod admin;
mod harness;
mod multi_instance;
mod system;
mod tasks;
