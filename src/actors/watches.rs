//! The watch scheduler (issue #24): one thread per instance that knows when each watch of every
//! account is due and hands due ones to the ingest pool as `RunWatch` jobs (in the account's
//! lane). It sleeps on a crossbeam channel until the earliest due time, the next scan
//! (`watch.scan_interval_secs`, for watches created or changed on other instances) or a
//! message: a change made on this instance, or a run that ended. Which instance runs a due
//! watch is decided by the watch's lease in shared storage (`ingest::watch`); the others find it
//! busy, or no longer due, and learn its next time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::actors::{Lane, Pools};
use crate::config::Settings;
use crate::error::ServiceResult;
use crate::ingest::chat::ChatClient;
use crate::ingest::gate::IngestRuntime;
use crate::ingest::watch::RunOutcome;
use crate::jobs::watches::RunWatch;
use crate::jobs::{BlockingJob, JobContext};
use crate::search::changes::Recorder;
use crate::storage::watches;

/// Pause before looking again at a watch whose lease another instance holds (it runs there;
/// once it ends, its next time is read) or that could not start here.
const RETRY: Duration = Duration::from_secs(2);

/// Figures for the observer's queue component.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Watches due and not yet running on this instance (as of the last look).
    pub due: AtomicUsize,
    /// Watch runs in flight on this instance.
    pub running: AtomicUsize,
    /// Active watches known to this instance.
    pub active: AtomicUsize,
}

enum Msg {
    /// The account's watches changed on this instance: read them again now.
    Changed(String),
    /// A run ended.
    Finished {
        account: String,
        task_id: String,
        outcome: Result<ServiceResult<RunOutcome>, ()>,
    },
}

/// What routes hold: tell the scheduler about changes, read its figures.
#[derive(Clone)]
pub struct WatchHandle {
    tx: Sender<Msg>,
    pub stats: Arc<WatchStats>,
}

impl WatchHandle {
    /// The account's watches changed here (created, patched, deleted, triggered).
    pub fn changed(&self, account: &str) {
        let _ = self.tx.send(Msg::Changed(account.to_string()));
    }
}

/// What a run needs besides the watch.
pub struct RunDeps {
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
    pub chat: Option<ChatClient>,
    pub ingest: Arc<IngestRuntime>,
}

/// Start the scheduler thread.
pub fn start(pools: Pools, deps: RunDeps) -> std::io::Result<WatchHandle> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let stats = Arc::new(WatchStats::default());
    let handle = WatchHandle {
        tx: tx.clone(),
        stats: stats.clone(),
    };
    let scheduler = Scheduler {
        pools,
        deps,
        tx,
        stats,
        known: HashMap::new(),
        retry_at: HashMap::new(),
        running: HashSet::new(),
    };
    std::thread::Builder::new()
        .name("watch-scheduler".into())
        .spawn(move || scheduler.run(rx))?;
    Ok(handle)
}

type Key = (String, String);

struct Scheduler {
    pools: Pools,
    deps: RunDeps,
    tx: Sender<Msg>,
    stats: Arc<WatchStats>,
    /// Every watch's next time (epoch seconds; `None`: paused), as last read.
    known: HashMap<Key, Option<f64>>,
    /// Watches not to look at before this instant (busy elsewhere, or no room here).
    retry_at: HashMap<Key, Instant>,
    running: HashSet<Key>,
}

