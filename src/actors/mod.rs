//! Actors: the AuthActor that owns the account map, and the SyncArbiter pools that run every
//! blocking job (`crate::jobs`) on their own threads.

pub mod audit;
pub mod auth;
pub mod fair;
pub mod overviews;
pub mod pool;
pub mod search;
pub mod watches;

pub use fair::Lane;
pub use pool::{Pool, Pools};
