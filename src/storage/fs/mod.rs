//! Filesystem, content and search operations over `viking://` URIs (spec §6–§8).
//!
//! Each operation is a function over `&dyn Storage` that a job (`crate::jobs::fs`,
//! `crate::jobs::content`) runs on the storage pool. Handlers parse and authorize URIs first
//! ([`super::uri`]), so an operation only ever sees a safe path inside the caller's account. Errors name URIs, never storage paths: a backend
//! message may contain the data directory or an account name, so [`StorageFail`] replaces it.

pub mod attrs;
pub mod batch;
pub mod cp;
pub mod entry;
pub mod glob;
pub mod grep;
pub mod listing;
pub mod mkdir;
pub mod mv;
pub mod read;
pub mod reindex;
pub mod rm;
pub mod stat;
mod transfer;
pub mod walk;
pub mod write;

use serde_json::json;

use super::uri::VikingUri;
use super::{Meta, Storage, StorageError, StorePath};
use crate::error::{ServiceError, ServiceResult};

/// 404 for a missing file (C1, F3).
pub fn file_not_found(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::not_found("file", &shown, format!("File not found: {shown}"))
}

/// 404 for a missing directory (F1, F2, C2/C3, S2).
pub fn dir_not_found(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::not_found("directory", &shown, format!("Directory not found: {shown}"))
}

/// 400 when a directory was expected.
pub fn not_a_directory(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::invalid_argument(format!("not a directory: {shown}"))
        .with_details(json!({"resource": shown}))
}

/// 400 when a file was expected but `uri` is a directory.
pub fn is_a_directory(uri: &VikingUri, message: String) -> ServiceError {
    ServiceError::invalid_argument(message).with_details(json!({
        "resource": uri.uri(), "expected": "file", "actual": "directory"
    }))
}

/// Translate a storage failure about `uri` without revealing the storage path.
pub struct StorageFail<'a>(pub &'a VikingUri);

impl StorageFail<'_> {
    pub fn map(&self, err: StorageError) -> ServiceError {
        let uri = self.0;
        match err {
            StorageError::NotFound(_) => file_not_found(uri),
            StorageError::NotADirectory(_) => not_a_directory(uri),
            StorageError::IsADirectory(_) => is_a_directory(
                uri,
                format!("Directory URI is not readable as a file: {}", uri.uri()),
            ),
            StorageError::AlreadyExists(_) => already_exists(uri),
            StorageError::NotEmpty(_) => {
                ServiceError::invalid_argument(format!("directory not empty: {}", uri.uri()))
            }
            StorageError::Conflict(_) | StorageError::Busy(_) => {
                let shown = uri.uri();
                ServiceError::conflict(format!(
                    "resource is busy and cannot be written now: {shown}"
                ))
                .with_details(json!({
                    "resource": shown, "uri": shown, "conflict_type": "path_busy", "retryable": true
                }))
            }
            StorageError::Unavailable(_) | StorageError::ReadOnly(_) => {
                crate::error::storage_failure(&err)
            }
            StorageError::InvalidPath(reason) => {
                tracing::warn!(%reason, "invalid storage path");
                ServiceError::invalid_argument(format!("invalid path: {}", uri.uri()))
            }
            StorageError::TooLarge(reason) => {
                ServiceError::new(crate::error::ErrorCode::PayloadTooLarge, reason)
                    .detail("resource", uri.uri())
            }
            StorageError::Io(e) => ServiceError::internal(e),
        }
    }
}

/// 409 for an existing target (F4, F6 per §13.5).
pub fn already_exists(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::conflict(format!("already exists: {shown}"))
        .with_details(json!({"resource": shown}))
}

/// `stat`, with the failure translated.
pub fn stat(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<Option<Meta>> {
    storage
        .stat(uri.store_path())
        .map_err(|e| StorageFail(uri).map(e))
}

/// The sidecar `name` of directory `dir`.
pub fn sidecar_path(dir: &VikingUri, name: &str) -> ServiceResult<StorePath> {
    dir.store_path()
        .join(name)
        .map_err(|e| ServiceError::internal(e.to_string()))
}

/// Decode file bytes as UTF-8, lossily (spec C1), without copying valid input.
pub fn lossy_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
