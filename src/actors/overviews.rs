//! The debounced worker of directory summaries (`ingest::overview`): every tick it takes the
//! directories that are due and runs one `RefreshOverview` job each, at most
//! [`IN_FLIGHT`] at once, in the directory's account lane (so one account's burst of
//! refreshes never holds another's requests back); on the ingest pool when a chat model
//! writes the summaries (a model call may take seconds), else on the storage pool. It also
//! scans for marks a dead instance left, every `resources.overview_sweep_secs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::actors::{Lane, Pools};
use crate::ingest::chat::ChatClient;
use crate::ingest::overview::OverviewRefresher;
use crate::jobs::overviews::{AdoptOrphanOverviews, RefreshOverview};
use crate::search::changes::Recorder;

/// Refresh jobs of this instance in flight at once.
const IN_FLIGHT: usize = 2;
/// How often due directories are looked for.
const TICK: Duration = Duration::from_millis(100);

/// Start the worker (on the current actix runtime).
pub fn spawn(
    pools: Pools,
    refresher: Arc<OverviewRefresher>,
    recorder: Arc<Recorder>,
    chat: Option<ChatClient>,
    sweep_every: Duration,
) {
    spawn_orphan_scan(pools.clone(), refresher.clone(), sweep_every);
    let running = Arc::new(AtomicUsize::new(0));
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let free = IN_FLIGHT.saturating_sub(running.load(Ordering::Acquire));
            for dir in refresher.take_due(free) {
                let lane = match dir.as_str().split_once('/') {
                    Some((account, _)) => Lane::Account(Arc::from(account)),
                    None => Lane::System,
                };
                let job = RefreshOverview {
                    dir: dir.clone(),
                    refresher: refresher.clone(),
                    recorder: recorder.clone(),
                    chat: chat.clone(),
                };
                let pool = if chat.is_some() {
                    pools.ingest().clone()
                } else {
                    pools.storage().clone()
                };
                let (refresher, running) = (refresher.clone(), running.clone());
                running.fetch_add(1, Ordering::AcqRel);
                actix_rt::spawn(async move {
                    match pool.run_in(lane, job).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e.message, "directory summary refresh failed; retrying")
                        }
                        Err(e) => {
                            // Never ran (pool full or stopping) or panicked: hand it back.
                            tracing::debug!(error = %e, "directory summary refresh not run");
                            refresher.finished(&dir, true, false);
                        }
                    }
                    running.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    });
}

/// Every `every`, schedule the marks no instance refreshed (their instance died).
fn spawn_orphan_scan(pools: Pools, refresher: Arc<OverviewRefresher>, every: Duration) {
    actix_rt::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let job = AdoptOrphanOverviews {
                refresher: refresher.clone(),
            };
            match pools.storage().run_in(Lane::System, job).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(adopted = n, "refreshing directory summaries left undone")
                }
                Ok(Err(e)) => tracing::warn!(error = %e.message, "directory summary scan failed"),
                Err(e) => tracing::debug!(error = %e, "directory summary scan not run"),
            }
        }
    });
}
