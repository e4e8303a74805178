//! The destination rules mv (F6) and cp (R7) share (spec §13.5): the target's parent must be an
//! existing directory, and an existing target is 409 — never overwritten or merged.

use serde_json::json;

use super::{dir_not_found, not_a_directory, stat};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::{Meta, Storage};

/// 409 for a destination that exists (also when it appears between the check and the write).
pub(super) fn exists_conflict(to: &VikingUri) -> ServiceError {
    let shown = to.uri();
    ServiceError::conflict(format!("Destination already exists: {shown}"))
        .with_details(json!({"resource": shown, "uri": shown, "conflict_type": "already_exists"}))
}

/// 404 for a source that does not exist.
pub(super) fn source_missing(from: &VikingUri) -> ServiceError {
    let shown = from.uri();
    ServiceError::not_found("resource", &shown, format!("Resource not found: {shown}"))
}

/// The source's metadata, or 404.
pub(super) fn source_meta(storage: &dyn Storage, from: &VikingUri) -> ServiceResult<Meta> {
    stat(storage, from)?.ok_or_else(|| source_missing(from))
}

/// Checks that `to` can receive a source of `src`'s kind: its parent is a directory and `to`
/// itself does not exist (400 when it exists with the other kind, 409 otherwise).
pub(super) fn check_destination(
    storage: &dyn Storage,
    src: &Meta,
    to: &VikingUri,
) -> ServiceResult<()> {
    if let Some(parent) = to.parent() {
        match stat(storage, &parent)? {
            None => return Err(dir_not_found(&parent)),
            Some(m) if !m.is_dir() => return Err(not_a_directory(&parent)),
            Some(_) => {}
        }
    }
    if let Some(dst) = stat(storage, to)? {
        if dst.is_dir() != src.is_dir() {
            return Err(ServiceError::invalid_argument(format!(
                "transfer source and target types differ: {}",
                to.uri()
            )));
        }
        return Err(exists_conflict(to));
    }
    Ok(())
}