impl Scheduler {
    fn run(mut self, rx: Receiver<Msg>) {
        let every = Duration::from_secs(self.deps.settings.watch.scan_interval_secs.max(1));
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                self.scan(None);
                next_scan = Instant::now() + every;
            }
            self.start_due();
            let wait = self.until_next(next_scan);
            match rx.recv_timeout(wait) {
                Ok(msg) => self.handle(msg),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
            // Take every message already waiting before looking at due times again.
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Changed(account) => self.scan(Some(account)),
            Msg::Finished {
                account,
                task_id,
                outcome,
            } => {
                let key = (account.clone(), task_id);
                self.running.remove(&key);
                self.stats.running.fetch_sub(1, Ordering::Relaxed);
                match outcome {
                    Ok(Ok(RunOutcome::Busy)) | Ok(Ok(RunOutcome::Deferred)) => {
                        self.retry_at.insert(key, Instant::now() + RETRY);
                    }
                    Ok(Ok(RunOutcome::Gone)) => {
                        self.known.remove(&key);
                    }
                    Ok(Ok(RunOutcome::NotDue(next))) => {
                        self.known.insert(key, next);
                    }
                    Ok(Ok(outcome)) => {
                        tracing::info!(account = %key.0, task = %key.1, ?outcome, "watch run");
                        self.scan(Some(account));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(account = %key.0, task = %key.1, error = %e.message, "watch run failed");
                        self.retry_at.insert(key, Instant::now() + RETRY);
                    }
                    Err(()) => {
                        tracing::warn!(account = %key.0, task = %key.1, "watch run did not finish");
                        self.retry_at.insert(key, Instant::now() + RETRY);
                    }
                }
            }
        }
    }

    /// Read every account's watches (or one account's) from shared storage. Runs on this
    /// thread: it is the scheduler's own blocking thread, never an HTTP worker.
    fn scan(&mut self, only: Option<String>) {
        let storage = self.pools.backend().clone();
        let accounts = only.clone().map(|a| vec![a]);
        match watches::scan(storage.as_ref(), accounts.as_deref()) {
            Ok(found) => {
                match &only {
                    Some(a) => self.known.retain(|(acc, _), _| acc != a),
                    None => self.known.clear(),
                }
                for d in found {
                    self.known.insert((d.account, d.task_id), d.next);
                }
                let active = self.known.values().filter(|n| n.is_some()).count();
                self.stats.active.store(active, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e.message, "watches not scanned"),
        }
    }

    fn start_due(&mut self) {
        let now = crate::time::epoch_secs_now();
        let instant = Instant::now();
        let due: Vec<Key> = self
            .known
            .iter()
            .filter(|(k, next)| {
                next.is_some_and(|t| t <= now)
                    && !self.running.contains(*k)
                    && self.retry_at.get(*k).is_none_or(|at| *at <= instant)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.retry_at.remove(&key);
            let job = Reporting {
                job: Some(RunWatch {
                    account: key.0.clone(),
                    task_id: key.1.clone(),
                    settings: self.deps.settings.clone(),
                    recorder: self.deps.recorder.clone(),
                    chat: self.deps.chat.clone(),
                    ingest: self.deps.ingest.clone(),
                }),
                report: Report {
                    tx: self.tx.clone(),
                    key: Some(key.clone()),
                },
            };
            let lane = Lane::Account(Arc::from(key.0.as_str()));
            match self.pools.ingest().submit_in(lane, job) {
                Ok(_) => {
                    self.running.insert(key);
                    self.stats.running.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch run not queued; retrying");
                    self.retry_at.insert(key, Instant::now() + RETRY);
                }
            }
        }
        let due_waiting = self
            .known
            .iter()
            .filter(|(k, next)| next.is_some_and(|t| t <= now) && !self.running.contains(*k))
            .count();
        self.stats.due.store(due_waiting, Ordering::Relaxed);
    }

    /// How long to sleep: until the next scan, the earliest due watch or retry.
    fn until_next(&self, next_scan: Instant) -> Duration {
        let now = crate::time::epoch_secs_now();
        let instant = Instant::now();
        let mut wait = next_scan.saturating_duration_since(instant);
        for (key, next) in &self.known {
            if self.running.contains(key) {
                continue;
            }
            let Some(t) = next else { continue };
            let mut at = Duration::from_secs_f64((t - now).clamp(0.0, 86_400.0));
            if let Some(retry) = self.retry_at.get(key) {
                at = at.max(retry.saturating_duration_since(instant));
            }
            wait = wait.min(at);
        }
        wait
    }
}

/// Sends the run's outcome back to the scheduler, also when the job panicked (dropped unsent).
struct Report {
    tx: Sender<Msg>,
    key: Option<Key>,
}

impl Report {
    fn send(&mut self, outcome: Result<ServiceResult<RunOutcome>, ()>) {
        if let Some((account, task_id)) = self.key.take() {
            let _ = self.tx.send(Msg::Finished {
                account,
                task_id,
                outcome,
            });
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.send(Err(()));
    }
}

struct Reporting {
    job: Option<RunWatch>,
    report: Report,
}

impl BlockingJob for Reporting {
    type Output = ();
    fn run(mut self, ctx: &JobContext<'_>) -> Self::Output {
        if let Some(job) = self.job.take() {
            let outcome = job.run(ctx);
            self.report.send(Ok(outcome));
        }
    }
}
