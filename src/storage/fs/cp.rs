//! cp (docs/API.md, Filesystem): copy a file or (with `recursive`) a directory tree, under the mv
//! rules of mv: an existing target is 409, never overwritten or merged.
//!
//! Crash-safe per file: every file is created with the backend's atomic create-only write, so a
//! copy is visible whole or not at all, and a file that appeared meanwhile is never replaced.

use serde_json::{json, Value};

use super::transfer::{check_destination, exists_conflict, source_meta, source_missing};
use super::StorageFail;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::tags;
use crate::storage::uri::{is_internal_name, VikingUri};
use crate::storage::{Storage, StorageError};

/// Create `to` with the content of file `from`, only if `to` does not exist.
fn copy_file(storage: &dyn Storage, from: &VikingUri, to: &VikingUri) -> ServiceResult<u64> {
    let data = match storage.read(from.store_path()) {
        Ok(d) => d,
        Err(StorageError::NotFound(_)) => return Err(source_missing(from)),
        Err(e) => return Err(StorageFail(from).map(e)),
    };
    match storage.write_if(to.store_path(), &data, None) {
        Ok(_) => Ok(1),
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
            Err(exists_conflict(to))
        }
        Err(e) => Err(StorageFail(to).map(e)),
    }
}

/// Copy the tree under directory `from` into the new directory `to`, depth first. Hidden files
/// (sidecars) are copied with their directory; storage-internal names never are. Each file is
/// a step: `between_steps` runs after it (the pool lets other accounts' jobs run there).
fn copy_tree(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    between_steps: &dyn Fn(),
) -> ServiceResult<u64> {
    storage
        .mkdir(to.store_path())
        .map_err(|e| StorageFail(to).map(e))?;
    // The children's tags (an internal file the listing below skips).
    tags::copy_children(storage, from.store_path(), to.store_path())
        .map_err(|e| StorageFail(to).map(e))?;
    crate::storage::webdav::props::copy_children(storage, from.store_path(), to.store_path())
        .map_err(|e| StorageFail(to).map(e))?;
    let mut entries = storage
        .list(from.store_path())
        .map_err(|e| StorageFail(from).map(e))?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut copied = 0;
    for entry in entries {
        if is_internal_name(&entry.name) {
            continue;
        }
        let (src, dst) = (from.child(&entry.name)?, to.child(&entry.name)?);
        copied += if entry.meta.is_dir() {
            copy_tree(storage, &src, &dst, between_steps)?
        } else {
            copy_file(storage, &src, &dst)?
        };
        between_steps();
    }
    Ok(copied)
}

/// Copy `from` to `to` (`recursive` for a directory); the caller has checked rights, identity
/// and overlap. A tree copy calls `between_steps` after each file; it always runs to the end.
pub fn copy_entry(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    recursive: bool,
    between_steps: &dyn Fn(),
) -> ServiceResult<Value> {
    let src = source_meta(storage, from)?;
    if src.is_dir() && !recursive {
        let shown = from.uri();
        return Err(ServiceError::invalid_argument(format!(
            "Cannot copy directory without recursive: {shown}"
        ))
        .with_details(json!({"resource": shown, "expected_flag": "recursive"})));
    }
    check_destination(storage, &src, to)?;
    let copied = if src.is_dir() {
        copy_tree(storage, from, to, between_steps)?
    } else {
        copy_file(storage, from, to)?
    };
    tags::copy_node(storage, from.store_path(), to.store_path())?;
    crate::storage::webdav::props::copy_node(storage, from.store_path(), to.store_path())
        .map_err(|e| StorageFail(to).map(e))?;
    Ok(json!({
        "from": from.uri(),
        "to": to.uri(),
        "recursive": recursive,
        "copied_files": copied,
    }))
}
