//! The local full-text index (tantivy, BM25): opening and locking its directory, applying
//! changes, committing with the change-log cursors as the commit payload, and querying.
//!
//! The directory holds `LOCK` (an exclusive `flock` held for the process lifetime: a second
//! process is refused with a clear error) and `v<SCHEMA_VERSION>/` (the tantivy index). An
//! index of another schema version is deleted and rebuilt, never misread.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED,
    STRING,
};
use tantivy::{
    DocAddress, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument,
    Term, TERMINATED,
};

use super::changes::Cursor;
use super::docs::DocSource;
use super::tokenizer::{self, TextAnalyzer};
use crate::time::epoch_millis_now;

/// Bump whenever fields, the analyzer or what is indexed change: older indexes are rebuilt
/// (4: nothing under a user's sessions is indexed any more).
pub const SCHEMA_VERSION: u32 = 4;
/// Weight of a match in the path words against one in the body (0.5: chosen on the bench's
/// python3-doc query set, where 2.0 let file names like `code` outrank the page itself).
const NAME_BOOST: f32 = 0.5;
/// Extra candidates fetched so ties at the cut are broken by path (see `keyword_search`).
const TIE_MARGIN: usize = 10;

/// Failures of the local index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index directory {dir} is in use by another process (search.index_dir must be distinct per instance)")]
    Locked { dir: PathBuf },
    #[error("search index I/O on {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

/// What the last commit recorded: how far this index has applied each writer's log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payload {
    pub schema: u32,
    /// A full build from storage finished at least once.
    pub complete: bool,
    pub cursors: BTreeMap<String, Cursor>,
    /// Unix ms of the commit.
    pub committed_at: u64,
    /// The change-log writer id of the process that made the commit (a restart repairs the
    /// writes that process may have made without recording them).
    #[serde(default)]
    pub writer: Option<String>,
}

#[derive(Clone, Copy)]
struct Fields {
    path: Field,
    anc: Field,
    uri: Field,
    level: Field,
    ctype: Field,
    body: Field,
    name: Field,
    abstract_text: Field,
    size: Field,
    mtime: Field,
    hash: Field,
    /// The node's `k=v` tags (a directory's on its sidecars), exact terms.
    tags: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(tokenizer::NAME)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let fields = Fields {
        path: b.add_text_field("path", STRING | STORED),
        anc: b.add_text_field("anc", STRING),
        uri: b.add_text_field("uri", STORED),
        level: b.add_u64_field("level", INDEXED | STORED | FAST),
        ctype: b.add_text_field("ctype", STRING | STORED),
        body: b.add_text_field("body", text.clone()),
        name: b.add_text_field("name", text),
        abstract_text: b.add_text_field("abstract", STORED),
        size: b.add_u64_field("size", STORED),
        mtime: b.add_i64_field("mtime", INDEXED | STORED | FAST),
        hash: b.add_text_field("hash", STORED),
        tags: b.add_text_field("tags", STRING | STORED),
    };
    (b.build(), fields)
}

/// One indexed document as a query returns it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub uri: String,
    pub level: u64,
    pub context_type: String,
    pub abstract_text: String,
    pub mtime_ms: i64,
    pub hash: String,
    /// The document's `k=v` tags.
    pub tags: Vec<String>,
    /// Raw BM25 (0 when the hit came from another signal).
    pub bm25: f32,
}

/// One indexed document with its size (consistency checks, debug listings).
#[derive(Debug, Clone)]
pub struct IndexedDoc {
    pub hit: Hit,
    pub size: u64,
}

impl IndexedDoc {
    /// The account the document belongs to (its path's first segment).
    pub fn account(&self) -> &str {
        self.hit.path.split('/').next().unwrap_or("")
    }
}

/// An exclusive advisory lock on `<dir>/LOCK`, released when the process exits.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Take the lock, refusing with [`IndexError::Locked`] if another process holds it; its
    /// mtime records when the directory was last claimed.
    pub(super) fn take(dir: &Path) -> Result<DirLock, IndexError> {
        let io = |source| IndexError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(IndexError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(io(err)),
        }
        // Best effort: only ages stale directories (index_dirs) less precisely.
        let _ = file.set_modified(std::time::SystemTime::now());
        Ok(DirLock { _file: file })
    }
}

