//! The storage backends behind [`super::Storage`]: local disk and S3-compatible object stores.

pub mod local;
pub mod s3;
