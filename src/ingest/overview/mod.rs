//! Directory summaries that follow their children: when a directory's children change
//! (content/write, rm, mv, cp, mkdir, an ingestion or pack import under it, a memory written
//! into it), its `.abstract.md`/`.overview.md` are rewritten — extractive with no model, by the
//! chat model when one is configured — debounced, on a pool thread, bounded in cost (one
//! listing, at most 32 file heads and 32 child abstracts per directory, one model call).
//!
//! The API is two calls:
//! - [`OverviewRefresher::mark_dirty`] (blocking side: a job, on its pool thread, after its
//!   storage change succeeded): leave a shared mark for a directory ([`marks`]) and schedule it
//!   here. Every change recorded through the search `Recorder` marks the parents of its paths
//!   by itself ([`OverviewRefresher::note_change`], installed at startup), so a job that
//!   records its change for search needs nothing more; call `mark_dirty` directly for a
//!   directory whose summary depends on something no record names.
//! - The debounced worker (`actors::overviews`) takes [`OverviewRefresher::take_due`]
//!   directories — quiet for `resources.overview_debounce_ms`, or waiting 10 times that — and
//!   runs one `jobs::overviews::RefreshOverview` per directory on a pool ([`refresh::refresh`]).
//!
//! Across instances: marks live in shared storage, so a refresh is never lost to a dead
//! instance (every instance adopts marks it has seen in two scans in a row,
//! `resources.overview_sweep_secs`), and sidecars are written fenced by the versions read
//! before the children were, so a slower refresh never overwrites a newer one; the marks a
//! refresh listed are deleted only after its write, so a change that arrived meanwhile is
//! refreshed again. A refresh whose abstract changed marks the parent directory in turn.
//! Preset directories (scaffolded sidecars) keep their text; a directory made by mkdir with
//! a description keeps that description as its abstract.

pub mod marks;
pub mod refresh;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::search::changes::{Change, ChangeKind};
use crate::storage::{is_internal_name, Storage, StorePath};

/// How many times the debounce a directory under constant change waits at most.
const MAX_DELAY_FACTOR: u32 = 10;
/// A directory found to be a preset is not marked again for this long.
const PRESET_MEMORY: Duration = Duration::from_secs(60);

/// When a scheduled directory is due.
#[derive(Debug, Clone, Copy)]
struct Due {
    first: Instant,
    last: Instant,
}

/// This instance's side: directories to refresh, and what the last orphan scan saw.
pub struct OverviewRefresher {
    debounce: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    scheduled: HashMap<StorePath, Due>,
    /// Being refreshed now (not handed out twice; a mark made meanwhile reschedules it).
    running: HashSet<StorePath>,
    presets: HashMap<StorePath, Instant>,
    /// Mark folders the previous orphan scan found.
    seen: HashSet<String>,
}

