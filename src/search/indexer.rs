//! The single index writer's work, one bounded step at a time (the actor in
//! `crate::actors::search` calls [`Indexer::step`] on its own thread).
//!
//! A step: apply this process's own records at once (read-your-writes), tail the other
//! writers' logs, then advance a running full reconcile by a bounded slice, committing after
//! each part so queries see progress and a crash loses little. The first full build, the
//! periodic reconcile and the catch-up after records were pruned are the same reconcile:
//! walk storage, re-index files whose size or mtime differ from the index, drop documents
//! whose files are gone.
//!
//! With a dense model, stored vectors go with their documents: the vectors whose documents
//! this instance's own changes removed are released (deleted from storage when no indexed
//! document references them any more) once the step's changes are applied and committed,
//! and after each completed reconcile a [`VectorSweep`] collects what that missed.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::changes::{Change, Cursor, Recorder, Tail};
use super::docs;
use super::embed::{Embedder, VectorRef};
use super::index::{IndexError, Payload, SearchIndex, SCHEMA_VERSION};
use super::vector_gc::VectorSweep;
use crate::config::SearchSettings;
use crate::storage::{EntryKind, Meta, Storage, StorageError, StorePath};
use crate::time::epoch_millis_now;

/// Longest slice of reconcile work in one step (tail steps run between slices).
const RECONCILE_SLICE: Duration = Duration::from_millis(250);
/// Longest slice of applying this process's own records in one step (then commit, so the
/// accounts served so far see their changes).
const LOCAL_SLICE: Duration = Duration::from_millis(250);
/// Files fetched together while (re)indexing a subtree: one [`docs::load_many`] call, so an
/// object store serves them with bounded parallel requests instead of one at a time.
const LOAD_BATCH: usize = 64;
/// How often this writer prunes old change records.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Newest records of the previous process read at startup: more than the operations one
/// process can have in flight (pool threads), so the one a kill interrupted is among their
/// neighbours.
const REPAIR_RECORDS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// A full walk of storage in progress.
struct Reconcile {
    /// Indexed documents not yet met in storage: path → (size, mtime s).
    unseen: HashMap<String, (u64, i64)>,
    stack: Vec<StorePath>,
    started: bool,
    /// True for the first build (marks the index complete when done).
    initial: bool,
    /// Subtrees walked (full storage paths); empty = all of storage (a full reconcile).
    roots: Vec<StorePath>,
}

pub struct Indexer {
    index: Arc<SearchIndex>,
    recorder: Arc<Recorder>,
    embedder: Option<Arc<Embedder>>,
    /// Stored vectors of the documents already indexed at startup have been asked for.
    primed: bool,
    tail: Tail,
    reconcile: Option<Reconcile>,
    /// A garbage-collection sweep of stored vectors in progress.
    vector_sweep: Option<VectorSweep>,
    complete: bool,
    /// Own records applied, by sequence (persisted so a restart does not replay them).
    own_next: u64,
    /// The highest own record applied so far.
    own_newest: Option<u64>,
    /// The change-log writer of the process that last committed this index, while its
    /// possibly unrecorded last writes are still to be repaired.
    previous_writer: Option<String>,
    settings: SearchSettings,
    /// [`LOCAL_SLICE`]; shorter in tests.
    local_slice: Duration,
    last_reconcile: Instant,
    last_prune: Instant,
}

impl Indexer {
    /// Resume from the index's last commit, or plan a full build if there is none, it is
    /// incomplete, or this instance was away longer than the change retention.
    pub fn new(
        index: Arc<SearchIndex>,
        recorder: Arc<Recorder>,
        embedder: Option<Arc<Embedder>>,
        settings: SearchSettings,
    ) -> Indexer {
        let payload = index.opened_payload.clone();
        let retention_ms = settings.change_retention_secs.saturating_mul(1000);
        let resumable = payload.as_ref().is_some_and(|p| {
            p.complete && epoch_millis_now().saturating_sub(p.committed_at) < retention_ms
        });
        let previous_writer = payload.as_ref().and_then(|p| p.writer.clone());
        let mut me = Indexer {
            previous_writer: previous_writer.filter(|_| resumable),
            tail: Tail::new(payload.map(|p| p.cursors).unwrap_or_default()),
            index,
            recorder,
            primed: embedder.is_none(),
            embedder,
            reconcile: None,
            vector_sweep: None,
            complete: resumable,
            own_next: 0,
            own_newest: None,
            settings,
            local_slice: LOCAL_SLICE,
            last_reconcile: Instant::now(),
            last_prune: Instant::now(),
        };
        me.index.stats.building.store(!resumable, Ordering::Relaxed);
        if !resumable {
            me.want_reconcile(true);
        }
        me
    }

