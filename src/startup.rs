//! Process startup and ordered shutdown.
//!
//! Order: storage backend → storage and commit pools (SyncArbiter) → AuthActor on its own
//! Arbiter → bind → serve, with the account registry loaded in the background: `/health`
//! answers from the first moment, while `/ready` says `initializing` and keyed requests get 503
//! until the registry is in memory (a failed load stops the server).
//!
//! SIGTERM and SIGINT both drain (the server handles signals itself: actix-server would treat
//! SIGINT as a forced stop): the HTTP server stops accepting and finishes in-flight requests,
//! then accepted storage/commit work finishes, then the process exits. One deadline,
//! `server.shutdown_timeout_secs` from the signal, bounds the whole sequence.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{middleware::from_fn, web, App, HttpServer};

use crate::actors::auth::sink::ActorSink;
use crate::actors::auth::{AuthActor, AuthConfig, InitialLoad};
use crate::actors::pool::{PoolSpec, PoolSpecs, Pools};
use crate::config::{Settings, StorageBackendKind};
use crate::error::{ErrorCode, ServiceError};
use crate::http::health::HealthMonitor;
use crate::http::{self, AppState};
use crate::identity::AuthMode;
use crate::search::changes::Recorder;
use crate::telemetry::LogDrops;

use crate::storage::backend::{local::LocalStorage, s3::S3Storage};
use crate::storage::Storage;

