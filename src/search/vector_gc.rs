//! Garbage collection of stored document vectors, for what removal with the document misses:
//! a crash between a removal and its vector delete, changes applied while the index was still
//! being built, files changed behind the index, and vectors of a model no longer configured.
//!
//! A sweep walks `<account>/_system/vectors/<model_key>/<prefix>/<hash>.f32` of every account,
//! a bounded slice per writer step, and deletes an object when it is older than
//! `embedding.vector_gc_grace_secs` and either belongs to another model key or no document of
//! this (complete) index references its hash in that account. The grace keeps a vector that
//! another instance just stored for a document this index has not tailed yet; it is measured
//! against the object's stored modification time, so it also absorbs clock skew between this
//! host and the store. Directories of other model keys are removed once emptied.
//!
//! Accepted race: an instance whose index lags may still use a vector (from memory) whose
//! object a writer or a sweep elsewhere deleted; after its restart it re-embeds that document.
//! Vectors are derived data: this costs a provider call, never a wrong result.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::embed::Embedder;
use crate::storage::{account_names, subdir_names, EntryKind, Storage, StorageError, StorePath};

/// Longest slice of sweep work in one writer step.
const SWEEP_SLICE: Duration = Duration::from_millis(100);

enum Work {
    /// List the accounts.
    Accounts,
    /// List `<account>/_system/vectors` (one directory per model key).
    Models { account: String },
    /// List a model key's directory (prefix directories).
    Prefixes {
        account: String,
        dir: StorePath,
        current: bool,
    },
    /// List a prefix directory and delete what is collectable.
    Objects {
        account: String,
        dir: StorePath,
        current: bool,
    },
    /// Remove a directory of another model key if it is empty by now.
    RemoveIfEmpty(StorePath),
}

/// One sweep over every account's stored vectors.
pub struct VectorSweep {
    work: Vec<Work>,
    deleted: u64,
    kept: u64,
    started: Instant,
}

impl Default for VectorSweep {
    fn default() -> Self {
        VectorSweep::new()
    }
}

impl VectorSweep {
    pub fn new() -> VectorSweep {
        VectorSweep {
            work: vec![Work::Accounts],
            deleted: 0,
            kept: 0,
            started: Instant::now(),
        }
    }

