//! Retrieval: find and search over everything Longship stores.
//!
//! Domain code only (no actix, no HTTP): the analyzer ([`tokenizer`]), what is indexed
//! ([`docs`]), the local tantivy index ([`index`]) and its directory ([`index_dirs`]), the shared change log that keeps every
//! instance fresh ([`changes`]), the single writer's step loop ([`indexer`]), optional dense
//! vectors ([`embed`]) and their garbage collection ([`vector_gc`]), and query evaluation
//! ([`query`], [`filter`]). The actor running the writer lives in
//! `crate::actors::search`; routes in `crate::http::search`.

pub mod access;
pub mod changes;
pub mod consistency;
pub mod docs;
pub mod embed;
pub mod filter;
pub mod index;
pub mod index_dirs;
pub mod indexer;
pub mod query;
pub mod records;
pub mod request;
pub mod tokenizer;
pub mod vector_gc;

pub use changes::ChangeKind;
