//! The persistent backlog of Phase 2 memory extractions: one small JSON entry per commit task
//! under `<account>/_system/memory/backlog/<task_id>.json`, written create-only by the commit
//! before its Phase 1, so the extraction survives restarts and any instance may run it. The
//! entry is also the flag that tells the commit (and crash recovery) to leave the task to the
//! extractor instead of completing it. The extractor removes it after the task is terminal.

use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath, Version};
use crate::time::epoch_secs_now;

use super::SessionRef;

/// One pending extraction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub account: String,
    pub user: String,
    pub session_id: String,
    pub archive: String,
    pub task_id: String,
    pub enqueued_at: f64,
    /// Runs that ended waiting for the model (provider down, timeouts).
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (epoch seconds): the backoff after a failed attempt.
    #[serde(default)]
    pub not_before: f64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Times it was put back because the account's daily token budget was spent.
    #[serde(default)]
    pub budget_waits: u32,
}

impl Entry {
    pub fn session(&self) -> SessionRef {
        SessionRef::new(&self.account, &self.user, &self.session_id)
    }

    pub fn is_due(&self, now: f64) -> bool {
        self.not_before <= now
    }
}

/// `<account>/_system/memory/backlog`.
pub fn dir(account: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("memory")?
        .join("backlog")?)
}

pub fn path(account: &str, task_id: &str) -> ServiceResult<StorePath> {
    Ok(dir(account)?.join(&format!("{task_id}.json"))?)
}

/// Entries of one account (unreadable ones are logged and skipped).
pub fn list_account(storage: &dyn Storage, account: &str) -> ServiceResult<Vec<Entry>> {
    let entries = match storage.list(&dir(account)?) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(task) = e.name.strip_suffix(".json") else {
            continue;
        };
        if let Some((entry, _)) = load(storage, account, task)? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// How many entries one account holds (a listing, no reads).
pub fn count(storage: &dyn Storage, account: &str) -> ServiceResult<usize> {
    match storage.list(&dir(account)?) {
        Ok(e) => Ok(e.iter().filter(|e| e.name.ends_with(".json")).count()),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The entry of `task_id` with its version, if any.
pub fn load(
    storage: &dyn Storage,
    account: &str,
    task_id: &str,
) -> ServiceResult<Option<(Entry, Version)>> {
    match storage.read_versioned(&path(account, task_id)?) {
        Ok((data, v)) => match serde_json::from_slice(&data) {
            Ok(entry) => Ok(Some((entry, v))),
            Err(e) => {
                tracing::warn!(account, task_id, error = %e, "unreadable memory backlog entry");
                Ok(None)
            }
        },
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when the task's extraction is left to the backlog.
pub fn holds(storage: &dyn Storage, account: &str, task_id: &str) -> ServiceResult<bool> {
    Ok(storage.stat(&path(account, task_id)?)?.is_some())
}

/// Add the entry of a new commit task (create-only: a task id is used once). Refused with 429
/// when the account already has `limit` entries waiting.
pub fn enqueue(
    storage: &dyn Storage,
    s: &SessionRef,
    archive: &str,
    task_id: &str,
    limit: usize,
) -> ServiceResult<()> {
    if count(storage, &s.account)? >= limit {
        return Err(ServiceError::new(
            crate::error::ErrorCode::ResourceExhausted,
            format!("memory extraction backlog of this account is full ({limit} commits waiting); retry later"),
        )
        .retry_after(30));
    }
    let entry = Entry {
        account: s.account.clone(),
        user: s.user.clone(),
        session_id: s.sid.clone(),
        archive: archive.to_string(),
        task_id: task_id.to_string(),
        enqueued_at: epoch_secs_now(),
        attempts: 0,
        not_before: 0.0,
        last_error: None,
        budget_waits: 0,
    };
    let data = serde_json::to_vec(&entry).map_err(ServiceError::internal)?;
    storage.write_if(&path(&s.account, task_id)?, &data, None)?;
    Ok(())
}

/// Put the entry back for later after a failed attempt (compare-and-swap on its version; a
/// lost race means another instance already rescheduled or finished it).
pub fn reschedule(
    storage: &dyn Storage,
    entry: &Entry,
    version: &Version,
    delay_secs: f64,
    error: &str,
) -> ServiceResult<()> {
    let mut next = entry.clone();
    next.attempts += 1;
    next.not_before = epoch_secs_now() + delay_secs;
    next.last_error = Some(error.to_string());
    let data = serde_json::to_vec(&next).map_err(ServiceError::internal)?;
    match storage.write_if(&path(&entry.account, &entry.task_id)?, &data, Some(version)) {
        Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Put the entry back until `delay_secs` from now because the account's daily token budget is
/// spent (not a failure: the retry backoff is not raised).
pub fn defer_for_budget(
    storage: &dyn Storage,
    entry: &Entry,
    version: &Version,
    delay_secs: f64,
    why: &str,
) -> ServiceResult<()> {
    let mut next = entry.clone();
    next.budget_waits += 1;
    next.not_before = epoch_secs_now() + delay_secs;
    next.last_error = Some(why.to_string());
    let data = serde_json::to_vec(&next).map_err(ServiceError::internal)?;
    match storage.write_if(&path(&entry.account, &entry.task_id)?, &data, Some(version)) {
        Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove the entry once its task is terminal.
pub fn remove(storage: &dyn Storage, account: &str, task_id: &str) -> ServiceResult<()> {
    crate::storage::remove_if_exists(storage, &path(account, task_id)?, false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn enqueue_bounded_reschedule_remove() {
        let d = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(d.path()).unwrap();
        let s = SessionRef::new("acme", "bob", "s1");
        enqueue(&st, &s, "archive_001", "t1", 2).unwrap();
        assert!(enqueue(&st, &s, "archive_001", "t1", 2).is_err());
        enqueue(&st, &s, "archive_002", "t2", 2).unwrap();
        let full = enqueue(&st, &s, "archive_003", "t3", 2).unwrap_err();
        assert_eq!(full.code, crate::error::ErrorCode::ResourceExhausted);
        assert!(holds(&st, "acme", "t1").unwrap());
        let (e, v) = load(&st, "acme", "t1").unwrap().unwrap();
        reschedule(&st, &e, &v, 100.0, "down").unwrap();
        let (e2, _) = load(&st, "acme", "t1").unwrap().unwrap();
        assert_eq!(e2.attempts, 1);
        assert!(!e2.is_due(epoch_secs_now()));
        assert_eq!(list_account(&st, "acme").unwrap().len(), 2);
        remove(&st, "acme", "t1").unwrap();
        assert!(!holds(&st, "acme", "t1").unwrap());
    }
}
