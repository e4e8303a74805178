//! Reading and compare-and-swap updating of the registry files. Every update re-reads the
//! CURRENT stored file (never an in-memory copy), applies one edit and writes it back with
//! `write_if`; a lost race is retried, so concurrent instances never drop each other's writes.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath, Version};

use super::model::{to_pretty, AccountsFile, UsersFile};

/// How long one update keeps retrying lost compare-and-swap races before giving up with 409.
const CAS_BUDGET: Duration = Duration::from_secs(30);

pub fn accounts_path() -> StorePath {
    StorePath::parse("_system/accounts.json").unwrap_or_else(|_| StorePath::root())
}

/// `{account}/_system/users.json`; the id must already be validated.
pub fn users_path(account: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("users.json")?)
}

/// `{account}/_system/groups.json` (preserved, pruned on user removal).
pub fn groups_path(account: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("groups.json")?)
}

/// What an edit decided.
pub enum Edit<T> {
    /// Write the edited document, then return `T`.
    Write(T),
    /// Nothing to write; return `T`.
    Keep(T),
}

fn parse<T: DeserializeOwned>(path: &StorePath, bytes: &[u8]) -> ServiceResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::internal(format!("registry file {path} is not valid: {e}")))
}

/// A JSON document with the version it was read at (`None`: the file does not exist).
pub fn read_doc<T: DeserializeOwned + Default>(
    storage: &dyn Storage,
    path: &StorePath,
) -> ServiceResult<(T, Option<Version>)> {
    match storage.read_versioned(path) {
        Ok((bytes, v)) => Ok((parse(path, &bytes)?, Some(v))),
        Err(StorageError::NotFound(_)) => Ok((T::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Read-modify-write of one JSON document with compare-and-swap, retried on conflict. `edit`
/// may run several times (once per attempt) and must only change the document it is given.
/// Returns the edit's value and the document as stored (with its version) afterwards.
pub fn update_doc<D, T, F>(
    storage: &dyn Storage,
    path: &StorePath,
    mut edit: F,
) -> ServiceResult<(T, D, Option<Version>)>
where
    D: DeserializeOwned + Serialize + Default,
    F: FnMut(&mut D) -> ServiceResult<Edit<T>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let (mut doc, version): (D, _) = read_doc(storage, path)?;
        let value = match edit(&mut doc)? {
            Edit::Keep(v) => return Ok((v, doc, version)),
            Edit::Write(v) => v,
        };
        let bytes = to_pretty(&doc).map_err(ServiceError::internal)?;
        match storage.write_if(path, &bytes, version.as_ref()) {
            Ok(new_version) => return Ok((value, doc, Some(new_version))),
            Err(StorageError::Conflict(_)) if started.elapsed() < CAS_BUDGET => {
                // Lost a race with another writer: back off a little (jittered so a crowd of
                // writers spreads out) and redo the edit on the new content.
                let jitter = Duration::from_micros(rand::random::<u64>() % 2000);
                std::thread::sleep(pause + jitter);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(StorageError::Conflict(_)) => {
                return Err(registry_busy(path));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn registry_busy(path: &StorePath) -> ServiceError {
    let kind = if path.name() == "accounts.json" {
        "account_registry_busy"
    } else {
        "user_registry_busy"
    };
    ServiceError::conflict("Another account operation is in progress. Please retry.")
        .detail("conflict_type", kind)
        .detail("retryable", true)
}

pub fn read_accounts(storage: &dyn Storage) -> ServiceResult<(AccountsFile, Option<Version>)> {
    read_doc(storage, &accounts_path())
}

pub fn read_users(
    storage: &dyn Storage,
    account: &str,
) -> ServiceResult<(UsersFile, Option<Version>)> {
    read_doc(storage, &users_path(account)?)
}

pub fn update_accounts<T>(
    storage: &dyn Storage,
    edit: impl FnMut(&mut AccountsFile) -> ServiceResult<Edit<T>>,
) -> ServiceResult<(T, AccountsFile, Option<Version>)> {
    update_doc(storage, &accounts_path(), edit)
}

pub fn update_users<T>(
    storage: &dyn Storage,
    account: &str,
    edit: impl FnMut(&mut UsersFile) -> ServiceResult<Edit<T>>,
) -> ServiceResult<(T, UsersFile, Option<Version>)> {
    update_doc(storage, &users_path(account)?, edit)
}

/// A named cross-instance lock, mapped to the API's 409 when it cannot be taken in time.
pub fn lock(
    storage: &dyn Storage,
    name: &str,
    timeout: Duration,
) -> ServiceResult<Box<dyn crate::storage::LockGuard>> {
    storage.lock(name, timeout).map_err(|e| match e {
        StorageError::Busy(_) => {
            ServiceError::conflict("Another account operation is in progress. Please retry.")
                .detail("conflict_type", "account_registry_busy")
                .detail("retryable", true)
        }
        other => other.into(),
    })
}

/// Object stores cannot delete conditionally, so a removal made under a lock is fenced by a
/// tombstone instead: the registry entry's deletion mark of this task, re-read right before
/// removing, with the lock still certainly ours. A deleter that lost its lock (and whose
/// deletion another worker finished, so the id may have been created afresh) stops here.
pub fn fence_removal(
    guard: &dyn crate::storage::LockGuard,
    still_marked: bool,
    what: &str,
) -> ServiceResult<()> {
    if !guard.held() {
        tracing::warn!(
            what,
            "deletion lock lease ran out; stopping before removing data"
        );
        return Err(ServiceError::conflict(
            "Another account operation is in progress. Please retry.",
        )
        .detail("conflict_type", "account_registry_busy")
        .detail("retryable", true));
    }
    if !still_marked {
        tracing::warn!(
            what,
            "deletion mark gone; another worker finished this deletion"
        );
        return Err(
            ServiceError::conflict("The deletion was completed by another operation.")
                .detail("conflict_type", "account_registry_busy")
                .detail("retryable", true),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;
    use std::sync::Arc;

    #[test]
    fn concurrent_updates_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let storage = storage.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        update_users(storage.as_ref(), "acme", |f| {
                            f.users.insert(format!("u{t}-{i}"), Default::default());
                            Ok(Edit::Write(()))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (f, _) = read_users(storage.as_ref(), "acme").unwrap();
        assert_eq!(f.users.len(), 100);
    }

    #[test]
    fn keep_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let (v, _, version) = update_accounts(&storage, |_| Ok(Edit::Keep(5))).unwrap();
        assert_eq!(v, 5);
        assert!(version.is_none());
        assert!(storage.stat(&accounts_path()).unwrap().is_none());
    }
}
