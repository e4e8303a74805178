//! User operations: A4 register, A5/A5b list/get, A6 remove, A7 set role, A8 regenerate key
//! (spec §3, §13.3, §13.4).

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::keys;
use crate::storage::tasks::TaskOwner;
use crate::storage::{remove_if_exists, scaffold, Storage, StorePath};

use super::accounts::write_user_config;
use super::deletion::{self, DeletionTarget, Removal};
use super::model::{AccountEntry, Deletion, UserEntry, UsersFile};
use super::store::{self, groups_path, read_accounts, read_users, Edit};
use super::{
    account_deleting, account_not_found, stored_key, user_deleting, user_not_found, OpCtx,
};

const DELETE_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The account's entry, if it exists and is not being deleted (404 / 412 otherwise).
pub fn active_account(storage: &dyn Storage, account: &str) -> ServiceResult<AccountEntry> {
    let (file, _) = read_accounts(storage)?;
    let entry = file
        .accounts
        .get(account)
        .cloned()
        .ok_or_else(|| account_not_found(account))?;
    if let Some(d) = &entry.deletion {
        return Err(account_deleting(&d.task_id));
    }
    Ok(entry)
}

/// Users.json of an active account and the entry of `user` in it (404 / 412 otherwise).
pub fn existing_user(
    storage: &dyn Storage,
    account: &str,
    user: &str,
) -> ServiceResult<(UsersFile, UserEntry)> {
    active_account(storage, account)?;
    let current = read_users(storage, account)?.0;
    let entry = current
        .users
        .get(user)
        .cloned()
        .ok_or_else(|| user_not_found(user))?;
    Ok((current, entry))
}

/// A4. The user's directories are created before the registry entry, so the key never works
/// for a user whose space is missing.
pub fn register(
    cx: &OpCtx<'_>,
    account: &str,
    user: &str,
    role: &str,
    seed: Option<&str>,
    user_config: Option<&Value>,
) -> ServiceResult<String> {
    active_account(cx.storage, account)?;
    let exists =
        || ServiceError::already_exists("user", user, format!("User already exists: {user}"));
    if read_users(cx.storage, account)?.0.users.contains_key(user) {
        return Err(exists());
    }
    let user_key = keys::new_key(account, user, seed);
    let (key, key_prefix) = stored_key(&user_key, cx.hashing)?;
    scaffold::init_user(cx.storage, account, user)?;
    if let Some(config) = user_config {
        write_user_config(cx.storage, account, user, config)?;
    }
    let (_, users, version) = store::update_users(cx.storage, account, |f| {
        if f.users.contains_key(user) {
            return Err(exists());
        }
        f.users.insert(
            user.to_string(),
            UserEntry {
                role: role.to_string(),
                key: key.clone(),
                key_prefix: key_prefix.clone(),
                ..UserEntry::default()
            },
        );
        Ok(Edit::Write(()))
    })?;
    cx.announce_users(account, users, version)?;
    Ok(user_key)
}

/// A5: the users file of an existing account, fresh from storage.
pub fn list(storage: &dyn Storage, account: &str) -> ServiceResult<UsersFile> {
    let (file, _) = read_accounts(storage)?;
    if !file.accounts.contains_key(account) {
        return Err(account_not_found(account));
    }
    Ok(read_users(storage, account)?.0)
}

/// A5b: one user (pending deletions included).
pub fn get(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<UserEntry> {
    list(storage, account)?
        .users
        .shift_remove(user)
        .ok_or_else(|| user_not_found(user))
}

/// A7: promote to admin.
pub fn set_role(cx: &OpCtx<'_>, account: &str, user: &str, role: &str) -> ServiceResult<()> {
    active_account(cx.storage, account)?;
    let (changed, users, version) = store::update_users(cx.storage, account, |f| {
        let entry = f.users.get_mut(user).ok_or_else(|| user_not_found(user))?;
        if let Some(d) = &entry.deletion {
            return Err(user_deleting(&d.task_id));
        }
        if entry.role == role {
            return Ok(Edit::Keep(false));
        }
        entry.role = role.to_string();
        Ok(Edit::Write(true))
    })?;
    if changed {
        cx.announce_users(account, users, version)?;
    }
    Ok(())
}

/// A8: a new key; the old one stops working at once.
pub fn regenerate(
    cx: &OpCtx<'_>,
    account: &str,
    user: &str,
    seed: Option<&str>,
) -> ServiceResult<String> {
    // Existence first, so a 404 costs no Argon2 hash.
    let (_, entry) = existing_user(cx.storage, account, user)?;
    if let Some(d) = &entry.deletion {
        return Err(user_deleting(&d.task_id));
    }
    let user_key = keys::new_key(account, user, seed);
    let (key, key_prefix) = stored_key(&user_key, cx.hashing)?;
    let (_, users, version) = store::update_users(cx.storage, account, |f| {
        let entry = f.users.get_mut(user).ok_or_else(|| user_not_found(user))?;
        if let Some(d) = &entry.deletion {
            return Err(user_deleting(&d.task_id));
        }
        entry.key = key.clone();
        entry.key_prefix = key_prefix.clone();
        Ok(Edit::Write(()))
    })?;
    cx.announce_users(account, users, version)?;
    Ok(user_key)
}

fn last_admin() -> ServiceError {
    ServiceError::failed_precondition("Cannot delete the last active account admin")
        .with_details(json!({}))
}

/// True if removing `user` would leave the account without an active admin.
fn is_last_admin(f: &UsersFile, user: &str) -> bool {
    let Some(target) = f.users.get(user) else {
        return false;
    };
    target.is_admin()
        && target.deletion.is_none()
        && !f
            .users
            .iter()
            .any(|(id, e)| id != user && e.is_admin() && e.deletion.is_none())
}

/// A6: revoke (persisted and in memory), delete the user's data, drop the entry. The task
/// records the outcome of the cleanup.
pub fn remove(
    cx: &OpCtx<'_>,
    account: &str,
    user: &str,
    owner: TaskOwner,
) -> ServiceResult<Removal> {
    let (current, entry) = existing_user(cx.storage, account, user)?;
    let target = UserDeletion {
        account,
        user,
        current: &current,
    };
    deletion::delete(
        cx,
        &target,
        entry.deletion.as_ref(),
        owner,
        DELETE_LOCK_TIMEOUT,
    )
}

/// The user-specific steps of the deletion sequence.
struct UserDeletion<'a> {
    account: &'a str,
    user: &'a str,
    /// users.json as read before the deletion started.
    current: &'a UsersFile,
}