impl OverviewRefresher {
    pub fn new(debounce: Duration) -> OverviewRefresher {
        OverviewRefresher {
            debounce,
            state: Mutex::new(State::default()),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain maps: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mark `dir` (a full storage path, `acme/resources/docs`) for a refresh. Blocking (one
    /// create-only write): call it from a job. Never fails the caller: a mark that cannot be
    /// written is logged (the directory is still refreshed here unless this process dies).
    pub fn mark_dirty(&self, storage: &dyn Storage, dir: &StorePath) {
        if !refreshable(dir) {
            return;
        }
        {
            let state = self.locked();
            if state
                .presets
                .get(dir)
                .is_some_and(|at| at.elapsed() < PRESET_MEMORY)
            {
                return;
            }
        }
        if let Err(e) = marks::put(storage, dir) {
            tracing::warn!(error = %e, "could not leave a directory-summary mark");
        }
        self.schedule(dir.clone(), Instant::now());
    }

    /// The parents of every path a recorded change names are marked (a change to a sidecar
    /// itself marks nothing: a refresh must not schedule itself).
    pub fn note_change(&self, storage: &dyn Storage, change: &Change) {
        if matches!(change.kind, ChangeKind::Session | ChangeKind::Purge) {
            return;
        }
        let mut parents: Vec<StorePath> = change
            .store_paths()
            .iter()
            .filter(|p| !p.name().starts_with('.'))
            .filter_map(StorePath::parent)
            .collect();
        parents.sort();
        parents.dedup();
        for dir in parents {
            self.mark_dirty(storage, &dir);
        }
    }

    fn schedule(&self, dir: StorePath, now: Instant) {
        let mut state = self.locked();
        state
            .scheduled
            .entry(dir)
            .and_modify(|d| d.last = now)
            .or_insert(Due {
                first: now,
                last: now,
            });
    }

    /// Up to `max` directories due now, taken off the schedule (hand each back with
    /// [`OverviewRefresher::finished`]).
    pub fn take_due(&self, max: usize) -> Vec<StorePath> {
        let now = Instant::now();
        let longest = self.debounce * MAX_DELAY_FACTOR;
        let mut state = self.locked();
        let mut due: Vec<(Instant, StorePath)> = state
            .scheduled
            .iter()
            .filter(|(dir, d)| {
                !state.running.contains(*dir)
                    && (now.duration_since(d.last) >= self.debounce
                        || now.duration_since(d.first) >= longest)
            })
            .map(|(dir, d)| (d.first, dir.clone()))
            .collect();
        due.sort();
        due.truncate(max);
        let out: Vec<StorePath> = due.into_iter().map(|(_, d)| d).collect();
        for dir in &out {
            state.scheduled.remove(dir);
            state.running.insert(dir.clone());
        }
        out
    }

    /// A refresh handed out by `take_due` ended: `retry` puts it back (due after another
    /// debounce); `preset` remembers a preset directory so changes under it mark nothing.
    pub fn finished(&self, dir: &StorePath, retry: bool, preset: bool) {
        let mut state = self.locked();
        state.running.remove(dir);
        if preset {
            state.presets.insert(dir.clone(), Instant::now());
            state.presets.retain(|_, at| at.elapsed() < PRESET_MEMORY);
        }
        drop(state);
        if retry {
            self.schedule(dir.clone(), Instant::now());
        }
    }

    /// Directories scheduled or being refreshed here (metrics, tests).
    pub fn pending(&self) -> usize {
        let state = self.locked();
        state.scheduled.len() + state.running.len()
    }

    /// Scan every account's marks and schedule those the previous scan saw too and this
    /// instance does not hold: their instance died, or failed them. Returns how many.
    pub fn adopt_orphans(&self, storage: &dyn Storage) -> crate::storage::StorageResult<usize> {
        let marked = marks::all_marked(storage)?;
        let now = Instant::now();
        let mut state = self.locked();
        let previous = std::mem::take(&mut state.seen);
        let mut adopted = Vec::new();
        for (key, dir) in marked {
            if previous.contains(&key)
                && !state.scheduled.contains_key(&dir)
                && !state.running.contains(&dir)
            {
                adopted.push(dir);
            }
            state.seen.insert(key);
        }
        drop(state);
        let n = adopted.len();
        for dir in adopted {
            self.schedule(dir, now);
        }
        Ok(n)
    }
}

/// Directories whose summaries follow their children: inside `resources/`, `user/<id>/` or
/// `agent/` of an account, below the scope roots (whose sidecars are presets), never in
/// hidden or internal folders, sessions or the server's `_system`.
pub fn refreshable(dir: &StorePath) -> bool {
    let segs: Vec<&str> = dir.segments().collect();
    let [_account, scope, rest @ ..] = segs.as_slice() else {
        return false;
    };
    if rest
        .iter()
        .any(|s| s.starts_with('.') || is_internal_name(s))
    {
        return false;
    }
    match (*scope, rest) {
        ("resources" | "agent", [_, ..]) => true,
        ("user", [_user, next, ..]) => *next != "sessions",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn which_directories_follow_their_children() {
        assert!(refreshable(&p("acme/resources/docs")));
        assert!(refreshable(&p("acme/user/bob/resources/x")));
        assert!(refreshable(&p("acme/agent/skills")));
        assert!(!refreshable(&p("acme/resources")));
        assert!(!refreshable(&p("acme/user/bob")));
        assert!(!refreshable(&p("acme/user/bob/sessions/s1")));
        assert!(!refreshable(&p("acme/_system/ingest")));
        assert!(!refreshable(&p("acme/resources/.hidden/x")));
    }

    #[test]
    fn due_after_a_quiet_debounce_and_never_twice_at_once() {
        let r = OverviewRefresher::new(Duration::from_millis(40));
        let dir = p("acme/resources/docs");
        r.schedule(dir.clone(), Instant::now());
        assert!(r.take_due(8).is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.take_due(8), vec![dir.clone()]);
        // Marked again while running: not handed out until the first refresh ended.
        r.schedule(dir.clone(), Instant::now() - Duration::from_secs(1));
        assert!(r.take_due(8).is_empty());
        r.finished(&dir, false, false);
        assert_eq!(r.take_due(8), vec![dir]);
    }

    #[test]
    fn changes_mark_parents_but_sidecars_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = crate::storage::backend::local::LocalStorage::open(tmp.path()).unwrap();
        let r = OverviewRefresher::new(Duration::from_millis(1));
        let change = |paths: &[&str], kind| Change {
            account: "acme".into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            kind,
            at: 0,
        };
        r.note_change(
            &storage,
            &change(&["resources/d/.overview.md"], ChangeKind::Write),
        );
        assert_eq!(r.pending(), 0);
        r.note_change(
            &storage,
            &change(&["user/bob/sessions/s/x"], ChangeKind::Session),
        );
        assert_eq!(r.pending(), 0);
        r.note_change(
            &storage,
            &change(&["resources/d/a.md", "resources/e/f"], ChangeKind::Move),
        );
        assert_eq!(r.pending(), 2);
        assert_eq!(
            marks::list(&storage, &p("acme/resources/d")).unwrap().len(),
            1
        );
    }
}