/// Counters shown in /metrics, /ready and the observer.
#[derive(Debug, Default)]
pub struct IndexStats {
    /// Records made by this process that the index has applied; the writer publishes each new
    /// count, and read-your-writes waiters (`SearchHandle::wait_fresh`) await it (no polling).
    pub applied_local: tokio::sync::watch::Sender<u64>,
    /// The same per account (a waiter checks its own account's count when woken).
    applied_by_account: std::sync::Mutex<HashMap<String, u64>>,
    /// Changes seen (local queue + remote records behind a gap) and not yet applied.
    pub lag: AtomicU64,
    /// A full build or reconcile is running.
    pub reconciling: AtomicBool,
    /// The first full build has not finished: results may be incomplete.
    pub building: AtomicBool,
    pub reconcile_files_seen: AtomicU64,
    pub last_commit_ms: AtomicU64,
    pub commits: AtomicU64,
    pub errors: AtomicU64,
    /// find/search answered by this process, hits returned, and answers with no hit.
    pub queries: AtomicU64,
    pub results: AtomicU64,
    pub zero_result_queries: AtomicU64,
}

impl IndexStats {
    /// Publish records applied (per account), then wake the read-your-writes waiters.
    pub fn note_applied_local(&self, applied: HashMap<String, u64>) {
        let total: u64 = applied.values().sum();
        {
            let mut by_account = self
                .applied_by_account
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (account, n) in applied {
                *by_account.entry(account).or_default() += n;
            }
        }
        self.applied_local.send_modify(|count| *count += total);
    }

    /// This process's records of `account` the index has applied.
    pub fn applied_for(&self, account: &str) -> u64 {
        self.applied_by_account
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
            .unwrap_or(0)
    }

    /// Count one answered find or search with `hits` hits.
    pub fn note_query(&self, hits: usize) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.results.fetch_add(hits as u64, Ordering::Relaxed);
        if hits == 0 {
            self.zero_result_queries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The index of one instance.
pub struct SearchIndex {
    fields: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    pub stats: IndexStats,
    /// Where the index lives.
    pub dir: PathBuf,
    /// What the last commit before this process started recorded.
    pub opened_payload: Option<Payload>,
    /// Per-account ranking statistics of the current searcher generation.
    account_stats: Mutex<StatsCache>,
    _lock: DirLock,
}

/// One account's live documents: how many, and their summed field lengths.
#[derive(Debug, Clone, Copy, Default)]
struct AccountTotals {
    docs: u64,
    body_tokens: u64,
    name_tokens: u64,
}

/// Ranking statistics computed for one searcher generation (a commit makes a new one and
/// empties the cache). Bounded: emptied when it grows past [`STATS_CACHE_ENTRIES`].
#[derive(Default)]
struct StatsCache {
    generation: u64,
    totals: HashMap<String, AccountTotals>,
    doc_freq: HashMap<(String, Term), u64>,
}

const STATS_CACHE_ENTRIES: usize = 100_000;

impl StatsCache {
    /// The cache for `generation`, emptied if it belonged to another one or grew too large.
    fn at(&mut self, generation: u64) -> &mut StatsCache {
        if self.generation != generation || self.doc_freq.len() >= STATS_CACHE_ENTRIES {
            *self = StatsCache {
                generation,
                ..StatsCache::default()
            };
        }
        self
    }
}

/// BM25 statistics over the live documents of one account only. Tantivy's default counts
/// every document of the index, deleted ones included until a merge purges them, so another
/// tenant's writes would move this tenant's scores (a side channel on which words others
/// use) and a rebuilt index would rank differently from a live one. Here document counts,
/// field lengths and document frequencies are those of the account's live documents: a
/// score depends only on what the account holds now.
struct AccountStatistics<'a> {
    index: &'a SearchIndex,
    searcher: &'a Searcher,
    account: &'a str,
    totals: AccountTotals,
}

impl AccountStatistics<'_> {
    fn account_term(&self) -> Term {
        Term::from_field_text(self.index.fields.anc, self.account)
    }
}

