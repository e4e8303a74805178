//! Loading registry snapshots for the AuthActor: everything at startup, then only what the
//! generation marker (or a per-account probe) says changed.

use std::collections::BTreeSet;

use crate::error::ServiceResult;
use crate::storage::{Storage, Version};

use super::generation::{self, Delta};
use super::model::{AccountsFile, Deletion, UsersFile};
use super::store::{read_accounts, read_users, users_path};

/// accounts.json for a reload. It exists from the first api_key-mode start on, so a missing
/// file means storage trouble (an unmounted volume, a wrong directory), never "no accounts":
/// treating it as empty would revoke every key at once.
fn read_accounts_for_reload(storage: &dyn Storage) -> ServiceResult<AccountsFile> {
    let (file, version) = read_accounts(storage)?;
    if version.is_none() {
        return Err(crate::error::ServiceError::unavailable(
            "storage",
            "the account registry is missing",
        ));
    }
    Ok(file)
}

/// One account as stored: its deletion mark and its users file with the version read.
#[derive(Debug, Clone)]
pub struct AccountSnapshot {
    pub id: String,
    pub deletion: Option<Deletion>,
    pub users: UsersFile,
    pub users_version: Option<Version>,
    /// Its ACL table and groups (`storage::acl`), which travel with the registry.
    pub access: std::sync::Arc<crate::storage::acl::AccountAccess>,
    /// The account's stored configuration (`<account>/_system/setting.json`); `None`: not
    /// read with this snapshot (keep what is known).
    pub config: Option<std::sync::Arc<crate::storage::account_config::stored::StoredConfig>>,
    /// The versions `access` and `config` were read at; `None`: not read with this snapshot
    /// (the sweep then leaves those files alone for this account until the next load).
    pub side: Option<SideVersions>,
}

/// Versions of the account files that travel with its users.json: `_system/acl.json`,
/// `_system/groups.json`, `_system/setting.json` (`None`: no such file). The sweep compares
/// them with storage, so a change of one of them that was never announced is found like an
/// unannounced key change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideVersions {
    pub acl: Option<Version>,
    pub groups: Option<Version>,
    pub config: Option<Version>,
}

/// The account files beside users.json, as read for a snapshot.
pub struct SideFiles {
    pub access: std::sync::Arc<crate::storage::acl::AccountAccess>,
    pub config: Option<std::sync::Arc<crate::storage::account_config::stored::StoredConfig>>,
    pub versions: SideVersions,
}

/// Read an account's ACL table, groups and settings with their versions.
pub fn read_side(storage: &dyn Storage, account: &str) -> ServiceResult<SideFiles> {
    let (access, acl, groups) =
        crate::storage::acl::files::read_access_versioned(storage, account)?;
    let (config, config_version) =
        crate::storage::account_config::stored::read_versioned_for_snapshot(storage, account)?;
    Ok(SideFiles {
        access: std::sync::Arc::new(access),
        config,
        versions: SideVersions {
            acl,
            groups,
            config: config_version,
        },
    })
}

/// The current versions of those files (three stats, no reads).
pub fn stat_side(storage: &dyn Storage, account: &str) -> ServiceResult<SideVersions> {
    let version = |path: crate::storage::StorePath| -> ServiceResult<Option<Version>> {
        Ok(storage.stat(&path)?.and_then(|m| m.version))
    };
    Ok(SideVersions {
        acl: version(crate::storage::acl::files::acl_path(account)?)?,
        groups: version(super::store::groups_path(account)?)?,
        config: version(crate::storage::account_config::stored::config_path(
            account,
        )?)?,
    })
}

/// Accounts re-read: `None` = the account no longer exists.
pub type AccountStates = Vec<(String, Option<AccountSnapshot>)>;

/// What a load re-read.
#[derive(Debug, Clone)]
pub enum Reload {
    /// Every account (the map is replaced).
    Full(Vec<AccountSnapshot>),
    /// These accounts; `None` = the account no longer exists.
    Partial(AccountStates),
}

/// The result of a freshness check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// Marker generation and version the reload (if any) is consistent with.
    pub generation: u64,
    pub marker_version: Option<Version>,
    /// True if the marker content was read (its version had changed).
    pub marker_read: bool,
    pub reload: Option<Reload>,
    /// Registry files read (accounts.json + users.json files), for the counters.
    pub files_read: u64,
}

