//! Which ingestions of an account are still working, visible to every instance: one marker
//! file per task under `<account>/_system/ingest/active/`, written when the task is created,
//! refreshed while it works and removed when it ends. `system/wait` waits until none is left;
//! a marker not refreshed for `resources.stale_after_secs` belongs to an instance that died and
//! is ignored (and its task is failed by the sweep).

use std::time::{Duration, SystemTime};

use serde_json::json;

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

/// Is the marker of `task_id` present and fresh?
pub fn is_live(
    storage: &dyn Storage,
    account: &str,
    task_id: &str,
    stale_after: Duration,
) -> ServiceResult<bool> {
    match storage.stat(&marker(account, task_id)?)? {
        Some(m) => Ok(SystemTime::now()
            .duration_since(m.modified)
            .map_or(true, |age| age <= stale_after)),
        None => Ok(false),
    }
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
        let stale = now
            .duration_since(e.meta.modified)
            .is_ok_and(|age| age > stale_after);
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