impl Bm25StatisticsProvider for AccountStatistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let f = self.index.fields;
        Ok(if field == f.body {
            self.totals.body_tokens
        } else if field == f.name {
            self.totals.name_tokens
        } else {
            0
        })
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        // Never 0: BM25 divides by it (an empty account matches nothing anyway).
        Ok(self.totals.docs.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let generation = self.searcher.generation().generation_id();
        let key = (self.account.to_string(), term.clone());
        if let Some(n) = self.index.stats_cache().at(generation).doc_freq.get(&key) {
            return Ok(*n);
        }
        // Live documents of the account holding the term (deleted ones are skipped by
        // tantivy's count, which reads each segment's alive set).
        let both = BooleanQuery::intersection(vec![
            Box::new(TermQuery::new(term.clone(), IndexRecordOption::Basic)),
            Box::new(TermQuery::new(
                self.account_term(),
                IndexRecordOption::Basic,
            )),
        ]);
        let n = both.count(self.searcher)? as u64;
        self.index
            .stats_cache()
            .at(generation)
            .doc_freq
            .insert(key, n);
        Ok(n)
    }
}

impl SearchIndex {
    /// Open (or create) the index in `dir`, taking its lock. `memory_mb` bounds the writer.
    pub fn open(dir: &Path, memory_mb: usize) -> Result<SearchIndex, IndexError> {
        let io = |source| IndexError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = DirLock::take(dir)?;
        let current = format!("v{SCHEMA_VERSION}");
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('v') && name != current && entry.path().is_dir() {
                tracing::info!(old = %name, "search index of an older schema removed; it is rebuilt");
                std::fs::remove_dir_all(entry.path()).map_err(io)?;
            }
        }
        let data = dir.join(&current);
        std::fs::create_dir_all(&data).map_err(io)?;
        let (schema, fields) = schema();
        let index = match Index::open_in_dir(&data) {
            Ok(i) if i.schema() == schema => i,
            Ok(_) | Err(_) if data.join("meta.json").exists() => {
                tracing::warn!(dir = %data.display(), "search index unreadable or of another schema; rebuilding");
                std::fs::remove_dir_all(&data).map_err(io)?;
                std::fs::create_dir_all(&data).map_err(io)?;
                Index::create_in_dir(&data, schema)?
            }
            _ => Index::create_in_dir(&data, schema)?,
        };
        index
            .tokenizers()
            .register(tokenizer::NAME, TextAnalyzer::default());
        let opened_payload = index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok())
            .filter(|p| p.schema == SCHEMA_VERSION);
        let writer = index.writer_with_num_threads(1, memory_mb.max(16) * 1024 * 1024)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            fields,
            writer: Mutex::new(writer),
            reader,
            stats: IndexStats::default(),
            dir: dir.to_path_buf(),
            opened_payload,
            account_stats: Mutex::new(StatsCache::default()),
            _lock: lock,
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the writer leaves it usable (tantivy rolls back on commit
        // failure); recover the guard rather than poisoning every later write.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_cache(&self) -> std::sync::MutexGuard<'_, StatsCache> {
        // Plain map inserts: consistent even if a holder panicked.
        self.account_stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Document count and summed field lengths of `account`'s live documents in `searcher`
    /// (one pass over the account's postings per searcher generation; cached).
    fn account_totals(
        &self,
        searcher: &Searcher,
        account: &str,
    ) -> Result<AccountTotals, IndexError> {
        let generation = searcher.generation().generation_id();
        if let Some(t) = self.stats_cache().at(generation).totals.get(account) {
            return Ok(*t);
        }
        let f = self.fields;
        let term = Term::from_field_text(f.anc, account);
        let mut t = AccountTotals::default();
        for seg in searcher.segment_readers() {
            let io = |source| IndexError::Io {
                dir: self.dir.clone(),
                source,
            };
            let Some(mut postings) = seg
                .inverted_index(f.anc)?
                .read_postings(&term, IndexRecordOption::Basic)
                .map_err(io)?
            else {
                continue;
            };
            let body = seg.get_fieldnorms_reader(f.body)?;
            let name = seg.get_fieldnorms_reader(f.name)?;
            let alive = seg.alive_bitset();
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    t.docs += 1;
                    t.body_tokens += u64::from(body.fieldnorm(doc));
                    t.name_tokens += u64::from(name.fieldnorm(doc));
                }
                doc = postings.advance();
            }
        }
        self.stats_cache()
            .at(generation)
            .totals
            .insert(account.to_string(), t);
        Ok(t)
    }

    /// Remove every document at or under `path` (a full storage path).
    pub fn delete_subtree(&self, path: &str) {
        self.writer()
            .delete_term(Term::from_field_text(self.fields.anc, path));
    }

    /// Add or replace one document.
    pub fn upsert(&self, doc: &DocSource) -> Result<(), IndexError> {
        let f = self.fields;
        let mut d = TantivyDocument::default();
        d.add_text(f.path, doc.path.as_str());
        let mut anc = String::new();
        for seg in doc.path.segments() {
            if !anc.is_empty() {
                anc.push('/');
            }
            anc.push_str(seg);
            d.add_text(f.anc, &anc);
        }
        d.add_text(f.uri, &doc.uri);
        d.add_u64(f.level, doc.level);
        d.add_text(f.ctype, doc.context_type);
        d.add_text(f.body, &doc.text);
        d.add_text(f.name, &doc.name_text);
        d.add_text(f.abstract_text, &doc.abstract_text);
        d.add_u64(f.size, doc.size);
        d.add_i64(f.mtime, doc.mtime_ms);
        d.add_text(f.hash, &doc.hash);
        for t in &doc.tags {
            d.add_text(f.tags, t);
        }
        let w = self.writer();
        w.delete_term(Term::from_field_text(f.path, doc.path.as_str()));
        w.add_document(d)?;
        Ok(())
    }

    /// Make every change so far durable and visible to queries, recording `payload`.
    pub fn commit(&self, payload: &Payload) -> Result<(), IndexError> {
        let text = serde_json::to_string(payload).unwrap_or_default();
        {
            let mut w = self.writer();
            let mut prepared = w.prepare_commit()?;
            prepared.set_payload(&text);
            prepared.commit()?;
        }
        self.reader.reload()?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_commit_ms
            .store(epoch_millis_now(), Ordering::Relaxed);
        Ok(())
    }

    /// State for /ready, /metrics and the observer. `recorded` = change records this
    /// process made (the difference to `applied_local` is local lag).
    pub fn status(&self, recorded: u64) -> serde_json::Value {
        let s = &self.stats;
        let applied = *s.applied_local.borrow();
        let building = s.building.load(Ordering::Relaxed);
        let last = s.last_commit_ms.load(Ordering::Relaxed);
        let local_lag = recorded.saturating_sub(applied);
        let lag = s.lag.load(Ordering::Relaxed) + local_lag;
        serde_json::json!({
            "state": if building { "building" } else if lag > 0 { "catching_up" } else { "ready" },
            "docs": self.num_docs(),
            "segments": self.reader.searcher().segment_readers().len(),
            "index_lag": lag,
            "local_changes_pending": local_lag,
            "remote_changes_pending": s.lag.load(Ordering::Relaxed),
            "building": building,
            "reconciling": s.reconciling.load(Ordering::Relaxed),
            "reconcile_files_seen": s.reconcile_files_seen.load(Ordering::Relaxed),
            "commits": s.commits.load(Ordering::Relaxed),
            "errors": s.errors.load(Ordering::Relaxed),
            "last_commit_age_seconds": if last == 0 { 0.0 } else { epoch_millis_now().saturating_sub(last) as f64 / 1000.0 },
            "schema_version": SCHEMA_VERSION,
            "queries": s.queries.load(Ordering::Relaxed),
            "results": s.results.load(Ordering::Relaxed),
            "zero_result_queries": s.zero_result_queries.load(Ordering::Relaxed),
        })
    }

    /// Documents visible to queries.
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Calls `visit` with every live stored document.
    fn each_stored_doc(&self, mut visit: impl FnMut(&TantivyDocument)) -> Result<(), IndexError> {
        let searcher = self.reader.searcher();
        for seg in searcher.segment_readers() {
            let store = seg.get_store_reader(16).map_err(|source| IndexError::Io {
                dir: self.dir.clone(),
                source,
            })?;
            for id in seg.doc_ids_alive() {
                let doc: TantivyDocument = store.get(id)?;
                visit(&doc);
            }
        }
        Ok(())
    }

    /// Every indexed document's path with (size, mtime in seconds): what a reconcile compares
    /// with storage.
    pub fn inventory(&self) -> Result<HashMap<String, (u64, i64)>, IndexError> {
        let mut out = HashMap::new();
        self.each_stored_doc(|doc| {
            let path = doc.get_first(self.fields.path).and_then(|v| v.as_str());
            let size = doc.get_first(self.fields.size).and_then(|v| v.as_u64());
            let mtime = doc.get_first(self.fields.mtime).and_then(|v| v.as_i64());
            if let (Some(p), Some(s), Some(m)) = (path, size, mtime) {
                out.insert(p.to_string(), (s, m.div_euclid(1000)));
            }
        })?;
        Ok(out)
    }

    /// [`SearchIndex::inventory`] of the documents at or under `roots` (full storage paths).
    pub fn inventory_under(
        &self,
        roots: &[String],
    ) -> Result<HashMap<String, (u64, i64)>, IndexError> {
        let searcher = self.reader.searcher();
        let f = self.fields;
        let mut out = HashMap::new();
        for root in roots {
            let q = TermQuery::new(Term::from_field_text(f.anc, root), IndexRecordOption::Basic);
            for addr in searcher.search(&q, &tantivy::collector::DocSetCollector)? {
                let doc: TantivyDocument = searcher.doc(addr)?;
                let path = doc.get_first(f.path).and_then(|v| v.as_str());
                let size = doc.get_first(f.size).and_then(|v| v.as_u64());
                let mtime = doc.get_first(f.mtime).and_then(|v| v.as_i64());
                if let (Some(p), Some(s), Some(m)) = (path, size, mtime) {
                    out.insert(p.to_string(), (s, m.div_euclid(1000)));
                }
            }
        }
        Ok(out)
    }

    /// Every document at or under `root` (a full storage path) with its size, sorted by path:
    /// what `system/consistency` compares with storage and `debug/vector/*` page through.
    pub fn documents_under(&self, root: &str) -> Result<Vec<IndexedDoc>, IndexError> {
        let searcher = self.reader.searcher();
        let f = self.fields;
        let q = TermQuery::new(Term::from_field_text(f.anc, root), IndexRecordOption::Basic);
        let mut out = Vec::new();
        for addr in searcher.search(&q, &tantivy::collector::DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let size = doc.get_first(f.size).and_then(|v| v.as_u64()).unwrap_or(0);
            let hit = self.hit(&searcher, addr, 0.0)?;
            out.push(IndexedDoc { hit, size });
        }
        out.sort_by(|a, b| a.hit.path.cmp(&b.hit.path));
        Ok(out)
    }

    /// One page of the documents at or under `root` (a full storage path) in path order:
    /// those after path `after` that `keep` accepts, at most `limit`, and whether more follow.
    /// Reads each segment's `path` term dictionary from `after` on and loads only the
    /// documents of the page (plus one per segment to know whether more follow), so paging
    /// through a large subtree costs each page its own size, not the subtree's.
    pub fn documents_page(
        &self,
        root: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&IndexedDoc) -> bool,
    ) -> Result<(Vec<IndexedDoc>, bool), IndexError> {
        let searcher = self.reader.searcher();
        let f = self.fields;
        let below = format!("{root}/");
        // Every path under `root` sorts before this bound ('0' follows '/').
        let end = format!("{root}0");
        let mut found: Vec<IndexedDoc> = Vec::new();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            let inverted = seg.inverted_index(f.path)?;
            let range = inverted.terms().range().lt(end.as_bytes());
            let range = match after {
                Some(a) if a >= root => range.gt(a.as_bytes()),
                _ => range.ge(root.as_bytes()),
            };
            let io = |source| IndexError::Io {
                dir: self.dir.clone(),
                source,
            };
            let mut terms = range.into_stream().map_err(io)?;
            let mut taken = 0usize;
            while taken <= limit && terms.advance() {
                let key = terms.key();
                if !(key == root.as_bytes() || key.starts_with(below.as_bytes())) {
                    continue;
                }
                let mut postings = inverted
                    .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                    .map_err(io)?;
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    if !seg.is_deleted(doc) {
                        let addr = DocAddress::new(ord as u32, doc);
                        let stored: TantivyDocument = searcher.doc(addr)?;
                        let size = stored
                            .get_first(f.size)
                            .and_then(|v| v.as_u64())
                            .unwrap_or(0);
                        let d = IndexedDoc {
                            hit: self.hit(&searcher, addr, 0.0)?,
                            size,
                        };
                        if keep(&d) {
                            found.push(d);
                            taken += 1;
                        }
                    }
                    doc = postings.advance();
                }
            }
        }
        found.sort_by(|a, b| a.hit.path.cmp(&b.hit.path));
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }

    /// Every indexed document's path and content hash (to re-attach stored vectors).
    pub fn hashes(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut out = Vec::new();
        self.each_stored_doc(|doc| {
            let path = doc.get_first(self.fields.path).and_then(|v| v.as_str());
            let hash = doc.get_first(self.fields.hash).and_then(|v| v.as_str());
            if let (Some(p), Some(h)) = (path, hash) {
                out.push((p.to_string(), h.to_string()));
            }
        })?;
        Ok(out)
    }

    /// BM25 top `limit` documents for `terms` inside any of `scopes` (full storage paths, all
    /// inside `account`), ranked with `account`'s own statistics; equal scores are ordered by
    /// path, so a rebuilt index ranks exactly like the live one.
    pub fn keyword_search(
        &self,
        account: &str,
        terms: &[String],
        scopes: &[String],
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        self.keyword_search_tagged(account, terms, scopes, &[], limit)
    }

    /// [`SearchIndex::keyword_search`] among documents carrying every tag of `tags`
    /// (normalised `k=v`), so a rare tag is not lost behind the candidate cut.
    pub fn keyword_search_tagged(
        &self,
        account: &str,
        terms: &[String],
        scopes: &[String],
        tags: &[String],
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        self.keyword_search_filtered(account, terms, scopes, tags, None, limit)
    }

    /// [`SearchIndex::keyword_search_tagged`] among the documents `access` lets the caller
    /// read (ACLs), inside the query so the top `limit` are all readable ones.
    pub fn keyword_search_filtered(
        &self,
        account: &str,
        terms: &[String],
        scopes: &[String],
        tags: &[String],
        access: Option<&super::access::PathFilter>,
        limit: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        if terms.is_empty() || scopes.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in terms {
            should.push((
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.body, t),
                    IndexRecordOption::WithFreqs,
                )),
            ));
            should.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.name, t),
                        IndexRecordOption::WithFreqs,
                    )),
                    NAME_BOOST,
                )),
            ));
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, Box::new(BooleanQuery::new(should))),
            (Occur::Must, self.scope_query(scopes)),
        ];
        for t in tags {
            let q: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(f.tags, t),
                IndexRecordOption::Basic,
            ));
            clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))));
        }
        if let Some(denied) = access.and_then(|a| a.denied_query(f.anc)) {
            clauses.push((Occur::MustNot, denied));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let stats = AccountStatistics {
            index: self,
            searcher: &searcher,
            account,
            totals: self.account_totals(&searcher, account)?,
        };
        // A few more than asked, so documents tied with the last one are ordered by path,
        // not by where they happen to sit in the segments.
        let top = searcher.search_with_statistics_provider(
            &query,
            &TopDocs::with_limit(limit + TIE_MARGIN),
            &stats,
        )?;
        let cut = top.get(limit.saturating_sub(1)).map(|(s, _)| *s);
        let mut hits = top
            .into_iter()
            .enumerate()
            .filter(|(i, (score, _))| *i < limit || Some(*score) == cut)
            .map(|(_, hit)| hit)
            .map(|(score, addr)| self.hit(&searcher, addr, score))
            .collect::<Result<Vec<Hit>, IndexError>>()?;
        hits.sort_by(|a, b| b.bm25.total_cmp(&a.bm25).then_with(|| a.path.cmp(&b.path)));
        hits.truncate(limit);
        Ok(hits)
    }

    /// The documents at `paths` (for hits found by another signal), skipping missing ones.
    pub fn lookup(&self, paths: &[String]) -> Result<Vec<Hit>, IndexError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for p in paths {
            let q = TermQuery::new(
                Term::from_field_text(self.fields.path, p),
                IndexRecordOption::Basic,
            );
            if let Some((_, addr)) = searcher.search(&q, &TopDocs::with_limit(1))?.first() {
                out.push(self.hit(&searcher, *addr, 0.0)?);
            }
        }
        Ok(out)
    }

    /// Matches anything inside one of `scopes`, contributing no score.
    fn scope_query(&self, scopes: &[String]) -> Box<dyn Query> {
        let any: Vec<(Occur, Box<dyn Query>)> = scopes
            .iter()
            .map(|s| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.anc, s),
                    IndexRecordOption::Basic,
                ));
                (Occur::Should, q)
            })
            .collect();
        Box::new(ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), 0.0))
    }

    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
        score: f32,
    ) -> Result<Hit, IndexError> {
        let f = self.fields;
        let doc: TantivyDocument = searcher.doc(addr)?;
        let s = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Ok(Hit {
            path: s(f.path),
            uri: s(f.uri),
            level: doc.get_first(f.level).and_then(|v| v.as_u64()).unwrap_or(2),
            context_type: s(f.ctype),
            abstract_text: s(f.abstract_text),
            mtime_ms: doc.get_first(f.mtime).and_then(|v| v.as_i64()).unwrap_or(0),
            hash: s(f.hash),
            tags: doc
                .get_all(f.tags)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            bm25: if score.is_finite() { score } else { 0.0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::docs;
    use crate::storage::{EntryKind, Meta, StorePath};

    fn doc(path: &str, text: &str) -> DocSource {
        let p = StorePath::parse(path).unwrap();
        let segs: Vec<&str> = p.segments().collect();
        DocSource {
            path: p.clone(),
            account: segs[0].into(),
            uri: format!("viking://{}", segs[1..].join("/")),
            level: docs::level_of(p.name()),
            context_type: docs::context_type(&segs[1..]),
            text: text.into(),
            name_text: segs[2..].join(" "),
            abstract_text: docs::abstract_of(text),
            size: text.len() as u64,
            mtime_ms: 1_000,
            hash: String::new(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn bm25_scoped_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path(), 16).unwrap();
        assert!(matches!(
            SearchIndex::open(dir.path(), 16),
            Err(IndexError::Locked { .. })
        ));
        idx.upsert(&doc(
            "acme/resources/auth.md",
            "How getUserToken handles 认证 login",
        ))
        .unwrap();
        idx.upsert(&doc("acme/resources/other.md", "Nothing relevant here"))
            .unwrap();
        idx.upsert(&doc("beta/resources/auth.md", "getUserToken 认证"))
            .unwrap();
        idx.commit(&Payload::default()).unwrap();
        let q = |text: &str, scope: &str| {
            let account = scope.split('/').next().unwrap_or(scope);
            idx.keyword_search(
                account,
                &tokenizer::query_terms(text, 64),
                &[scope.to_string()],
                10,
            )
            .unwrap()
        };
        let hits = q("user token", "acme");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].uri, "viking://resources/auth.md");
        assert!(hits[0].bm25 > 0.0);
        assert_eq!(q("认证", "acme").len(), 1);
        assert_eq!(q("getusertoken", "beta").len(), 1);
        assert!(q("AND title:(x*)", "acme").is_empty());
        idx.delete_subtree("acme/resources");
        idx.commit(&Payload::default()).unwrap();
        assert!(q("user token", "acme").is_empty());
        assert_eq!(q("user token", "beta").len(), 1);
        let inv = idx.inventory().unwrap();
        assert_eq!(inv.len(), 1);
        let _ = Meta {
            kind: EntryKind::File,
            size: 0,
            modified: std::time::SystemTime::now(),
            version: None,
        };
    }

    /// Scores of (uri, bm25 bits) for `text` in `account`.
    fn scores(idx: &SearchIndex, account: &str, text: &str) -> Vec<(String, u32)> {
        idx.keyword_search(
            account,
            &tokenizer::query_terms(text, 64),
            &[account.to_string()],
            10,
        )
        .unwrap()
        .into_iter()
        .map(|h| (h.uri, h.bm25.to_bits()))
        .collect()
    }

    #[test]
    fn statistics_are_per_account_and_exclude_deleted_documents() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path(), 16).unwrap();
        idx.upsert(&doc("alice/resources/a.md", "nightingale sings at night"))
            .unwrap();
        idx.upsert(&doc("alice/resources/b.md", "a quiet control night"))
            .unwrap();
        idx.commit(&Payload::default()).unwrap();
        let before = scores(&idx, "alice", "nightingale night");
        assert_eq!(before.len(), 2);
        // Another tenant writes the word many times (and some deletes): nothing moves.
        for i in 0..50 {
            idx.upsert(&doc(
                &format!("mallory/resources/{i}.md"),
                "nightingale nightingale nightingale",
            ))
            .unwrap();
        }
        idx.commit(&Payload::default()).unwrap();
        idx.delete_subtree("mallory/resources/3.md");
        idx.commit(&Payload::default()).unwrap();
        assert_eq!(scores(&idx, "alice", "nightingale night"), before);
        // Overwrites and removals in the account itself leave no trace: the live index
        // scores exactly like one built from the surviving documents.
        for i in 0..20 {
            idx.upsert(&doc(
                "alice/resources/c.md",
                &format!("nightingale draft {i}"),
            ))
            .unwrap();
            idx.commit(&Payload::default()).unwrap();
        }
        idx.delete_subtree("alice/resources/c.md");
        idx.commit(&Payload::default()).unwrap();
        assert_eq!(scores(&idx, "alice", "nightingale night"), before);
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = SearchIndex::open(fresh_dir.path(), 16).unwrap();
        fresh
            .upsert(&doc("alice/resources/b.md", "a quiet control night"))
            .unwrap();
        fresh
            .upsert(&doc("alice/resources/a.md", "nightingale sings at night"))
            .unwrap();
        fresh.commit(&Payload::default()).unwrap();
        assert_eq!(scores(&fresh, "alice", "nightingale night"), before);
    }

    #[test]
    fn pages_follow_path_order_across_segments_and_skip_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path(), 16).unwrap();
        // Several commits: several segments, each holding some of the subtree.
        for batch in 0..3 {
            for i in (batch..12).step_by(3) {
                idx.upsert(&doc(&format!("acme/resources/v/n{i:02}.md"), "x"))
                    .unwrap();
            }
            idx.upsert(&doc(&format!("acme/resources/v-other/{batch}.md"), "x"))
                .unwrap();
            idx.commit(&Payload::default()).unwrap();
        }
        idx.delete_subtree("acme/resources/v/n04.md");
        idx.commit(&Payload::default()).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = idx
                .documents_page("acme/resources/v", after.as_deref(), 5, &|_| true)
                .unwrap();
            assert!(page.len() <= 5);
            seen.extend(page.iter().map(|d| d.hit.path.clone()));
            if !more {
                break;
            }
            after = page.last().map(|d| d.hit.path.clone());
        }
        let want: Vec<String> = (0..12)
            .filter(|i| *i != 4)
            .map(|i| format!("acme/resources/v/n{i:02}.md"))
            .collect();
        assert_eq!(seen, want);
        let all = idx.documents_under("acme/resources/v").unwrap();
        assert_eq!(all.len(), want.len());
        // A filter narrows pages without losing any.
        let (odd, more) = idx
            .documents_page("acme/resources/v", None, 100, &|d| {
                d.hit.path.ends_with("1.md")
            })
            .unwrap();
        assert!(!more);
        assert_eq!(odd.len(), 2, "n01, n11");
    }

    #[test]
    fn payload_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = SearchIndex::open(dir.path(), 16).unwrap();
            assert!(idx.opened_payload.is_none());
            idx.upsert(&doc("acme/resources/a.md", "alpha")).unwrap();
            let mut p = Payload {
                schema: SCHEMA_VERSION,
                complete: true,
                ..Payload::default()
            };
            p.cursors.insert("w".into(), Cursor { next: 7 });
            idx.commit(&p).unwrap();
        }
        let idx = SearchIndex::open(dir.path(), 16).unwrap();
        let p = idx.opened_payload.clone().unwrap();
        assert!(p.complete);
        assert_eq!(p.cursors["w"].next, 7);
        assert_eq!(idx.num_docs(), 1);
    }
}
