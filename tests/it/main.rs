//! Integration tests: every test starts the real binary (one test binary to save link time).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

mod acl;
mod admin;
mod audit;
mod bad_input;
mod budget;
mod chat_server;
mod dev_mode;
mod embed_adapt;
mod embed_server;
mod fair;
mod find;
mod find_vectors;
mod fs;
mod fs_content;
mod fs_safety;
mod fs_search;
mod fuzz;
mod harden;
mod harness;
mod ingest_limits;
mod layout;
mod memory;
mod metrics;
mod multi_instance;
mod names;
mod observer;
mod pack;
mod ranking;
mod resources;
mod s3;
mod s3_publish;
mod s3_scale;
mod seaweed;
mod sessions;
mod sessions_durability;
mod settings;
mod skills;
mod snapshot;
mod storage_backends;
mod system;
mod tags;
mod tasks;
mod walks;
mod watches;
mod webdav;