fn snapshot(
    storage: &dyn Storage,
    accounts: &AccountsFile,
    id: &str,
    files_read: &mut u64,
) -> ServiceResult<Option<AccountSnapshot>> {
    let Some(entry) = accounts.accounts.get(id) else {
        return Ok(None);
    };
    // An id OpenViking accepted but our path rules do not is skipped, not fatal.
    if users_path(id).is_err() {
        tracing::warn!(account = id, "skipping account with an unusable id");
        return Ok(None);
    }
    let (users, users_version) = read_users(storage, id)?;
    let side = read_side(storage, id)?;
    // Counted with its users.json: one account re-read.
    *files_read += 1;
    Ok(Some(AccountSnapshot {
        id: id.to_string(),
        deletion: entry.deletion.clone(),
        users,
        users_version,
        access: side.access,
        config: side.config,
        side: Some(side.versions),
    }))
}

/// Read the marker, then accounts.json, then every users.json (in that order: the data is at
/// least as new as the generation returned).
pub fn load_all(storage: &dyn Storage) -> ServiceResult<CheckOutcome> {
    let (marker, marker_version) = generation::read(storage)?;
    let accounts = read_accounts_for_reload(storage)?;
    let mut files_read = 1;
    let mut out = Vec::with_capacity(accounts.accounts.len());
    for id in accounts.accounts.keys() {
        if let Some(s) = snapshot(storage, &accounts, id, &mut files_read)? {
            out.push(s);
        }
    }
    Ok(CheckOutcome {
        generation: marker.generation,
        marker_version,
        marker_read: true,
        reload: Some(Reload::Full(out)),
        files_read,
    })
}

/// Re-read the given accounts (accounts.json once, then each one's users.json).
pub fn load_accounts(
    storage: &dyn Storage,
    ids: &BTreeSet<String>,
) -> ServiceResult<(AccountStates, u64)> {
    let accounts = read_accounts_for_reload(storage)?;
    let mut files_read = 1;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push((
            id.clone(),
            snapshot(storage, &accounts, id, &mut files_read)?,
        ));
    }
    Ok((out, files_read))
}

/// The freshness check: stat the marker; only if its version moved, read it and re-read the
/// accounts changed since `loaded` (everything if the log no longer covers that far back).
pub fn check(
    storage: &dyn Storage,
    loaded: u64,
    known_version: Option<&Version>,
) -> ServiceResult<CheckOutcome> {
    let version = generation::stat_version(storage)?;
    if version.as_ref() == known_version {
        return Ok(CheckOutcome {
            generation: loaded,
            marker_version: version,
            marker_read: false,
            reload: None,
            files_read: 0,
        });
    }
    let (marker, marker_version) = generation::read(storage)?;
    let (reload, files_read) = match marker.delta_since(loaded) {
        Delta::Unchanged => (None, 0),
        Delta::Accounts(ids) if ids.is_empty() => (None, 0),
        Delta::Accounts(ids) => {
            let (accounts, n) = load_accounts(storage, &ids)?;
            (Some(Reload::Partial(accounts)), n)
        }
        Delta::Full => {
            let mut all = load_all(storage)?;
            // load_all re-read the marker; keep the generation consistent with its data.
            all.marker_read = true;
            return Ok(all);
        }
    };
    Ok(CheckOutcome {
        generation: marker.generation,
        marker_version,
        marker_read: true,
        reload,
        files_read,
    })
}

/// What a probe of one account found.
#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    /// The users file is at the version already loaded.
    Unchanged,
    /// It changed (or appeared/disappeared): the account as stored now.
    Changed {
        account: String,
        snapshot: Option<Box<AccountSnapshot>>,
        files_read: u64,
    },
}

/// A direct check of one account's users file, for keys whose account/user hints miss: finds
/// accounts and users whose change was written but not (yet) announced through the marker.
pub fn probe_account(
    storage: &dyn Storage,
    account: &str,
    known: Option<&Version>,
) -> ServiceResult<ProbeOutcome> {
    let path = users_path(account)?;
    let version = storage.stat(&path)?.and_then(|m| m.version);
    if version.as_ref() == known {
        return Ok(ProbeOutcome::Unchanged);
    }
    let ids = BTreeSet::from([account.to_string()]);
    let (mut loaded, files_read) = load_accounts(storage, &ids)?;
    let snapshot = loaded.pop().and_then(|(_, s)| s).map(Box::new);
    Ok(ProbeOutcome::Changed {
        account: account.to_string(),
        snapshot,
        files_read,
    })
}

