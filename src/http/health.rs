//! Storage health: the last known probe result, which `/health`, `/ready` and observers read
//! without I/O, refreshed by [`ProbeStorage`] jobs.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::actors::Pools;
use crate::jobs::health::ProbeStorage;

/// The storage state as last observed.
#[derive(Debug, Clone, Serialize)]
pub struct StorageHealth {
    pub backend: &'static str,
    pub location: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Seconds since the Unix epoch of the last probe.
    pub checked_at: f64,
}

/// Shared, cheaply readable storage health.
#[derive(Clone)]
pub struct HealthMonitor {
    state: Arc<RwLock<StorageHealth>>,
}

impl HealthMonitor {
    pub fn new(backend: &'static str, location: String) -> Self {
        HealthMonitor {
            state: Arc::new(RwLock::new(StorageHealth {
                backend,
                location,
                ok: true,
                error: None,
                checked_at: 0.0,
            })),
        }
    }

    pub fn snapshot(&self) -> StorageHealth {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn record(&self, result: &Result<(), String>) {
        let now = crate::time::epoch_secs_now();
        let mut s = match self.state.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        s.ok = result.is_ok();
        s.error = result.as_ref().err().cloned();
        s.checked_at = now;
    }

    /// Probe through the storage pool, bounded by `timeout`; records and returns the result.
    pub async fn probe(&self, pools: &Pools, timeout: Duration) -> Result<(), String> {
        let result = match tokio::time::timeout(timeout, pools.storage().run(ProbeStorage)).await {
            Ok(Ok(r)) => r,
            Ok(Err(pool_err)) => Err(pool_err.to_string()),
            Err(_) => Err(format!(
                "storage did not answer within {} ms",
                timeout.as_millis()
            )),
        };
        self.record(&result);
        result
    }

    /// Re-probe every `every` in the background, so observers see a recent state.
    pub fn spawn_periodic(&self, pools: Pools, every: Duration) {
        let me = self.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = me.probe(&pools, Duration::from_secs(5)).await;
            }
        });
    }
}
