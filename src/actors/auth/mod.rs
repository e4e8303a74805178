//! The AuthActor: the one owner of the in-memory account/user map, resolving API keys.
//!
//! It runs on its own Arbiter and never does I/O or Argon2 itself: loads, freshness checks,
//! probes and hash verifications are jobs on the storage pool whose results come back as
//! actor futures. Concurrent requests that need the same check share it (see [`gate`]).
//!
//! Freshness (README "Multi-instance consistency"):
//! * every request is answered from a map whose last freshness check started no longer than
//!   `auth.refresh_interval_ms` ago (0: a check that started after the request arrived);
//! * a miss on a key naming a known account probes that account's users.json (at most one
//!   probe per account per [`PROBE_SPACING_MAX`]); a miss naming an unknown account waits for
//!   a marker check that starts after it arrived (misses start at most one per
//!   [`PROBE_SPACING_MAX`], shared);
//! * local writes are applied at once through [`ApplyChange`].

mod freshness;
mod gate;
pub mod index;
mod resolve;
pub mod sink;
pub mod worker_cache;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::json;
use tokio::sync::oneshot;

use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::registry::load::{AccountSnapshot, Reload};
use crate::storage::Version;

use crate::jobs::auth as jobs;
use crate::jobs::{BlockingJob, PoolError};

use super::Pools;
use gate::Gate;
use index::KeyIndex;

/// Longest gap between two probes of one account's users.json on behalf of misses.
pub const PROBE_SPACING_MAX: Duration = Duration::from_millis(100);
/// Longest gap between two miss-driven marker checks (a miss waits at most about this long).
const MARKER_SPACING_MAX: Duration = Duration::from_secs(2);
/// Argon2 verifications running at once; beyond it a request gets 503 (each costs ~64 MiB
/// and tens of ms of a pool thread, so a flood of wrong keys must not queue without bound).
const MAX_ARGON_IN_FLIGHT: usize = 4;

/// Settings the actor needs.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub root_key: Option<String>,
    pub refresh_interval: Duration,
    /// How often the sweep looks for registry changes whose announcement was lost (a writer
    /// killed between its registry write and its marker bump, and never retried).
    pub sweep_interval: Duration,
    /// Where applied snapshots publish accounts' stored configuration.
    pub configs: crate::storage::account_config::AccountConfigs,
    /// Where the actor publishes its map epoch and freshness for the HTTP workers' caches.
    pub published: Arc<worker_cache::Published>,
}

/// Counters exposed through [`AuthStatus`] (observer `components.auth.status`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counters {
    /// Keys resolved, by the actor or (see `worker_cache_hits`) by an HTTP worker's cache.
    pub resolves: u64,
    /// Resolves answered by an HTTP worker's cache without asking the actor.
    pub worker_cache_hits: u64,
    /// Freshness checks run (each one stat of the generation marker).
    pub freshness_checks: u64,
    /// Checks that found the marker moved and read it.
    pub marker_reads: u64,
    /// Reloads triggered by a changed generation (partial or full).
    pub reloads: u64,
    pub full_reloads: u64,
    /// Registry files (accounts.json, users.json) re-read after startup.
    pub files_reread: u64,
    /// Per-account users.json probes on behalf of misses.
    pub probes: u64,
    pub probe_reloads: u64,
    pub check_failures: u64,
    /// Hashed keys answered from a cache (the verification cache, or a worker's) / needing
    /// Argon2.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub argon_verifications: u64,
    pub argon_busy_rejections: u64,
    pub local_applies: u64,
    pub sweeps: u64,
    pub sweep_reloads: u64,
}

pub struct AuthActor {
    root_key: Option<String>,
    pools: Pools,
    interval: Duration,
    sweep_interval: Duration,
    index: KeyIndex,
    marker: Gate,
    probes: HashMap<String, Gate>,
    probe_spacing: Duration,
    loaded_generation: u64,
    marker_version: Option<Version>,
    /// Local writes: a sequence number per changed account. A load that started before the
    /// write may carry older data for that account, so its result is not applied there.
    local_seq: u64,
    local_touch: HashMap<String, u64>,
    loads_in_flight: usize,
    storage_error: Option<String>,
    argon_pending: HashMap<[u8; 32], Vec<oneshot::Sender<Option<Identity>>>>,
    counters: Counters,
    loaded: bool,
    /// Bumped on every change of the map (published for the workers' caches).
    map_epoch: u64,
    sweeping: bool,
    published: Arc<worker_cache::Published>,
}

