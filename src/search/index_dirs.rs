//! Where an instance keeps its index when `search.index_dir` is not set: one directory per
//! instance id under `<data_dir>/.longship/search/`. An id is not configured but claimed: a
//! starting process takes the directory no live process holds (its `LOCK` is an exclusive
//! `flock` held for the process lifetime) with the freshest complete index, else a new one
//! with a fresh random id. So a restart keeps its index whatever its port, and two processes started from
//! one configuration on one host still get distinct directories. Directories no process holds
//! and nobody used for [`STALE_AFTER`] are removed at startup (under their lock, so never one
//! another process is opening).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::index::{DirLock, IndexError, Payload, SearchIndex, SCHEMA_VERSION};

/// An unclaimed index directory last used longer ago than this is removed.
pub const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Open the index in a claimed directory under `base` with `open` (which takes the
/// directory's lock, failing with [`IndexError::Locked`] if a live process holds it), then
/// remove stale unclaimed directories.
pub fn open_claimed(
    base: &Path,
    open: &dyn Fn(&Path) -> Result<SearchIndex, IndexError>,
) -> Result<SearchIndex, IndexError> {
    let io = |source| IndexError::Io {
        dir: base.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(base).map_err(io)?;
    let mut candidates: Vec<((bool, u64, SystemTime), PathBuf)> = instance_dirs(base)
        .map_err(io)?
        .into_iter()
        // A stale one is removed below rather than reused (it would be reconciled in full).
        .filter(|(_, used)| !is_stale(*used))
        .map(|(dir, used)| {
            let (complete, committed_at) = last_commit(&dir);
            ((complete, committed_at, used), dir)
        })
        .collect();
    // A complete index with the newest commit first: the least to catch up on.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut claimed = None;
    for (_, dir) in &candidates {
        match open(dir) {
            Ok(index) => {
                claimed = Some(index);
                break;
            }
            // Held by a live process (or one just claimed it): try the next.
            Err(IndexError::Locked { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let index = match claimed {
        Some(index) => index,
        None => open(&base.join(format!("i-{:016x}", rand::random::<u64>())))?,
    };
    remove_stale(base, &index.dir);
    Ok(index)
}

/// Every subdirectory of `base` with when it was last used.
fn instance_dirs(base: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(base)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let dir = entry.path();
            let used = last_used(&dir);
            out.push((dir, used));
        }
    }
    Ok(out)
}

fn is_stale(used: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(used)
        .is_ok_and(|age| age > STALE_AFTER)
}

/// Whether the index in `dir` (current schema) finished a full build, and when it last
/// committed (Unix ms); (false, 0) when it cannot tell.
fn last_commit(dir: &Path) -> (bool, u64) {
    let meta = dir.join(format!("v{SCHEMA_VERSION}")).join("meta.json");
    let payload = std::fs::read(meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("payload")?.as_str().map(str::to_string))
        .and_then(|p| serde_json::from_str::<Payload>(&p).ok());
    match payload {
        Some(p) => (p.complete, p.committed_at),
        None => (false, 0),
    }
}

/// The newest of the lock's mtime (set when a process claims it) and the index commits'.
fn last_used(dir: &Path) -> SystemTime {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut newest = mtime(&dir.join("LOCK")).unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Some(t) = mtime(&e.path().join("meta.json")) {
                newest = newest.max(t);
            }
        }
    }
    newest
}

/// Remove the directories under `base` other than `own` that no process holds and nobody
/// used for [`STALE_AFTER`]. Failures are logged and left for the next start.
fn remove_stale(base: &Path, own: &Path) {
    let Ok(dirs) = instance_dirs(base) else {
        return;
    };
    for (dir, used) in dirs {
        if dir == own || !is_stale(used) {
            continue;
        }
        // Held while removing: a process opening it meanwhile waits on nothing and is refused.
        let Ok(_lock) = DirLock::take(&dir) else {
            continue;
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(dir = %dir.display(), "stale search index directory removed"),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a stale search index directory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Result<SearchIndex, IndexError> {
        SearchIndex::open(dir, 16)
    }

    #[test]
    fn reuses_unheld_directories_and_removes_stale_ones() {
        let base = tempfile::tempdir().unwrap();
        let first = open_claimed(base.path(), &open).unwrap();
        // A second live process gets another directory.
        let second = open_claimed(base.path(), &open).unwrap();
        assert_ne!(first.dir, second.dir);
        let (a, b) = (first.dir.clone(), second.dir.clone());
        drop(second);
        // A restart (any port) claims an unheld directory again instead of a new one.
        let again = open_claimed(base.path(), &open).unwrap();
        assert_eq!(again.dir, b);
        drop(again);
        // An unheld directory unused for longer than STALE_AFTER goes; a held one never does.
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        let set_old = |dir: &Path| {
            std::fs::File::options()
                .write(true)
                .open(dir.join("LOCK"))
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        let legacy = base.path().join("1933");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("LOCK"), b"").unwrap();
        set_old(&legacy);
        set_old(&a);
        let reopened = open_claimed(base.path(), &open).unwrap();
        assert_eq!(reopened.dir, b, "the most recently used unheld directory");
        assert!(!legacy.exists(), "stale directory removed");
        assert!(a.exists(), "held by a live process");
        drop(first);
    }
}
