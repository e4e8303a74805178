//! Startup work on the registry (api_key mode), before the AuthActor loads it.

use crate::error::ServiceResult;
use crate::storage::{keys, scaffold, Storage, StorageError};

use super::generation;
use super::model::{AccountEntry, AccountsFile};
use super::store::{self, accounts_path, read_accounts, Edit};

/// What startup did, for the log.
#[derive(Debug, Default)]
pub struct Report {
    pub created_registry: bool,
    pub migrated_keys: usize,
}

/// 1. Create accounts.json with `default` if it does not exist (spec §4.2).
/// 2. Scaffold `default` and `default/default` if `default` is registered (spec §4.4).
/// 3. With hashing on, replace plaintext keys by Argon2id hashes + prefix (spec §2.4).
/// 4. Announce a full resync: a peer that crashed between a registry write and its marker bump
///    left a change unannounced; every instance re-reads everything once when one restarts.
pub fn run(storage: &dyn Storage, hashing: bool) -> ServiceResult<Report> {
    let mut report = Report::default();
    let mut initial = AccountsFile::default();
    initial.accounts.insert(
        "default".into(),
        AccountEntry {
            created_at: Some(serde_json::Value::String(crate::time::iso_micros_now())),
            ..AccountEntry::default()
        },
    );
    let bytes = super::model::to_pretty(&initial).map_err(crate::error::ServiceError::internal)?;
    match storage.write_if(&accounts_path(), &bytes, None) {
        Ok(_) => report.created_registry = true,
        // Another instance created it first, or it exists: fine either way.
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (accounts, _) = read_accounts(storage)?;
    if accounts.accounts.contains_key(scaffold::DEFAULT_ID) {
        scaffold::init_default(storage)?;
    }
    if hashing {
        for id in accounts.accounts.keys() {
            if store::users_path(id).is_err() {
                continue;
            }
            report.migrated_keys += migrate_account(storage, id)?;
        }
    }
    generation::bump(storage, &[], true)?;
    Ok(report)
}

/// Hash every plaintext key of one account (compare-and-swap; hashes computed outside the
/// retry loop, keyed by the plaintext they replace so a concurrent change is never lost).
fn migrate_account(storage: &dyn Storage, account: &str) -> ServiceResult<usize> {
    let (current, _) = store::read_users(storage, account)?;
    let mut hashed = std::collections::HashMap::new();
    for entry in current.users.values() {
        if !entry.key.is_empty() && !keys::is_hashed(&entry.key) {
            let phc = keys::hash(&entry.key).map_err(crate::error::ServiceError::internal)?;
            hashed.insert(entry.key.clone(), phc);
        }
    }
    if hashed.is_empty() {
        return Ok(0);
    }
    let (n, _, _) = store::update_users(storage, account, |f| {
        let mut n = 0;
        for entry in f.users.values_mut() {
            if let Some(phc) = hashed.get(&entry.key) {
                entry.key_prefix = Some(keys::prefix(&entry.key));
                entry.key = phc.clone();
                n += 1;
            }
        }
        Ok(if n > 0 { Edit::Write(n) } else { Edit::Keep(0) })
    })?;
    if n > 0 {
        generation::bump(storage, &[account], false)?;
    }
    Ok(n)
}