impl AuthActor {
    pub fn new(config: AuthConfig, pools: Pools) -> Self {
        AuthActor {
            root_key: config.root_key,
            pools,
            interval: config.refresh_interval,
            sweep_interval: config.sweep_interval,
            index: KeyIndex::new(config.configs),
            marker: Gate::new(config.refresh_interval.min(MARKER_SPACING_MAX)),
            probes: HashMap::new(),
            probe_spacing: config.refresh_interval.min(PROBE_SPACING_MAX),
            loaded_generation: 0,
            marker_version: None,
            local_seq: 0,
            local_touch: HashMap::new(),
            loads_in_flight: 0,
            storage_error: None,
            argon_pending: HashMap::new(),
            counters: Counters::default(),
            loaded: false,
            map_epoch: 0,
            sweeping: false,
            published: config.published,
        }
    }

    /// Record a change of the in-memory map (call after changing it).
    fn map_changed(&mut self) {
        self.map_epoch += 1;
        self.published.publish_epoch(self.map_epoch);
    }

    /// Submit `job` and call `done` on the actor with its flattened result.
    fn spawn_job<J, T>(
        &mut self,
        ctx: &mut Context<Self>,
        job: J,
        done: impl FnOnce(&mut Self, Result<T, String>, &mut Context<Self>) + 'static,
    ) where
        J: BlockingJob<Output = ServiceResult<T>>,
        T: Send + 'static,
    {
        let flatten =
            |r: Result<Result<ServiceResult<T>, PoolError>, oneshot::error::RecvError>| match r {
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(e.message),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("storage pool stopped".to_string()),
            };
        match self.pools.storage().submit(job) {
            Ok(rx) => {
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(rx)
                        .map(move |r, act, ctx| done(act, flatten(r), ctx)),
                );
            }
            Err(e) => done(self, Err(e.to_string()), ctx),
        }
    }

    fn status(&self) -> serde_json::Value {
        // Resolves answered by the workers' caches count as resolves (and hashed keys among
        // them as verification-cache hits), as they did before the caches existed.
        let mut counters = self.counters.clone();
        counters.worker_cache_hits = self.published.worker_hits();
        counters.resolves += counters.worker_cache_hits;
        counters.cache_hits += self.published.worker_hashed_hits();
        json!({
            "root_key_configured": self.root_key.is_some(),
            "loaded": self.loaded,
            "refresh_interval_ms": self.interval.as_millis() as u64,
            "generation": self.loaded_generation,
            "accounts": self.index.account_count(),
            "users": self.index.user_count(),
            "storage_ok": self.storage_error.is_none(),
            "storage_error": self.storage_error,
            "check_in_flight": self.marker.in_flight(),
            "counters": counters,
        })
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.sweep_interval, |act, ctx| act.sweep(ctx));
    }
}

/// Resolve a presented API key to an identity (spec §2.4).
#[derive(Message)]
#[rtype(result = "ServiceResult<Resolved>")]
pub struct ResolveKey {
    pub key: String,
}

/// A resolved key, and the map epoch it was looked up in if a worker may cache it
/// ([`worker_cache`]).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub identity: Identity,
    pub cacheable_at: Option<u64>,
    /// Answered from the Argon2 verification cache (the key is stored hashed).
    pub hashed: bool,
}

/// Load the whole registry (startup, before serving).
#[derive(Message)]
#[rtype(result = "ServiceResult<()>")]
pub struct InitialLoad;

impl Handler<InitialLoad> for AuthActor {
    type Result = ResponseActFuture<Self, ServiceResult<()>>;

    fn handle(&mut self, _msg: InitialLoad, _ctx: &mut Self::Context) -> Self::Result {
        let job = self.pools.storage().submit(jobs::LoadRegistry);
        let fut = async move {
            match job {
                Ok(rx) => match rx.await {
                    Ok(Ok(result)) => result,
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err(ServiceError::unavailable("storage", "pool stopped")),
                },
                Err(e) => Err(e.into()),
            }
        };
        Box::pin(fut.into_actor(self).map(|result, act, _ctx| {
            let out = result?;
            if let Some(Reload::Full(snapshots)) = out.reload {
                act.index.replace_all(snapshots, &[]);
                act.map_changed();
            }
            act.loaded_generation = out.generation;
            act.marker_version = out.marker_version;
            act.loaded = true;
            tracing::info!(
                accounts = act.index.account_count(),
                users = act.index.user_count(),
                generation = act.loaded_generation,
                "registry loaded"
            );
            Ok(())
        }))
    }
}

/// A registry change made by this process: apply it at once. `ack` is answered when applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyChange {
    pub generation: u64,
    pub account: String,
    pub snapshot: Option<AccountSnapshot>,
    pub ack: Option<crossbeam_channel::Sender<()>>,
}

impl Handler<ApplyChange> for AuthActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyChange, _ctx: &mut Self::Context) {
        self.apply_local(msg.generation, &msg.account, msg.snapshot);
        if let Some(ack) = msg.ack {
            let _ = ack.try_send(());
        }
    }
}

/// Counters and state for observers and metrics.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct AuthStatus;

impl Handler<AuthStatus> for AuthActor {
    type Result = MessageResult<AuthStatus>;

    fn handle(&mut self, _msg: AuthStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}
