//! Account operations: A1 create, A2/A2b list/get, A3 delete (spec §3, §13.4).

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::keys;
use crate::storage::tasks::TaskOwner;
use crate::storage::{remove_if_exists, scaffold, Storage, StorageError, StorePath};

use super::deletion::{self, DeletionTarget, Removal};
use super::load::AccountSnapshot;
use super::model::{AccountEntry, Deletion, UserEntry, UsersFile};
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
                created_at: Some(Value::String(crate::time::iso_micros_now())),
                ..AccountEntry::default()
            },
        );
        Ok(Edit::Write(()))
    })?;
    cx.announce_users(account, users, users_version)?;
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

/// A3: mark the account deleted (its keys die at once), delete its data, drop the entry.
/// The task records the outcome.
pub fn delete(cx: &OpCtx<'_>, account: &str) -> ServiceResult<Removal> {
    let (file, _) = read_accounts(cx.storage)?;
    let entry = file
        .accounts
        .get(account)
        .ok_or_else(|| account_not_found(account))?;
    deletion::delete(
        cx,
        &AccountDeletion(account),
        entry.deletion.as_ref(),
        TaskOwner::system(),
        CREATE_LOCK_TIMEOUT,
    )
}

/// The account-specific steps of the deletion sequence.
struct AccountDeletion<'a>(&'a str);

impl DeletionTarget for AccountDeletion<'_> {
    fn describe(&self) -> String {
        format!("account {}", self.0)
    }

    fn lock_name(&self) -> String {
        format!("registry-delete-account-{}", self.0)
    }

    fn task(&self) -> (&'static str, String) {
        ("account_delete", self.0.to_string())
    }

    fn mark(&self, cx: &OpCtx<'_>, mark: &Deletion) -> ServiceResult<()> {
        let account = self.0;
        store::update_accounts(cx.storage, |f| {
            let e = f
                .accounts
                .get_mut(account)
                .ok_or_else(|| account_not_found(account))?;
            e.deletion = Some(mark.clone());
            Ok(Edit::Write(()))
        })?;
        let (users, users_version) = read_users(cx.storage, account).unwrap_or_default();
        cx.announce(
            account,
            Some(AccountSnapshot {
                id: account.to_string(),
                deletion: Some(mark.clone()),
                users,
                users_version,
                access: Default::default(),
                config: None,
                side: None,
            }),
        )?;
        Ok(())
    }

    fn still_marked(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<bool> {
        Ok(read_accounts(cx.storage)?
            .0
            .accounts
            .get(self.0)
            .and_then(|e| e.deletion.as_ref())
            .is_some_and(|d| d.task_id == task_id))
    }

    fn remove_data(&self, cx: &OpCtx<'_>) -> ServiceResult<()> {
        remove_if_exists(cx.storage, &StorePath::root().join(self.0)?, true)?;
        Ok(())
    }

    fn drop_entry(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<()> {
        let account = self.0;
        store::update_accounts(cx.storage, |f| {
            Ok(deletion::drop_if_marked(
                &mut f.accounts,
                account,
                task_id,
                |e| e.deletion.as_ref(),
            ))
        })?;
        cx.announce(account, None)?;
        Ok(())
    }
}
