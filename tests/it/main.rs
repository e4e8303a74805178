//! Integration tests: every test starts the real binary (one test binary to save link time).

mod harness;
mod metrics;
mod s3;
mod seaweed;
mod storage_backends;
mod system;
mod tasks;
