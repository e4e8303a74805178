//! Local scratch space of one ingestion: `<work_dir>/longship-ingest-<task>/` holds the
//! source, the unpacked archive and the parsed tree. Its owner holds an exclusive `flock` on
//! `owner.lock` inside it for as long as it works; the kernel drops that lock when the owner
//! dies, however it dies. The sweep (at startup and with the ingestion sweep) removes every
//! scratch directory whose lock it can take — after killing any parser child a crash left
//! working in it — so `kill -9` leaves nothing behind for long, and live ingestions of other
//! instances sharing the directory are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::ResourceSettings;

const PREFIX: &str = "longship-ingest-";
const LOCK_FILE: &str = "owner.lock";

/// The directory scratch space lives in.
pub fn root(settings: &ResourceSettings) -> PathBuf {
    if settings.work_dir.trim().is_empty() {
        std::env::temp_dir()
    } else {
        PathBuf::from(settings.work_dir.trim())
    }
}

/// One ingestion's scratch directory, locked while alive and removed on drop.
pub struct Scratch {
    path: PathBuf,
    _lock: fs::File,
}

impl Scratch {
    /// Create (anew) and lock the scratch directory of `task_id`.
    pub fn create(settings: &ResourceSettings, task_id: &str) -> std::io::Result<Scratch> {
        let path = root(settings).join(format!("{PREFIX}{task_id}"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path)?;
        let lock = fs::File::create(path.join(LOCK_FILE))?;
        // Blocking is impossible here: the directory is new and only this task uses its name.
        lock.try_lock().map_err(std::io::Error::other)?;
        Ok(Scratch { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What one sweep did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SweepReport {
    pub removed: usize,
    pub parsers_killed: usize,
}

/// Remove scratch directories no live process owns. A directory without a lock file (its
/// owner died between creating it and locking it) goes once older than `grace`.
pub fn sweep(settings: &ResourceSettings, grace: Duration) -> SweepReport {
    let mut report = SweepReport::default();
    let Ok(entries) = fs::read_dir(root(settings)) else {
        return report;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) || !is_abandoned(&dir, grace) {
            continue;
        }
        report.parsers_killed += super::process::kill_parsers_in(&dir);
        if fs::remove_dir_all(&dir).is_ok() {
            report.removed += 1;
        }
    }
    if report.removed > 0 {
        tracing::info!(
            removed = report.removed,
            parsers_killed = report.parsers_killed,
            "removed ingestion scratch space of dead ingestions"
        );
    }
    report
}

fn is_abandoned(dir: &Path, grace: Duration) -> bool {
    match fs::File::open(dir.join(LOCK_FILE)) {
        // The lock is taken only to learn that nobody holds it; dropping the file releases it.
        Ok(lock) => lock.try_lock().is_ok(),
        Err(_) => fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > grace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unowned_scratch_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ResourceSettings {
            work_dir: dir.path().display().to_string(),
            ..ResourceSettings::default()
        };
        let live = Scratch::create(&settings, "live").unwrap();
        // A dead owner: the directory and its lock file, nobody holding the lock.
        let dead = dir.path().join(format!("{PREFIX}dead"));
        fs::create_dir_all(&dead).unwrap();
        fs::write(dead.join(LOCK_FILE), b"").unwrap();
        fs::write(dead.join("input"), b"x").unwrap();
        // Young and unlocked (owner between create and lock): kept within the grace.
        let young = dir.path().join(format!("{PREFIX}young"));
        fs::create_dir_all(&young).unwrap();
        let report = sweep(&settings, Duration::from_secs(600));
        assert_eq!(report.removed, 1);
        assert!(live.path().is_dir() && young.is_dir() && !dead.exists());
        drop(live);
        assert!(!dir.path().join(format!("{PREFIX}live")).exists());
    }
}
