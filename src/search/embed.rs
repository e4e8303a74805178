//! Optional dense retrieval: document vectors from an OpenAI-compatible `/v1/embeddings`
//! endpoint, kept in shared storage and in memory.
//!
//! A vector is keyed by the document's content hash and the model (`model_key` = a digest of
//! model name and dimension), stored once in shared storage under the owning account's hidden
//! `_system/vectors/<model_key>/` (so other instances and rebuilds load it instead of paying
//! the provider again, and deleting the account deletes them). The instance that made a change
//! embeds it; others wait briefly for that vector to appear before computing it themselves.
//! A change of model or dimension changes `model_key`: everything is re-embedded in the
//! background and vectors of two models never meet in one ranking.
//!
//! The provider failing or slow never fails a write or a find: documents stay keyword-
//! searchable, batches are retried with exponential backoff, and the provider's state and the
//! backlog are reported (observer, /metrics).
//!
//! Vectors are removed with their documents: the embedder counts, per account and content
//! hash, the indexed documents that reference a vector. When a change this instance made
//! leaves a hash unreferenced, [`Embedder::release`] deletes its stored object (only the
//! writing instance deletes, so instances do not race to). What that misses is collected by
//! the sweep in [`super::vector_gc`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::docs;
use crate::config::EmbeddingSettings;
use crate::storage::{Storage, StorageError, StorePath};

/// How long another instance's change waits for its writer's vector before computing it.
const ORIGIN_GRACE: Duration = Duration::from_secs(15);
/// Longest pause between retries of a failing provider.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Characters of a document sent to the model (models truncate anyway).
const MAX_INPUT_CHARS: usize = 8000;
/// Timeout of a query embedding (a find never waits longer for the model).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Want {
    path: String,
    account: String,
    hash: String,
    local: bool,
    queued_at: Instant,
    not_before: Instant,
}

/// A stored vector: the account it is stored under and the content hash it is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VectorRef {
    pub account: String,
    pub hash: String,
}

/// The indexed documents as the embedder sees them: each one's content hash, and how many
/// documents of each account reference each hash (exact, updated with every change).
#[derive(Debug, Default)]
struct Docs {
    /// Ordered, so a subtree is one range, not a scan of every document.
    by_path: BTreeMap<String, String>,
    refs: HashMap<String, HashMap<String, u32>>,
}

fn account_of(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

impl Docs {
    /// Index `path` with content `hash`; returns the reference it replaced, if it differs.
    fn insert(&mut self, path: &str, hash: &str) -> Option<VectorRef> {
        let old = self.by_path.insert(path.to_string(), hash.to_string());
        if old.as_deref() == Some(hash) {
            return None;
        }
        *self
            .refs
            .entry(hash.to_string())
            .or_default()
            .entry(account_of(path).to_string())
            .or_default() += 1;
        old.map(|h| self.unref(path, h))
    }

    /// Drop one reference of the document at `path` to `hash`.
    fn unref(&mut self, path: &str, hash: String) -> VectorRef {
        let account = account_of(path);
        if let Some(by_account) = self.refs.get_mut(&hash) {
            if let Some(n) = by_account.get_mut(account) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_account.remove(account);
                }
            }
            if by_account.is_empty() {
                self.refs.remove(&hash);
            }
        }
        VectorRef {
            account: account.to_string(),
            hash,
        }
    }

    fn remove_subtree(&mut self, prefix: &str) -> Vec<VectorRef> {
        let under = format!("{prefix}/");
        let exact = self.by_path.get_key_value(prefix).map(|(p, _)| p.clone());
        let gone: Vec<String> = exact
            .into_iter()
            .chain(
                self.by_path
                    .range::<str, _>((Bound::Included(under.as_str()), Bound::Unbounded))
                    .map(|(p, _)| p)
                    .take_while(|p| p.starts_with(&under))
                    .cloned(),
            )
            .collect();
        gone.into_iter()
            .filter_map(|p| {
                let hash = self.by_path.remove(&p)?;
                Some(self.unref(&p, hash))
            })
            .collect()
    }

    fn referenced_in(&self, account: &str, hash: &str) -> bool {
        self.refs
            .get(hash)
            .is_some_and(|a| a.get(account).is_some_and(|n| *n > 0))
    }

    fn referenced(&self, hash: &str) -> bool {
        self.refs.contains_key(hash)
    }
}