    /// Count a failed step (shown in /metrics).
    pub fn note_error(&self) {
        self.index.stats.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// True while the first full build is still running.
    pub fn is_building(&self) -> bool {
        !self.complete
    }

    fn want_reconcile(&mut self, initial: bool) {
        self.start_reconcile(initial, Vec::new());
    }

    /// Plan a reconcile of `roots` (empty: all of storage). A running full reconcile covers
    /// any other; a full one replaces a running partial one.
    fn start_reconcile(&mut self, initial: bool, roots: Vec<StorePath>) {
        let replace = match &self.reconcile {
            None => true,
            Some(running) => !running.roots.is_empty() && roots.is_empty(),
        };
        if replace {
            self.reconcile = Some(Reconcile {
                unseen: HashMap::new(),
                stack: Vec::new(),
                started: false,
                initial,
                roots,
            });
            self.index.stats.reconciling.store(true, Ordering::Relaxed);
            self.index
                .stats
                .reconcile_files_seen
                .store(0, Ordering::Relaxed);
        }
    }

    /// A process killed between a storage write and its change record leaves a change no
    /// log names. Its successor on this index reconciles the directories the previous
    /// process's newest records name (where it was writing when it stopped), at once rather
    /// than at the next periodic reconcile.
    fn plan_repair(&mut self, storage: &dyn Storage) -> Result<(), StepError> {
        let Some(writer) = self.previous_writer.clone() else {
            return Ok(());
        };
        let changes = super::changes::newest_records(storage, &writer, REPAIR_RECORDS)?;
        self.previous_writer = None;
        let mut dirs: Vec<StorePath> = changes
            .iter()
            .flat_map(|c| c.store_paths())
            .map(|p| match p.segments().count() {
                0 | 1 => p,
                _ => p.parent().unwrap_or(p),
            })
            .collect();
        dirs.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        dirs.dedup();
        // Drop directories inside another one listed (sorted: an ancestor comes first).
        let mut roots: Vec<StorePath> = Vec::new();
        for d in dirs {
            let inside = roots
                .last()
                .is_some_and(|r| d.as_str().starts_with(&format!("{}/", r.as_str())));
            if !inside {
                roots.push(d);
            }
        }
        if !roots.is_empty() {
            tracing::info!(
                previous_writer = %writer,
                directories = roots.len(),
                "reconciling where the previous process last wrote"
            );
            self.start_reconcile(false, roots);
        }
        Ok(())
    }

    /// One step of work. Returns true if more work is waiting (call again soon).
    pub fn step(&mut self, storage: &dyn Storage) -> Result<bool, StepError> {
        self.plan_repair(storage)?;
        let mut dirty = false;
        if !self.primed {
            self.primed = true;
            if let Some(e) = &self.embedder {
                for (path, hash) in self.index.hashes()? {
                    e.want(&path, &hash, false);
                }
            }
        }
        // Own records first (read-your-writes), the accounts served in turn and for at most
        // one slice: another tenant's queued copies of big trees delay an account's write by
        // at most one of them, not all.
        let slice_started = Instant::now();
        let mut applied_here: HashMap<String, u64> = HashMap::new();
        let mut more_local = false;
        let mut gone_here = Vec::new();
        while let Some((seq, change)) = self.recorder.next_fair() {
            gone_here.extend(self.apply(storage, &change, true)?);
            *applied_here.entry(change.account).or_default() += 1;
            self.own_newest = self.own_newest.max(Some(seq));
            dirty = true;
            if slice_started.elapsed() >= self.local_slice {
                more_local = true;
                break;
            }
        }
        // Every own record below the oldest still queued has been applied (records are taken
        // out of sequence order between accounts).
        self.own_next = match self.recorder.oldest_queued() {
            Some(oldest) => oldest,
            None => self
                .own_newest
                .map_or(self.own_next, |n| self.own_next.max(n + 1)),
        };
        // Other writers.
        let poll = self.tail.poll(storage, self.recorder.writer())?;
        let mut gone_elsewhere = Vec::new();
        for change in &poll.changes {
            gone_elsewhere.extend(self.apply(storage, change, false)?);
            dirty = true;
        }
        self.index.stats.lag.store(poll.pending, Ordering::Relaxed);
        if poll.missed {
            tracing::info!(
                "search change records were pruned before this instance read them; reconciling"
            );
            self.want_reconcile(false);
        }
        if self.last_reconcile.elapsed()
            >= Duration::from_secs(self.settings.reconcile_interval_secs)
        {
            self.want_reconcile(false);
        }
        if dirty {
            self.commit()?;
        }
        if !applied_here.is_empty() {
            self.index.stats.note_applied_local(applied_here);
        }
        if let Some(e) = &self.embedder {
            // After the whole step (a move's source and target are one change; tailing the
            // others first narrows the race with another writer of the same content). Only
            // the instance that made the change deletes, and only with a complete index.
            e.release(self.complete.then_some(storage), gone_here);
            e.release(None, gone_elsewhere);
        }
        let mut more = more_local | self.reconcile_slice(storage)?;
        if self.reconcile.is_none() {
            more |= self.sweep_slice(storage);
        }
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            self.recorder.prune(
                storage,
                Duration::from_secs(self.settings.change_retention_secs),
            );
        }
        Ok(more)
    }

