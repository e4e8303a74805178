//! The audit log's writer: requests hand entries to [`AuditLog::record`] (never blocking, never
//! touching storage); a task on its own Arbiter takes everything queued every
//! `audit.flush_interval_ms` and writes it as one batch (`jobs::audit::FlushAudit`, storage
//! pool, system lane). The window a crash can lose is the entries queued since the last batch
//! plus the one being written: at most about one interval and one storage write (~1 s).
//! Entries beyond `audit.queue_limit` are dropped and counted (`/metrics`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::AuditSettings;
use crate::jobs::audit::{FlushAudit, SweepAudit, WriterState};
use crate::storage::audit::{Entry, UsageEntry};

use super::{Lane, Pools};

/// How often the retention sweep runs (each instance; removing a day twice is harmless).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub flush_failures: AtomicU64,
    pub queued: AtomicU64,
}

/// The handle requests record through. Cloning shares it.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Entry>,
    pub stats: Arc<AuditStats>,
    /// The server's default (`audit.enabled`); an account's setting overrides it.
    pub enabled_by_default: bool,
    stopping: Arc<AtomicBool>,
    flushed: Arc<tokio::sync::Notify>,
}

impl AuditLog {
    /// Queue one entry; dropped (and counted) when the queue is full.
    pub fn record(&self, entry: Entry) {
        match self.tx.try_send(entry) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Write what is queued now (graceful shutdown); waits at most `within`.
    pub async fn flush_now(&self, within: Duration) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(within, self.flushed.notified()).await;
    }
}

/// Start the writer on its own Arbiter. `writer` names this process's logs.
pub fn start(settings: &AuditSettings, pools: Pools, writer: String) -> AuditLog {
    let (tx, rx) = crossbeam_channel::bounded(settings.queue_limit);
    let log = AuditLog {
        tx,
        stats: Arc::new(AuditStats::default()),
        enabled_by_default: settings.enabled,
        stopping: Arc::new(AtomicBool::new(false)),
        flushed: Arc::new(tokio::sync::Notify::new()),
    };
    let interval = Duration::from_millis(settings.flush_interval_ms);
    let retention = settings.retention_days;
    let arbiter = actix::Arbiter::new();
    let (stats, stopping, flushed) = (log.stats.clone(), log.stopping.clone(), log.flushed.clone());
    let state = Arc::new(Mutex::new(WriterState::new(writer)));
    arbiter.spawn(async move {
        let mut pending: Vec<Entry> = Vec::new();
        let mut pending_usage: Vec<UsageEntry> = Vec::new();
        let mut since_sweep = SWEEP_EVERY;
        loop {
            tokio::time::sleep(interval).await;
            drain(&rx, &mut pending, &stats);
            pending_usage.extend(crate::telemetry::usage::take().into_iter().map(usage_entry));
            if pending_usage.len() > crate::telemetry::usage::MAX_PENDING {
                let excess = pending_usage.len() - crate::telemetry::usage::MAX_PENDING;
                pending_usage.drain(..excess);
            }
            if !pending.is_empty() || !pending_usage.is_empty() {
                let entries = Arc::new(std::mem::take(&mut pending));
                let usage = Arc::new(std::mem::take(&mut pending_usage));
                let job = FlushAudit {
                    state: state.clone(),
                    entries: entries.clone(),
                    usage: usage.clone(),
                };
                match pools.storage().run_in(Lane::System, job).await {
                    Ok(Ok(())) => {
                        stats
                            .written
                            .fetch_add(entries.len() as u64, Ordering::Relaxed);
                    }
                    failed => {
                        stats.flush_failures.fetch_add(1, Ordering::Relaxed);
                        let why = match failed {
                            Ok(Err(e)) => e.message,
                            Err(e) => e.to_string(),
                            Ok(Ok(())) => String::new(),
                        };
                        tracing::warn!(entries = entries.len(), error = %why, "audit: batch not written; retrying");
                        // Keep it for the next round, within the queue's bound.
                        pending = Arc::try_unwrap(entries).unwrap_or_else(|a| (*a).clone());
                        pending_usage = Arc::try_unwrap(usage).unwrap_or_else(|a| (*a).clone());
                    }
                }
            }
            if stopping.load(Ordering::Relaxed) && pending.is_empty() && rx.is_empty() {
                flushed.notify_waiters();
            }
            since_sweep += interval;
            if retention > 0 && since_sweep >= SWEEP_EVERY {
                since_sweep = Duration::ZERO;
                let job = SweepAudit {
                    retention_days: retention,
                };
                if let Ok(Ok(n)) = pools.storage().run_in(Lane::System, job).await {
                    if n > 0 {
                        tracing::info!(days = n, "audit: removed days past retention");
                    }
                }
            }
        }
    });
    // The arbiter lives as long as the process (its handle would stop it when dropped).
    std::mem::forget(arbiter);
    log
}

fn usage_entry(u: crate::telemetry::usage::Usage) -> UsageEntry {
    UsageEntry {
        created_at: u.at,
        account_id: u.account,
        user_id: u.user,
        source: u.source.to_string(),
        model: u.model,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
    }
}

/// Move queued entries into `pending`, dropping (and counting) what exceeds the bound.
fn drain(rx: &Receiver<Entry>, pending: &mut Vec<Entry>, stats: &AuditStats) {
    let limit = rx.capacity().unwrap_or(usize::MAX);
    for e in rx.try_iter() {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        if pending.len() >= limit {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.push(e);
        }
    }
}
