//! The single index writer: a one-thread SyncArbiter actor that owns the [`Indexer`] and runs
//! its steps (apply own changes, tail other instances' change logs, reconcile slices). It is
//! woken by every local change record and by a timer every `search.refresh_interval_ms`.
//! Queries never run here: they are jobs on the storage pool reading the shared index.
//!
//! With a dense model configured, a second small SyncArbiter pool (the embedders) computes or
//! loads document vectors in the background, woken by the same kind of timer; a slow or
//! failing provider only delays vectors, never indexing or queries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::prelude::*;

use crate::config::Settings;
use crate::search::changes::Recorder;
use crate::search::embed::Embedder;
use crate::search::index::{IndexError, SearchIndex};
use crate::search::index_dirs;
use crate::search::indexer::Indexer;
use crate::storage::Storage;

/// Ask the writer for one step.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Step;

/// Coalesces wake-ups: at most one `Step` waits in the mailbox at a time.
#[derive(Default)]
pub struct Waker {
    pending: AtomicBool,
    addr: OnceLock<Addr<IndexWriterActor>>,
}

impl Waker {
    pub fn wake(&self) {
        if let Some(addr) = self.addr.get() {
            if !self.pending.swap(true, Ordering::AcqRel) {
                addr.do_send(Step);
            }
        }
    }
}

pub struct IndexWriterActor {
    indexer: Indexer,
    storage: Arc<dyn Storage>,
    waker: Arc<Waker>,
}

impl Actor for IndexWriterActor {
    type Context = SyncContext<Self>;
}

impl Handler<Step> for IndexWriterActor {
    type Result = ();

    fn handle(&mut self, _msg: Step, ctx: &mut Self::Context) {
        self.waker.pending.store(false, Ordering::Release);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.indexer.step(self.storage.as_ref())
        }));
        match outcome {
            Ok(Ok(true)) => ctx.address().do_send(Step),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                self.indexer.note_error();
                tracing::warn!(error = %e, "search index step failed; retrying at the next interval");
            }
            Err(_) => {
                self.indexer.note_error();
                tracing::error!("search index step panicked; retrying at the next interval");
            }
        }
    }
}

/// Ask an embedder thread for one batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EmbedStep;

/// One embedder thread.
pub struct EmbedActor {
    embedder: Arc<Embedder>,
    storage: Arc<dyn Storage>,
    /// `EmbedStep`s sent and not yet handled (the timer tops it up to the thread count).
    pending: Arc<AtomicUsize>,
}

impl Actor for EmbedActor {
    type Context = SyncContext<Self>;
}

impl Handler<EmbedStep> for EmbedActor {
    type Result = ();

    fn handle(&mut self, _msg: EmbedStep, ctx: &mut Self::Context) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        let more = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.embedder.step(self.storage.as_ref())
        }))
        .unwrap_or(false);
        if more {
            self.pending.fetch_add(1, Ordering::AcqRel);
            ctx.address().do_send(EmbedStep);
        }
    }
}

/// What handlers and startup need of search.
#[derive(Clone)]
pub struct SearchHandle {
    pub index: Arc<SearchIndex>,
    pub recorder: Arc<Recorder>,
    /// The dense model, when one is configured.
    pub embedder: Option<Arc<Embedder>>,
    waker: Arc<Waker>,
}

impl SearchHandle {
    /// Wait (asynchronously, at most `deadline`) until every change this process recorded
    /// for `account` before the call is applied to the index: read-your-writes for find.
    /// False on timeout.
    pub async fn wait_fresh(&self, account: &str, deadline: Duration) -> bool {
        let target = self.recorder.recorded_for(account);
        let stats = &self.index.stats;
        // Subscribed before the check, so a count published in between is not missed.
        let mut applied = stats.applied_local.subscribe();
        if stats.applied_for(account) >= target {
            return true;
        }
        self.waker.wake();
        let reached = tokio::time::timeout(
            deadline,
            applied.wait_for(|_| stats.applied_for(account) >= target),
        )
        .await;
        reached.is_ok_and(|seen| seen.is_ok())
    }

    /// The index's state for /ready, /metrics and the observer.
    pub fn status(&self) -> serde_json::Value {
        let mut s = self.index.status(self.recorder.recorded());
        s["embedding"] = match &self.embedder {
            Some(e) => e.status(),
            None => serde_json::json!({"state": "not_configured", "backlog": 0}),
        };
        s
    }

    /// True while the index is still being built from storage.
    pub fn catching_up(&self) -> bool {
        self.index.stats.building.load(Ordering::Relaxed)
    }
}

/// Where instance index directories live when `search.index_dir` is not set.
pub fn index_base(settings: &Settings) -> PathBuf {
    settings.storage.data_dir.join(".longship").join("search")
}

