//! F3 stat.

use serde_json::{json, Value};

use super::entry::{mod_time, mode_of, Output};
use super::{file_not_found, stat};
use crate::error::ServiceResult;
use crate::storage::uri::VikingUri;
use crate::storage::Storage;

/// Metadata of one file or directory.
pub fn stat_entry(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<Value> {
    let meta = stat(storage, uri)?.ok_or_else(|| file_not_found(uri))?;
    Ok(json!({
            "name": uri.name(),
            "size": meta.size,
            "mode": mode_of(&meta),
            "modTime": mod_time(meta.modified, Output::Original),
            "isDir": meta.is_dir(),
            "uri": uri.uri(),
            // No path lock outlives a request on this server (see C5 note in the spec).
            "isLocked": false,
    }))
}
