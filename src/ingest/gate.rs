//! Per-instance ingestion state shared by the routes: per-account caps on running ingestions
//! (so one tenant's backlog cannot take every pool thread), gauges for /metrics, and the
//! optional chat model client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::chat::ChatClient;
use crate::config::Settings;
use crate::error::{ServiceError, ServiceResult};

/// Per-instance ingestion state shared by the routes.
pub struct IngestRuntime {
    per_account: usize,
    running: Mutex<HashMap<String, usize>>,
    /// Ingestions accepted and not finished on this instance (for /metrics).
    pub in_flight: AtomicUsize,
    /// Uploads being streamed into storage on this instance (for /metrics).
    pub uploads_in_flight: AtomicUsize,
    pub chat: Option<ChatClient>,
}

/// A running ingestion's place under its account's cap; released on drop.
pub struct IngestTicket {
    runtime: Arc<IngestRuntime>,
    account: String,
}

impl Drop for IngestTicket {
    fn drop(&mut self) {
        if let Ok(mut map) = self.runtime.running.lock() {
            if let Some(n) = map.get_mut(&self.account) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.account);
                }
            }
        }
        self.runtime.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IngestRuntime {
    pub fn new(settings: &Settings) -> IngestRuntime {
        IngestRuntime {
            per_account: settings.resources.max_concurrent_per_account,
            running: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            uploads_in_flight: AtomicUsize::new(0),
            chat: ChatClient::from_settings(&settings.vlm),
        }
    }

    /// A place for one more ingestion of `account`, or 429 when it already runs its share, so
    /// one tenant's backlog cannot take every pool thread.
    pub fn enter(self: &Arc<Self>, account: &str) -> ServiceResult<IngestTicket> {
        let mut map = self
            .running
            .lock()
            .map_err(|_| ServiceError::internal("ingest gate poisoned"))?;
        let n = map.entry(account.to_string()).or_insert(0);
        if *n >= self.per_account {
            return Err(ServiceError::new(
                crate::error::ErrorCode::ResourceExhausted,
                format!(
                    "This account already runs {} ingestion(s) on this server; retry when one \
                     finishes",
                    self.per_account
                ),
            )
            .retry_after(2));
        }
        *n += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(IngestTicket {
            runtime: self.clone(),
            account: account.to_string(),
        })
    }
}
