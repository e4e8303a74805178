//! Fair scheduling of one pool's jobs between accounts (issue #25).
//!
//! Every accepted job waits in its *lane* (one per account; background work has its own) and
//! pool threads take jobs from the lanes in turn (round robin), so a short job of one account
//! never waits behind another account's backlog, only behind at most one job per busy lane.
//! Two caps keep one lane from owning the pool:
//!
//! * running: a lane runs at most `threads - 1` jobs at once (at least 1), so with two or more
//!   threads one is always left for the other lanes;
//! * admitted: a lane holds at most its share of the pool's capacity (queued plus running), so
//!   one account's queue cannot take every slot; beyond its share that account gets 503 while
//!   the others are still admitted.
//!
//! Long jobs call a yield point between bounded steps ([`crate::jobs::JobContext::yield_point`]):
//! when another lane has a job waiting and no thread is free, that job runs right there, on the
//! long job's thread, before the long job takes its next step. Only a job that is one bounded
//! operation runs there: a job cut into steps (queued as *stepped*) may run long, and run
//! inline it would hold the yielding job's thread for its whole length without yielding in
//! turn (it cannot nest), so it waits for a free thread. A lane whose next job is stepped is
//! passed over at a yield point rather than having a later job taken out of order: one
//! account's jobs always start in the order they were queued.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Whose queue a job waits in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Work done for one account (the caller of the request that submitted it).
    Account(Arc<str>),
    /// Work the server does for itself (sweeps, recovery, key resolution, probes).
    System,
}

/// The lane of the current request: its account once the caller is authenticated (the auth
/// extractor names it in the request's scope, `telemetry::request`), else [`Lane::System`]
/// (background tasks, unauthenticated probes).
pub fn current_lane() -> Lane {
    crate::telemetry::request::account().map_or(Lane::System, Lane::Account)
}

/// Why a job was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The lane already holds its share of the pool.
    LaneFull,
}

/// A queued job and whether it is cut into steps (may run long).
struct Queued<W> {
    work: W,
    stepped: bool,
}

struct LaneState<W> {
    queue: VecDeque<Queued<W>>,
    running: usize,
    /// Queued plus running.
    admitted: usize,
}

struct State<W> {
    lanes: HashMap<Lane, LaneState<W>>,
    /// Lanes with queued jobs, in the order they are served next.
    turn: VecDeque<Lane>,
}

/// The per-lane queues of one pool; `W` is the queued work.
pub struct FairQueue<W> {
    state: Mutex<State<W>>,
    /// Jobs that are not stepped queued in any lane (read without the lock by yield points,
    /// the only jobs they may run).
    queued_unstepped: AtomicUsize,
    max_running: usize,
    max_admitted: usize,
}

impl<W> FairQueue<W> {
    /// Caps for a pool of `threads` threads holding `capacity` jobs; each lane may hold
    /// `share_percent` of the capacity.
    pub fn new(threads: usize, capacity: usize, share_percent: usize) -> Self {
        FairQueue {
            state: Mutex::new(State {
                lanes: HashMap::new(),
                turn: VecDeque::new(),
            }),
            queued_unstepped: AtomicUsize::new(0),
            max_running: threads.saturating_sub(1).max(1),
            max_admitted: (capacity.saturating_mul(share_percent) / 100).max(1),
        }
    }

    /// Most jobs one lane may run at once.
    pub fn max_running(&self) -> usize {
        self.max_running
    }

