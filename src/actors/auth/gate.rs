//! Coalescing of storage checks inside the AuthActor.
//!
//! A request that needs fresh registry data names the earliest start time a check must have
//! (`need`): "started within the refresh interval" for the periodic freshness rule, "started
//! after I arrived" for a miss. A [`Gate`] runs at most one check at a time, never starts two
//! closer than its `spacing`, and answers every waiter whose `need` the finished check meets;
//! so any number of concurrent requests cost one check, and a flood costs one check per
//! spacing.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// What a finished check tells its waiters: `Err(reason)` if storage could not be read.
pub type CheckResult = Result<(), String>;

pub struct Gate {
    spacing: Duration,
    /// Start of the last check that finished (successfully or not).
    last_done: Option<Instant>,
    /// Start of the last check begun (finished or still running).
    last_start: Option<Instant>,
    /// Start of the check now running.
    in_flight: Option<Instant>,
    /// Each waiter: the earliest start it needs, the spacing it tolerates, its answer.
    waiters: Vec<(Option<Instant>, Duration, oneshot::Sender<CheckResult>)>,
    /// A timer is armed to start the next check when the spacing has passed.
    pub timer_armed: bool,
    /// Outcome of the last finished check.
    pub last_result: CheckResult,
}

/// What the owner must do after [`Gate::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing (idle, or a check is running).
    Idle,
    /// Start a check now; pass this start time back to [`Gate::finish`].
    Start(Instant),
    /// Call `poll` again after this delay.
    WakeAfter(Duration),
}

impl Gate {
    pub fn new(spacing: Duration) -> Self {
        Gate {
            spacing,
            last_done: None,
            last_start: None,
            in_flight: None,
            waiters: Vec::new(),
            timer_armed: false,
            last_result: Ok(()),
        }
    }

    /// True if the last finished check started at or after `need` (`None`: any check will do,
    /// and a check that never ran does not count).
    pub fn satisfied(&self, need: Option<Instant>) -> bool {
        match (self.last_done, need) {
            (Some(done), Some(need)) => done >= need,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    pub fn wait(&mut self, need: Option<Instant>) -> oneshot::Receiver<CheckResult> {
        self.wait_within(need, self.spacing)
    }

    /// Like [`Gate::wait`], but the next check may start as soon as `spacing` (if shorter than
    /// the gate's own) has passed since the last one: a request that is held until a check
    /// runs should not wait out the whole periodic spacing (a miss, which would otherwise be
    /// held a full refresh interval every time). Still coalesced: one check serves all.
    pub fn wait_within(
        &mut self,
        need: Option<Instant>,
        spacing: Duration,
    ) -> oneshot::Receiver<CheckResult> {
        let (tx, rx) = oneshot::channel();
        self.waiters.push((need, spacing.min(self.spacing), tx));
        rx
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Decide whether a check should start now.
    pub fn poll(&mut self, now: Instant) -> Next {
        self.waiters.retain(|(_, _, tx)| !tx.is_closed());
        if self.in_flight.is_some() || self.waiters.is_empty() {
            return Next::Idle;
        }
        let spacing = self
            .waiters
            .iter()
            .map(|(_, s, _)| *s)
            .min()
            .unwrap_or(self.spacing);
        if let Some(last) = self.last_start {
            let ready_at = last + spacing;
            if now < ready_at {
                return Next::WakeAfter(ready_at - now);
            }
        }
        self.in_flight = Some(now);
        self.last_start = Some(now);
        Next::Start(now)
    }

    /// Record the outcome of the check started at `started`; answers the waiters it satisfies.
    pub fn finish(&mut self, started: Instant, result: CheckResult) {
        self.in_flight = None;
        self.last_done = Some(started);
        self.last_result = result.clone();
        let mut still = Vec::new();
        for (need, spacing, tx) in self.waiters.drain(..) {
            if need.is_none_or(|n| started >= n) {
                let _ = tx.send(result.clone());
            } else {
                still.push((need, spacing, tx));
            }
        }
        self.waiters = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_and_spaces_checks() {
        let mut g = Gate::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(!g.satisfied(None));
        let mut a = g.wait(Some(t0));
        let mut b = g.wait(Some(t0));
        let Next::Start(s1) = g.poll(t0) else {
            panic!("should start")
        };
        // A request arriving while the check runs needs a later one.
        let later = s1 + Duration::from_millis(1);
        let mut c = g.wait(Some(later));
        assert_eq!(g.poll(later), Next::Idle);
        g.finish(s1, Ok(()));
        assert_eq!(a.try_recv(), Ok(Ok(())));
        assert_eq!(b.try_recv(), Ok(Ok(())));
        assert!(c.try_recv().is_err());
        assert!(matches!(g.poll(later), Next::WakeAfter(_)));
        let t1 = s1 + Duration::from_millis(100);
        let Next::Start(s2) = g.poll(t1) else {
            panic!("should start after spacing")
        };
        g.finish(s2, Err("down".into()));
        assert_eq!(c.try_recv(), Ok(Err("down".into())));
        assert!(g.satisfied(Some(s2)));
        assert!(!g.satisfied(Some(s2 + Duration::from_millis(1))));
        assert_eq!(g.poll(t1), Next::Idle);
    }

    #[test]
    fn a_shorter_spacing_waiter_starts_the_next_check_sooner() {
        let mut g = Gate::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let _a = g.wait(None);
        let Next::Start(s1) = g.poll(t0) else {
            panic!("should start")
        };
        g.finish(s1, Ok(()));
        let arrival = s1 + Duration::from_millis(5);
        let _periodic = g.wait(Some(arrival));
        assert_eq!(g.poll(arrival), Next::WakeAfter(Duration::from_millis(995)));
        let mut miss = g.wait_within(Some(arrival), Duration::from_millis(100));
        assert_eq!(g.poll(arrival), Next::WakeAfter(Duration::from_millis(95)));
        let t = s1 + Duration::from_millis(100);
        let Next::Start(s2) = g.poll(t) else {
            panic!("the miss may start a check after 100 ms")
        };
        g.finish(s2, Ok(()));
        assert_eq!(miss.try_recv(), Ok(Ok(())));
    }
}