    /// Advance a running sweep of stored vectors; true if it is still running.
    fn sweep_slice(&mut self, storage: &dyn Storage) -> bool {
        let (Some(sweep), Some(e)) = (&mut self.vector_sweep, &self.embedder) else {
            return false;
        };
        let more = sweep.slice(storage, e);
        if !more {
            self.vector_sweep = None;
        }
        more
    }

    /// Make the index match storage under every path of `change`.
    /// `local`: this instance made the change (it embeds the documents itself at once).
    /// Returns the vectors of the documents that left (some may be back).
    fn apply(
        &self,
        storage: &dyn Storage,
        change: &Change,
        local: bool,
    ) -> Result<Vec<VectorRef>, StepError> {
        let mut gone = Vec::new();
        for path in change.store_paths() {
            gone.extend(self.sync_subtree(storage, &path, local)?);
        }
        Ok(gone)
    }

    fn sync_subtree(
        &self,
        storage: &dyn Storage,
        path: &StorePath,
        local: bool,
    ) -> Result<Vec<VectorRef>, StepError> {
        self.index.delete_subtree(path.as_str());
        let mut gone = match &self.embedder {
            Some(e) => e.forget_subtree(path.as_str()),
            None => Vec::new(),
        };
        if let (Some(e), 1) = (&self.embedder, path.segments().count()) {
            // A whole account (deleted or purged): its stored vectors live inside it and go
            // with it, so only memory is released, not one delete per object.
            e.release(None, std::mem::take(&mut gone));
        }
        let max = self.settings.max_indexed_bytes;
        let index = &self.index;
        let embedder = &self.embedder;
        let upsert_batch = |batch: &mut Vec<(StorePath, Meta)>| -> Result<(), StorageError> {
            for doc in docs::load_many(storage, batch, max)? {
                index.upsert(&doc).map_err(to_storage)?;
                if let Some(e) = embedder {
                    e.want(doc.path.as_str(), &doc.hash, local);
                }
            }
            batch.clear();
            Ok(())
        };
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        docs::walk(storage, path, &|| false, &mut |p, meta| {
            batch.push((p, meta));
            if batch.len() >= LOAD_BATCH {
                upsert_batch(&mut batch)?;
            }
            Ok(())
        })?;
        upsert_batch(&mut batch)?;
        Ok(gone)
    }

