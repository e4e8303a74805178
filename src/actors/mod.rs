//! Actors: the AuthActor that owns the account map, and the SyncArbiter pools that run every
//! blocking storage and commit operation.

pub mod auth;
pub mod health;
pub mod pool;
pub mod resources;
pub mod tasks;

pub use pool::{BlockingJob, JobContext, Pool, PoolError, Pools};