/// Failures that stop the server (exit code 2); all but `Registry` happen before it serves.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Metrics(#[from] crate::http::metrics::MetricsError),
    #[error("cannot load the account registry: {0}")]
    Registry(String),
    #[error(transparent)]
    Search(#[from] crate::search::index::IndexError),
    #[error("cannot listen for shutdown signals: {0}")]
    Signals(std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Open the configured storage backend.
pub fn open_storage(settings: &Settings) -> Result<Arc<dyn Storage>, StartupError> {
    match settings.storage.backend {
        StorageBackendKind::Local => Ok(Arc::new(LocalStorage::open(&settings.storage.data_dir)?)),
        StorageBackendKind::S3 => Ok(Arc::new(S3Storage::open(&settings.storage.s3)?)),
    }
}

/// Api_key mode: create/scaffold/migrate the registry, then load it into the AuthActor. Keyed
/// requests are held off (503) until this finishes, so none sees an empty map.
async fn load_registry(
    pools: &Pools,
    auth: &actix::Addr<AuthActor>,
    hashing: bool,
    recorder: &Arc<Recorder>,
) -> Result<(), ServiceError> {
    use crate::jobs::auth::BootstrapRegistry;
    let job = BootstrapRegistry {
        hashing,
        recorder: recorder.clone(),
    };
    let report = pools.storage().run(job).await??;
    tracing::info!(
        created = report.created_registry,
        migrated_keys = report.migrated_keys,
        "account registry ready"
    );
    auth.send(InitialLoad)
        .await
        .map_err(|e| ServiceError::unavailable("auth", e.to_string()))?
}

/// Load the registry, waiting out storage outages (the store may come up after us: `/ready`
/// says `initializing` meanwhile). Any other failure — an unreadable registry — is returned.
async fn load_registry_until_storage_answers(
    pools: &Pools,
    auth: &actix::Addr<AuthActor>,
    hashing: bool,
    recorder: &Arc<Recorder>,
) -> Result<(), StartupError> {
    until_storage_answers("loading the account registry", || {
        load_registry(pools, auth, hashing, recorder)
    })
    .await
    .map_err(|e| StartupError::Registry(e.message))
}

/// Dev mode: scaffold `default`/`default` (spec §4.4), waiting out storage outages like the
/// registry load does; `/ready` says `initializing` until it is done.
async fn scaffold_default_until_storage_answers(
    pools: &Pools,
    recorder: &Arc<Recorder>,
) -> Result<(), ServiceError> {
    use crate::jobs::auth::ScaffoldDefault;
    until_storage_answers("creating the default account", || async {
        let job = ScaffoldDefault {
            recorder: recorder.clone(),
        };
        pools.storage().run(job).await?
    })
    .await
}

/// Run `attempt` until it succeeds or fails with anything but an unavailable store.
async fn until_storage_answers<F, Fut>(what: &str, mut attempt: F) -> Result<(), ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    let mut pause = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if e.code == ErrorCode::Unavailable => {
                tracing::warn!(error = %e.message, retry_in_ms = pause.as_millis() as u64,
                    "storage unavailable while {what}; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Repair, in the background on the commit pool, every session commit a crash interrupted, so
/// their tasks reach a terminal state even if nobody touches those sessions again.
fn spawn_session_repair(pools: Pools) {
    use crate::jobs::sessions::RepairInterruptedCommits;
    actix_rt::spawn(async move {
        match pools.commit().run(RepairInterruptedCommits).await {
            Ok(Ok(repaired)) => tracing::debug!(repaired, "session repair sweep finished"),
            Ok(Err(e)) => tracing::warn!(error = %e.message, "session repair sweep failed"),
            Err(e) => tracing::warn!(error = %e, "session repair sweep not run"),
        }
    });
}

/// How often stale temporary files are swept after the startup sweep.
const TEMP_SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Sweep temporary files killed writers left (`kill -9` mid-write), at startup and then every
/// [`TEMP_SWEEP_EVERY`], on the commit pool (a walk of the whole tree is long work). Only files
/// older than `storage.stale_temp_secs` go, so no live writer on any instance loses its file.
fn spawn_temp_sweep(pools: Pools, older_than: Duration) {
    use crate::jobs::health::SweepTempFiles;
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(TEMP_SWEEP_EVERY);
        loop {
            tick.tick().await;
            match pools.commit().run(SweepTempFiles { older_than }).await {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "removed stale temporary files"),
                Ok(Err(e)) => tracing::warn!(error = %e, "temporary file sweep failed"),
                Err(e) => tracing::warn!(error = %e, "temporary file sweep not run"),
            }
        }
    });
}

/// Settle, at startup and then every `storage.s3.move_recovery_secs`, directory moves a
/// crashed mover left half done (S3: see `storage::backend::s3::moves`; a no-op on local disk),
/// on the commit pool (a roll-back deletes a whole partial tree).
fn spawn_move_recovery(pools: Pools, every: Duration) {
    use crate::jobs::health::RecoverMoves;
    actix_rt::spawn(async move {
        loop {
            match pools.commit().run(RecoverMoves).await {
                Ok(Ok(0)) => {}
                Ok(Ok(settled)) => tracing::info!(settled, "settled interrupted directory moves"),
                Ok(Err(e)) => tracing::warn!(error = %e, "directory move recovery failed"),
                Err(e) => tracing::debug!(error = %e, "directory move recovery not run"),
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Sweep, at startup and then periodically, expired temp uploads, staging trees a crash left,
/// tasks of ingestions whose instance died, and local scratch space of dead ingestions.
fn spawn_ingest_sweep(pools: Pools, settings: &Settings) {
    use crate::jobs::health::SweepIngestScratch;
    use crate::jobs::resources::SweepIngestion;
    let resources = settings.resources.clone();
    let every = Duration::from_secs(settings.resources.sweep_interval_secs.max(1));
    let upload_ttl_secs = settings.resources.upload_ttl_secs;
    let stale_after = Duration::from_secs(settings.resources.stale_after_secs);
    actix_rt::spawn(async move {
        loop {
            let job = SweepIngestion {
                upload_ttl_secs,
                stale_after,
            };
            match pools.storage().run(job).await {
                Ok(Ok(report)) => tracing::debug!(%report, "ingestion sweep finished"),
                Ok(Err(e)) => tracing::warn!(error = %e.message, "ingestion sweep failed"),
                Err(e) => tracing::debug!(error = %e, "ingestion sweep not run"),
            }
            let job = SweepIngestScratch {
                settings: resources.clone(),
                grace: stale_after,
            };
            if let Err(e) = pools.storage().run(job).await {
                tracing::debug!(error = %e, "ingestion scratch sweep not run");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Directory summaries follow their children: every change recorded for search marks the
/// parents of its paths, and a debounced worker refreshes them (`ingest::overview`).
fn start_overview_refresh(
    settings: &Settings,
    pools: &Pools,
    recorder: &Arc<Recorder>,
    ingest: &crate::ingest::gate::IngestRuntime,
) -> Arc<crate::ingest::overview::OverviewRefresher> {
    use crate::ingest::overview::OverviewRefresher;
    let refresher = Arc::new(OverviewRefresher::new(Duration::from_millis(
        settings.resources.overview_debounce_ms,
    )));
    let observer = refresher.clone();
    recorder.observe(Box::new(move |storage, change| {
        observer.note_change(storage, change)
    }));
    crate::actors::overviews::spawn(
        pools.clone(),
        refresher.clone(),
        recorder.clone(),
        ingest.chat.clone(),
        Duration::from_secs(settings.resources.overview_sweep_secs.max(1)),
    );
    refresher
}

/// Feed waiting memory extractions (the shared backlog: this instance's commits and others')
/// to the memory pool. Every account's backlog is listed once per `memory.poll_interval_ms`
/// (commits made on other instances); in between only the accounts that need it are: one
/// with a commit or a finished extraction here (`MemoryRuntime::wake_account`), or whose
/// waiting entry comes due. At most one extraction per user at a time from this instance (the
/// extraction's own storage lock makes it one across instances).
fn spawn_memory_scheduler(
    pools: Pools,
    settings: &Settings,
    chat: Option<crate::ingest::chat::ChatClient>,
    search: &crate::actors::search::SearchHandle,
    runtime: Arc<crate::http::MemoryRuntime>,
    account_configs: crate::storage::account_config::AccountConfigs,
) {
    use crate::actors::fair::Lane;
    use crate::jobs::memory::{ExtractMemories, ScanMemoryBacklog};
    use std::collections::HashMap;
    use std::sync::atomic::Ordering::Relaxed;
    let every = Duration::from_millis(settings.memory.poll_interval_ms.max(10));
    let (index, recorder) = (search.index.clone(), search.recorder.clone());
    let running: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<(String, String)>>> =
        Default::default();
    /// Pause before looking again at an extraction that could not run.
    const RETRY_PAUSE: Duration = Duration::from_secs(1);
    /// What the last look at one account found.
    #[derive(Default)]
    struct Seen {
        entries: u64,
        due: u64,
        /// When to look again without being woken (the earliest entry coming due).
        look_at: Option<f64>,
    }
    actix_rt::spawn(async move {
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut next_full = Instant::now();
        loop {
            let now = crate::time::epoch_secs_now();
            let accounts = if Instant::now() >= next_full {
                next_full = Instant::now() + every;
                runtime.take_dirty();
                None
            } else {
                let mut a = runtime.take_dirty();
                for (name, s) in &seen {
                    if s.look_at.is_some_and(|t| t <= now) && !a.contains(name) {
                        a.push(name.clone());
                    }
                }
                Some(a)
            };
            if accounts.as_ref().is_none_or(|a| !a.is_empty()) {
                let scan = ScanMemoryBacklog {
                    accounts: accounts.clone(),
                };
                match pools.storage().run_in(Lane::System, scan).await {
                    Ok(Ok(waiting)) => {
                        match &accounts {
                            None => seen.clear(),
                            Some(a) => a.iter().for_each(|n| {
                                seen.remove(n);
                            }),
                        }
                        for w in &waiting {
                            let s = seen.entry(w.account.clone()).or_default();
                            s.entries += 1;
                            if w.due {
                                s.due += 1;
                            } else {
                                s.look_at =
                                    Some(s.look_at.map_or(w.not_before, |t| t.min(w.not_before)));
                            }
                        }
                        let stats = &runtime.stats;
                        stats
                            .backlog
                            .store(seen.values().map(|s| s.entries).sum(), Relaxed);
                        stats
                            .backlog_due
                            .store(seen.values().map(|s| s.due).sum(), Relaxed);
                        let mut pool_full = false;
                        for w in waiting.into_iter().filter(|w| w.due) {
                            let key = (w.account.clone(), w.user.clone());
                            if running.borrow().contains(&key) {
                                continue; // looked at again when that extraction ends
                            }
                            if pool_full {
                                // Look again shortly, when the pool has room.
                                if let Some(s) = seen.get_mut(&w.account) {
                                    s.look_at = Some(now + 1.0);
                                }
                                continue;
                            }
                            let job = ExtractMemories {
                                account: w.account.clone(),
                                task_id: w.task_id.clone(),
                                chat: chat.clone(),
                                index: index.clone(),
                                recorder: recorder.clone(),
                                stats: runtime.stats.clone(),
                                // The account's own memory settings over the server's.
                                settings: account_configs.effective(&w.account).memory,
                            };
                            let lane = Lane::Account(Arc::from(w.account.as_str()));
                            let Ok(rx) = pools.memory().submit_in(lane, job) else {
                                pool_full = true;
                                if let Some(s) = seen.get_mut(&w.account) {
                                    s.look_at = Some(now + 1.0);
                                }
                                continue;
                            };
                            running.borrow_mut().insert(key.clone());
                            stats.running.fetch_add(1, Relaxed);
                            let (running, runtime) = (running.clone(), runtime.clone());
                            actix_rt::spawn(async move {
                                // Look at the account again at once when the entry moved on;
                                // after a pause when it could not (the user's extraction runs
                                // on another instance, or storage failed), so as not to spin.
                                let again_now = match rx.await {
                                    Ok(Ok(Ok(outcome))) => {
                                        tracing::debug!(task = %w.task_id, ?outcome, "memory extraction run");
                                        outcome != crate::memory::extract::RunOutcome::Busy
                                    }
                                    Ok(Ok(Err(e))) => {
                                        tracing::warn!(task = %w.task_id, error = %e.message, "memory extraction failed; retried on a later scan");
                                        false
                                    }
                                    other => {
                                        tracing::warn!(task = %w.task_id, outcome = ?other.err(), "memory extraction did not run");
                                        false
                                    }
                                };
                                running.borrow_mut().remove(&key);
                                runtime.stats.running.fetch_sub(1, Relaxed);
                                if !again_now {
                                    tokio::time::sleep(RETRY_PAUSE.min(every)).await;
                                }
                                runtime.wake_account(&w.account);
                            });
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e.message, "memory backlog scan failed"),
                    Err(e) => tracing::debug!(error = %e, "memory backlog scan not run"),
                }
            }
            // Sleep until the next full scan, the earliest entry coming due, or a wake.
            let now = crate::time::epoch_secs_now();
            let mut wait = next_full.saturating_duration_since(Instant::now());
            if let Some(t) = seen.values().filter_map(|s| s.look_at).reduce(f64::min) {
                wait = wait.min(Duration::from_secs_f64(
                    (t - now).clamp(0.0, 86_400.0) + 0.05,
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = runtime.wake.notified() => {}
            }
        }
    });
}

/// Make large buffers go back to the system when freed.
///
/// glibc serves allocations above its mmap threshold with their own mappings, returned on
/// free, but it *raises* that threshold to the size of each such block freed (up to 32 MiB):
/// after the first burst of 30 MB bodies every later one came from the heap arenas and stayed
/// there (1.3 GB kept after a burst). Setting the threshold explicitly turns that adjustment
/// off, so request bodies, decoded contents and file buffers are unmapped when dropped.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Blocks of at least this size get their own mapping (glibc's initial default).
        const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes allocator parameters and is thread-safe.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            tracing::warn!("could not set the allocator's mmap threshold");
        }
    }
}

/// On the first SIGTERM or SIGINT, note when and stop the server gracefully (drain requests).
fn stop_on_signals(
    handle: ServerHandle,
    stop_requested: Arc<OnceLock<Instant>>,
) -> Result<(), StartupError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(StartupError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartupError::Signals)?;
    actix_rt::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: draining requests and accepted work"
        );
        let _ = stop_requested.set(Instant::now());
        handle.stop(true).await;
    });
    Ok(())
}

/// Run the server until it is told to stop.
pub fn run(settings: Settings, log_drops: LogDrops) -> Result<(), StartupError> {
    tune_allocator();
    let settings = Arc::new(settings);
    // Bound first: a port in use fails the start before anything (an index directory, a
    // scaffold) is created or logged.
    let addr = format!("{}:{}", settings.server.host, settings.server.port);
    let listener =
        std::net::TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .map_err(|source| StartupError::Bind {
                addr: addr.clone(),
                source,
            })?;
    let backend = open_storage(&settings)?;
    let system = actix_rt::System::new();
    system.block_on(serve(settings, backend, log_drops, listener))
}

async fn serve(
    settings: Arc<Settings>,
    backend: Arc<dyn Storage>,
    log_drops: LogDrops,
    listener: std::net::TcpListener,
) -> Result<(), StartupError> {
    let share = settings.pools.account_share_percent;
    let pools = Pools::start(
        backend.clone(),
        PoolSpecs {
            storage: PoolSpec {
                name: "storage",
                threads: settings.pools.storage_threads,
                capacity: settings.pools.storage_queue_limit,
                nice: settings.pools.thread_nice,
                lane_share_percent: share,
            },
            commit: PoolSpec {
                name: "commit",
                threads: settings.pools.commit_threads,
                capacity: settings.pools.commit_queue_limit,
                nice: settings.pools.commit_thread_nice,
                lane_share_percent: share,
            },
            ingest: PoolSpec {
                name: "ingest",
                threads: settings.pools.ingest_threads,
                capacity: settings.pools.ingest_queue_limit,
                nice: settings.pools.ingest_thread_nice,
                lane_share_percent: share,
            },
            // Global extraction concurrency comes from the chat settings.
            memory: PoolSpec {
                name: "memory",
                threads: settings.vlm.max_concurrent.clamp(1, 8),
                capacity: settings.vlm.max_concurrent.clamp(1, 8) * 2,
                nice: settings.pools.ingest_thread_nice,
                lane_share_percent: 100,
            },
        },
    );
    let search = crate::actors::search::start(&settings, backend.clone())?;
    let recorder = search.recorder.clone();
    let mode = settings.auth_mode();
    let auth_arbiter = Arbiter::new();
    let account_configs = crate::storage::account_config::AccountConfigs::new(
        crate::storage::account_config::ClusterDefaults {
            audit_enabled: settings.audit.enabled,
            memory: settings.memory.clone(),
        },
    );
    let auth_published = Arc::new(crate::actors::auth::worker_cache::Published::new(
        Duration::from_millis(settings.auth.refresh_interval_ms),
    ));
    let auth = {
        let config = AuthConfig {
            root_key: settings.auth.root_api_key.clone(),
            refresh_interval: Duration::from_millis(settings.auth.refresh_interval_ms),
            sweep_interval: Duration::from_secs(settings.auth.sweep_interval_secs),
            configs: account_configs.clone(),
            published: auth_published.clone(),
        };
        let pools = pools.clone();
        AuthActor::start_in_arbiter(&auth_arbiter.handle(), move |_| {
            AuthActor::new(config, pools)
        })
    };
    // Startup work (registry load, or the dev-mode scaffold) flips this; `/ready` waits for it.
    let registry_loaded = Arc::new(AtomicBool::new(false));
    let health = HealthMonitor::new(backend.kind(), backend.describe());
    health.spawn_periodic(pools.clone(), Duration::from_secs(5));

    let ingest = Arc::new(crate::ingest::gate::IngestRuntime::new(&settings));
    let overviews = start_overview_refresh(&settings, &pools, &recorder, &ingest);

    let workers = settings.workers();
    let auth_for_state = auth.clone();
    let registry_sink: Arc<dyn crate::storage::registry::RegistrySink> =
        Arc::new(ActorSink::new(auth.clone()));
    // Moves and removals keep ACL rows on their nodes and announce through it.
    crate::storage::acl::store::install_sink(registry_sink.clone());
    // ACLs read the account switches from the configuration store.
    let configs = account_configs.clone();
    crate::storage::acl::install_switches(Box::new(move |account| {
        let doc = configs.stored(account);
        let flag = |field: &str| {
            doc.as_ref()
                .and_then(|d| d.get("acl")?.get(field)?.as_bool())
                .unwrap_or(false)
        };
        crate::storage::acl::Switches {
            enabled: flag("enabled"),
            hide_denied: flag("hide_denied"),
        }
    }));
    // Each process writes its own audit log (no shared hot object); the id names it.
    let audit = crate::actors::audit::start(
        &settings.audit,
        pools.clone(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    let watches = crate::actors::watches::start(
        pools.clone(),
        crate::actors::watches::RunDeps {
            settings: settings.clone(),
            recorder: recorder.clone(),
            chat: ingest.chat.clone(),
            ingest: ingest.clone(),
        },
    )
    .map_err(StartupError::Serve)?;
    let state = AppState {
        pools: pools.clone(),
        auth: auth_for_state,
        auth_published,
        mode,
        settings: settings.clone(),
        health,
        workers,
        metrics: Arc::new(crate::http::metrics::Metrics::new(log_drops)?),
        registry_sink,
        registry_loaded: registry_loaded.clone(),
        account_configs,
        audit: audit.clone(),
        ingest,
        overviews,
        memory: Arc::new(crate::http::MemoryRuntime::default()),
        watches,
        search,
        body_budget: Arc::new(crate::http::admission::BodyBudget::new(
            crate::http::admission::BudgetLimits::from_settings(&settings.server),
        )),
    };
    spawn_memory_scheduler(
        pools.clone(),
        &settings,
        state.ingest.chat.clone(),
        &state.search,
        state.memory.clone(),
        state.account_configs.clone(),
    );
    let max_body = settings.server.max_body_bytes;
    let app_state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .wrap(from_fn(http::admission::admit_body))
            .wrap(from_fn(http::middleware::request_context))
            .configure(http::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    let addr = format!("{}:{}", settings.server.host, settings.server.port);
    let server = server
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            addr: addr.clone(),
            source,
        })?;
    for bound in server.addrs() {
        tracing::info!(address = %bound, "listening");
    }
    tracing::info!(
        auth_mode = mode.as_str(),
        http_workers = workers,
        storage_threads = settings.pools.storage_threads,
        commit_threads = settings.pools.commit_threads,
        storage_backend = backend.kind(),
        storage_root = %backend.describe(),
        version = env!("CARGO_PKG_VERSION"),
        "longship started"
    );

    let server = server.run();
    let stop_requested: Arc<OnceLock<Instant>> = Arc::default();
    stop_on_signals(server.handle(), stop_requested.clone())?;
    spawn_session_repair(pools.clone());
    spawn_temp_sweep(
        pools.clone(),
        Duration::from_secs(settings.storage.stale_temp_secs),
    );
    spawn_ingest_sweep(pools.clone(), &settings);
    if backend.kind() == "s3" {
        spawn_move_recovery(
            pools.clone(),
            Duration::from_secs(settings.storage.s3.move_recovery_secs.max(1)),
        );
    }
    let load_failure: Arc<Mutex<Option<StartupError>>> = Arc::default();
    if mode == AuthMode::Dev {
        let (pools, recorder) = (pools.clone(), recorder.clone());
        let loaded = registry_loaded.clone();
        actix_rt::spawn(async move {
            // A failure here (say a file where a preset directory belongs) leaves the server
            // serving what exists: dev mode has nothing else to wait for.
            if let Err(e) = scaffold_default_until_storage_answers(&pools, &recorder).await {
                tracing::error!(error = %e.message, "could not create the default account");
            }
            loaded.store(true, Ordering::Release);
        });
    }
    if mode == AuthMode::ApiKey {
        let (pools, auth, handle) = (pools.clone(), auth.clone(), server.handle());
        let (hashing, failure) = (settings.auth.api_key_hashing, load_failure.clone());
        let recorder = recorder.clone();
        actix_rt::spawn(async move {
            match load_registry_until_storage_answers(&pools, &auth, hashing, &recorder).await {
                Ok(()) => registry_loaded.store(true, Ordering::Release),
                Err(e) => {
                    tracing::error!(error = %e, "stopping: the account registry did not load");
                    if let Ok(mut slot) = failure.lock() {
                        *slot = Some(e);
                    }
                    handle.stop(false).await;
                }
            }
        });
    }
    let result = server.await;
    tracing::info!("HTTP server stopped; draining storage and commit work");
    // What is left of the one shutdown deadline after the HTTP drain.
    let deadline = stop_requested.get().copied().unwrap_or_else(Instant::now)
        + Duration::from_secs(settings.server.shutdown_timeout_secs);
    // The audit entries of the last requests are written before the pools stop.
    audit
        .flush_now(deadline.saturating_duration_since(Instant::now()))
        .await;
    let drained = pools
        .drain(deadline.saturating_duration_since(Instant::now()))
        .await;
    if drained {
        tracing::info!("all accepted work finished");
    } else {
        tracing::warn!("shutdown deadline reached with work still running");
    }
    auth_arbiter.stop();
    tracing::info!("shutdown complete");
    if let Some(failure) = load_failure.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(failure);
    }
    result.map_err(StartupError::Serve)
}