/// Open the index (refusing a directory another process holds), create the process's change
/// recorder (jobs that change indexed content get it through the returned handle), and start
/// the writer thread and its timer. Must run inside an actix System.
pub fn start(settings: &Settings, storage: Arc<dyn Storage>) -> Result<SearchHandle, IndexError> {
    let index = Arc::new(open_niced(settings)?);
    let dir = index.dir.clone();
    let embedder = match Embedder::new(&settings.embedding, settings.search.max_indexed_bytes) {
        None => None,
        Some(Ok(e)) => Some(Arc::new(e)),
        Some(Err(msg)) => {
            return Err(IndexError::Io {
                dir: dir.clone(),
                source: std::io::Error::other(msg),
            })
        }
    };
    let waker = Arc::new(Waker::default());
    let wake_for_records = waker.clone();
    let recorder = Arc::new(Recorder::new(Box::new(move || wake_for_records.wake())));
    let indexer = Indexer::new(
        index.clone(),
        recorder.clone(),
        embedder.clone(),
        settings.search.clone(),
    );
    tracing::info!(
        dir = %dir.display(),
        docs = index.num_docs(),
        building = indexer.is_building(),
        writer = recorder.writer(),
        "search index opened"
    );
    let storage_for_embed = storage.clone();
    let slot = Mutex::new(Some(indexer));
    let actor_waker = waker.clone();
    let nice = settings.pools.thread_nice;
    let addr = SyncArbiter::start_with_thread_builder(
        1,
        || std::thread::Builder::new().name("search-writer".into()),
        #[allow(
            clippy::expect_used,
            reason = "a one-thread arbiter calls its factory once, so the slot is full"
        )]
        move || {
            crate::actors::pool::lower_thread_priority(nice);
            let indexer = slot
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .expect("the search writer has exactly one thread");
            IndexWriterActor {
                indexer,
                storage: storage.clone(),
                waker: actor_waker.clone(),
            }
        },
    );
    let _ = waker.addr.set(addr);
    let timer_waker = waker.clone();
    // Twice per interval: a record made just after a poll is then applied within half an
    // interval plus the apply and commit, inside `refresh_interval_ms` (polling once per
    // interval put the 99th percentile just past it).
    let every = Duration::from_millis((settings.search.refresh_interval_ms / 2).max(5));
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            timer_waker.wake();
        }
    });
    waker.wake();
    if let Some(e) = &embedder {
        start_embedders(settings, e.clone(), storage_for_embed);
    }
    Ok(SearchHandle {
        index,
        recorder,
        embedder,
        waker,
    })
}

/// Open the index (`search.index_dir`, else a claimed instance directory) on a short-lived
/// thread running at `pools.thread_nice`: tantivy spawns its indexing and merge threads when
/// the writer is created, and a Linux thread inherits its creator's nice value, so a full
/// rebuild yields the CPU to the HTTP workers.
fn open_niced(settings: &Settings) -> Result<SearchIndex, IndexError> {
    let nice = settings.pools.thread_nice;
    let memory_mb = settings.search.writer_memory_mb;
    let configured = settings.search.index_dir.clone();
    let dir = configured.clone().unwrap_or_else(|| index_base(settings));
    let owned = dir.clone();
    let opener = std::thread::Builder::new()
        .name("search-open".into())
        .spawn(move || {
            crate::actors::pool::lower_thread_priority(nice);
            let open = |d: &std::path::Path| SearchIndex::open(d, memory_mb);
            match configured {
                Some(d) => open(&d),
                None => index_dirs::open_claimed(&owned, &open),
            }
        })
        .map_err(|source| IndexError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
    opener.join().unwrap_or_else(|_| {
        Err(IndexError::Io {
            dir: dir.to_path_buf(),
            source: std::io::Error::other("opening the search index panicked"),
        })
    })
}

/// Embedder threads (`embedding.max_concurrent`, at most 4) and their 500 ms timer. A thread
/// waiting for a request slot (the adaptive in-flight limit) blocks in the embedder; the
/// timer only tops the mailbox up to one step per thread, so steps never pile up meanwhile.
fn start_embedders(settings: &Settings, embedder: Arc<Embedder>, storage: Arc<dyn Storage>) {
    let threads = Embedder::threads(&settings.embedding);
    let nice = settings.pools.thread_nice;
    tracing::info!(
        model = embedder.model(),
        api_base = %settings.embedding.dense.api_base,
        threads,
        "dense retrieval enabled"
    );
    let pending = Arc::new(AtomicUsize::new(0));
    let pending_for_actors = pending.clone();
    let addr = SyncArbiter::start_with_thread_builder(
        threads,
        || std::thread::Builder::new().name("embedder".into()),
        #[allow(
            clippy::expect_used,
            reason = "a one-thread arbiter calls its factory once, so the slot is full"
        )]
        move || {
            crate::actors::pool::lower_thread_priority(nice);
            EmbedActor {
                embedder: embedder.clone(),
                storage: storage.clone(),
                pending: pending_for_actors.clone(),
            }
        },
    );
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            while pending.load(Ordering::Acquire) < threads {
                pending.fetch_add(1, Ordering::AcqRel);
                addr.do_send(EmbedStep);
            }
        }
    });
}
