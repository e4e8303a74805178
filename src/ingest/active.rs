//! Which ingestions of an account are still working, visible to every instance: one marker
//! file per task under `<account>/_system/ingest/active/`, written when the task is created,
//! refreshed while it works and removed when it ends. `system/wait` waits until none is left;
//! a marker not refreshed for `resources.stale_after_secs` belongs to an instance that died and
//! is ignored (and its task is failed by the sweep). A marker also names its process: one of
//! this host whose process is gone (a restart after `kill -9`) is dead at once, not after
//! `stale_after_secs`.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::process::{self, ProcessId};
use crate::error::ServiceResult;
use crate::storage::{Storage, StorageError, StorePath};

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

/// Is the marker of `task_id` present and fresh, and its process not known to be gone?
pub fn is_live(
    storage: &dyn Storage,
    account: &str,
    task_id: &str,
    stale_after: Duration,
) -> ServiceResult<bool> {
    let path = marker(account, task_id)?;
    let fresh = match storage.stat(&path)? {
        Some(m) => SystemTime::now()
            .duration_since(m.modified)
            .map_or(true, |age| age <= stale_after),
        None => false,
    };
    Ok(fresh && !owner_gone(storage.read(&path).ok().as_deref()))
}

/// True when a marker's body names a process of this host that no longer runs.
fn owner_gone(body: Option<&[u8]>) -> bool {
    body.and_then(|d| serde_json::from_slice::<serde_json::Value>(d).ok())
        .and_then(|v| serde_json::from_value::<ProcessId>(v["process"].clone()).ok())
        .is_some_and(|owner| process::is_dead_here(&owner))
}

/// Calls `touch` at most every `every`, for long loops.
pub struct Heartbeat<'a> {
    storage: &'a dyn Storage,
    account: &'a str,
    user: &'a str,
    task_id: &'a str,
    every: Duration,
    last: std::time::Instant,
}

impl<'a> Heartbeat<'a> {
    pub fn new(
        storage: &'a dyn Storage,
        account: &'a str,
        user: &'a str,
        task_id: &'a str,
        stale_after: Duration,
    ) -> Self {
        Heartbeat {
            storage,
            account,
            user,
            task_id,
            every: stale_after / 4,
            last: std::time::Instant::now(),
        }
    }

    pub fn beat(&mut self) {
        if self.last.elapsed() >= self.every {
            let _ = touch(self.storage, self.account, self.user, self.task_id);
            self.last = std::time::Instant::now();
        }
    }
}

/// Run `work` while a helper thread keeps the task's marker fresh (for work that blocks for
/// long stretches, such as waiting on a chat model).
pub fn keep_alive<T>(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    task_id: &str,
    stale_after: Duration,
    work: impl FnOnce() -> T,
) -> T {
    let every = stale_after / 4;
    // Dropping the sender (work done, or unwinding) wakes the helper at once.
    let (done, finished) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                finished.recv_timeout(every)
            {
                let _ = touch(storage, account, user, task_id);
            }
        });
        let out = work();
        drop(done);
        out
    })
}

/// Create or refresh the marker of a working task.
pub fn touch(storage: &dyn Storage, account: &str, user: &str, task_id: &str) -> ServiceResult<()> {
    let body = json!({"task_id": task_id, "user": user, "process": process::this()}).to_string();
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
    /// Not refreshed for `stale_after`, or its process (on this host) is gone.
    pub stale: bool,
}

/// The markers of `account`; those older than `stale_after` are marked stale.
pub fn list(
    storage: &dyn Storage,
    account: &str,
    stale_after: Duration,
) -> ServiceResult<Vec<Marker>> {
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
        let body = storage.read(&dir(account)?.join(&e.name)?).ok();
        let stale = now
            .duration_since(e.meta.modified)
            .is_ok_and(|age| age > stale_after)
            || owner_gone(body.as_deref());
        let user = body
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
