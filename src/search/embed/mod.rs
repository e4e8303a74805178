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
//! searchable, the embedder adapts batch size and requests in flight to the provider
//! ([`pace`]), failed batches are retried after a pause (the provider's `Retry-After`, or
//! exponential backoff), and the provider's state and the backlog are reported (observer,
//! /metrics).
//!
//! Vectors are removed with their documents: the embedder counts, per account and content
//! hash, the indexed documents that reference a vector ([`refs`]). When a change this
//! instance made leaves a hash unreferenced, [`Embedder::release`] deletes its stored object
//! (only the writing instance deletes, so instances do not race to). What that misses is
//! collected by the sweep in [`super::vector_gc`].
//!
//! Parts: [`provider`] (the HTTP client), [`pace`] (adaptation), [`queue`] (documents
//! waiting), [`refs`] (reference counts), [`vectors`] (encoding), [`nearest`] (search).

mod nearest;
mod pace;
mod provider;
mod queue;
mod refs;
mod vectors;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use provider::EmbedError;
pub use refs::VectorRef;

use super::docs;
use crate::config::EmbeddingSettings;
use crate::storage::{Storage, StorageError, StorePath};
use pace::Pace;
use provider::Provider;
use queue::{Queue, Want};
use refs::{account_of, Docs};
use vectors::{decode, dot, encode};

/// How long another instance's change waits for its writer's vector before computing it.
const ORIGIN_GRACE: Duration = Duration::from_secs(15);
/// Longest pause between retries of a failing provider.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured (a provider asking for more is asked again then).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Pause after a timeout that cut the pace (lets the provider finish the abandoned request).
const CUT_PAUSE: Duration = Duration::from_secs(1);
/// Characters of a document sent to the model (models truncate anyway).
const MAX_INPUT_CHARS: usize = 8000;
/// Timeout of a query embedding (a find never waits longer for the model).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Embedder threads at most (the ceiling of requests in flight).
pub const MAX_THREADS: usize = 4;

#[derive(Debug, Default)]
struct ProviderState {
    /// Consecutive failed requests (0 = healthy).
    failures: u32,
    last_error: Option<String>,
    /// No request before this (a backoff or the provider's `Retry-After`).
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
    provider: Provider,
    pace: Pace,
    queue: Queue,
    vectors: RwLock<HashMap<String, Arc<Vec<f32>>>>,
    docs: RwLock<Docs>,
    state: Mutex<ProviderState>,
    pub stats: EmbedStats,
    max_bytes: usize,
}

impl Embedder {
    /// `None` when no dense model is configured.
    pub fn new(cfg: &EmbeddingSettings, max_bytes: usize) -> Option<Result<Embedder, String>> {
        if !cfg.enabled() {
            return None;
        }
        let digest = Sha256::digest(format!("{}|{}", cfg.dense.model, cfg.dense.dimension));
        Some(Ok(Embedder {
            cfg: cfg.clone(),
            model_key: hex::encode(&digest[..8]),
            provider: Provider::new(&cfg.dense),
            pace: Pace::new(
                cfg.dense.batch_size,
                Self::threads(cfg),
                Duration::from_millis(cfg.dense.timeout_ms),
            ),
            queue: Queue::default(),
            vectors: RwLock::new(HashMap::new()),
            docs: RwLock::new(Docs::default()),
            state: Mutex::new(ProviderState::default()),
            stats: EmbedStats::default(),
            max_bytes,
        }))
    }

    /// Embedder threads for `cfg`: `embedding.max_concurrent`, at most [`MAX_THREADS`].
    pub fn threads(cfg: &EmbeddingSettings) -> usize {
        cfg.max_concurrent.clamp(1, MAX_THREADS)
    }

    pub fn model(&self) -> &str {
        &self.cfg.dense.model
    }

    /// The key of the configured model in stored vector paths.
    pub fn model_key(&self) -> &str {
        &self.model_key
    }

    /// The configured dimension (0: whatever the provider returns).
    pub fn dimension(&self) -> usize {
        self.cfg.dense.dimension
    }

    /// The input mode vector snapshots declare (0.5.2's `embedding.dense.input`).
    pub fn input_mode(&self) -> &str {
        &self.cfg.dense.input
    }