#[derive(Debug, Default)]
struct ProviderState {
    /// Consecutive failed requests (0 = healthy).
    failures: u32,
    last_error: Option<String>,
    retry_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct EmbedStats {
    /// Documents taken from the queue and not yet resolved (being loaded or embedded).
    pub in_flight: AtomicU64,
    pub embedded: AtomicU64,
    pub loaded: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    /// Stored vector objects deleted because their documents went (by this instance's own
    /// changes, or by the garbage-collection sweep).
    pub vectors_deleted: AtomicU64,
    /// Completed garbage-collection sweeps of stored vectors.
    pub gc_runs: AtomicU64,
}

pub struct Embedder {
    cfg: EmbeddingSettings,
    model_key: String,
    http: ureq::Agent,
    queue: Mutex<VecDeque<Want>>,
    vectors: RwLock<HashMap<String, Arc<Vec<f32>>>>,
    docs: RwLock<Docs>,
    state: Mutex<ProviderState>,
    pub stats: EmbedStats,
    max_bytes: usize,
}

/// Why an embedding request failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    #[error("embedding provider answered badly: {0}")]
    BadAnswer(String),
}

impl Embedder {
    /// `None` when no dense model is configured.
    pub fn new(cfg: &EmbeddingSettings, max_bytes: usize) -> Option<Result<Embedder, String>> {
        if !cfg.enabled() {
            return None;
        }
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(cfg.dense.timeout_ms))
            .timeout_connect(Duration::from_secs(3))
            .build();
        let digest = Sha256::digest(format!("{}|{}", cfg.dense.model, cfg.dense.dimension));
        Some(Ok(Embedder {
            cfg: cfg.clone(),
            model_key: hex::encode(&digest[..8]),
            http,
            queue: Mutex::new(VecDeque::new()),
            vectors: RwLock::new(HashMap::new()),
            docs: RwLock::new(Docs::default()),
            state: Mutex::new(ProviderState::default()),
            stats: EmbedStats::default(),
            max_bytes,
        }))
    }

    pub fn model(&self) -> &str {
        &self.cfg.dense.model
    }

    /// The key of the configured model in stored vector paths.
    pub fn model_key(&self) -> &str {
        &self.model_key
    }

    /// Minimum age of an unreferenced vector object before the sweep deletes it.
    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.cfg.vector_gc_grace_secs)
    }

    fn vector_path(&self, account: &str, hash: &str) -> Option<StorePath> {
        let prefix = hash.get(..2)?;
        StorePath::parse(&format!(
            "{account}/_system/vectors/{}/{prefix}/{hash}.f32",
            self.model_key
        ))
        .ok()
    }

    /// True while an indexed document of `account` has content `hash`.
    pub fn is_referenced(&self, account: &str, hash: &str) -> bool {
        self.docs
            .read()
            .is_ok_and(|d| d.referenced_in(account, hash))
    }

    /// Note that the document at `path` (content `hash`) is indexed and needs a vector.
    /// `local`: this instance made the change (it computes at once).
    pub fn want(&self, path: &str, hash: &str, local: bool) {
        let account = account_of(path).to_string();
        let (replaced, first_in_account) = match self.docs.write() {
            Ok(mut d) => {
                let replaced = d.insert(path, hash);
                let first = d
                    .refs
                    .get(hash)
                    .and_then(|a| a.get(&account))
                    .is_some_and(|n| *n == 1);
                (replaced, first)
            }
            Err(_) => (None, false),
        };
        if let Some(old) = replaced {
            // The file changed behind the index (a reconcile found it): the old vector leaves
            // memory; its stored object is left to the sweep (this instance did not write).
            self.release(None, vec![old]);
        }
        // Vectors are stored per account: content this instance already holds (another
        // account's twin) is still queued once for this account, to store it without a
        // provider call.
        if self.vectors.read().is_ok_and(|v| v.contains_key(hash)) && !(local && first_in_account) {
            return;
        }
        let now = Instant::now();
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(Want {
                path: path.to_string(),
                account,
                hash: hash.to_string(),
                local,
                queued_at: now,
                not_before: now,
            });
        }
    }

    /// Forget every document at or under `prefix` (a full storage path); returns the vectors
    /// they referenced, for [`Embedder::release`] once the change is fully applied.
    pub fn forget_subtree(&self, prefix: &str) -> Vec<VectorRef> {
        self.docs
            .write()
            .map(|mut d| d.remove_subtree(prefix))
            .unwrap_or_default()
    }

    /// Let go of vectors whose documents left the index: a hash no indexed document
    /// references any more leaves memory, and with `storage` (this instance made the change
    /// and its index is complete) its stored object of the account is deleted. Returns the
    /// objects deleted. Never fails: a storage error is logged and left to the sweep.
    pub fn release(&self, storage: Option<&dyn Storage>, gone: Vec<VectorRef>) -> usize {
        if gone.is_empty() {
            return 0;
        }
        let mut unique: Vec<VectorRef> = gone;
        unique.sort_by(|a, b| (&a.account, &a.hash).cmp(&(&b.account, &b.hash)));
        unique.dedup();
        let (to_delete, to_forget): (Vec<StorePath>, Vec<String>) = {
            let Ok(d) = self.docs.read() else {
                return 0;
            };
            let unreferenced = unique
                .iter()
                .filter(|r| !d.referenced_in(&r.account, &r.hash));
            let paths = match storage {
                Some(_) => unreferenced
                    .filter_map(|r| self.vector_path(&r.account, &r.hash))
                    .collect(),
                None => Vec::new(),
            };
            let hashes = unique
                .iter()
                .filter(|r| !d.referenced(&r.hash))
                .map(|r| r.hash.clone())
                .collect();
            (paths, hashes)
        };
        if let Ok(mut m) = self.vectors.write() {
            for h in &to_forget {
                m.remove(h);
            }
        }
        let Some(storage) = storage else {
            return 0;
        };
        if to_delete.is_empty() {
            return 0;
        }
        match storage.remove_files(&to_delete) {
            Ok(()) => {
                self.stats
                    .vectors_deleted
                    .fetch_add(to_delete.len() as u64, Ordering::Relaxed);
                to_delete.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, vectors = to_delete.len(),
                    "could not delete the stored vectors of removed documents; the sweep retries");
                0
            }
        }
    }

    /// Documents waiting for a vector (queued or being embedded).
    pub fn backlog(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
            + self.stats.in_flight.load(Ordering::Relaxed) as usize
    }

    /// One batch of background work; true if more is ready now.
    pub fn step(&self, storage: &dyn Storage) -> bool {
        let now = Instant::now();
        if self
            .state
            .lock()
            .ok()
            .and_then(|s| s.retry_at)
            .is_some_and(|t| t > now)
        {
            return false;
        }
        let batch = self.take_batch(now);
        if batch.is_empty() {
            return false;
        }
        let taken = batch.len() as u64;
        self.stats.in_flight.fetch_add(taken, Ordering::Relaxed);
        let more = self.resolve(storage, batch, now);
        self.stats.in_flight.fetch_sub(taken, Ordering::Relaxed);
        more
    }

    /// Load or compute the vectors of `batch`; true if more work is ready now.
    fn resolve(&self, storage: &dyn Storage, batch: Vec<Want>, now: Instant) -> bool {
        let mut to_embed: Vec<(Want, String)> = Vec::new();
        let mut later = Vec::new();
        for w in batch {
            if !self.is_current(&w) {
                continue;
            }
            let held = self
                .vectors
                .read()
                .ok()
                .and_then(|m| m.get(&w.hash).cloned());
            if let Some(v) = held {
                if w.local {
                    // Create-only: a no-op when this account has it stored already.
                    self.store(storage, &w, &v);
                }
                continue;
            }
            if let Some(v) = self.load_stored(storage, &w) {
                if self.insert_if_current(&w, v) {
                    self.stats.loaded.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if !w.local && w.queued_at.elapsed() < ORIGIN_GRACE {
                let mut w = w;
                w.not_before = now + Duration::from_secs(2);
                later.push(w);
                continue;
            }
            match self.text_of(storage, &w) {
                Some(text) => to_embed.push((w, text)),
                None => continue,
            }
        }
        self.requeue(later);
        if to_embed.is_empty() {
            return self.ready_now();
        }
        let texts: Vec<String> = to_embed.iter().map(|(_, t)| t.clone()).collect();
        match self.call(&texts, None) {
            Ok(vectors) => {
                self.healthy();
                for ((w, _), v) in to_embed.into_iter().zip(vectors) {
                    // Removed while the provider was answering: nothing to keep.
                    if !self.is_current(&w) {
                        continue;
                    }
                    self.store(storage, &w, &v);
                    self.insert_if_current(&w, v);
                    self.stats.embedded.fetch_add(1, Ordering::Relaxed);
                }
                self.ready_now()
            }
            Err(e) => {
                let pause = self.failed(&e);
                tracing::warn!(error = %e, retry_in_s = pause.as_secs(), backlog = self.backlog(),
                    "embedding batch failed; documents stay keyword-searchable");
                let retry = Instant::now() + pause;
                self.requeue(
                    to_embed
                        .into_iter()
                        .map(|(mut w, _)| {
                            w.not_before = retry;
                            w
                        })
                        .collect(),
                );
                false
            }
        }
    }

    /// The document of `w` is still indexed with that content.
    fn is_current(&self, w: &Want) -> bool {
        self.docs
            .read()
            .is_ok_and(|d| d.by_path.get(&w.path) == Some(&w.hash))
    }

    fn take_batch(&self, now: Instant) -> Vec<Want> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = VecDeque::with_capacity(q.len());
        while let Some(w) = q.pop_front() {
            if out.len() < self.cfg.dense.batch_size && w.not_before <= now {
                out.push(w);
            } else {
                rest.push_back(w);
            }
        }
        *q = rest;
        out
    }

    fn requeue(&self, wants: Vec<Want>) {
        if let Ok(mut q) = self.queue.lock() {
            q.extend(wants);
        }
    }

    fn ready_now(&self) -> bool {
        let now = Instant::now();
        self.queue
            .lock()
            .is_ok_and(|q| q.iter().any(|w| w.not_before <= now))
    }

    /// Keep `v` in memory if the document of `w` still has that content. The check and the
    /// insert hold the documents' read lock, so a removal applied meanwhile (which takes the
    /// write lock, then releases unreferenced vectors) cannot leave it behind in memory.
    fn insert_if_current(&self, w: &Want, v: Vec<f32>) -> bool {
        let Ok(d) = self.docs.read() else {
            return false;
        };
        if d.by_path.get(&w.path) != Some(&w.hash) {
            return false;
        }
        self.insert(&w.hash, v);
        true
    }

    fn insert(&self, hash: &str, v: Vec<f32>) {
        if let Ok(mut m) = self.vectors.write() {
            m.insert(hash.to_string(), Arc::new(v));
        }
    }

    fn load_stored(&self, storage: &dyn Storage, w: &Want) -> Option<Vec<f32>> {
        let path = self.vector_path(&w.account, &w.hash)?;
        let bytes = storage.read(&path).ok()?;
        let v = decode(&bytes)?;
        (self.cfg.dense.dimension == 0 || v.len() == self.cfg.dense.dimension).then_some(v)
    }

    fn store(&self, storage: &dyn Storage, w: &Want, v: &[f32]) {
        let Some(path) = self.vector_path(&w.account, &w.hash) else {
            return;
        };
        match storage.write_if(&path, &encode(v), None) {
            Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => tracing::warn!(error = %e, "could not store a document vector"),
        }
    }

    fn text_of(&self, storage: &dyn Storage, w: &Want) -> Option<String> {
        let path = StorePath::parse(&w.path).ok()?;
        let meta = storage.stat(&path).ok()??;
        let doc = docs::load(storage, &path, &meta, self.max_bytes).ok()??;
        if doc.hash != w.hash {
            return None;
        }
        let mut text = format!("{}\n{}", doc.name_text, doc.text);
        if let Some((i, _)) = text.char_indices().nth(MAX_INPUT_CHARS) {
            text.truncate(i);
        }
        Some(text)
    }

    fn healthy(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.failures = 0;
            s.retry_at = None;
        }
    }

    /// Record a failure; returns the pause before the next attempt.
    fn failed(&self, e: &EmbedError) -> Duration {
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        let Ok(mut s) = self.state.lock() else {
            return MAX_BACKOFF;
        };
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(e.to_string());
        let pause = Duration::from_secs(1u64 << s.failures.min(6)).min(MAX_BACKOFF);
        s.retry_at = Some(Instant::now() + pause);
        pause
    }

    /// One request for `texts`, retried up to `max_retries` times (short pauses).
    fn call(
        &self,
        texts: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let attempts = if timeout.is_some() {
            1
        } else {
            self.cfg.max_retries.max(1)
        };
        let mut last = EmbedError::Unavailable("no attempt".into());
        for attempt in 0..attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
            }
            match self.request(texts, timeout) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn request(
        &self,
        texts: &[String],
        timeout: Option<Duration>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!(
            "{}/embeddings",
            self.cfg.dense.api_base.trim_end_matches('/')
        );
        let body = json!({"model": self.cfg.dense.model, "input": texts});
        let mut req = self.http.post(&url).set("content-type", "application/json");
        if let Some(key) = &self.cfg.dense.api_key {
            req = req.set("authorization", &format!("Bearer {key}"));
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let text = match req.send_string(&body.to_string()) {
            Ok(resp) => resp
                .into_string()
                .map_err(|e| EmbedError::Unavailable(e.to_string()))?,
            Err(ureq::Error::Status(code, resp)) => {
                let short: String = resp
                    .into_string()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                return Err(EmbedError::Unavailable(format!("HTTP {code}: {short}")));
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(EmbedError::Unavailable(t.kind().to_string()))
            }
        };
        let v: Value =
            serde_json::from_str(&text).map_err(|e| EmbedError::BadAnswer(e.to_string()))?;
        let data = v["data"]
            .as_array()
            .ok_or_else(|| EmbedError::BadAnswer("no data array".into()))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (n, item) in data.iter().enumerate() {
            let i = item["index"].as_u64().map(|i| i as usize).unwrap_or(n);
            let emb = item["embedding"]
                .as_array()
                .ok_or_else(|| EmbedError::BadAnswer("no embedding".into()))?;
            let v: Vec<f32> = emb
                .iter()
                .filter_map(|x| x.as_f64())
                .map(|x| x as f32)
                .collect();
            if v.len() != emb.len() || v.is_empty() {
                return Err(EmbedError::BadAnswer("non-numeric embedding".into()));
            }
            if self.cfg.dense.dimension != 0 && v.len() != self.cfg.dense.dimension {
                return Err(EmbedError::BadAnswer(format!(
                    "model returned {} dimensions, embedding.dense.dimension is {}",
                    v.len(),
                    self.cfg.dense.dimension
                )));
            }
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(normalize(v));
            }
        }
        out.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EmbedError::BadAnswer("fewer embeddings than inputs".into()))
    }

    /// The query's vector, or why there is none (a find then answers from keywords). Never
    /// waits for a provider known to be failing, and at most [`QUERY_TIMEOUT`] otherwise.
    pub fn embed_query(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        if let Some(retry) = self.state.lock().ok().and_then(|s| s.retry_at) {
            if retry > Instant::now() {
                return Err(EmbedError::Unavailable(
                    "provider is failing; retrying in the background".into(),
                ));
            }
        }
        let out = self.call(&[text.to_string()], Some(QUERY_TIMEOUT));
        match out {
            Ok(mut v) => {
                self.healthy();
                v.pop().ok_or_else(|| EmbedError::BadAnswer("empty".into()))
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        }
    }

    /// Cosine similarity of `q` with the document of content `hash`, if it has a vector.
    pub fn similarity(&self, q: &[f32], hash: &str) -> Option<f32> {
        let v = self.vectors.read().ok()?.get(hash)?.clone();
        (v.len() == q.len()).then(|| dot(q, &v))
    }

    /// The `k` documents inside `scopes` (full storage path prefixes) most similar to `q`.
    pub fn nearest(&self, q: &[f32], scopes: &[String], k: usize) -> Vec<(String, f32)> {
        let Ok(docs) = self.docs.read() else {
            return Vec::new();
        };
        let Ok(vectors) = self.vectors.read() else {
            return Vec::new();
        };
        let in_scope = |p: &str| {
            scopes.iter().any(|s| {
                p == s || (p.starts_with(s.as_str()) && p.as_bytes().get(s.len()) == Some(&b'/'))
            })
        };
        let mut scored: Vec<(String, f32)> = docs
            .by_path
            .iter()
            .filter(|(p, _)| in_scope(p))
            .filter_map(|(p, hash)| {
                let v = vectors.get(hash)?;
                (v.len() == q.len()).then(|| (p.clone(), dot(q, v)))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }

    pub fn status(&self) -> Value {
        let s = self.state.lock().ok();
        let failures = s.as_ref().map(|s| s.failures).unwrap_or(0);
        json!({
            "provider": self.cfg.dense.provider,
            "model": self.cfg.dense.model,
            "api_base": self.cfg.dense.api_base,
            "state": if failures == 0 { "ok" } else { "failing" },
            "healthy": failures == 0,
            "consecutive_failures": failures,
            "last_error": s.as_ref().and_then(|s| s.last_error.clone()),
            "backlog": self.backlog(),
            "vectors": self.vectors.read().map(|v| v.len()).unwrap_or(0),
            "embedded": self.stats.embedded.load(Ordering::Relaxed),
            "loaded_from_storage": self.stats.loaded.load(Ordering::Relaxed),
            "requests": self.stats.requests.load(Ordering::Relaxed),
            "failed_requests": self.stats.failed_requests.load(Ordering::Relaxed),
            "stored_vectors_deleted": self.stats.vectors_deleted.load(Ordering::Relaxed),
            "vector_gc_runs": self.stats.gc_runs.load(Ordering::Relaxed),
        })
    }

    /// True while the provider is answering.
    pub fn is_healthy(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.failures == 0)
    }
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_subtree_is_its_path_and_what_is_under_it_only() {
        let mut d = Docs::default();
        for p in [
            "acme/r/b",
            "acme/r/b/c.md",
            "acme/r/b/d/e.md",
            "acme/r/b-c.md",
            "acme/r/bc",
        ] {
            d.insert(p, p);
        }
        let mut gone: Vec<_> = d
            .remove_subtree("acme/r/b")
            .into_iter()
            .map(|r| r.hash)
            .collect();
        gone.sort();
        assert_eq!(gone, ["acme/r/b", "acme/r/b/c.md", "acme/r/b/d/e.md"]);
        let mut left: Vec<_> = d.by_path.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["acme/r/b-c.md", "acme/r/bc"]);
    }

    #[test]
    fn vectors_round_trip_and_normalise() {
        let v = normalize(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert!(decode(&[1, 2, 3]).is_none());
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
    }

    pub(crate) fn embedder(grace_secs: u64) -> Embedder {
        let mut cfg = EmbeddingSettings::default();
        cfg.dense.provider = Some("openai".into());
        // Never called in these tests.
        cfg.dense.api_base = "http://127.0.0.1:9/v1".into();
        cfg.dense.model = "unit".into();
        cfg.vector_gc_grace_secs = grace_secs;
        Embedder::new(&cfg, 1 << 20).unwrap().unwrap()
    }

    /// Stores a vector for (`account`, `hash`) as the embedder would; returns its path.
    pub(crate) fn plant(e: &Embedder, storage: &dyn Storage, account: &str, hash: &str) -> String {
        let path = e.vector_path(account, hash).unwrap();
        storage.write(&path, &encode(&[1.0, 0.0])).unwrap();
        e.insert(hash, vec![1.0, 0.0]);
        path.as_str().to_string()
    }

    #[test]
    fn references_are_counted_per_account_and_content() {
        let e = embedder(3600);
        e.want("acme/resources/a.md", "aa11", true);
        e.want("acme/resources/twin.md", "aa11", true);
        e.want("beta/resources/a.md", "aa11", true);
        e.want("acme/resources/b.md", "bb22", true);
        assert!(e.is_referenced("acme", "aa11") && e.is_referenced("beta", "aa11"));
        // Overwrite with new content: the old reference goes.
        e.want("acme/resources/b.md", "cc33", true);
        assert!(!e.is_referenced("acme", "bb22") && e.is_referenced("acme", "cc33"));
        // The same content again changes nothing.
        e.want("acme/resources/b.md", "cc33", true);
        let gone = e.forget_subtree("acme/resources/b.md");
        assert_eq!(gone.len(), 1);
        assert!(!e.is_referenced("acme", "cc33"));
        let gone = e.forget_subtree("acme/resources");
        assert_eq!(gone.len(), 2);
        assert!(!e.is_referenced("acme", "aa11") && e.is_referenced("beta", "aa11"));
        // `acme/res` is not a parent of `acme/resources`.
        e.want("acme/resources/a.md", "aa11", true);
        assert!(e.forget_subtree("acme/res").is_empty());
    }

    /// A twin in another account written here is stored under that account from memory,
    /// without a provider call (the provider in these tests is unreachable).
    #[test]
    fn a_twin_in_another_account_is_stored_from_memory() {
        let data = tempfile::tempdir().unwrap();
        let storage = crate::storage::backend::local::LocalStorage::open(data.path()).unwrap();
        let e = embedder(3600);
        e.want("acme/resources/a.md", "cc33", true);
        plant(&e, &storage, "acme", "cc33");
        while e.step(&storage) {}
        e.want("beta/resources/copy.md", "cc33", true);
        while e.step(&storage) {}
        let beta = e.vector_path("beta", "cc33").unwrap();
        assert_eq!(decode(&storage.read(&beta).unwrap()), Some(vec![1.0, 0.0]));
        assert_eq!(e.stats.embedded.load(Ordering::Relaxed), 0);
        // Another instance's change (not local) never writes.
        e.want("gamma/resources/c.md", "cc33", false);
        while e.step(&storage) {}
        let gamma = e.vector_path("gamma", "cc33").unwrap();
        assert!(storage.stat(&gamma).unwrap().is_none());
    }

    #[test]
    fn release_deletes_only_unreferenced_vectors_of_the_account() {
        let data = tempfile::tempdir().unwrap();
        let storage = crate::storage::backend::local::LocalStorage::open(data.path()).unwrap();
        let e = embedder(3600);
        let exists = |p: &str| {
            storage
                .stat(&StorePath::parse(p).unwrap())
                .unwrap()
                .is_some()
        };
        e.want("acme/resources/a.md", "aa11", true);
        e.want("acme/resources/twin.md", "aa11", true);
        e.want("acme/resources/b.md", "bb22", true);
        e.want("beta/resources/b.md", "bb22", true);
        let shared = plant(&e, &storage, "acme", "aa11");
        let acme_b = plant(&e, &storage, "acme", "bb22");
        let beta_b = plant(&e, &storage, "beta", "bb22");
        // The twin still references the shared content.
        let gone = e.forget_subtree("acme/resources/a.md");
        assert_eq!(e.release(Some(&storage), gone), 0);
        assert!(exists(&shared));
        // b.md's content stays referenced in beta: acme's object goes, memory keeps it.
        let gone = e.forget_subtree("acme/resources/b.md");
        assert_eq!(e.release(Some(&storage), gone), 1);
        assert!(!exists(&acme_b) && exists(&beta_b));
        assert!(e.similarity(&[1.0, 0.0], "bb22").is_some());
        // A move: the source leaves and the target arrives before the release.
        let mut gone = e.forget_subtree("acme/resources/twin.md");
        e.want("acme/resources/moved.md", "aa11", true);
        gone.extend(e.forget_subtree("acme/resources/nothing-here"));
        assert_eq!(e.release(Some(&storage), gone), 0);
        assert!(exists(&shared));
        // Another instance's removal frees memory but never deletes.
        let gone = e.forget_subtree("acme/resources/moved.md");
        assert_eq!(e.release(None, gone), 0);
        assert!(exists(&shared));
        assert!(e.similarity(&[1.0, 0.0], "aa11").is_none());
        assert_eq!(e.stats.vectors_deleted.load(Ordering::Relaxed), 1);
    }
}