    fn payload(&self) -> Payload {
        let mut cursors = self.tail.cursors.clone();
        cursors.insert(
            self.recorder.writer().to_string(),
            Cursor {
                next: self.own_next,
            },
        );
        Payload {
            schema: SCHEMA_VERSION,
            complete: self.complete,
            cursors,
            committed_at: epoch_millis_now(),
            writer: Some(self.recorder.writer().to_string()),
        }
    }

    fn commit(&self) -> Result<(), StepError> {
        self.index.commit(&self.payload())?;
        Ok(())
    }

    /// Advance a running reconcile by one slice; true if it is still running.
    fn reconcile_slice(&mut self, storage: &dyn Storage) -> Result<bool, StepError> {
        let Some(mut rec) = self.reconcile.take() else {
            return Ok(false);
        };
        if !rec.started {
            rec.started = true;
            // Starting: everything recorded so far is covered by this walk.
            if rec.initial {
                self.tail.skip_to_heads(storage)?;
            }
            if rec.roots.is_empty() {
                rec.unseen = self.index.inventory()?;
                rec.stack.push(StorePath::root());
            } else {
                let roots: Vec<String> = rec.roots.iter().map(|r| r.as_str().to_string()).collect();
                rec.unseen = self.index.inventory_under(&roots)?;
                rec.stack.extend(rec.roots.iter().cloned());
            }
            tracing::info!(
                indexed = rec.unseen.len(),
                initial = rec.initial,
                subtrees = rec.roots.len(),
                "search reconcile started"
            );
        }
        let started = Instant::now();
        let max = self.settings.max_indexed_bytes;
        let mut changed = 0usize;
        while started.elapsed() < RECONCILE_SLICE {
            let Some(dir) = rec.stack.pop() else {
                break;
            };
            if !docs::dir_indexable(&dir) {
                continue;
            }
            let entries = match storage.list(&dir) {
                Ok(e) => e,
                Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
                Err(e) => {
                    // Try again at the next step.
                    rec.stack.push(dir);
                    self.reconcile = Some(rec);
                    return Err(e.into());
                }
            };
            let mut to_load = Vec::new();
            for e in entries {
                let Ok(child) = dir.join(&e.name) else {
                    continue;
                };
                match e.meta.kind {
                    EntryKind::Dir => rec.stack.push(child),
                    EntryKind::File if docs::file_indexable(&child) => {
                        self.index
                            .stats
                            .reconcile_files_seen
                            .fetch_add(1, Ordering::Relaxed);
                        let mtime = e
                            .meta
                            .modified
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs() as i64)
                            .unwrap_or(0);
                        let known = rec.unseen.remove(child.as_str());
                        if known == Some((e.meta.size, mtime)) {
                            continue;
                        }
                        to_load.push((child, e.meta));
                    }
                    EntryKind::File => {}
                }
            }
            for doc in docs::load_many(storage, &to_load, max)? {
                self.index.upsert(&doc)?;
                if let Some(emb) = &self.embedder {
                    emb.want(doc.path.as_str(), &doc.hash, false);
                }
                changed += 1;
            }
        }
        if !rec.stack.is_empty() {
            if changed > 0 {
                self.commit()?;
            }
            self.reconcile = Some(rec);
            return Ok(true);
        }
        // Walk finished: whatever was not met is gone from storage.
        let gone = rec.unseen.len();
        let mut vectors_gone = Vec::new();
        for path in rec.unseen.keys() {
            self.index.delete_subtree(path);
            if let Some(e) = &self.embedder {
                vectors_gone.extend(e.forget_subtree(path));
            }
        }
        if rec.initial {
            self.complete = true;
        }
        self.commit()?;
        if let Some(e) = &self.embedder {
            // Removals nobody recorded: memory only; the sweep below deletes the objects.
            e.release(None, vectors_gone);
            if self.complete && self.vector_sweep.is_none() && rec.roots.is_empty() {
                self.vector_sweep = Some(VectorSweep::new());
            }
        }
        self.index.stats.building.store(false, Ordering::Relaxed);
        self.index.stats.reconciling.store(false, Ordering::Relaxed);
        if rec.roots.is_empty() {
            self.last_reconcile = Instant::now();
        }
        tracing::info!(
            updated = changed,
            removed = gone,
            docs = self.index.num_docs(),
            "search reconcile finished"
        );
        Ok(false)
    }
}

