//! Publishing a staged tree in place of an existing one (an overwrite import, a restore of a
//! backup), so that the target holds the old tree or the new one, whole — never a mix, and
//! never nothing after a crash.
//!
//! - Where the backend can swap two directories atomically (local disk,
//!   `renameat2(RENAME_EXCHANGE)`), one swap publishes: readers see the old tree until the
//!   instant they see the new one. The old tree is then in the staging directory, which is
//!   removed (or swept after a crash).
//! - Otherwise (S3, where every directory rename is a flagged tree move that appears whole at
//!   its commit point): a journal `replace.json` in the staging directory records (target,
//!   aside, staged) before anything moves; the target moves aside, the staged tree moves to the
//!   target, the aside tree is removed, then the journal. Between the two moves the target is
//!   absent (never partial). After a crash, [`settle`] (run by the staging sweep before it
//!   removes a dead work's staging directory) finishes from what is left: the new tree whole
//!   in staging and the target empty → it moves in (roll forward); only the old tree aside →
//!   it moves back.

use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError, StorageResult, StorePath};

/// The journal's leaf name in a staging directory.
pub const JOURNAL: &str = "replace.json";

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// (target, aside, staged) store paths, one per published root.
    units: Vec<(String, String, String)>,
}

fn exists(storage: &dyn Storage, path: &StorePath) -> StorageResult<bool> {
    Ok(storage.stat(path)?.is_some())
}

/// Publish each `(staged, target)` of `units`, replacing what `target` holds. `work` is the
/// staging directory (the journal and the aside trees live there).
pub fn publish(
    storage: &dyn Storage,
    work: &StorePath,
    units: &[(StorePath, StorePath)],
) -> StorageResult<()> {
    let mut journaled = Vec::new();
    for (i, (staged, target)) in units.iter().enumerate() {
        if let Some(parent) = target.parent() {
            storage.mkdir(&parent)?;
        }
        match storage.rename(staged, target) {
            Ok(()) => continue,
            Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        if storage.exchange(staged, target)? {
            // The old tree now sits at `staged`, inside the work directory.
            let _ = storage.remove(staged, true);
            continue;
        }
        let aside = work.join("replaced")?.join(&i.to_string())?;
        journaled.push((target.clone(), aside, staged.clone()));
    }
    if journaled.is_empty() {
        return Ok(());
    }
    let journal = Journal {
        units: journaled
            .iter()
            .map(|(t, a, s)| (t.to_string(), a.to_string(), s.to_string()))
            .collect(),
    };
    let body = serde_json::to_vec(&journal)
        .map_err(|e| StorageError::Io(std::io::Error::other(format!("replace journal: {e}"))))?;
    let journal_path = work.join(JOURNAL)?;
    storage.write(&journal_path, &body)?;
    for (target, aside, staged) in &journaled {
        if let Some(parent) = aside.parent() {
            storage.mkdir(&parent)?;
        }
        match storage.rename(target, aside) {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Err(e) = storage.rename(staged, target) {
            // Put the old tree back; if even that fails, the sweep settles it from the journal.
            if storage.rename(aside, target).is_ok() {
                let _ = storage.remove(&journal_path, false);
            }
            return Err(e);
        }
        let _ = storage.remove(aside, true);
    }
    storage.remove(&journal_path, false)
}

/// Finish a replacement a crash interrupted in the staging directory `work` (no-op without a
/// journal). Errors leave the journal for the next sweep.
pub fn settle(storage: &dyn Storage, work: &StorePath) -> StorageResult<()> {
    let journal_path = work.join(JOURNAL)?;
    let body = match storage.read(&journal_path) {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Ok(journal) = serde_json::from_slice::<Journal>(&body) else {
        tracing::error!(work = %work, "unreadable replace journal; left for an operator");
        return Err(StorageError::Io(std::io::Error::other(
            "unreadable replace journal",
        )));
    };
    for (target, aside, staged) in &journal.units {
        let (target, aside, staged) = (
            StorePath::parse(target)?,
            StorePath::parse(aside)?,
            StorePath::parse(staged)?,
        );
        if !exists(storage, &target)? {
            // Between the two moves: the new tree if it is whole in staging, else the old one.
            if exists(storage, &staged)? {
                storage.rename(&staged, &target)?;
            } else if exists(storage, &aside)? {
                storage.rename(&aside, &target)?;
            }
            tracing::warn!(target = %target, "finished a replacement a crash interrupted");
        }
        if exists(storage, &aside)? {
            storage.remove(&aside, true)?;
        }
    }
    storage.remove(&journal_path, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn replaces_whole_and_settles_an_interrupted_journal() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        st.write(&p("a/resources/t/old.md"), b"old").unwrap();
        st.write(&p("a/w/tree/0/new.md"), b"new").unwrap();
        publish(&st, &p("a/w"), &[(p("a/w/tree/0"), p("a/resources/t"))]).unwrap();
        assert_eq!(st.read(&p("a/resources/t/new.md")).unwrap(), b"new");
        assert!(st.stat(&p("a/resources/t/old.md")).unwrap().is_none());
        // A crash between the two moves of the journaled path: target gone, new tree staged.
        st.write(&p("a/w2/tree/0/newer.md"), b"newer").unwrap();
        st.rename(&p("a/resources/t"), &p("a/w2/replaced/0"))
            .unwrap();
        let j = Journal {
            units: vec![(
                "a/resources/t".into(),
                "a/w2/replaced/0".into(),
                "a/w2/tree/0".into(),
            )],
        };
        st.write(&p("a/w2/replace.json"), &serde_json::to_vec(&j).unwrap())
            .unwrap();
        settle(&st, &p("a/w2")).unwrap();
        assert_eq!(st.read(&p("a/resources/t/newer.md")).unwrap(), b"newer");
        assert!(st.stat(&p("a/w2/replaced/0")).unwrap().is_none());
        assert!(st.stat(&p("a/w2/replace.json")).unwrap().is_none());
        // Nothing to do without a journal.
        settle(&st, &p("a/w3")).unwrap();
    }
}
