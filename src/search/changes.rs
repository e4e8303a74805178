//! The shared change log that keeps every instance's index fresh.
//!
//! Whoever changes indexed content (content write, rm, mv, cp, session commit, ingest, account
//! or user deletion) records it through the process's one [`Recorder`] (built at startup and
//! carried by every job that changes indexed content) AFTER the storage change succeeded. A record names one
//! subtree (or a few, for mv) inside one account; it carries no content: applying it means
//! "make the index match what storage holds under these paths now", so applying a record
//! twice, late, or out of order is harmless.
//!
//! Layout, in shared storage (hidden under `_system`, never listed to clients):
//! `_system/search/changes/<writer>/<bucket>/<seq>.json`. `<writer>` is one running process
//! (start time + random), `<seq>` its own counter, `<bucket>` = `seq / 1000`. Each record is a
//! create-only object, so writers never contend on a shared object and nothing is lost to a
//! concurrent writer. Readers tail each writer from their cursor, listing only the bucket the
//! cursor is in and the ones after it: a cheap check once per `search.refresh_interval_ms`.
//!
//! Records older than `search.change_retention_secs` are pruned by their writer (and dead
//! writers' logs by anyone); an instance that was away longer than that reconciles fully.
//! A writer killed between its storage change and its record leaves a change no log names:
//! the next process on its index reconciles the directories its newest records name at
//! startup ([`newest_records`]), and the periodic reconcile (`search.reconcile_interval_secs`)
//! repairs anything else.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::time::epoch_millis_now;

use serde::{Deserialize, Serialize};

use crate::storage::{EntryKind, Storage, StorageError, StorePath};

/// Records per bucket directory.
const BUCKET: u64 = 1000;
/// A missing sequence number with later ones present is waited for this long (a concurrent
/// record still being written), then skipped (its writer died; the reconcile covers it).
const GAP_PATIENCE: Duration = Duration::from_secs(30);

/// What kind of operation a record describes (for logs and metrics; applying is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Write,
    Remove,
    Move,
    Copy,
    Mkdir,
    Ingest,
    Session,
    /// A whole account or user space was deleted.
    Purge,
}

/// One record: subtrees of one account whose indexed state must be re-read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub account: String,
    /// Paths inside the account (`resources/docs`, `user/bob/memories/x.md`; `""` = all).
    pub paths: Vec<String>,
    pub kind: ChangeKind,
    /// Unix milliseconds when it was recorded.
    pub at: u64,
}

impl Change {
    /// The full storage paths this change covers.
    pub fn store_paths(&self) -> Vec<StorePath> {
        self.paths
            .iter()
            .filter_map(|p| {
                let full = if p.is_empty() {
                    self.account.clone()
                } else {
                    format!("{}/{p}", self.account)
                };
                StorePath::parse(&full).ok()
            })
            .collect()
    }
}

fn log_root() -> StorePath {
    StorePath::parse("_system/search/changes").unwrap_or_else(|_| StorePath::root())
}

fn bucket_name(bucket: u64) -> String {
    format!("{bucket:08}")
}

fn record_name(seq: u64) -> String {
    format!("{seq:012}.json")
}

fn parse_record_name(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
}

/// This process's side of the log: its writer id, its counter, and the records it made that
/// its own index has not applied yet (applied at once, without waiting for the tail).
pub struct Recorder {
    writer: String,
    next_seq: AtomicU64,
    local: Mutex<LocalRecords>,
    wake: Box<dyn Fn() + Send + Sync>,
    /// Told of every record after it was made, on the thread that made it (directory
    /// summaries follow their children's changes through it: `ingest::overview`).
    observer: OnceLock<ChangeObserver>,
}

/// What [`Recorder::observe`] installs.
pub type ChangeObserver = Box<dyn Fn(&dyn Storage, &Change) + Send + Sync>;

/// This process's records not yet taken by the index writer, and how many were made.
/// One lock orders the queues and the counts alike, so "the index applied the first N
/// records of an account" always includes the N-th record made for it.
#[derive(Default)]
struct LocalRecords {
    /// Per account, in record order. The index writer serves the accounts in turn
    /// ([`Recorder::next_fair`]), so one tenant's burst of large changes (copies of big trees)
    /// never queues another tenant's small write behind all of it.
    queues: BTreeMap<String, VecDeque<(u64, Change)>>,
    /// The account the last record was taken from (the next one comes from the account after).
    last_served: Option<String>,
    /// Records made by this process so far.
    recorded: u64,
    /// Per account: records made by this process (read-your-writes: a find of that account
    /// waits until the index applied this many of its records; other tenants' writes never
    /// make it wait).
    recorded_by_account: HashMap<String, u64>,
}

