//! Per-operation deadline and load shedding for the S3 backend.
//!
//! A hung store (accepting connections, never answering) would otherwise hold every storage
//! call for the client's full request timeout and retries, and every pool thread with it. Each
//! call is bounded by `storage.s3.operation_timeout_ms`, and once a call times out or finds the
//! store unreachable the backend *sheds* new calls at once (503 + Retry-After upstream) instead
//! of sending them into the same hang. One call per [`TRIAL_EVERY`] still goes through as a
//! trial, and the readiness probe always does; the first success closes the gate again.
//! Only "unreachable" trips it: a full or refusing store answers, so it is not down.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::storage::{StorageError, StorageResult};

/// Spacing of trial calls while shedding.
pub const TRIAL_EVERY: Duration = Duration::from_secs(1);

/// The shared state of one backend.
#[derive(Debug)]
pub struct Deadline {
    per_operation: Duration,
    /// `Some(t)`: the store looked unreachable; calls before `t` are shed, the first at or
    /// after `t` is a trial (and pushes `t` one trial spacing further).
    /// While shedding: when the next trial call may go, and the failure that tripped the gate
    /// (repeated in the shed error, so the log of a shed call still names the store and cause).
    shedding_until: Mutex<Option<(Instant, String)>>,
}

/// Whether a call may go to the store.
impl Deadline {
    pub fn new(per_operation: Duration) -> Self {
        Deadline {
            per_operation,
            shedding_until: Mutex::new(None),
        }
    }

    pub fn per_operation(&self) -> Duration {
        self.per_operation
    }

    fn admit(&self, now: Instant) -> Result<(), String> {
        let mut gate = self
            .shedding_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match gate.as_mut() {
            None => Ok(()),
            Some((until, _)) if now >= *until => {
                *until = now + TRIAL_EVERY;
                Ok(())
            }
            Some((_, cause)) => Err(cause.clone()),
        }
    }

    fn record<T>(&self, result: &StorageResult<T>, now: Instant) {
        let mut gate = self
            .shedding_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match result {
            Err(StorageError::Unavailable(cause)) => {
                if gate.is_none() {
                    tracing::warn!("object store unreachable; shedding new storage calls");
                }
                let until = gate
                    .as_ref()
                    .map_or(now + TRIAL_EVERY, |(t, _)| (*t).max(now + TRIAL_EVERY));
                *gate = Some((until, cause.clone()));
            }
            _ => {
                if gate.take().is_some() {
                    tracing::info!("object store answers again; storage calls resume");
                }
            }
        }
    }

    /// True while new calls are being shed.
    #[cfg(test)]
    fn shedding(&self) -> bool {
        self.shedding_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Run `fut` on `handle` within `limit`, unless the store is being shed (`probe`: always
    /// run, the readiness check is what notices recovery without traffic).
    pub fn run<T>(
        &self,
        handle: &tokio::runtime::Handle,
        limit: Duration,
        probe: bool,
        fut: impl Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        if !probe {
            if let Err(cause) = self.admit(Instant::now()) {
                return Err(StorageError::Unavailable(format!(
                    "new work is shed until the object store answers again; last failure: {cause}"
                )));
            }
        }
        let result = match handle.block_on(async { tokio::time::timeout(limit, fut).await }) {
            Ok(r) => r,
            Err(_) => Err(StorageError::Unavailable(format!(
                "the object store did not answer within {} ms",
                limit.as_millis()
            ))),
        };
        self.record(&result, Instant::now());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_unreachable_sheds_then_trials() {
        let d = Deadline::new(Duration::from_millis(50));
        let t0 = Instant::now();
        assert!(d.admit(t0).is_ok());
        d.record::<()>(&Err(StorageError::ReadOnly("full".into())), t0);
        assert!(!d.shedding(), "a full store is not down");
        d.record::<()>(&Err(StorageError::Unavailable("down".into())), t0);
        assert!(d.shedding());
        assert_eq!(d.admit(t0 + Duration::from_millis(10)), Err("down".into()));
        // One trial per spacing.
        let t1 = t0 + TRIAL_EVERY;
        assert!(d.admit(t1).is_ok());
        assert!(d.admit(t1).is_err());
        d.record(&Ok(()), t1);
        assert!(!d.shedding());
        assert!(d.admit(t1).is_ok());
    }

    #[test]
    fn a_hung_call_ends_at_the_deadline() {
        // Handle::block_on drives timers only on a multi-thread runtime (as the backend uses).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let d = Deadline::new(Duration::from_millis(50));
        let start = Instant::now();
        let r: StorageResult<()> = d.run(
            rt.handle(),
            d.per_operation(),
            false,
            std::future::pending(),
        );
        assert!(matches!(r, Err(StorageError::Unavailable(_))));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(d.shedding());
        let shed: StorageResult<()> =
            d.run(rt.handle(), d.per_operation(), false, async { Ok(()) });
        assert!(shed.is_err(), "shed at once while unreachable");
        let probed: StorageResult<()> =
            d.run(rt.handle(), d.per_operation(), true, async { Ok(()) });
        assert!(probed.is_ok());
        assert!(!d.shedding(), "the probe's success closes the gate");
    }
}
