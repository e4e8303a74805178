//! Resolved keys cached on each HTTP worker thread, so the common authenticated request does
//! not make a round trip to the AuthActor's thread.
//!
//! A worker never trusts anything the actor itself would not trust at that moment. The actor
//! publishes two facts through [`Published`]:
//! * its map epoch, bumped (after the change) whenever the in-memory map changes: a local
//!   write, a reload, a probe, a sweep;
//! * the start of its last finished freshness check (the instant its refresh rule compares a
//!   request's arrival with).
//!
//! A cached entry records the epoch of the map it was looked up in. It answers a request only
//! while that epoch is still current and the last check started within `refresh_interval`
//! of now — exactly when the actor would answer from the same map without waiting for a
//! check. Anything else (a miss, a newer epoch, a lapsed check, strict mode with interval 0)
//! goes to the actor as before; the actor's check then publishes a new freshness instant, so
//! requests keep driving the TTL reloads. Only successful lookups are cached (401s, 503s and
//! Argon2 verifications still go to the actor); entries are keyed by the SHA-256 of the
//! presented key, never the key.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::identity::Identity;
use crate::storage::keys;

/// Entries one worker keeps at most; when full, stale entries go, then all of them.
pub const WORKER_CACHE_CAPACITY: usize = 1024;

/// What the AuthActor publishes for the HTTP workers' caches.
#[derive(Debug)]
pub struct Published {
    /// Distinguishes actors (tests may run several in one process) in the thread-local cache.
    id: u64,
    base: Instant,
    interval: Duration,
    epoch: AtomicU64,
    /// Start of the last finished freshness check, as nanoseconds after `base` plus one
    /// (0: no check has finished yet).
    fresh_since: AtomicU64,
    worker_hits: AtomicU64,
    /// Of those, hits for keys stored hashed (the actor counts them as verification-cache hits).
    worker_hashed_hits: AtomicU64,
}

impl Published {
    pub fn new(interval: Duration) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Published {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            base: Instant::now(),
            interval,
            epoch: AtomicU64::new(0),
            fresh_since: AtomicU64::new(0),
            worker_hits: AtomicU64::new(0),
            worker_hashed_hits: AtomicU64::new(0),
        }
    }

    /// The actor's map changed to `epoch` (call after the change).
    pub fn publish_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// A freshness check that started at `started` finished (its changes already applied).
    pub fn publish_check(&self, started: Instant) {
        let nanos = started.saturating_duration_since(self.base).as_nanos();
        let encoded = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.fresh_since.store(encoded, Ordering::Release);
    }

    /// Requests answered from worker caches.
    pub fn worker_hits(&self) -> u64 {
        self.worker_hits.load(Ordering::Relaxed)
    }

    /// Of [`Published::worker_hits`], those for keys stored as Argon2 hashes.
    pub fn worker_hashed_hits(&self) -> u64 {
        self.worker_hashed_hits.load(Ordering::Relaxed)
    }

    /// The epoch a cached entry must carry to answer a request arriving `now`; `None` when
    /// the actor itself would wait for a freshness check (or strict mode: never cached).
    fn current_epoch(&self, now: Instant) -> Option<u64> {
        if self.interval.is_zero() {
            return None;
        }
        // Freshness first: a check's published start is ordered after its map changes.
        let since = self.fresh_since.load(Ordering::Acquire);
        let started = self.base + Duration::from_nanos(since.checked_sub(1)?);
        if now.saturating_duration_since(started) > self.interval {
            return None;
        }
        Some(self.epoch.load(Ordering::Acquire))
    }
}

/// The SHA-256 of a presented key: what the cache is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        KeyDigest(keys::fingerprint(key))
    }
}

/// What the actor answered for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKey {
    pub identity: Identity,
    /// The key is stored hashed (the answer came from the Argon2 verification cache).
    pub hashed: bool,
}

/// One worker's resolved keys.
#[derive(Debug, Default)]
pub struct WorkerCache {
    /// The [`Published`] these entries came from.
    owner: u64,
    entries: HashMap<KeyDigest, (u64, CachedKey)>,
}

