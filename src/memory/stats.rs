//! This instance's memory-extraction figures for `/metrics` (read at scrape time).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::model::OutcomeKind;

#[derive(Debug, Default)]
pub struct MemoryStats {
    outcomes: [AtomicU64; 6],
    /// Backlog entries seen by the last scan (every account, every instance's commits).
    pub backlog: AtomicU64,
    /// Backlog entries due now at the last scan.
    pub backlog_due: AtomicU64,
    /// Extractions running on this instance.
    pub running: AtomicU64,
    /// Extractions finished (task completed) on this instance.
    pub completed: AtomicU64,
    /// Extractions put back for later (model unavailable).
    pub deferred: AtomicU64,
    /// Extractions put back to the next UTC day (the account's daily token budget is spent).
    pub budget_deferred: AtomicU64,
    /// Memory files added, updated or deleted.
    pub written: AtomicU64,
    /// Chat tokens spent on extraction, per account.
    tokens: Mutex<HashMap<String, u64>>,
    /// Calls in a row the provider failed or did not answer (0 after any answer).
    model_failures: AtomicU64,
}

impl MemoryStats {
    pub fn count(&self, kind: OutcomeKind) {
        self.outcomes[kind.index()].fetch_add(1, Ordering::Relaxed);
        if matches!(kind, OutcomeKind::ProviderError | OutcomeKind::Timeout) {
            self.model_failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.model_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Extraction calls in a row the chat model failed (the observer's model health).
    pub fn consecutive_model_failures(&self) -> u64 {
        self.model_failures.load(Ordering::Relaxed)
    }

    pub fn outcomes(&self) -> Vec<(&'static str, u64)> {
        OutcomeKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.outcomes[k.index()].load(Ordering::Relaxed)))
            .collect()
    }

    pub fn add_tokens(&self, account: &str, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut m) = self.tokens.lock() {
            *m.entry(account.to_string()).or_default() += n;
        }
    }

    pub fn tokens(&self) -> Vec<(String, u64)> {
        self.tokens
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }
}