    /// Most jobs one lane may hold (queued plus running).
    pub fn max_admitted(&self) -> usize {
        self.max_admitted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<W>> {
        // A panic never happens while the lock is held (plain collection updates), but a
        // poisoned lock must not stop the pool either.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `work` in `lane`, or refuse it when the lane holds its share. `stepped`: the job
    /// is cut into steps with yield points (it may run long), so it never runs at another
    /// job's yield point.
    pub fn push(&self, lane: Lane, work: W, stepped: bool) -> Result<(), (Refusal, W)> {
        let mut state = self.lock();
        let entry = state
            .lanes
            .entry(lane.clone())
            .or_insert_with(|| LaneState {
                queue: VecDeque::new(),
                running: 0,
                admitted: 0,
            });
        if entry.admitted >= self.max_admitted {
            return Err((Refusal::LaneFull, work));
        }
        entry.admitted += 1;
        entry.queue.push_back(Queued { work, stepped });
        if entry.queue.len() == 1 {
            state.turn.push_back(lane);
        }
        if !stepped {
            self.queued_unstepped.fetch_add(1, Ordering::Release);
        }
        Ok(())
    }

    /// True when some lane has a job waiting that a yield point may run (a hint: no lock).
    pub fn has_unstepped_waiting(&self) -> bool {
        self.queued_unstepped.load(Ordering::Acquire) > 0
    }

    /// The next job in turn from a lane below its running cap, for a free thread; the lane
    /// moves to the back of the turn. The caller must call [`FairQueue::finish`] after it ran.
    pub fn pop(&self) -> Option<(Lane, W)> {
        self.take(None)
    }

    /// Like [`FairQueue::pop`], for the yield point of a job of `yielding`: never that lane's
    /// work, and only a lane whose next job is not stepped.
    pub fn pop_at_yield(&self, yielding: &Lane) -> Option<(Lane, W)> {
        self.take(Some(yielding))
    }

    fn take(&self, yielding: Option<&Lane>) -> Option<(Lane, W)> {
        let mut state = self.lock();
        let state = &mut *state;
        for _ in 0..state.turn.len() {
            let lane = state.turn.pop_front()?;
            let Some(entry) = state.lanes.get_mut(&lane) else {
                continue;
            };
            let passed_over = yielding.is_some_and(|y| {
                *y == lane || entry.queue.front().is_some_and(|next| next.stepped)
            });
            if passed_over || entry.running >= self.max_running {
                state.turn.push_back(lane);
                continue;
            }
            let Some(next) = entry.queue.pop_front() else {
                continue;
            };
            entry.running += 1;
            if !entry.queue.is_empty() {
                state.turn.push_back(lane.clone());
            }
            if !next.stepped {
                self.queued_unstepped.fetch_sub(1, Ordering::Release);
            }
            return Some((lane, next.work));
        }
        None
    }

    /// A job of `lane` taken by [`FairQueue::pop`] has ended.
    pub fn finish(&self, lane: &Lane) {
        let mut state = self.lock();
        if let Some(entry) = state.lanes.get_mut(lane) {
            entry.running = entry.running.saturating_sub(1);
            entry.admitted = entry.admitted.saturating_sub(1);
            if entry.admitted == 0 {
                state.lanes.remove(lane);
            }
        }
    }

    /// Lanes holding jobs, for observers.
    pub fn active_lanes(&self) -> usize {
        self.lock().lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Lane {
        Lane::Account(Arc::from(name))
    }

    #[test]
    fn lanes_take_turns_and_respect_caps() {
        let q = FairQueue::new(3, 10, 50);
        assert_eq!((q.max_running(), q.max_admitted()), (2, 5));
        let (a, b) = (account("a"), account("b"));
        for i in 0..5 {
            q.push(a.clone(), format!("a{i}"), false).unwrap();
        }
        // The attacker's share is full; the victim is still admitted.
        assert_eq!(
            q.push(a.clone(), "a5".into(), false).unwrap_err().0,
            Refusal::LaneFull
        );
        q.push(b.clone(), "b0".to_string(), false).unwrap();
        // a runs two (its cap), then b goes next even though a queued first.
        assert_eq!(q.pop().unwrap().1, "a0");
        assert_eq!(q.pop().unwrap().1, "b0");
        assert_eq!(q.pop().unwrap().1, "a1");
        assert!(q.pop().is_none(), "a is at its running cap");
        q.finish(&a);
        assert_eq!(q.pop().unwrap().1, "a2");
        // A yield point of a's job never runs a's own work.
        q.push(b.clone(), "b1".into(), false).unwrap();
        q.finish(&a);
        assert_eq!(q.pop_at_yield(&b).unwrap().1, "a3");
        assert_eq!(q.pop_at_yield(&a).unwrap().1, "b1");
        assert!(q.has_unstepped_waiting());
    }

    #[test]
    fn a_yield_point_runs_only_unstepped_jobs_and_never_out_of_a_lanes_order() {
        let q = FairQueue::new(4, 20, 100);
        let (a, b, c) = (account("a"), account("b"), account("c"));
        // b's next job is a long one cut into steps, then a short one; c has a short one.
        q.push(b.clone(), "b-copy", true).unwrap();
        q.push(b.clone(), "b-stat", false).unwrap();
        q.push(c.clone(), "c-copy", true).unwrap();
        assert!(q.has_unstepped_waiting());
        // At a's yield point neither b's copy (stepped) nor b's stat (behind it) runs.
        assert!(q.pop_at_yield(&a).is_none());
        q.push(c.clone(), "c-stat", false).unwrap();
        assert!(q.pop_at_yield(&a).is_none(), "c's stat is behind c's copy");
        // A free thread takes them in each lane's order.
        assert_eq!(q.pop().unwrap().1, "b-copy");
        assert_eq!(q.pop().unwrap().1, "c-copy");
        // Now both heads are short: a yield point may run them, in turn.
        assert_eq!(q.pop_at_yield(&a).unwrap().1, "b-stat");
        assert_eq!(q.pop_at_yield(&a).unwrap().1, "c-stat");
        assert!(!q.has_unstepped_waiting());
    }

    #[test]
    fn one_thread_pools_still_run_jobs() {
        let q = FairQueue::new(1, 1, 10);
        assert_eq!((q.max_running(), q.max_admitted()), (1, 1));
        q.push(Lane::System, 1, true).unwrap();
        assert!(!q.has_unstepped_waiting());
        let (lane, job) = q.pop().unwrap();
        assert_eq!((lane.clone(), job), (Lane::System, 1));
        q.finish(&lane);
        assert_eq!(q.active_lanes(), 0);
    }
}
