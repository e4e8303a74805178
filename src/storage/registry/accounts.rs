//! Account operations: A1 create, A2/A2b list/get, A3 delete (spec §3, §13.4).

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::keys;
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::{scaffold, Storage, StorageError, StorePath};

use super::load::AccountSnapshot;
use super::model::{now_iso, AccountEntry, Deletion, UserEntry, UsersFile};
use super::store::{self, groups_path, read_accounts, read_users, Edit};
use super::{account_not_found, stored_key, OpCtx};

/// How long A1 waits for another creation of the same id (then 409 account_registry_busy).
const CREATE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One entry of A2 / the result of A2b.
#[derive(Debug, Clone, Serialize)]
pub struct AccountSummary {
    pub account_id: String,
    pub created_at: Value,
    pub user_count: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

fn summary(storage: &dyn Storage, id: &str, entry: &AccountEntry) -> ServiceResult<AccountSummary> {
    let user_count = match store::users_path(id) {
        Ok(_) => read_users(storage, id)?.0.users.len(),
        Err(_) => 0,
    };
    Ok(AccountSummary {
        account_id: id.to_string(),
        created_at: entry.created_at.clone().unwrap_or(Value::Null),
        user_count,
        status: if entry.deletion.is_some() {
            "deleting"
        } else {
            "active"
        },
        task_id: entry.deletion.as_ref().map(|d| d.task_id.clone()),
    })
}

/// A2: every account in registry order, fresh from storage.
pub fn list(storage: &dyn Storage) -> ServiceResult<Vec<AccountSummary>> {
    let (file, _) = read_accounts(storage)?;
    file.accounts
        .iter()
        .map(|(id, entry)| summary(storage, id, entry))
        .collect()
}

/// A2b: one account, fresh from storage.
pub fn get(storage: &dyn Storage, account: &str) -> ServiceResult<AccountSummary> {
    let (file, _) = read_accounts(storage)?;
    let entry = file
        .accounts
        .get(account)
        .ok_or_else(|| account_not_found(account))?;
    summary(storage, account, entry)
}

/// What A1 hands back.
pub struct Created {
    pub user_key: String,
}

/// A1. The account becomes visible only with its `accounts.json` entry, written last: the
/// admin's users.json, groups.json and the directories are in place first, so a failure (or a
/// crash) never leaves a registered account without its admin.
pub fn create(
    cx: &OpCtx<'_>,
    account: &str,
    admin: &str,
    seed: Option<&str>,
    user_config: Option<&Value>,
) -> ServiceResult<Created> {
    let exists = |f: &super::model::AccountsFile| f.accounts.contains_key(account);
    let already = || {
        ServiceError::already_exists(
            "account",
            account,
            format!("Account already exists: {account}"),
        )
    };
    if exists(&read_accounts(cx.storage)?.0) {
        return Err(already());
    }
    // Two instances creating the same id would otherwise both write its users.json.
    let guard = store::lock(
        cx.storage,
        &format!("registry-create-account-{account}"),
        CREATE_LOCK_TIMEOUT,
    )?;
    if exists(&read_accounts(cx.storage)?.0) {
        return Err(already());
    }
    let user_key = keys::new_key(account, admin, seed);
    let (key, key_prefix) = stored_key(&user_key, cx.hashing)?;
    // Anything at this path belongs to no registered account (a crashed earlier attempt), and
    // is replaced only if it is still the version read here under the lock: a creator that
    // lost its lock to another one fails instead of replacing that one's admin.
    let users_path = store::users_path(account)?;
    let (_, found): (UsersFile, _) = store::read_doc(cx.storage, &users_path)?;
    let mut users = UsersFile::default();
    users.users.insert(
        admin.to_string(),
        UserEntry {
            role: "admin".into(),
            key: key.clone(),
            key_prefix: key_prefix.clone(),
            ..UserEntry::default()
        },
    );
    let bytes = super::model::to_pretty(&users).map_err(ServiceError::internal)?;
    if !guard.held() {
        return Err(store::registry_busy(&users_path));
    }
    let users_version = match cx.storage.write_if(&users_path, &bytes, found.as_ref()) {
        Ok(v) => Some(v),
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
            return Err(store::registry_busy(&users_path))
        }
        Err(e) => return Err(e.into()),
    };
    let groups = groups_path(account)?;
    match cx
        .storage
        .write_if(&groups, b"{\n  \"groups\": {}\n}", None)
    {
        Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    scaffold::init_account(cx.storage, account)?;
    scaffold::init_user(cx.storage, account, admin)?;
    if let Some(config) = user_config {
        write_user_config(cx.storage, account, admin, config)?;
    }
    store::update_accounts(cx.storage, |f| {
        if f.accounts.contains_key(account) {
            return Err(already());
        }
        f.accounts.insert(
            account.to_string(),
            AccountEntry {
                created_at: Some(Value::String(now_iso())),
                ..AccountEntry::default()
            },
        );
        Ok(Edit::Write(()))
    })?;
    cx.announce(
        account,
        Some(AccountSnapshot {
            id: account.to_string(),
            deletion: None,
            users,
            users_version,
        }),
    )?;
    Ok(Created { user_key })
}

/// `viking://user/{user}/settings/user_config.json`, stored verbatim (spec A1 MAY).
pub fn write_user_config(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    config: &Value,
) -> ServiceResult<()> {
    let path = StorePath::root()
        .join(account)?
        .join("user")?
        .join(user)?
        .join_path("settings/user_config.json")?;
    let data = serde_json::to_vec_pretty(config).map_err(ServiceError::internal)?;
    storage.write(&path, &data)?;
    Ok(())
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
    Orphaned(String, Box<dyn crate::storage::LockGuard>),
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

/// A3: mark the account deleted (its keys die at once), delete its data, drop the entry.
/// The task records the outcome.
pub fn delete(cx: &OpCtx<'_>, account: &str) -> ServiceResult<super::users::Removal> {
    use super::users::Removal;
    let (file, _) = read_accounts(cx.storage)?;
    let entry = file
        .accounts
        .get(account)
        .ok_or_else(|| account_not_found(account))?;
    let lock_name = format!("registry-delete-account-{account}");
    let owner = TaskOwner::system();
    let (task_id, guard) = match pending_deletion(cx.storage, entry.deletion.as_ref(), &lock_name)?
    {
        Pending::Running(task_id) => {
            return Ok(Removal {
                task_id,
                deleted: false,
            })
        }
        Pending::Orphaned(task_id, guard) => (task_id, guard),
        Pending::None => {
            let guard = store::lock(cx.storage, &lock_name, CREATE_LOCK_TIMEOUT)?;
            let task = tasks::create(cx.storage, &owner, "account_delete", Some(account))?;
            (task.task_id, guard)
        }
    };
    let mark = Deletion {
        task_id: task_id.clone(),
        owner_account_id: owner.account.clone(),
        owner_user_id: owner.user.clone(),
        ..Deletion::default()
    };
    let marked = store::update_accounts(cx.storage, |f| {
        let e = f
            .accounts
            .get_mut(account)
            .ok_or_else(|| account_not_found(account))?;
        e.deletion = Some(mark.clone());
        Ok(Edit::Write(()))
    });
    if let Err(e) = marked {
        let _ = tasks::fail(cx.storage, &owner, &task_id, &e.message);
        return Err(e);
    }
    let (users, users_version) = read_users(cx.storage, account).unwrap_or_default();
    cx.announce(
        account,
        Some(AccountSnapshot {
            id: account.to_string(),
            deletion: Some(mark),
            users,
            users_version,
        }),
    )?;
    let deleted = match finish_delete(cx, account, &task_id, guard.as_ref()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(account, error = %e.message, "account deletion failed");
            let _ = tasks::fail(cx.storage, &owner, &task_id, &e.message);
            false
        }
    };
    Ok(Removal { task_id, deleted })
}

fn finish_delete(
    cx: &OpCtx<'_>,
    account: &str,
    task_id: &str,
    guard: &dyn crate::storage::LockGuard,
) -> ServiceResult<()> {
    let owner = TaskOwner::system();
    tasks::mark_running(cx.storage, &owner, task_id)?;
    let marked = read_accounts(cx.storage)?
        .0
        .accounts
        .get(account)
        .and_then(|e| e.deletion.as_ref())
        .is_some_and(|d| d.task_id == task_id);
    store::fence_removal(guard, marked, account)?;
    match cx.storage.remove(&StorePath::root().join(account)?, true) {
        Ok(()) | Err(StorageError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    store::update_accounts(cx.storage, |f| {
        let ours = f
            .accounts
            .get(account)
            .and_then(|e| e.deletion.as_ref())
            .is_some_and(|d| d.task_id == task_id);
        if !ours {
            return Ok(Edit::Keep(()));
        }
        f.accounts.shift_remove(account);
        Ok(Edit::Write(()))
    })?;
    cx.announce(account, None)?;
    tasks::complete(cx.storage, &owner, task_id, json!({"deleted": true}))?;
    Ok(())
}
