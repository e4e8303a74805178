//! Process-wide counts of named cross-instance locks (`Storage::lock`): held now, waited for
//! now, and waits that timed out — what the observer's `lock` component reports.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{LockGuard, StorageError, StorageResult};

#[derive(Default)]
struct LockCounts {
    held: AtomicU64,
    waiting: AtomicU64,
    timed_out: AtomicU64,
}

static COUNTS: LockCounts = LockCounts {
    held: AtomicU64::new(0),
    waiting: AtomicU64::new(0),
    timed_out: AtomicU64::new(0),
};

/// (held, waiting, timed out so far) in this process.
pub fn snapshot() -> (u64, u64, u64) {
    (
        COUNTS.held.load(Ordering::Relaxed),
        COUNTS.waiting.load(Ordering::Relaxed),
        COUNTS.timed_out.load(Ordering::Relaxed),
    )
}

/// Run a backend's lock acquisition with the counts kept: waiting while `acquire` runs, held
/// until the returned guard is dropped.
pub fn counted(
    acquire: impl FnOnce() -> StorageResult<Box<dyn LockGuard>>,
) -> StorageResult<Box<dyn LockGuard>> {
    COUNTS.waiting.fetch_add(1, Ordering::Relaxed);
    let outcome = acquire();
    COUNTS.waiting.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Ok(guard) => {
            COUNTS.held.fetch_add(1, Ordering::Relaxed);
            Ok(Box::new(Counted(guard)))
        }
        Err(e) => {
            if matches!(e, StorageError::Busy(_)) {
                COUNTS.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

struct Counted(Box<dyn LockGuard>);

impl LockGuard for Counted {
    fn held(&self) -> bool {
        self.0.held()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        COUNTS.held.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl LockGuard for Plain {}

    #[test]
    fn held_until_dropped_and_timeouts_counted() {
        // Other tests in this process may hold locks: compare differences.
        let (_, _, timed0) = snapshot();
        let guard = counted(|| Ok(Box::new(Plain))).unwrap();
        assert!(guard.held());
        assert!(snapshot().0 >= 1);
        drop(guard);
        let refused = counted(|| Err(StorageError::Busy("n".into())));
        assert!(refused.is_err());
        assert!(snapshot().2 > timed0);
    }
}
