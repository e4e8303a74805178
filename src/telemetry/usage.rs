//! Model token usage waiting to be written to the usage log (`/api/v1/console/tokens`): the
//! code that calls a model records what it spent here (never blocking, bounded: beyond
//! [`MAX_PENDING`] records are dropped and counted); the audit writer takes them each round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Records waiting for the writer.
pub const MAX_PENDING: usize = 65536;

/// One model call's tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub account: String,
    pub user: Option<String>,
    /// `vlm` (chat model) or `embedding`.
    pub source: &'static str,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// When it was spent (UTC, ISO 8601 with microseconds).
    pub at: String,
}

static PENDING: Mutex<Vec<Usage>> = Mutex::new(Vec::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Record one call's tokens.
pub fn record(usage: Usage) {
    if usage.input_tokens == 0 && usage.output_tokens == 0 {
        return;
    }
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if pending.len() >= MAX_PENDING {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    pending.push(usage);
}

/// Everything recorded since the last call.
pub fn take() -> Vec<Usage> {
    std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Records dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}
