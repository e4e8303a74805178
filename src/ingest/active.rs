//! Which ingestions of an account are still working, visible to every instance: one marker
//! file per task under `<account>/_system/ingest/active/`, written when the task is created,
//! refreshed while it works and removed when it ends. `system/wait` waits until none is left;
//! a marker not refreshed for [`STALE_AFTER`] belongs to an instance that died and is ignored
//! (and its task is failed by the sweep).

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::error::ServiceResult;
use crate::storage::{Storage, StorageError, StorePath};

/// A marker older than this no longer counts as running work.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

fn dir(account: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("ingest")?
        .join("active")
}

fn marker(account: &str, task_id: &str) -> Result<StorePath, StorageError> {
    dir(account)?.join(&format!("{task_id}.json"))
}

/// Create or refresh the marker of a working task.
pub fn touch(storage: &dyn Storage, account: &str, user: &str, task_id: &str) -> ServiceResult<()> {
    let body = json!({"task_id": task_id, "user": user}).to_string();
    storage.write(&marker(account, task_id)?, body.as_bytes())?;
    Ok(())
}

/// Remove the marker of a finished task.
pub fn clear(storage: &dyn Storage, account: &str, task_id: &str) -> ServiceResult<()> {
    match storage.remove(&marker(account, task_id)?, false) {
        Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One live or stale marker.
#[derive(Debug, Clone)]
pub struct Marker {
    pub task_id: String,
    pub user: String,
    pub stale: bool,
}

/// The markers of `account`.
pub fn list(storage: &dyn Storage, account: &str) -> ServiceResult<Vec<Marker>> {
    let entries = match storage.list(&dir(account)?) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    let now = SystemTime::now();
    let mut out = Vec::new();
    for e in entries {
        let Some(task_id) = e.name.strip_suffix(".json") else {
            continue;
        };
        let stale = now
            .duration_since(e.meta.modified)
            .is_ok_and(|age| age > STALE_AFTER);
        let user = storage
            .read(&dir(account)?.join(&e.name)?)
            .ok()
            .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            .and_then(|v| v["user"].as_str().map(str::to_string))
            .unwrap_or_default();
        out.push(Marker {
            task_id: task_id.to_string(),
            user,
            stale,
        });
    }
    Ok(out)
}