fn to_storage(e: IndexError) -> StorageError {
    StorageError::Io(std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::changes::ChangeKind;
    use crate::search::tokenizer::query_terms;
    use crate::storage::backend::local::LocalStorage;

    fn find(index: &SearchIndex, q: &str) -> Vec<String> {
        index
            .keyword_search("acme", &query_terms(q, 64), &["acme".to_string()], 10)
            .unwrap()
            .into_iter()
            .map(|h| h.uri)
            .collect()
    }

    fn write(storage: &LocalStorage, path: &str, text: &str) {
        storage
            .write(&StorePath::parse(path).unwrap(), text.as_bytes())
            .unwrap();
    }

    /// An index in a temporary directory and its indexer (with `embedder`, if any).
    fn open_indexer(
        embedder: Option<Arc<Embedder>>,
    ) -> (tempfile::TempDir, Arc<SearchIndex>, Arc<Recorder>, Indexer) {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(SearchIndex::open(dir.path(), 16).unwrap());
        let recorder = Arc::new(Recorder::new(Box::new(|| {})));
        let ix = Indexer::new(
            index.clone(),
            recorder.clone(),
            embedder,
            SearchSettings::default(),
        );
        (dir, index, recorder, ix)
    }

    /// Record a change of `paths` in account acme.
    fn record(recorder: &Recorder, storage: &LocalStorage, paths: &[&str], kind: ChangeKind) {
        recorder.record(
            storage,
            Change {
                account: "acme".into(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                kind,
                at: 0,
            },
        );
    }

    #[test]
    fn build_then_changes_then_reconcile() {
        let data = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(data.path()).unwrap();
        let w = |p: &str, t: &str| write(&storage, p, t);
        w("acme/resources/a.md", "alpha document");
        w("acme/resources/d/.abstract.md", "directory about beta");
        w("acme/_system/users.json", "alpha secret");
        let (_dir, index, recorder, mut ix) = open_indexer(None);
        assert!(ix.is_building());
        while ix.step(&storage).unwrap() {}
        assert!(!ix.is_building());
        assert_eq!(find(&index, "alpha"), vec!["viking://resources/a.md"]);
        assert_eq!(
            find(&index, "beta"),
            vec!["viking://resources/d/.abstract.md"]
        );
        // A recorded change is applied by the next step.
        w("acme/resources/b.md", "gamma");
        record(&recorder, &storage, &["resources/b.md"], ChangeKind::Write);
        ix.step(&storage).unwrap();
        assert_eq!(find(&index, "gamma"), vec!["viking://resources/b.md"]);
        // An unrecorded removal is repaired by a reconcile.
        storage
            .remove(&StorePath::parse("acme/resources/a.md").unwrap(), false)
            .unwrap();
        ix.want_reconcile(false);
        while ix.step(&storage).unwrap() {}
        assert!(find(&index, "alpha").is_empty());
    }

    #[test]
    fn another_accounts_burst_delays_a_write_by_one_record_not_all() {
        let data = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(data.path()).unwrap();
        let (_dir, index, recorder, mut ix) = open_indexer(None);
        while ix.step(&storage).unwrap() {}
        // One step applies one record (a slice shorter than any apply).
        ix.local_slice = Duration::ZERO;
        for i in 0..3 {
            write(&storage, &format!("acme/resources/copy{i}/a.md"), "burst");
            record(
                &recorder,
                &storage,
                &[&format!("resources/copy{i}")],
                ChangeKind::Copy,
            );
        }
        write(&storage, "globex/resources/mine.md", "victim");
        recorder.record(
            &storage,
            Change {
                account: "globex".into(),
                paths: vec!["resources/mine.md".into()],
                kind: ChangeKind::Write,
                at: 0,
            },
        );
        assert!(ix.step(&storage).unwrap(), "more records wait");
        assert_eq!(index.stats.applied_for("acme"), 1);
        assert_eq!(index.stats.applied_for("globex"), 0);
        ix.step(&storage).unwrap();
        // The victim's write is applied second, while two of the burst still wait.
        assert_eq!(index.stats.applied_for("globex"), 1);
        assert_eq!(index.stats.applied_for("acme"), 1);
        assert_eq!(
            ix.own_next, 1,
            "the restart cursor stays below the unapplied records"
        );
        while ix.step(&storage).unwrap() {}
        assert_eq!(index.stats.applied_for("acme"), 3);
        assert_eq!(ix.own_next, 4);
    }

    #[test]
    fn restart_repairs_where_the_previous_process_last_wrote() {
        let data = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(data.path()).unwrap();
        let w = |p: &str, t: &str| write(&storage, p, t);
        w("acme/resources/burst/a.md", "alpha");
        w("acme/resources/quiet/q.md", "quiet");
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Arc::new(SearchIndex::open(dir.path(), 16).unwrap());
            let recorder = Arc::new(Recorder::new(Box::new(|| {})));
            let mut ix = Indexer::new(index, recorder.clone(), None, SearchSettings::default());
            while ix.step(&storage).unwrap() {}
            w("acme/resources/burst/b.md", "bravo");
            record(
                &recorder,
                &storage,
                &["resources/burst/b.md"],
                ChangeKind::Write,
            );
            ix.step(&storage).unwrap();
            // Killed after this write, before its record: no log names it.
            w("acme/resources/burst/c.md", "charlie");
            storage
                .remove(
                    &StorePath::parse("acme/resources/burst/a.md").unwrap(),
                    false,
                )
                .unwrap();
        }
        let index = Arc::new(SearchIndex::open(dir.path(), 16).unwrap());
        let recorder = Arc::new(Recorder::new(Box::new(|| {})));
        let mut ix = Indexer::new(index.clone(), recorder, None, SearchSettings::default());
        assert!(!ix.is_building(), "an intact index resumes");
        while ix.step(&storage).unwrap() {}
        assert_eq!(
            find(&index, "charlie"),
            vec!["viking://resources/burst/c.md"]
        );
        assert!(find(&index, "alpha").is_empty());
        assert_eq!(find(&index, "quiet"), vec!["viking://resources/quiet/q.md"]);
    }

    #[test]
    fn own_removals_and_overwrites_delete_unshared_vectors() {
        use crate::search::embed::tests::{embedder, plant};
        let data = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(data.path()).unwrap();
        let w = |p: &str, t: &str| write(&storage, p, t);
        w("acme/resources/a.md", "shared content");
        w("acme/resources/twin.md", "shared content");
        w("acme/resources/b.md", "only here");
        w("acme/resources/c.md", "overwritten soon");
        let emb = Arc::new(embedder(3600));
        let (_dir, index, recorder, mut ix) = open_indexer(Some(emb.clone()));
        while ix.step(&storage).unwrap() {}
        let hash: HashMap<String, String> = index.hashes().unwrap().into_iter().collect();
        let stored: HashMap<&str, String> = ["a", "b", "c"]
            .into_iter()
            .map(|n| {
                let h = &hash[&format!("acme/resources/{n}.md")];
                (n, plant(&emb, &storage, "acme", h))
            })
            .collect();
        let exists = |p: &str| {
            storage
                .stat(&StorePath::parse(p).unwrap())
                .unwrap()
                .is_some()
        };
        for n in ["a.md", "b.md"] {
            storage
                .remove(
                    &StorePath::parse(&format!("acme/resources/{n}")).unwrap(),
                    false,
                )
                .unwrap();
        }
        w("acme/resources/c.md", "new content");
        record(
            &recorder,
            &storage,
            &["resources/a.md", "resources/b.md"],
            ChangeKind::Remove,
        );
        record(&recorder, &storage, &["resources/c.md"], ChangeKind::Write);
        ix.step(&storage).unwrap();
        assert!(
            exists(&stored["a"]),
            "the twin still uses the shared vector"
        );
        assert!(!exists(&stored["b"]) && !exists(&stored["c"]));
        assert_eq!(emb.stats.vectors_deleted.load(Ordering::Relaxed), 2);
    }
}
