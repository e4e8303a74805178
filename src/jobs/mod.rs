//! Blocking jobs: one struct per operation, grouped by API area, each run on a pool thread.
//!
//! A job carries its inputs; its `run` is one call into a domain function over `&dyn Storage`
//! (in `crate::storage::…`). Anything a job needs besides storage (a registry sink, an index)
//! travels in the job struct, not in [`JobContext`]. This module knows nothing about actix: the
//! pools in `crate::actors::pool` execute jobs, and handlers submit them.

pub mod acl;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod content;
pub mod diagnostics;
pub mod fs;
pub mod health;
pub mod memory;
pub mod overviews;
pub mod pack;
pub mod resources;
pub mod search;
pub mod sessions;
pub mod settings;
pub mod skills;
pub mod snapshot;
pub mod tags;
pub mod tasks;
pub mod watches;
pub mod webdav;

use crate::error::ServiceError;
use crate::storage::Storage;

/// Blocking work for a pool thread.
pub trait BlockingJob: Send + 'static {
    type Output: Send + 'static;

    /// Runs on a pool thread; may block.
    fn run(self, ctx: &JobContext<'_>) -> Self::Output;

    /// True for a job cut into bounded steps with yield points between them (a walk, a
    /// recursive copy, a move of a tree): it may run long, so the pool starts it only on a
    /// free thread, never at another job's yield point, where it would hold that thread for
    /// its whole length. Jobs that are one bounded operation keep the default.
    fn runs_in_steps(&self) -> bool {
        false
    }
}

/// What a job gets to work with.
pub struct JobContext<'a> {
    pub storage: &'a dyn Storage,
    abandoned: &'a dyn Fn() -> bool,
    yield_point: &'a dyn Fn(),
}

impl<'a> JobContext<'a> {
    /// `abandoned` is checked by long walks between steps (the pool makes it a yield point
    /// too); `yield_point` lets other accounts' waiting jobs run on this thread.
    pub fn new(
        storage: &'a dyn Storage,
        abandoned: &'a dyn Fn() -> bool,
        yield_point: &'a dyn Fn(),
    ) -> Self {
        JobContext {
            storage,
            abandoned,
            yield_point,
        }
    }

    /// True once nobody waits for the answer any more (the client went away). Long read-only
    /// walks check it between steps and stop; writes ignore it and finish. Each check is also a
    /// yield point.
    pub fn is_abandoned(&self) -> bool {
        (self.abandoned)()
    }

    /// The abandonment check, for domain functions that walk long trees (called between
    /// bounded steps, so it is also where the job yields to other accounts).
    pub fn abandoned(&self) -> &'a dyn Fn() -> bool {
        self.abandoned
    }

    /// A step boundary of a long job that must finish (a recursive copy): another account's
    /// waiting job may run here, on this thread, before the next step. Call it where no lock
    /// is held.
    pub fn yield_point(&self) {
        (self.yield_point)()
    }

    /// The yield point, for domain functions.
    pub fn yielder(&self) -> &'a dyn Fn() {
        self.yield_point
    }
}

/// Why a job did not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the {pool} pool is at capacity")]
    Overloaded { pool: &'static str },
    #[error("a job on the {pool} pool panicked: {message}")]
    Panicked { pool: &'static str, message: String },
    #[error("the {pool} pool has stopped")]
    Stopped { pool: &'static str },
}

impl From<PoolError> for ServiceError {
    fn from(err: PoolError) -> Self {
        use PoolError as E;
        match err {
            E::Overloaded { pool } => ServiceError::unavailable(
                pool,
                format!("the {pool} pool is at capacity; retry shortly"),
            )
            .retry_after(1),
            E::Panicked { .. } => ServiceError::internal(err),
            E::Stopped { pool } => {
                ServiceError::unavailable(pool, "the server is shutting down").retry_after(1)
            }
        }
    }
}