impl Recorder {
    /// A recorder with a fresh writer id; `wake` tells the index writer there is work.
    pub fn new(wake: Box<dyn Fn() + Send + Sync>) -> Recorder {
        let writer = format!("{:013}-{:08x}", epoch_millis_now(), rand::random::<u32>());
        Recorder {
            writer,
            next_seq: AtomicU64::new(0),
            local: Mutex::new(LocalRecords::default()),
            wake,
            observer: OnceLock::new(),
        }
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Install the one observer of this process's records (at startup; a second is ignored).
    pub fn observe(&self, observer: ChangeObserver) {
        if self.observer.set(observer).is_err() {
            tracing::warn!("a change observer was already installed");
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, LocalRecords> {
        // The guarded data stays consistent even if a holder panicked (plain pushes and adds).
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records made so far by this process.
    pub fn recorded(&self) -> u64 {
        self.locked().recorded
    }

    /// How many of `account`'s records the index must have applied before a find of
    /// `account` sees every change this process recorded for it.
    pub fn recorded_for(&self, account: &str) -> u64 {
        self.locked()
            .recorded_by_account
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    /// Write one record (create-only) and queue it for the local index.
    pub fn record(&self, storage: &dyn Storage, change: Change) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let path = log_root()
            .join(&self.writer)
            .and_then(|p| p.join(&bucket_name(seq / BUCKET)))
            .and_then(|p| p.join(&record_name(seq)));
        let body = serde_json::to_vec(&change).unwrap_or_default();
        let written = path.and_then(|p| storage.write_if(&p, &body, None));
        if let Err(e) = written {
            // The local index still applies it; other instances see it at the next reconcile.
            tracing::warn!(error = %e, account = %change.account, "could not write a search change record");
        }
        {
            let mut local = self.locked();
            local.recorded += 1;
            *local
                .recorded_by_account
                .entry(change.account.clone())
                .or_default() += 1;
            local
                .queues
                .entry(change.account.clone())
                .or_default()
                .push_back((seq, change.clone()));
        }
        (self.wake)();
        // Outside the lock: the observer may do storage I/O.
        if let Some(observe) = self.observer.get() {
            observe(storage, &change);
        }
    }

    /// Take the oldest queued record of the account after the one served last (round robin
    /// over the accounts with queued records), or None when nothing is queued.
    pub fn next_fair(&self) -> Option<(u64, Change)> {
        let mut local = self.locked();
        let after = local.last_served.take();
        let account = after
            .as_deref()
            .and_then(|a| {
                local
                    .queues
                    .range::<str, _>((Bound::Excluded(a), Bound::Unbounded))
                    .next()
            })
            .or_else(|| local.queues.iter().next())
            .map(|(account, _)| account.clone())?;
        let queue = local.queues.get_mut(&account)?;
        let record = queue.pop_front();
        if queue.is_empty() {
            local.queues.remove(&account);
        }
        local.last_served = Some(account);
        record
    }

    /// Take every queued record, in the order [`Recorder::next_fair`] serves them.
    #[cfg(test)]
    pub fn drain_local(&self) -> Vec<(u64, Change)> {
        std::iter::from_fn(|| self.next_fair()).collect()
    }

    /// The lowest sequence number still queued (every record below it, of this process, has
    /// been taken), or None when nothing is queued.
    pub fn oldest_queued(&self) -> Option<u64> {
        self.locked()
            .queues
            .values()
            .filter_map(|q| q.front().map(|(seq, _)| *seq))
            .min()
    }

    /// Remove this writer's buckets whose newest record is older than `retention`, and other
    /// writers' logs that have been silent for twice that (their processes are gone).
    pub fn prune(&self, storage: &dyn Storage, retention: Duration) {
        let root = log_root();
        let Ok(writers) = storage.list(&root) else {
            return;
        };
        let now = SystemTime::now();
        let old = |t: SystemTime, limit: Duration| now.duration_since(t).is_ok_and(|d| d > limit);
        for w in writers
            .into_iter()
            .filter(|w| w.meta.kind == EntryKind::Dir)
        {
            let Ok(wdir) = root.join(&w.name) else {
                continue;
            };
            let Ok(mut buckets) = storage.list(&wdir) else {
                continue;
            };
            buckets.sort_by(|a, b| a.name.cmp(&b.name));
            let own = w.name == self.writer;
            if !own {
                let newest = buckets
                    .last()
                    .and_then(|b| wdir.join(&b.name).ok())
                    .and_then(|b| storage.list(&b).ok())
                    .and_then(|records| records.iter().map(|r| r.meta.modified).max());
                if newest.is_none_or(|t| old(t, retention * 2)) {
                    let _ = storage.remove(&wdir, true);
                }
                continue;
            }
            // Never the newest bucket: it is being written.
            for b in buckets.iter().rev().skip(1) {
                let Ok(bdir) = wdir.join(&b.name) else {
                    continue;
                };
                let newest = storage
                    .list(&bdir)
                    .ok()
                    .and_then(|records| records.iter().map(|r| r.meta.modified).max());
                if newest.is_none_or(|t| old(t, retention)) {
                    let _ = storage.remove(&bdir, true);
                }
            }
        }
    }
}

impl Recorder {
    /// Record that `subtrees` of `account` changed (after the change is in storage), so every
    /// instance re-indexes them: paths inside the account (`resources/guide`,
    /// `user/bob/memories/x.md`), `""` for the whole account; several for one operation (`mv`:
    /// source and target). Never fails the caller: a record that cannot be written is logged
    /// and left to the reconcile.
    pub fn record_paths(
        &self,
        storage: &dyn Storage,
        account: &str,
        subtrees: &[&str],
        kind: ChangeKind,
    ) {
        let change = Change {
            account: account.to_string(),
            paths: subtrees
                .iter()
                .map(|s| s.trim_matches('/').to_string())
                .collect(),
            kind,
            at: epoch_millis_now(),
        };
        self.record(storage, change);
    }

    /// [`Recorder::record_paths`] for full storage paths (`acme/resources/x`), grouped by
    /// account.
    pub fn record_store_paths(&self, storage: &dyn Storage, paths: &[StorePath], kind: ChangeKind) {
        let mut by_account: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in paths {
            let s = p.as_str();
            let (account, rest) = s.split_once('/').unwrap_or((s, ""));
            if account.is_empty() {
                continue;
            }
            by_account.entry(account).or_default().push(rest);
        }
        for (account, rest) in by_account {
            self.record_paths(storage, account, &rest, kind);
        }
    }
}

/// Where a reader stands in one writer's log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    /// The next sequence number expected.
    pub next: u64,
}

/// A reader's position in every writer's log, and what it found since the last poll.
#[derive(Debug, Default)]
pub struct Tail {
    pub cursors: BTreeMap<String, Cursor>,
    /// First time a gap (missing seq with later ones present) was seen, per writer.
    gaps: BTreeMap<String, Instant>,
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct Poll {
    pub changes: Vec<Change>,
    /// Records were pruned before this reader saw them: only a full reconcile is safe.
    pub missed: bool,
    /// Records seen but not yet applicable (behind a gap).
    pub pending: u64,
}

impl Tail {
    pub fn new(cursors: BTreeMap<String, Cursor>) -> Tail {
        Tail {
            cursors,
            gaps: BTreeMap::new(),
        }
    }

    /// Point every cursor at the current end of its writer's log (before a full rebuild: the
    /// rebuild covers everything recorded so far).
    pub fn skip_to_heads(&mut self, storage: &dyn Storage) -> Result<(), StorageError> {
        let root = log_root();
        let writers = match storage.list(&root) {
            Ok(w) => w,
            Err(StorageError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for w in writers
            .into_iter()
            .filter(|w| w.meta.kind == EntryKind::Dir)
        {
            let wdir = root.join(&w.name)?;
            let mut next = 0;
            if let Some(b) = last_bucket(storage, &wdir)? {
                let records = list_records(storage, &wdir.join(&bucket_name(b))?)?;
                next = records.last().map(|s| s + 1).unwrap_or(b * BUCKET);
            }
            self.cursors.insert(w.name, Cursor { next });
        }
        Ok(())
    }

    /// Read every record written since the last poll by writers other than `own`.
    pub fn poll(&mut self, storage: &dyn Storage, own: &str) -> Result<Poll, StorageError> {
        let root = log_root();
        let mut poll = Poll::default();
        let writers = match storage.list(&root) {
            Ok(w) => w,
            Err(StorageError::NotFound(_)) => return Ok(poll),
            Err(e) => return Err(e),
        };
        for w in writers
            .into_iter()
            .filter(|w| w.meta.kind == EntryKind::Dir)
        {
            if w.name == own {
                continue;
            }
            let wdir = root.join(&w.name)?;
            self.poll_writer(storage, &w.name, &wdir, &mut poll)?;
        }
        Ok(poll)
    }

    fn poll_writer(
        &mut self,
        storage: &dyn Storage,
        writer: &str,
        wdir: &StorePath,
        poll: &mut Poll,
    ) -> Result<(), StorageError> {
        let mut buckets: Vec<u64> = match storage.list(wdir) {
            Ok(b) => b.iter().filter_map(|e| e.name.parse().ok()).collect(),
            Err(StorageError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        buckets.sort_unstable();
        let mut next = self.cursors.get(writer).map(|c| c.next).unwrap_or(0);
        let first_bucket = next / BUCKET;
        let mut seqs = Vec::new();
        for b in buckets.iter().copied().filter(|b| *b >= first_bucket) {
            let bdir = wdir.join(&bucket_name(b))?;
            seqs.extend(list_records(storage, &bdir)?.into_iter().map(|s| (b, s)));
        }
        // Buckets are pruned whole: if the one holding `next` is gone while later ones exist,
        // the records in between were pruned before this reader saw them.
        let cursor_bucket = next / BUCKET;
        if !buckets.contains(&cursor_bucket) && buckets.iter().any(|b| *b > cursor_bucket) {
            poll.missed = true;
            if let Some((_, lowest)) = seqs.first() {
                next = next.max(*lowest);
            }
        }
        for (b, seq) in seqs {
            if seq < next {
                continue;
            }
            if seq > next {
                let since = *self
                    .gaps
                    .entry(writer.to_string())
                    .or_insert_with(Instant::now);
                if since.elapsed() < GAP_PATIENCE {
                    poll.pending += 1;
                    continue;
                }
                tracing::warn!(
                    writer,
                    from = next,
                    to = seq,
                    "skipping change records never written"
                );
            }
            self.gaps.remove(writer);
            let path = wdir.join(&bucket_name(b))?.join(&record_name(seq))?;
            match storage.read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Change>(&bytes) {
                    Ok(change) => poll.changes.push(change),
                    Err(e) => {
                        tracing::warn!(writer, seq, error = %e, "unreadable change record skipped")
                    }
                },
                // Pruned between listing and reading.
                Err(StorageError::NotFound(_)) => poll.missed = true,
                Err(e) => return Err(e),
            }
            next = seq + 1;
        }
        self.cursors.insert(writer.to_string(), Cursor { next });
        Ok(())
    }
}

/// The newest `n` records of `writer`'s log, oldest first: what a restarted instance reads of
/// its previous process's log to find where that process was writing when it stopped.
pub fn newest_records(
    storage: &dyn Storage,
    writer: &str,
    n: usize,
) -> Result<Vec<Change>, StorageError> {
    let wdir = log_root().join(writer)?;
    let mut buckets: Vec<u64> = match storage.list(&wdir) {
        Ok(b) => b.iter().filter_map(|e| e.name.parse().ok()).collect(),
        Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    buckets.sort_unstable();
    let mut paths = Vec::new();
    for b in buckets.into_iter().rev() {
        let bdir = wdir.join(&bucket_name(b))?;
        for seq in list_records(storage, &bdir)?.into_iter().rev() {
            if paths.len() >= n {
                break;
            }
            paths.push(bdir.join(&record_name(seq))?);
        }
        if paths.len() >= n {
            break;
        }
    }
    paths.reverse();
    let mut out = Vec::new();
    for read in storage.read_many(&paths, &|| true) {
        match read {
            Ok(bytes) => out.extend(serde_json::from_slice::<Change>(&bytes).ok()),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn last_bucket(storage: &dyn Storage, wdir: &StorePath) -> Result<Option<u64>, StorageError> {
    match storage.list(wdir) {
        Ok(b) => Ok(b.iter().filter_map(|e| e.name.parse().ok()).max()),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn list_records(storage: &dyn Storage, bdir: &StorePath) -> Result<Vec<u64>, StorageError> {
    let mut seqs: Vec<u64> = match storage.list(bdir) {
        Ok(r) => r
            .iter()
            .filter_map(|e| parse_record_name(&e.name))
            .collect(),
        Err(StorageError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    seqs.sort_unstable();
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn change(path: &str) -> Change {
        Change {
            account: "acme".into(),
            paths: vec![path.into()],
            kind: ChangeKind::Write,
            at: epoch_millis_now(),
        }
    }

    #[test]
    fn tail_sees_other_writers_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let a = Recorder::new(Box::new(|| {}));
        let b = Recorder::new(Box::new(|| {}));
        let mut tail = Tail::default();
        assert!(tail.poll(&storage, b.writer()).unwrap().changes.is_empty());
        for i in 0..3 {
            a.record(&storage, change(&format!("resources/{i}.md")));
        }
        b.record(&storage, change("resources/own.md"));
        let p = tail.poll(&storage, b.writer()).unwrap();
        let paths: Vec<_> = p.changes.iter().map(|c| c.paths[0].clone()).collect();
        assert_eq!(
            paths,
            vec!["resources/0.md", "resources/1.md", "resources/2.md"]
        );
        assert!(!p.missed);
        assert!(tail.poll(&storage, b.writer()).unwrap().changes.is_empty());
        a.record(&storage, change("resources/3.md"));
        assert_eq!(tail.poll(&storage, b.writer()).unwrap().changes.len(), 1);
        assert_eq!(a.drain_local().len(), 4);
    }

    #[test]
    fn read_your_writes_targets_are_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let r = Recorder::new(Box::new(|| {}));
        r.record(&storage, change("resources/a.md"));
        let mut other = change("resources/b.md");
        other.account = "globex".into();
        r.record(&storage, other);
        r.record(&storage, change("resources/c.md"));
        assert_eq!(r.recorded(), 3);
        assert_eq!(r.recorded_for("acme"), 2);
        assert_eq!(r.recorded_for("globex"), 1);
        assert_eq!(r.recorded_for("initech"), 0);
        // Served in turn between the accounts.
        let drained: Vec<_> = r
            .drain_local()
            .into_iter()
            .map(|(_, c)| c.account)
            .collect();
        assert_eq!(drained, ["acme", "globex", "acme"]);
    }

    #[test]
    fn accounts_are_served_in_turn_not_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let r = Recorder::new(Box::new(|| {}));
        for name in ["big1", "big2", "big3"] {
            r.record(&storage, change(&format!("resources/{name}")));
        }
        let mut small = change("resources/small.md");
        small.account = "victim".into();
        r.record(&storage, small);
        assert_eq!(r.oldest_queued(), Some(0));
        let (seq, first) = r.next_fair().unwrap();
        assert_eq!((seq, first.paths[0].as_str()), (0, "resources/big1"));
        // The victim's one record comes next, not after the whole burst.
        assert_eq!(r.next_fair().unwrap().1.account, "victim");
        assert_eq!(r.oldest_queued(), Some(1));
        let rest: Vec<_> = r.drain_local().into_iter().map(|(s, _)| s).collect();
        assert_eq!(rest, [1, 2]);
        assert_eq!(r.oldest_queued(), None);
        assert!(r.next_fair().is_none());
    }

    #[test]
    fn heads_skip_history_and_gaps_wait() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let a = Recorder::new(Box::new(|| {}));
        a.record(&storage, change("resources/old.md"));
        let mut tail = Tail::default();
        tail.skip_to_heads(&storage).unwrap();
        assert!(tail.poll(&storage, "me").unwrap().changes.is_empty());
        a.record(&storage, change("resources/new.md"));
        assert_eq!(tail.poll(&storage, "me").unwrap().changes.len(), 1);
        // A record missing below later ones is waited for (it may still be being written).
        let w = log_root().join(a.writer()).unwrap();
        storage
            .remove(
                &w.join(&bucket_name(0))
                    .unwrap()
                    .join(&record_name(0))
                    .unwrap(),
                false,
            )
            .unwrap();
        let mut fresh = Tail::default();
        let p = fresh.poll(&storage, "me").unwrap();
        assert!(!p.missed);
        assert_eq!(p.pending, 1);
        assert!(p.changes.is_empty());
    }

    #[test]
    fn store_paths_of_a_change() {
        let c = Change {
            account: "acme".into(),
            paths: vec!["".into(), "resources/a".into()],
            kind: ChangeKind::Purge,
            at: 0,
        };
        let p: Vec<String> = c
            .store_paths()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect();
        assert_eq!(p, vec!["acme", "acme/resources/a"]);
    }
}
