//! Keeping the AuthActor's map fresh: marker checks, per-account probes, follow-up reloads
//! of accounts a local write overtook, and the slow sweep for unannounced changes. Every load
//! is a storage-pool job; results are applied on the actor.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use actix::fut::wrap_future;
use actix::prelude::*;

use crate::storage::registry::load::{
    AccountSnapshot, AccountStates, CheckOutcome, KnownAccount, ProbeOutcome, Reload, SideVersions,
};
use crate::storage::Version;

use super::gate::Next;

/// What the map holds about one account: its deletion mark, users.json version and the
/// versions of the files that travel with it (ACLs, groups, settings).
type AccountMark = (bool, Option<Version>, Option<SideVersions>);
use super::AuthActor;
use crate::jobs::auth as jobs;

impl AuthActor {
    pub(super) fn begin_load(&mut self) -> u64 {
        self.loads_in_flight += 1;
        self.local_seq
    }

    /// Accounts written locally after a load that started at `seq`.
    pub(super) fn touched_since(&self, seq: u64) -> Vec<String> {
        self.local_touch
            .iter()
            .filter(|(_, s)| **s > seq)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(super) fn end_load(&mut self) {
        self.loads_in_flight = self.loads_in_flight.saturating_sub(1);
        if self.loads_in_flight == 0 {
            // No load that could predate a local write is still running.
            self.local_touch.clear();
        }
    }

    /// Start the next marker check if one is wanted and allowed.
    pub(super) fn pump_marker(&mut self, ctx: &mut Context<Self>) {
        match self.marker.poll(Instant::now()) {
            Next::Idle => {}
            Next::WakeAfter(delay) => {
                if !self.marker.timer_armed {
                    self.marker.timer_armed = true;
                    ctx.run_later(delay, |act, ctx| {
                        act.marker.timer_armed = false;
                        act.pump_marker(ctx);
                    });
                }
            }
            Next::Start(started) => {
                self.counters.freshness_checks += 1;
                let seq = self.begin_load();
                let job = jobs::CheckMarker {
                    loaded: self.loaded_generation,
                    known_version: self.marker_version.clone(),
                };
                self.spawn_job(ctx, job, move |act, result, ctx| {
                    act.on_marker_done(started, seq, result, ctx)
                });
            }
        }
    }

    pub(super) fn on_marker_done(
        &mut self,
        started: Instant,
        seq: u64,
        result: Result<CheckOutcome, String>,
        ctx: &mut Context<Self>,
    ) {
        let outcome = match result {
            Ok(out) => {
                self.storage_error = None;
                self.apply_outcome(out, seq, ctx);
                Ok(())
            }
            Err(e) => {
                self.counters.check_failures += 1;
                tracing::warn!(error = %e, "registry freshness check failed");
                self.storage_error = Some(e.clone());
                Err(e)
            }
        };
        self.end_load();
        self.marker.finish(started, outcome);
        // After the check's changes were applied (and the epoch bumped): workers' caches may
        // answer from the map again until this start is a refresh interval old.
        self.published.publish_check(started);
        self.pump_marker(ctx);
    }

    pub(super) fn apply_outcome(&mut self, out: CheckOutcome, seq: u64, ctx: &mut Context<Self>) {
        tracing::debug!(
            generation = out.generation,
            marker_read = out.marker_read,
            files = out.files_read,
            reload = ?out.reload.as_ref().map(|r| match r {
                Reload::Full(v) => format!("full {}", v.len()),
                Reload::Partial(v) => format!("partial {:?}", v.iter().map(|(id, s)| (id, s.as_ref().map(|s| s.deletion.is_some()))).collect::<Vec<_>>()),
            }),
            "registry check applied"
        );
        if out.marker_read {
            self.counters.marker_reads += 1;
        }
        self.counters.files_reread += out.files_read;
        let touched = self.touched_since(seq);
        let mut redo = BTreeSet::new();
        match out.reload {
            None => {}
            Some(Reload::Full(snapshots)) => {
                self.counters.reloads += 1;
                self.counters.full_reloads += 1;
                self.index.replace_all(snapshots, &touched);
                self.map_changed();
                redo.extend(touched);
            }
            Some(Reload::Partial(list)) => {
                self.counters.reloads += 1;
                for (id, snap) in list {
                    if touched.contains(&id) {
                        redo.insert(id);
                    } else {
                        self.index.replace_account(&id, snap);
                        self.map_changed();
                    }
                }
            }
        }
        self.loaded_generation = out.generation;
        self.marker_version = out.marker_version;
        if !redo.is_empty() {
            self.reload_accounts(redo, ctx);
        }
    }

    /// Re-read accounts whose reload was skipped because a local write overtook it.
    pub(super) fn reload_accounts(&mut self, ids: BTreeSet<String>, ctx: &mut Context<Self>) {
        let seq = self.begin_load();
        self.spawn_job(ctx, jobs::LoadAccounts { ids }, move |act, result, ctx| {
            if let Ok((list, files)) = result {
                act.counters.files_reread += files;
                let touched = act.touched_since(seq);
                let mut redo = BTreeSet::new();
                for (id, snap) in list {
                    if touched.contains(&id) {
                        redo.insert(id);
                    } else {
                        act.index.replace_account(&id, snap);
                        act.map_changed();
                    }
                }
                act.end_load();
                if !redo.is_empty() {
                    act.reload_accounts(redo, ctx);
                }
            } else {
                act.end_load();
            }
        });
    }

    pub(super) fn pump_probe(&mut self, account: &str, ctx: &mut Context<Self>) {
        let Some(gate) = self.probes.get_mut(account) else {
            return;
        };
        match gate.poll(Instant::now()) {
            Next::Idle => {}
            Next::WakeAfter(delay) => {
                if !gate.timer_armed {
                    gate.timer_armed = true;
                    let id = account.to_string();
                    ctx.run_later(delay, move |act, ctx| {
                        if let Some(g) = act.probes.get_mut(&id) {
                            g.timer_armed = false;
                        }
                        act.pump_probe(&id, ctx);
                    });
                }
            }
            Next::Start(started) => {
                self.counters.probes += 1;
                let seq = self.begin_load();
                let job = jobs::ProbeAccount {
                    account: account.to_string(),
                    known_version: self
                        .index
                        .account(account)
                        .and_then(|a| a.users_version.clone()),
                };
                let id = account.to_string();
                self.spawn_job(ctx, job, move |act, result, ctx| {
                    act.on_probe_done(&id, started, seq, result, ctx)
                });
            }
        }
    }

    pub(super) fn on_probe_done(
        &mut self,
        account: &str,
        started: Instant,
        seq: u64,
        result: Result<ProbeOutcome, String>,
        ctx: &mut Context<Self>,
    ) {
        let outcome = match result {
            Ok(ProbeOutcome::Unchanged) => Ok(()),
            Ok(ProbeOutcome::Changed {
                account: id,
                snapshot,
                files_read,
            }) => {
                self.counters.probe_reloads += 1;
                self.counters.files_reread += files_read;
                if self.touched_since(seq).contains(&id) {
                    self.reload_accounts(BTreeSet::from([id]), ctx);
                } else {
                    self.index.replace_account(&id, snapshot.map(|b| *b));
                    self.map_changed();
                }
                Ok(())
            }
            Err(e) => {
                self.counters.check_failures += 1;
                self.storage_error = Some(e.clone());
                Err(e)
            }
        };
        self.end_load();
        if let Some(gate) = self.probes.get_mut(account) {
            gate.finish(started, outcome);
        }
        self.pump_probe(account, ctx);
    }

    /// Apply a local registry write (and drop probe gates of accounts that are gone).
    pub(super) fn apply_local(
        &mut self,
        generation: u64,
        account: &str,
        snapshot: Option<AccountSnapshot>,
    ) {
        self.counters.local_applies += 1;
        self.local_seq += 1;
        self.local_touch.insert(account.to_string(), self.local_seq);
        if snapshot.is_none() {
            self.probes.remove(account);
        }
        self.index.replace_account(account, snapshot);
        self.map_changed();
        // Our own bump directly follows what we loaded: nothing else changed in between.
        if self.loaded_generation + 1 == generation {
            self.loaded_generation = generation;
        }
    }

    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        if !self.loaded || self.sweeping {
            return;
        }
        self.sweeping = true;
        self.counters.sweeps += 1;
        let known: Vec<KnownAccount> = self
            .index
            .account_ids()
            .map(|(id, a)| KnownAccount {
                id: id.clone(),
                deleting: a.deleting,
                users_version: a.users_version.clone(),
                side: a.side.clone(),
            })
            .collect();
        let before: HashMap<String, AccountMark> = known
            .iter()
            .map(|k| {
                let mark = (k.deleting, k.users_version.clone(), k.side.clone());
                (k.id.clone(), mark)
            })
            .collect();
        self.spawn_job(
            ctx,
            jobs::SweepRegistry { known },
            move |act, result, ctx| {
                let Ok((states, files)) = result else {
                    act.sweeping = false;
                    return;
                };
                act.counters.files_reread += files;
                if states.is_empty() {
                    act.sweeping = false;
                    return;
                }
                // The map may lag storage by up to one refresh interval for changes that
                // *were* announced. Give the announced path that interval plus a marker check
                // that starts after it; only what is still missing then is unannounced.
                ctx.run_later(act.interval, move |act, ctx| {
                    let rx = act.marker.wait(Some(Instant::now()));
                    act.pump_marker(ctx);
                    ctx.spawn(
                        wrap_future::<_, Self>(rx)
                            .map(move |_, act, _ctx| act.finish_sweep(states, &before)),
                    );
                });
            },
        );
    }

    /// Apply what the sweep found that no announced change has brought in since: accounts the
    /// map still holds exactly as when the sweep began, but storage holds differently.
    fn finish_sweep(&mut self, states: AccountStates, before: &HashMap<String, AccountMark>) {
        self.sweeping = false;
        let unannounced: AccountStates = states
            .into_iter()
            .filter(|(id, snap)| {
                let now = self
                    .index
                    .account(id)
                    .map(|a| (a.deleting, a.users_version.clone(), a.side.clone()));
                let stored = snap.as_ref().map(|s| {
                    (
                        s.deletion.is_some(),
                        s.users_version.clone(),
                        s.side.clone(),
                    )
                });
                now == before.get(id).cloned() && now != stored
            })
            .collect();
        if unannounced.is_empty() {
            return;
        }
        tracing::warn!(
            accounts = unannounced.len(),
            "sweep found registry changes that were never announced; applying"
        );
        self.counters.sweep_reloads += 1;
        for (id, snap) in unannounced {
            self.index.replace_account(&id, snap);
        }
        self.map_changed();
    }
}
