//! The registry generation marker `/local/_system/registry_generation.json`: a counter bumped
//! (by compare-and-swap) after every registry change, with a short log of which accounts each
//! bump touched. Instances compare the generation they loaded with the stored one to learn, at
//! the cost of one stat, whether anything changed, and if so re-read only the changed accounts.
//!
//! Ordering rule: a writer bumps the marker only AFTER its registry write succeeded, so a
//! reader that sees generation `g` and then reads the account files sees every change up to
//! `g`. A writer that crashes between the two writes leaves its change unannounced; see
//! README "Multi-instance consistency" for how that case is bounded.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ServiceResult;
use crate::storage::{Storage, StorageResult, StorePath, Version};

use super::store::{read_doc, update_doc, Edit};

/// Bumps remembered in the log; a reader further behind than this reloads everything.
pub const LOG_LEN: usize = 256;

pub fn marker_path() -> StorePath {
    StorePath::parse("_system/registry_generation.json").unwrap_or_else(|_| StorePath::root())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Marker {
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub log: Vec<Change>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One bump: the accounts it changed, or `full` (everything may have changed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Change {
    pub generation: u64,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
}

/// What a reader that loaded generation `loaded` must re-read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Unchanged,
    Accounts(BTreeSet<String>),
    Full,
}

impl Marker {
    pub fn delta_since(&self, loaded: u64) -> Delta {
        if self.generation == loaded {
            return Delta::Unchanged;
        }
        // Going backwards means the marker was reset (restored backup, wiped dir): start over.
        if self.generation < loaded {
            return Delta::Full;
        }
        let covered_from = self.log.first().map_or(u64::MAX, |c| c.generation);
        if covered_from > loaded + 1 {
            return Delta::Full;
        }
        let mut accounts = BTreeSet::new();
        for change in self.log.iter().filter(|c| c.generation > loaded) {
            if change.full {
                return Delta::Full;
            }
            accounts.extend(change.accounts.iter().cloned());
        }
        Delta::Accounts(accounts)
    }
}

/// Read the marker (generation 0 if it does not exist yet).
pub fn read(storage: &dyn Storage) -> ServiceResult<(Marker, Option<Version>)> {
    read_doc(storage, &marker_path())
}

/// The marker's current version, without reading it: the cheap freshness check.
pub fn stat_version(storage: &dyn Storage) -> StorageResult<Option<Version>> {
    Ok(storage.stat(&marker_path())?.and_then(|m| m.version))
}

/// Announce a change of `accounts` (or of everything, with `full`); returns the new generation.
pub fn bump(storage: &dyn Storage, accounts: &[&str], full: bool) -> ServiceResult<u64> {
    let (generation, _, _) = update_doc(storage, &marker_path(), |m: &mut Marker| {
        m.generation += 1;
        let change = Change {
            generation: m.generation,
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            full,
        };
        m.log.push(change);
        if m.log.len() > LOG_LEN {
            let excess = m.log.len() - LOG_LEN;
            m.log.drain(..excess);
        }
        Ok(Edit::Write(m.generation))
    })?;
    Ok(generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn deltas() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert_eq!(read(&s).unwrap().0.delta_since(0), Delta::Unchanged);
        bump(&s, &["a"], false).unwrap();
        bump(&s, &["b", "c"], false).unwrap();
        let (m, _) = read(&s).unwrap();
        assert_eq!(m.generation, 2);
        assert_eq!(
            m.delta_since(0),
            Delta::Accounts(["a", "b", "c"].iter().map(|s| s.to_string()).collect())
        );
        assert_eq!(
            m.delta_since(1),
            Delta::Accounts(["b", "c"].iter().map(|s| s.to_string()).collect())
        );
        assert_eq!(m.delta_since(2), Delta::Unchanged);
        assert_eq!(m.delta_since(5), Delta::Full);
        bump(&s, &[], true).unwrap();
        assert_eq!(read(&s).unwrap().0.delta_since(2), Delta::Full);
    }

    #[test]
    fn log_window_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        for _ in 0..(LOG_LEN + 10) {
            bump(&s, &["a"], false).unwrap();
        }
        let (m, _) = read(&s).unwrap();
        assert_eq!(m.log.len(), LOG_LEN);
        assert_eq!(m.delta_since(5), Delta::Full);
        assert!(matches!(
            m.delta_since(m.generation - 3),
            Delta::Accounts(_)
        ));
        let v1 = stat_version(&s).unwrap();
        bump(&s, &["a"], false).unwrap();
        assert_ne!(v1, stat_version(&s).unwrap());
    }
}