impl WorkerCache {
    /// The identity for `digest` if the actor would answer it the same way at `now`.
    pub fn get(
        &mut self,
        published: &Published,
        digest: &KeyDigest,
        now: Instant,
    ) -> Option<CachedKey> {
        if self.owner != published.id {
            return None;
        }
        let epoch = published.current_epoch(now)?;
        match self.entries.get(digest) {
            Some((e, cached)) if *e == epoch => Some(cached.clone()),
            Some(_) => {
                self.entries.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Keep what the actor answered from its map at `epoch`.
    pub fn insert(
        &mut self,
        published: &Published,
        digest: KeyDigest,
        epoch: u64,
        cached: CachedKey,
    ) {
        if published.interval.is_zero() {
            return;
        }
        if self.owner != published.id {
            self.entries.clear();
            self.owner = published.id;
        }
        let current = published.epoch.load(Ordering::Acquire);
        if epoch != current {
            // Looked up in a map that has changed since: it could not answer anyway.
            return;
        }
        if self.entries.len() >= WORKER_CACHE_CAPACITY && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, (e, _)| *e == current);
            if self.entries.len() >= WORKER_CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(digest, (epoch, cached));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

thread_local! {
    static CACHE: RefCell<WorkerCache> = RefCell::new(WorkerCache::default());
}

/// This thread's cached identity for `digest`, if still valid now (counted as a resolve).
pub fn lookup(published: &Published, digest: &KeyDigest) -> Option<Identity> {
    let hit = CACHE.with(|c| {
        c.try_borrow_mut()
            .ok()?
            .get(published, digest, Instant::now())
    });
    let hit = hit?;
    published.worker_hits.fetch_add(1, Ordering::Relaxed);
    if hit.hashed {
        published.worker_hashed_hits.fetch_add(1, Ordering::Relaxed);
    }
    Some(hit.identity)
}

/// Remember on this thread what the actor answered from its map at `epoch`.
pub fn remember(published: &Published, digest: KeyDigest, epoch: u64, cached: CachedKey) {
    CACHE.with(|c| {
        if let Ok(mut cache) = c.try_borrow_mut() {
            cache.insert(published, digest, epoch, cached);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn bob() -> CachedKey {
        CachedKey {
            identity: Identity {
                role: Role::User,
                account: "acme".into(),
                user: "bob".into(),
            },
            hashed: false,
        }
    }

    fn fresh(interval_ms: u64) -> (Published, Instant) {
        let p = Published::new(Duration::from_millis(interval_ms));
        let checked = Instant::now();
        p.publish_epoch(3);
        p.publish_check(checked);
        (p, checked)
    }

    #[test]
    fn answers_while_the_epoch_holds_and_the_last_check_is_within_the_interval() {
        let (p, checked) = fresh(1000);
        let mut c = WorkerCache::default();
        let d = KeyDigest::of("k1");
        c.insert(&p, d, 3, bob());
        assert_eq!(c.get(&p, &d, checked), Some(bob()));
        let at_bound = checked + Duration::from_millis(1000);
        assert_eq!(c.get(&p, &d, at_bound), Some(bob()));
        assert_eq!(c.get(&p, &KeyDigest::of("k2"), checked), None);
    }

    #[test]
    fn a_lapsed_check_sends_the_request_to_the_actor() {
        let (p, checked) = fresh(1000);
        let mut c = WorkerCache::default();
        let d = KeyDigest::of("k1");
        c.insert(&p, d, 3, bob());
        let late = checked + Duration::from_millis(1001);
        assert_eq!(c.get(&p, &d, late), None);
        // The entry survives: a new check with the map unchanged revalidates it.
        p.publish_check(late);
        assert_eq!(c.get(&p, &d, late), Some(bob()));
    }

    #[test]
    fn any_change_of_the_map_invalidates_entries() {
        let (p, checked) = fresh(1000);
        let mut c = WorkerCache::default();
        let d = KeyDigest::of("k1");
        c.insert(&p, d, 3, bob());
        p.publish_epoch(4);
        assert_eq!(c.get(&p, &d, checked), None);
        assert!(c.is_empty(), "a stale entry is dropped when seen");
        // An answer looked up in an older map is not kept.
        c.insert(&p, d, 3, bob());
        assert!(c.is_empty());
        c.insert(&p, d, 4, bob());
        assert_eq!(c.get(&p, &d, checked), Some(bob()));
    }

    #[test]
    fn strict_mode_and_an_unchecked_map_never_answer() {
        let (strict, checked) = fresh(0);
        let mut c = WorkerCache::default();
        let d = KeyDigest::of("k1");
        c.insert(&strict, d, 3, bob());
        assert!(c.is_empty());
        assert_eq!(c.get(&strict, &d, checked), None);

        let unchecked = Published::new(Duration::from_secs(1));
        let mut c = WorkerCache::default();
        c.insert(&unchecked, d, 0, bob());
        assert_eq!(c.get(&unchecked, &d, Instant::now()), None);
    }

    #[test]
    fn entries_of_another_actor_are_not_served() {
        let (a, checked) = fresh(1000);
        let (b, _) = fresh(1000);
        let mut c = WorkerCache::default();
        let d = KeyDigest::of("k1");
        c.insert(&a, d, 3, bob());
        assert_eq!(c.get(&b, &d, checked), None);
        c.insert(&b, d, 3, bob());
        assert_eq!(c.get(&a, &d, checked), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_cache_is_bounded() {
        let (p, checked) = fresh(1000);
        let mut c = WorkerCache::default();
        for i in 0..(WORKER_CACHE_CAPACITY * 3) {
            c.insert(&p, KeyDigest::of(&format!("k{i}")), 3, bob());
            assert!(c.len() <= WORKER_CACHE_CAPACITY);
        }
        let last = KeyDigest::of(&format!("k{}", WORKER_CACHE_CAPACITY * 3 - 1));
        assert_eq!(c.get(&p, &last, checked), Some(bob()));
    }

    #[test]
    fn thread_local_hits_are_counted() {
        let (p, _) = fresh(60_000);
        let d = KeyDigest::of("k-thread");
        assert_eq!(lookup(&p, &d), None);
        remember(&p, d, 3, bob());
        assert_eq!(lookup(&p, &d), Some(bob().identity));
        assert_eq!((p.worker_hits(), p.worker_hashed_hits()), (1, 0));
        let hashed = KeyDigest::of("k-hashed");
        remember(
            &p,
            hashed,
            3,
            CachedKey {
                hashed: true,
                ..bob()
            },
        );
        assert_eq!(lookup(&p, &hashed), Some(bob().identity));
        assert_eq!((p.worker_hits(), p.worker_hashed_hits()), (2, 1));
    }
}