/// What the actor believes about one account, for [`sweep`].
#[derive(Debug, Clone)]
pub struct KnownAccount {
    pub id: String,
    pub deleting: bool,
    pub users_version: Option<Version>,
    /// Versions of acl.json, groups.json and setting.json as loaded (`None`: unknown).
    pub side: Option<SideVersions>,
}

/// The slow safety net behind the generation marker: find registry changes that were written
/// but never announced (a writer died between its registry write and its marker bump). Reads
/// accounts.json once and stats every known users.json, acl.json, groups.json and
/// setting.json; re-reads only what differs.
pub fn sweep(storage: &dyn Storage, known: &[KnownAccount]) -> ServiceResult<(AccountStates, u64)> {
    let accounts = read_accounts_for_reload(storage)?;
    let mut changed = BTreeSet::new();
    for k in known {
        match accounts.accounts.get(&k.id) {
            None => {
                changed.insert(k.id.clone());
            }
            Some(entry) if entry.deletion.is_some() != k.deleting => {
                changed.insert(k.id.clone());
            }
            Some(_) => {
                let version = storage.stat(&users_path(&k.id)?)?.and_then(|m| m.version);
                let side_moved = match &k.side {
                    Some(side) => stat_side(storage, &k.id)? != *side,
                    None => false,
                };
                if version != k.users_version || side_moved {
                    changed.insert(k.id.clone());
                }
            }
        }
    }
    for id in accounts.accounts.keys() {
        if !known.iter().any(|k| &k.id == id) && users_path(id).is_ok() {
            changed.insert(id.clone());
        }
    }
    if changed.is_empty() {
        return Ok((Vec::new(), 1));
    }
    let (states, files) = load_accounts(storage, &changed)?;
    Ok((states, files + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::registry::model::{AccountEntry, UserEntry};
    use crate::storage::registry::store::{update_accounts, update_users, Edit};

    fn add_account(s: &LocalStorage, id: &str) {
        update_accounts(s, |f| {
            f.accounts.insert(id.into(), AccountEntry::default());
            Ok(Edit::Write(()))
        })
        .unwrap();
        add_user(s, id, "u");
    }

    fn add_user(s: &LocalStorage, account: &str, user: &str) {
        update_users(s, account, |f| {
            f.users.insert(user.into(), UserEntry::default());
            Ok(Edit::Write(()))
        })
        .unwrap();
    }

    fn known(out: &CheckOutcome) -> Vec<KnownAccount> {
        match &out.reload {
            Some(Reload::Full(all)) => all
                .iter()
                .map(|a| KnownAccount {
                    id: a.id.clone(),
                    deleting: a.deletion.is_some(),
                    users_version: a.users_version.clone(),
                    side: a.side.clone(),
                })
                .collect(),
            _ => panic!("expected a full load"),
        }
    }

    #[test]
    fn sweep_finds_only_unannounced_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        for id in ["a", "b", "c"] {
            add_account(&s, id);
        }
        let k = known(&load_all(&s).unwrap());
        let (changed, files) = sweep(&s, &k).unwrap();
        assert!(changed.is_empty());
        assert_eq!(files, 1);
        // Written but never announced: a user in b, a new account d, a deletion mark on c.
        add_user(&s, "b", "v");
        add_account(&s, "d");
        update_accounts(&s, |f| {
            f.accounts["c"].deletion = Some(Default::default());
            Ok(Edit::Write(()))
        })
        .unwrap();
        let (changed, _) = sweep(&s, &k).unwrap();
        let ids: Vec<&str> = changed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d"]);
        let b = changed[0].1.as_ref().unwrap();
        assert_eq!(b.users.users.len(), 2);
        assert!(changed[1].1.as_ref().unwrap().deletion.is_some());
    }

    #[test]
    fn a_missing_registry_is_an_error_not_an_empty_map() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert!(load_all(&s).is_err());
        add_account(&s, "a");
        assert!(load_all(&s).is_ok());
    }
}
