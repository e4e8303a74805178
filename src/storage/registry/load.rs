//! Loading registry snapshots for the AuthActor: everything at startup, then only what the
//! generation marker (or a per-account probe) says changed.

use std::collections::BTreeSet;

use crate::error::ServiceResult;
use crate::storage::{Storage, Version};

use super::generation::{self, Delta};
use super::model::{AccountsFile, Deletion, UsersFile};
use super::store::{read_accounts, read_users, users_path};

/// One account as stored: its deletion mark and its users file with the version read.
#[derive(Debug, Clone)]
pub struct AccountSnapshot {
    pub id: String,
    pub deletion: Option<Deletion>,
    pub users: UsersFile,
    pub users_version: Option<Version>,
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
    *files_read += 1;
    Ok(Some(AccountSnapshot {
        id: id.to_string(),
        deletion: entry.deletion.clone(),
        users,
        users_version,
    }))
}

/// Read the marker, then accounts.json, then every users.json (in that order: the data is at
/// least as new as the generation returned).
pub fn load_all(storage: &dyn Storage) -> ServiceResult<CheckOutcome> {
    let (marker, marker_version) = generation::read(storage)?;
    let (accounts, _) = read_accounts(storage)?;
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
    let (accounts, _) = read_accounts(storage)?;
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
