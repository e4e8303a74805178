//! F6 mv: a no-replace rename (spec §13.5: an existing destination is 409, never overwritten).

use serde_json::{json, Value};

use super::{dir_not_found, not_a_directory, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError};

fn exists_conflict(to: &VikingUri) -> ServiceError {
    let shown = to.uri();
    ServiceError::conflict(format!("Destination already exists: {shown}"))
        .with_details(json!({"resource": shown, "uri": shown, "conflict_type": "already_exists"}))
}

/// Move `from` to `to`; the handler has checked rights, identity and overlap.
pub fn move_entry(storage: &dyn Storage, from: &VikingUri, to: &VikingUri) -> ServiceResult<Value> {
    let Some(src) = stat(storage, from)? else {
        let shown = from.uri();
        return Err(ServiceError::not_found(
            "resource",
            &shown,
            format!("Resource not found: {shown}"),
        ));
    };
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
    match storage.rename(from.store_path(), to.store_path()) {
        Ok(()) => Ok(json!({"from": from.uri(), "to": to.uri()})),
        // Created between the check and the rename: still never replaced.
        Err(StorageError::AlreadyExists(_)) => Err(exists_conflict(to)),
        Err(StorageError::NotFound(_)) => Err(ServiceError::not_found(
            "resource",
            &from.uri(),
            format!("Resource not found: {}", from.uri()),
        )),
        Err(e) => Err(StorageFail(to).map(e)),
    }
}
