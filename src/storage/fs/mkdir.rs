//! F4 mkdir: `mkdir -p` plus the directory's OKF `.abstract.md` (0.5.2).

use serde_json::{json, Value};

use super::entry::ABSTRACT_FILE;
use super::{already_exists, sidecar_path, stat, StorageFail};
use crate::error::ServiceResult;
use crate::storage::okf;
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError};

/// Create a directory (and missing parents) with its abstract sidecar.
pub fn make_dir(
    storage: &dyn Storage,
    uri: &VikingUri,
    description: Option<&str>,
) -> ServiceResult<Value> {
    if stat(storage, uri)?.is_some() {
        return Err(already_exists(uri));
    }
    storage
        .mkdir(uri.store_path())
        .map_err(|e| StorageFail(uri).map(e))?;
    let body = match description.map(str::trim) {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => format!("# {}", uri.name()),
    };
    let text = okf::render(&uri.uri(), okf::MKDIR, true, &body);
    // Create-only: if a concurrent mkdir of the same directory won, this one reports the
    // conflict instead of both claiming success.
    match storage.write_if(&sidecar_path(uri, ABSTRACT_FILE)?, text.as_bytes(), None) {
        Ok(_) => Ok(json!({"uri": uri.uri()})),
        Err(StorageError::Conflict(_)) => Err(already_exists(uri)),
        Err(e) => Err(StorageFail(uri).map(e)),
    }
}