impl DeletionTarget for UserDeletion<'_> {
    fn describe(&self) -> String {
        format!("user {}/{}", self.account, self.user)
    }

    fn lock_name(&self) -> String {
        format!("registry-delete-user-{}-{}", self.account, self.user)
    }

    fn task(&self) -> (&'static str, String) {
        ("user_delete", format!("{}/{}", self.account, self.user))
    }

    fn check_new(&self) -> ServiceResult<()> {
        if is_last_admin(self.current, self.user) {
            return Err(last_admin());
        }
        Ok(())
    }

    fn mark(&self, cx: &OpCtx<'_>, mark: &Deletion) -> ServiceResult<()> {
        let user = self.user;
        let (_, users, version) = store::update_users(cx.storage, self.account, |f| {
            if is_last_admin(f, user) {
                return Err(last_admin());
            }
            let e = f.users.get_mut(user).ok_or_else(|| user_not_found(user))?;
            e.key = String::new();
            e.key_prefix = None;
            e.deletion = Some(mark.clone());
            Ok(Edit::Write(()))
        })?;
        cx.announce_users(self.account, users, version)?;
        Ok(())
    }

    fn still_marked(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<bool> {
        Ok(read_users(cx.storage, self.account)?
            .0
            .users
            .get(self.user)
            .and_then(|e| e.deletion.as_ref())
            .is_some_and(|d| d.task_id == task_id))
    }

    fn remove_data(&self, cx: &OpCtx<'_>) -> ServiceResult<()> {
        let account_root = StorePath::root().join(self.account)?;
        let user_dir = account_root.join("user")?.join(self.user)?;
        remove_if_exists(cx.storage, &user_dir, true)?;
        // The user directory's own tags live in its parent's tag file: a user registered
        // later under the same id must not inherit them.
        crate::storage::tags::forget_node(cx.storage, &user_dir)?;
        remove_if_exists(
            cx.storage,
            &TaskOwner::user(self.account, self.user).dir()?,
            true,
        )?;
        Ok(())
    }

    fn drop_entry(&self, cx: &OpCtx<'_>, task_id: &str) -> ServiceResult<()> {
        let user = self.user;
        let (_, users, version) = store::update_users(cx.storage, self.account, |f| {
            Ok(deletion::drop_if_marked(&mut f.users, user, task_id, |e| {
                e.deletion.as_ref()
            }))
        })?;
        prune_groups(cx.storage, self.account, user)?;
        cx.announce_users(self.account, users, version)?;
        Ok(())
    }
}

/// Drop `user` from every group of `groups.json` (kept as found otherwise).
fn prune_groups(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<()> {
    let path = groups_path(account)?;
    if storage.stat(&path)?.is_none() {
        return Ok(());
    }
    store::update_doc(storage, &path, |doc: &mut Value| {
        let mut changed = false;
        if let Some(groups) = doc.get_mut("groups").and_then(Value::as_object_mut) {
            for group in groups.values_mut() {
                if let Some(members) = group.get_mut("members").and_then(Value::as_array_mut) {
                    let before = members.len();
                    members.retain(|m| m.as_str() != Some(user));
                    changed |= members.len() != before;
                }
            }
        }
        Ok(if changed {
            Edit::Write(())
        } else {
            Edit::Keep(())
        })
    })?;
    Ok(())
}