    /// The configured provider's name (`openai`, …).
    pub fn provider_name(&self) -> Option<&str> {
        self.cfg.dense.provider.as_deref()
    }

    /// Bytes of a file a document (and so its content hash) covers.
    pub fn max_doc_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The stored vector of content `hash` in `account`, when present and of this model's
    /// dimension (exports carry it).
    pub fn stored_vector(
        &self,
        storage: &dyn Storage,
        account: &str,
        hash: &str,
    ) -> Option<Vec<f32>> {
        let path = self.vector_path(account, hash)?;
        let v = decode(&storage.read(&path).ok()?)?;
        (self.cfg.dense.dimension == 0 || v.len() == self.cfg.dense.dimension).then_some(v)
    }

    /// Store `v` as the vector of content `hash` in `account` (create-only), exactly as if
    /// this embedder had computed it: the indexer then loads it instead of asking the
    /// provider (imports that carry vectors of this model).
    pub fn store_vector(
        &self,
        storage: &dyn Storage,
        account: &str,
        hash: &str,
        v: &[f32],
    ) -> Result<(), StorageError> {
        let Some(path) = self.vector_path(account, hash) else {
            return Ok(());
        };
        match storage.write_if(&path, &encode(v), None) {
            Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Minimum age of an unreferenced vector object before the sweep deletes it.
    pub fn gc_grace(&self) -> Duration {
        Duration::from_secs(self.cfg.vector_gc_grace_secs)
    }

    /// True while this instance holds the vector of content `hash` in memory.
    pub fn has_vector(&self, hash: &str) -> bool {
        self.vectors.read().is_ok_and(|v| v.contains_key(hash))
    }

    /// Where the vector of content `hash` in `account` is stored (for checks).
    pub fn stored_vector_path(&self, account: &str, hash: &str) -> Option<StorePath> {
        self.vector_path(account, hash)
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
                (replaced, d.count_in(&account, hash) == 1)
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
        self.queue.push(Want {
            path: path.to_string(),
            account,
            hash: hash.to_string(),
            local,
            queued_at: now,
            not_before: now,
        });
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
        self.queue.len() + self.stats.in_flight.load(Ordering::Relaxed) as usize
    }

    /// When requests may be sent again, if the provider is paused (backoff, `Retry-After`).
    fn paused_until(&self) -> Option<Instant> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.retry_at)
            .filter(|t| *t > Instant::now())
    }

    /// One batch of background work; true if more is ready now.
    pub fn step(&self, storage: &dyn Storage) -> bool {
        if self.paused_until().is_some() {
            return false;
        }
        let batch = self.queue.take(self.pace.batch(), Instant::now());
        if batch.is_empty() {
            return false;
        }
        let taken = batch.len() as u64;
        self.stats.in_flight.fetch_add(taken, Ordering::Relaxed);
        let more = self.resolve(storage, batch);
        self.stats.in_flight.fetch_sub(taken, Ordering::Relaxed);
        more
    }

