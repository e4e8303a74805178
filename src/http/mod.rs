//! HTTP: routes, extractors, the envelope and the error mapping. No I/O happens here; handlers
//! extract and validate, send a message to an actor or pool, and map the reply.

pub mod acl;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod console;
pub mod content;
pub mod diagnostics;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod fs;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod observer_cli;
pub mod openapi;
pub mod pack;
pub mod resources;
pub mod route_label;
pub mod routes;
pub mod search;
pub mod sessions;
pub mod skills;
pub mod snapshot;
pub mod stats;
pub mod system;
pub mod tags;
pub mod tasks;
pub mod user_settings;
pub mod watches;
pub mod webdav;

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde_json::Value;

use crate::actors::auth::worker_cache::{self, KeyDigest};
use crate::actors::auth::{AuthActor, AuthStatus, ResolveKey};
use crate::actors::Pools;
use crate::config::Settings;
use crate::error::ServiceError;
use crate::identity::{AuthMode, Identity};
use health::HealthMonitor;

/// Everything handlers share, built once before `HttpServer::new`.
#[derive(Clone)]
pub struct AppState {
    pub pools: Pools,
    pub auth: Addr<AuthActor>,
    /// What the AuthActor publishes for resolving keys on the worker (`worker_cache`).
    pub auth_published: Arc<worker_cache::Published>,
    pub mode: AuthMode,
    pub settings: Arc<Settings>,
    pub health: HealthMonitor,
    pub workers: usize,
    pub metrics: Arc<metrics::Metrics>,
    /// Where registry operations announce their changes (the AuthActor).
    pub registry_sink: Arc<dyn crate::storage::registry::RegistrySink>,
    /// The local search index and its writer.
    pub search: crate::actors::search::SearchHandle,
    /// Request-body bytes in flight, bounded by `server.max_inflight_body_bytes`.
    pub body_budget: Arc<admission::BodyBudget>,
    /// False while the account registry is still loading at startup (api_key mode).
    pub registry_loaded: Arc<std::sync::atomic::AtomicBool>,
    /// Accounts' effective settings (`acl.enabled`, audit, memory): `account_configs.effective(id)`.
    pub account_configs: crate::storage::account_config::AccountConfigs,
    /// The audit log's writer (`http::audit` records every mutation through it).
    pub audit: crate::actors::audit::AuditLog,
    /// Resource ingestion: per-account caps, the optional chat model.
    pub ingest: Arc<crate::ingest::gate::IngestRuntime>,
    /// Directory summaries that follow their children (`ingest::overview`): jobs that change
    /// what a directory holds without recording a search change call `mark_dirty` on it.
    pub overviews: Arc<crate::ingest::overview::OverviewRefresher>,
    /// Memory extraction: figures for /metrics and the wake-up of the scheduler.
    pub memory: Arc<MemoryRuntime>,
    /// The watch scheduler: routes tell it of changes; the observer reads its figures.
    pub watches: crate::actors::watches::WatchHandle,
}

/// What handlers share with the memory-extraction scheduler.
#[derive(Debug, Default)]
pub struct MemoryRuntime {
    pub stats: Arc<crate::memory::stats::MemoryStats>,
    /// A commit here wakes the scheduler at once (it polls otherwise).
    pub wake: tokio::sync::Notify,
    /// Accounts whose backlog changed here since the scheduler last looked.
    pub dirty: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl MemoryRuntime {
    /// Have the scheduler look at `account`'s backlog now.
    pub fn wake_account(&self, account: &str) {
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(account.to_string());
        }
        self.wake.notify_one();
    }

    /// The accounts to look at, emptied.
    pub fn take_dirty(&self) -> Vec<String> {
        self.dirty
            .lock()
            .map(|mut d| d.drain().collect())
            .unwrap_or_default()
    }
}

impl AppState {
    /// Who `key` belongs to: from this worker's cache while the AuthActor's map it came from
    /// is unchanged and within the refresh bound, else asked of the actor, waiting at most
    /// `deadline`.
    pub async fn resolve_key(
        &self,
        key: String,
        deadline: Duration,
    ) -> Result<Identity, ServiceError> {
        if !self.is_initialized() {
            return Err(
                ServiceError::unavailable("auth", "the account registry is still loading")
                    .retry_after(1),
            );
        }
        let digest = KeyDigest::of(&key);
        if let Some(identity) = worker_cache::lookup(&self.auth_published, &digest) {
            return Ok(identity);
        }
        match tokio::time::timeout(deadline, self.auth.send(ResolveKey { key })).await {
            Ok(Ok(answer)) => answer.map(|resolved| {
                if let Some(epoch) = resolved.cacheable_at {
                    let cached = worker_cache::CachedKey {
                        identity: resolved.identity.clone(),
                        hashed: resolved.hashed,
                    };
                    worker_cache::remember(&self.auth_published, digest, epoch, cached);
                }
                resolved.identity
            }),
            Ok(Err(mailbox)) => {
                Err(ServiceError::unavailable("auth", mailbox.to_string()).retry_after(1))
            }
            Err(_) => Err(
                ServiceError::unavailable("auth", "identity resolution timed out").retry_after(1),
            ),
        }
    }

    /// True once startup work (the registry load) has finished.
    pub fn is_initialized(&self) -> bool {
        self.registry_loaded
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The AuthActor's counters for observers.
    pub async fn auth_status(&self) -> Result<Value, String> {
        match tokio::time::timeout(Duration::from_secs(1), self.auth.send(AuthStatus)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("auth actor did not answer within 1 s".into()),
        }
    }
}

/// Register every route; used by the server and by tests alike.
pub fn configure(cfg: &mut web::ServiceConfig) {
    register(&mut routes::Routes::serving(cfg));
}

/// Every (method, path) `configure` registers (actix pattern syntax).
pub fn registered_routes() -> Vec<(actix_web::http::Method, String)> {
    let mut routes = routes::Routes::listing();
    register(&mut routes);
    routes.listed().to_vec()
}

fn register(routes: &mut routes::Routes) {
    system::configure(routes);
    openapi::configure(routes);
    metrics::configure(routes);
    admin::configure(routes);
    acl::configure(routes);
    fs::configure(routes);
    content::configure(routes);
    tags::configure(routes);
    search::configure(routes);
    sessions::configure(routes);
    stats::configure(routes);
    tasks::configure(routes);
    resources::configure(routes);
    watches::configure(routes);
    skills::configure(routes);
    pack::configure(routes);
    diagnostics::configure(routes);
    console::configure(routes);
    user_settings::configure(routes);
    snapshot::configure(routes);
    webdav::configure(routes);
}

/// Unknown routes.
pub async fn not_found() -> HttpResponse {
    use actix_web::ResponseError;
    ServiceError::new(crate::error::ErrorCode::NotFound, "Not Found").error_response()
}
