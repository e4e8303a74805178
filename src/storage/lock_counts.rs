//! Process-wide counts of named cross-instance locks (`Storage::lock`): held now, waited for
//! now, and waits that timed out — what the observer's `lock` component reports — and the
//! held locks themselves by kind (the name's prefix before `:`; the rest carries tenant ids,
//! so it is never shown) and age.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Held locks of this process: id → (kind, taken at).
static HELD: Mutex<Option<HashMap<u64, (String, Instant)>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The kind of a lock name: its prefix before `:` when that is a short lowercase word, else
/// "other" (a name without a kind may be a tenant id).
fn kind_of(name: &str) -> String {
    match name.split_once(':') {
        Some((kind, _))
            if !kind.is_empty()
                && kind.len() <= 32
                && kind
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-') =>
        {
            kind.to_string()
        }
        _ => "other".to_string(),
    }
}

/// One held lock: its kind and how long it has been held.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldLock {
    pub kind: String,
    pub held_for: Duration,
}

/// The locks this process holds now, oldest first (at most `limit`).
pub fn held_locks(limit: usize) -> Vec<HeldLock> {
    let now = Instant::now();
    let held = HELD.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<HeldLock> = held
        .iter()
        .flat_map(|m| m.values())
        .map(|(kind, at)| HeldLock {
            kind: kind.clone(),
            held_for: now.saturating_duration_since(*at),
        })
        .collect();
    out.sort_by_key(|h| std::cmp::Reverse(h.held_for));
    out.truncate(limit);
    out
}

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
    name: &str,
    acquire: impl FnOnce() -> StorageResult<Box<dyn LockGuard>>,
) -> StorageResult<Box<dyn LockGuard>> {
    COUNTS.waiting.fetch_add(1, Ordering::Relaxed);
    let outcome = acquire();
    COUNTS.waiting.fetch_sub(1, Ordering::Relaxed);
    match outcome {
        Ok(guard) => {
            COUNTS.held.fetch_add(1, Ordering::Relaxed);
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            HELD.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(id, (kind_of(name), Instant::now()));
            Ok(Box::new(Counted(guard, id)))
        }
        Err(e) => {
            if matches!(e, StorageError::Busy(_)) {
                COUNTS.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
        }
    }
}

struct Counted(Box<dyn LockGuard>, u64);

impl LockGuard for Counted {
    fn held(&self) -> bool {
        self.0.held()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        COUNTS.held.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = HELD.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            m.remove(&self.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_never_show_tenant_parts() {
        assert_eq!(kind_of("session:acme/alice/s1"), "session");
        assert_eq!(kind_of("acme/alice"), "other");
        assert_eq!(kind_of("Acme:x"), "other");
        assert_eq!(kind_of(":x"), "other");
    }

    struct Plain;
    impl LockGuard for Plain {}

    #[test]
    fn held_until_dropped_and_timeouts_counted() {
        // Other tests in this process may hold locks: compare differences.
        let (_, _, timed0) = snapshot();
        let guard = counted("unit_test_kind:acct/user", || Ok(Box::new(Plain))).unwrap();
        assert!(guard.held());
        assert!(snapshot().0 >= 1);
        let kinds = |l: Vec<HeldLock>| l.iter().filter(|h| h.kind == "unit_test_kind").count();
        assert_eq!(kinds(held_locks(usize::MAX)), 1);
        drop(guard);
        assert_eq!(kinds(held_locks(usize::MAX)), 0);
        let refused = counted("n", || Err(StorageError::Busy("n".into())));
        assert!(refused.is_err());
        assert!(snapshot().2 > timed0);
    }
}