    /// Load or compute the vectors of `batch`; true if more work is ready now.
    fn resolve(&self, storage: &dyn Storage, batch: Vec<Want>) -> bool {
        let now = Instant::now();
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
                later.push(w);
                continue;
            }
            match self.text_of(storage, &w) {
                Some(text) => to_embed.push((w, text)),
                None => continue,
            }
        }
        self.queue
            .requeue(later, Some(now + Duration::from_secs(2)));
        if to_embed.is_empty() {
            return self.queue.ready_now();
        }
        self.embed(storage, to_embed)
    }

    /// Send `to_embed` to the provider once a request may go (in-flight limit, pause), cut to
    /// the current batch size; keep the vectors or put the documents back for later.
    fn embed(&self, storage: &dyn Storage, mut to_embed: Vec<(Want, String)>) -> bool {
        let slot = self.pace.slot();
        // While this thread waited, the provider may have been paused or the batch cut.
        if let Some(at) = self.paused_until() {
            self.queue
                .requeue(to_embed.into_iter().map(|(w, _)| w).collect(), Some(at));
            return false;
        }
        let n = self.pace.batch();
        if to_embed.len() > n {
            let rest = to_embed.split_off(n);
            self.queue
                .requeue(rest.into_iter().map(|(w, _)| w).collect(), None);
        }
        let texts: Vec<String> = to_embed.iter().map(|(_, t)| t.clone()).collect();
        let started = Instant::now();
        match self.call(&texts) {
            Ok(answer) => {
                self.pace.succeeded(texts.len(), started.elapsed());
                self.healthy();
                drop(slot);
                self.record_usage(&to_embed, answer.prompt_tokens);
                let vectors = answer.vectors;
                for ((w, _), v) in to_embed.into_iter().zip(vectors) {
                    // Removed while the provider was answering: nothing to keep.
                    if !self.is_current(&w) {
                        continue;
                    }
                    self.store(storage, &w, &v);
                    self.insert_if_current(&w, v);
                    self.stats.embedded.fetch_add(1, Ordering::Relaxed);
                }
                self.queue.ready_now()
            }
            Err(e) => {
                let pause = match &e {
                    EmbedError::TimedOut(_) if self.pace.timed_out(texts.len()) => {
                        self.failed(&e, Some(CUT_PAUSE))
                    }
                    EmbedError::Throttled { retry_after, .. } => {
                        self.pace.throttled();
                        self.failed(&e, retry_after.map(|d| d.min(MAX_RETRY_AFTER)))
                    }
                    _ => self.failed(&e, None),
                };
                tracing::warn!(error = %e, texts = texts.len(), retry_in_ms = pause.as_millis() as u64,
                    batch_size = self.pace.batch(), in_flight_limit = self.pace.in_flight_limit(),
                    backlog = self.backlog(),
                    "embedding batch failed; documents stay keyword-searchable");
                // The pause is set: threads waiting for the slot see it.
                drop(slot);
                self.queue.requeue(
                    to_embed.into_iter().map(|(w, _)| w).collect(),
                    Some(Instant::now() + pause),
                );
                false
            }
        }
    }

    /// Charge a document batch's input tokens to the accounts whose documents it embedded
    /// (`console/tokens`): the provider's count shared out by text length, else an estimate
    /// per text ([`provider::estimate_tokens`]).
    fn record_usage(&self, batch: &[(Want, String)], reported: Option<u64>) {
        let mut per_account: std::collections::BTreeMap<&str, u64> = Default::default();
        let total_bytes: u64 = batch
            .iter()
            .map(|(_, t)| t.len() as u64)
            .sum::<u64>()
            .max(1);
        for (w, text) in batch {
            let tokens = match reported {
                Some(n) => (n as u128 * text.len() as u128 / total_bytes as u128) as u64,
                None => provider::estimate_tokens(text),
            };
            *per_account.entry(w.account.as_str()).or_default() += tokens;
        }
        // Rounding down may leave a few of the reported tokens; they go to the first account.
        if let (Some(n), Some(first)) = (reported, per_account.values_mut().next()) {
            let shared: u64 = batch
                .iter()
                .map(|(_, t)| (n as u128 * t.len() as u128 / total_bytes as u128) as u64)
                .sum();
            *first += n.saturating_sub(shared);
        }
        let at = crate::time::iso_micros_now();
        for (account, tokens) in per_account {
            self.record_tokens(account, None, tokens, &at);
        }
    }

    fn record_tokens(&self, account: &str, user: Option<&str>, tokens: u64, at: &str) {
        crate::telemetry::usage::record(crate::telemetry::usage::Usage {
            account: account.to_string(),
            user: user.map(str::to_string),
            source: "embedding",
            model: self.cfg.dense.model.clone(),
            input_tokens: tokens,
            output_tokens: 0,
            at: at.to_string(),
        });
    }

    /// The document of `w` is still indexed with that content.
    fn is_current(&self, w: &Want) -> bool {
        self.docs
            .read()
            .is_ok_and(|d| d.is_current(&w.path, &w.hash))
    }

    /// Keep `v` in memory if the document of `w` still has that content. The check and the
    /// insert hold the documents' read lock, so a removal applied meanwhile (which takes the
    /// write lock, then releases unreferenced vectors) cannot leave it behind in memory.
    fn insert_if_current(&self, w: &Want, v: Vec<f32>) -> bool {
        let Ok(d) = self.docs.read() else {
            return false;
        };
        if !d.is_current(&w.path, &w.hash) {
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

    /// Record a failure and pause the provider: for `pause` if given, else exponential
    /// backoff by consecutive failures. Returns the pause.
    fn failed(&self, e: &EmbedError, pause: Option<Duration>) -> Duration {
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        let Ok(mut s) = self.state.lock() else {
            return MAX_BACKOFF;
        };
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(e.to_string());
        let pause = pause
            .unwrap_or_else(|| Duration::from_secs(1u64 << s.failures.min(6)).min(MAX_BACKOFF));
        let until = Instant::now() + pause;
        // Never shorten a pause another thread set (a `Retry-After` is a floor).
        s.retry_at = Some(s.retry_at.map_or(until, |t| t.max(until)));
        pause
    }

    /// One background request for `texts`: an unreachable provider or a server error is
    /// tried `max_retries` times with short pauses; a timeout or a throttle is returned at
    /// once (the pace adapts to it).
    fn call(&self, texts: &[String]) -> Result<provider::Embedded, EmbedError> {
        let timeout = self.pace.timeout_for(texts.len());
        let mut last = EmbedError::Unavailable("no attempt".into());
        for attempt in 0..self.cfg.max_retries.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.provider.embed(texts, timeout) {
                Ok(v) => return Ok(v),
                Err(e @ (EmbedError::TimedOut(_) | EmbedError::Throttled { .. })) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The query's vector, or why there is none (a find then answers from keywords). Never
    /// waits for a paused provider, and at most [`QUERY_TIMEOUT`] otherwise.
    /// The query's tokens are charged to the asking `account` and `user`.
    pub fn embed_query(
        &self,
        text: &str,
        account: &str,
        user: &str,
    ) -> Result<Vec<f32>, EmbedError> {
        if self.paused_until().is_some() {
            return Err(EmbedError::Unavailable(
                "provider is paused (failing or throttling); retrying in the background".into(),
            ));
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        match self.provider.embed(&[text.to_string()], QUERY_TIMEOUT) {
            Ok(answer) => {
                self.healthy();
                let tokens = answer
                    .prompt_tokens
                    .unwrap_or_else(|| provider::estimate_tokens(text));
                let at = crate::time::iso_micros_now();
                self.record_tokens(account, Some(user), tokens, &at);
                let mut v = answer.vectors;
                v.pop().ok_or_else(|| EmbedError::BadAnswer("empty".into()))
            }
            // A provider busy with document batches answers a query slowly: that says
            // nothing about its health and must not pause the background work.
            Err(e @ EmbedError::TimedOut(_)) => Err(e),
            Err(e) => {
                let retry_after = match &e {
                    EmbedError::Throttled { retry_after, .. } => {
                        retry_after.map(|d| d.min(MAX_RETRY_AFTER))
                    }
                    _ => None,
                };
                self.failed(&e, retry_after);
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
        self.nearest_where(q, scopes, k, &|_| true)
    }

    /// [`Embedder::nearest`] among the documents `keep` accepts (ACLs), before the top `k`.
    pub fn nearest_where(
        &self,
        q: &[f32],
        scopes: &[String],
        k: usize,
        keep: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, f32)> {
        let (Ok(docs), Ok(vectors)) = (self.docs.read(), self.vectors.read()) else {
            return Vec::new();
        };
        nearest::nearest(&docs, &vectors, q, scopes, k, keep)
    }

    pub fn status(&self) -> Value {
        let paused_ms = self
            .paused_until()
            .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64)
            .unwrap_or(0);
        let s = self.state.lock().ok();
        let failures = s.as_ref().map(|s| s.failures).unwrap_or(0);
        let batch = self.pace.batch();
        json!({
            "provider": self.cfg.dense.provider,
            "model": self.cfg.dense.model,
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
            "batch_size": batch,
            "batch_size_max": self.pace.max_batch(),
            "timeout_per_text_ms": self.pace.per_text().as_millis() as u64,
            "in_flight_limit": self.pace.in_flight_limit(),
            "in_flight_limit_max": Self::threads(&self.cfg),
            "requests_in_flight": self.pace.in_flight(),
            "timeouts": self.pace.timeouts.load(Ordering::Relaxed),
            "timed_out_texts": self.pace.timed_out_texts.load(Ordering::Relaxed),
            "throttled": self.pace.throttles.load(Ordering::Relaxed),
            "paused_ms": paused_ms,
        })
    }

    /// True while the provider is answering.
    pub fn is_healthy(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.failures == 0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