    /// Advance by one bounded slice. `Ok(true)`: more to do; `Ok(false)`: the sweep is done
    /// (counted in the embedder's stats). A storage error ends this sweep (the next one
    /// retries); it is never the caller's failure.
    pub fn slice(&mut self, storage: &dyn Storage, embedder: &Embedder) -> bool {
        let slice_start = Instant::now();
        while slice_start.elapsed() < SWEEP_SLICE {
            let Some(work) = self.work.pop() else {
                embedder.stats.gc_runs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    deleted = self.deleted,
                    kept = self.kept,
                    took_ms = self.started.elapsed().as_millis() as u64,
                    "stored vector sweep finished"
                );
                return false;
            };
            if let Err(e) = self.run(storage, embedder, work) {
                tracing::warn!(error = %e, "stored vector sweep stopped; the next one retries");
                return false;
            }
        }
        true
    }

    fn run(
        &mut self,
        storage: &dyn Storage,
        embedder: &Embedder,
        work: Work,
    ) -> Result<(), StorageError> {
        match work {
            Work::Accounts => {
                for account in account_names(storage)? {
                    self.work.push(Work::Models { account });
                }
            }
            Work::Models { account } => {
                let Ok(root) = StorePath::parse(&format!("{account}/_system/vectors")) else {
                    return Ok(());
                };
                for e in subdir_names(storage, &root)? {
                    let Ok(dir) = root.join(&e) else { continue };
                    let current = e == embedder.model_key();
                    if !current {
                        self.work.push(Work::RemoveIfEmpty(dir.clone()));
                    }
                    self.work.push(Work::Prefixes {
                        account: account.clone(),
                        dir,
                        current,
                    });
                }
            }
            Work::Prefixes {
                account,
                dir,
                current,
            } => {
                for e in subdir_names(storage, &dir)? {
                    let Ok(sub) = dir.join(&e) else { continue };
                    if !current {
                        self.work.push(Work::RemoveIfEmpty(sub.clone()));
                    }
                    self.work.push(Work::Objects {
                        account: account.clone(),
                        dir: sub,
                        current,
                    });
                }
            }
            Work::Objects {
                account,
                dir,
                current,
            } => {
                let entries = match storage.list(&dir) {
                    Ok(e) => e,
                    Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                let now = SystemTime::now();
                let grace = embedder.gc_grace();
                let mut doomed = Vec::new();
                for e in entries {
                    if e.meta.kind != EntryKind::File {
                        continue;
                    }
                    let hash = e.name.strip_suffix(".f32").unwrap_or(&e.name);
                    let old_enough = now
                        .duration_since(e.meta.modified)
                        .is_ok_and(|age| age >= grace);
                    let wanted = current && embedder.is_referenced(&account, hash);
                    if !old_enough || wanted {
                        self.kept += 1;
                        continue;
                    }
                    if let Ok(p) = dir.join(&e.name) {
                        doomed.push(p);
                    }
                }
                if !doomed.is_empty() {
                    storage.remove_files(&doomed)?;
                    self.deleted += doomed.len() as u64;
                    embedder
                        .stats
                        .vectors_deleted
                        .fetch_add(doomed.len() as u64, Ordering::Relaxed);
                }
            }
            Work::RemoveIfEmpty(dir) => {
                // Only directories of other models: nothing writes there any more, except an
                // instance still running the old model, whose store then fails and is logged.
                let empty = storage.list(&dir).is_ok_and(|e| e.is_empty());
                if empty {
                    if let Err(e) = storage.remove(&dir, false) {
                        tracing::debug!(error = %e, "empty vector directory not removed");
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::embed::tests::{embedder, plant};
    use crate::storage::backend::local::LocalStorage;

    fn age(data: &std::path::Path, store_path: &str, by: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(data.join("viking").join(store_path))
            .unwrap();
        file.set_modified(SystemTime::now() - by).unwrap();
    }

    #[test]
    fn sweep_collects_old_orphans_and_old_models_only() {
        let data = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(data.path()).unwrap();
        let e = embedder(600);
        let exists = |p: &str| {
            storage
                .stat(&StorePath::parse(p).unwrap())
                .unwrap()
                .is_some()
        };
        e.want("acme/resources/a.md", "aa11", false);
        let used = plant(&e, &storage, "acme", "aa11");
        let old_orphan = plant(&e, &storage, "acme", "bb22");
        let new_orphan = plant(&e, &storage, "acme", "cc33");
        // Referenced in another account only: an orphan in this one.
        let other_account = plant(&e, &storage, "beta", "aa11");
        let old_model = "acme/_system/vectors/0123456789abcdef/aa/aa11.f32";
        storage
            .write(&StorePath::parse(old_model).unwrap(), &[0; 8])
            .unwrap();
        let hour = Duration::from_secs(3600);
        for p in [&used, &old_orphan, &other_account, &old_model.to_string()] {
            age(data.path(), p, hour);
        }
        let mut sweep = VectorSweep::new();
        while sweep.slice(&storage, &e) {}
        assert!(exists(&used), "a referenced vector stays");
        assert!(
            exists(&new_orphan),
            "an orphan younger than the grace stays"
        );
        assert!(!exists(&old_orphan) && !exists(&other_account));
        assert!(!exists(old_model));
        assert!(!exists("acme/_system/vectors/0123456789abcdef"));
        assert_eq!(e.stats.gc_runs.load(Ordering::Relaxed), 1);
        assert_eq!(e.stats.vectors_deleted.load(Ordering::Relaxed), 3);
        // Nothing stored at all: a sweep is a no-op.
        let empty = tempfile::tempdir().unwrap();
        let mut sweep = VectorSweep::new();
        while sweep.slice(&LocalStorage::open(empty.path()).unwrap(), &e) {}
        assert_eq!(e.stats.gc_runs.load(Ordering::Relaxed), 2);
    }
}
