//! The one deletion sequence behind A3 (delete an account) and A6 (delete a user): find or
//! resume a deletion in progress, start its task, mark the entry (its keys die at once), delete
//! the data, drop the entry, and record the outcome in the task.

use std::time::Duration;

use indexmap::IndexMap;

use crate::error::ServiceResult;
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::{LockGuard, Storage, StorageError};

use super::model::Deletion;
use super::store::{self, Edit};
use super::OpCtx;

/// The answer of A6 / A3: the task, and whether the cleanup already finished.
#[derive(Debug, Clone)]
pub struct Removal {
    pub task_id: String,
    pub deleted: bool,
}

/// What is being deleted: the steps that differ between an account and a user.
pub trait DeletionTarget {
    /// For logs.
    fn describe(&self) -> String;
    /// The named lock the worker holds while it runs.
    fn lock_name(&self) -> String;
    /// The task's type and resource.
    fn task(&self) -> (&'static str, String);
    /// Refuse a new deletion (e.g. of the last admin); a resumed one is not re-checked.
    fn check_new(&self) -> ServiceResult<()> {
        Ok(())
    }
    /// Persist `mark` on the entry and announce it.
    fn mark(&self, cx: &OpCtx<'_>, mark: &Deletion) -> ServiceResult<()>;
    /// Whether the entry still carries `task_id`'s mark (the tombstone that fences
    /// [`DeletionTarget::remove_data`]).
    fn still_marked(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<bool>;
    /// Delete the data (missing is fine).
    fn remove_data(&self, cx: &OpCtx<'_>) -> ServiceResult<()>;
    /// Drop the entry if its mark is still `task_id`'s, and announce it.
    fn drop_entry(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<()>;
}

/// Remove entry `id` if its deletion mark still belongs to `task_id` (a newer deletion, or a
/// re-created entry, is left alone).
pub fn drop_if_marked<E>(
    entries: &mut IndexMap<String, E>,
    id: &str,
    task_id: &str,
    mark: impl Fn(&E) -> Option<&Deletion>,
) -> Edit<()> {
    let ours = entries
        .get(id)
        .and_then(mark)
        .is_some_and(|d| d.task_id == task_id);
    if !ours {
        return Edit::Keep(());
    }
    entries.shift_remove(id);
    Edit::Write(())
}

/// The owner recorded in a deletion mark.
pub fn deletion_owner(d: &Deletion) -> TaskOwner {
    if d.owner_account_id == "_system" {
        TaskOwner::system()
    } else {
        TaskOwner::user(&d.owner_account_id, &d.owner_user_id)
    }
}

/// Whether a recorded deletion is still being worked on by a live process. The worker holds
/// `lock_name` while it runs; if the lock is free the worker died and the caller takes over.
pub enum Pending {
    /// Someone is running it: answer with the same task id.
    Running(String),
    /// Nobody is: resume it under the returned guard with the same task id.
    Orphaned(String, Box<dyn LockGuard>),
    /// No live deletion (none recorded, or its task ended): start a new one.
    None,
}

pub fn pending_deletion(
    storage: &dyn Storage,
    mark: Option<&Deletion>,
    lock_name: &str,
) -> ServiceResult<Pending> {
    let Some(mark) = mark else {
        return Ok(Pending::None);
    };
    let live = tasks::get(storage, &deletion_owner(mark), &mark.task_id)?
        .is_some_and(|t| !t.status.is_terminal());
    if !live {
        return Ok(Pending::None);
    }
    match storage.lock(lock_name, Duration::ZERO) {
        Ok(guard) => Ok(Pending::Orphaned(mark.task_id.clone(), guard)),
        Err(StorageError::Busy(_)) => Ok(Pending::Running(mark.task_id.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Run (or resume, or join) the deletion of `target`, whose entry carries `existing` (its
/// current mark), on behalf of `owner`; waits at most `lock_timeout` for the deletion lock.
pub fn delete(
    cx: &OpCtx<'_>,
    target: &dyn DeletionTarget,
    existing: Option<&Deletion>,
    owner: TaskOwner,
    lock_timeout: Duration,
) -> ServiceResult<Removal> {
    let lock_name = target.lock_name();
    let (task_id, owner, guard) = match pending_deletion(cx.storage, existing, &lock_name)? {
        Pending::Running(task_id) => {
            return Ok(Removal {
                task_id,
                deleted: false,
            })
        }
        Pending::Orphaned(task_id, guard) => {
            let owner = existing.map(deletion_owner).unwrap_or(owner);
            (task_id, owner, guard)
        }
        Pending::None => {
            target.check_new()?;
            let guard = store::lock(cx.storage, &lock_name, lock_timeout)?;
            let (kind, resource) = target.task();
            let task = tasks::create(cx.storage, &owner, kind, Some(&resource))?;
            (task.task_id, owner, guard)
        }
    };
    let mark = Deletion {
        task_id: task_id.clone(),
        owner_account_id: owner.account.clone(),
        owner_user_id: owner.user.clone(),
        ..Deletion::default()
    };
    if let Err(e) = target.mark(cx, &mark) {
        let _ = tasks::fail(cx.storage, &owner, &task_id, &e.message);
        return Err(e);
    }
    let finished = tasks::mark_running(cx.storage, &owner, &task_id)
        .and_then(|_| target.still_marked(cx, &task_id))
        .and_then(|marked| store::fence_removal(guard.as_ref(), marked, &target.describe()))
        .and_then(|()| target.remove_data(cx))
        .and_then(|()| target.drop_entry(cx, &task_id))
        .and_then(|()| {
            tasks::complete(
                cx.storage,
                &owner,
                &task_id,
                serde_json::json!({"deleted": true}),
            )
        });
    let deleted = match finished {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(target = %target.describe(), error = %e.message, "deletion failed");
            let _ = tasks::fail(cx.storage, &owner, &task_id, &e.message);
            false
        }
    };
    Ok(Removal { task_id, deleted })
}
