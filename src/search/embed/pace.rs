//! How hard the embedder pushes its provider, adapted to how the provider copes (issue #19).
//!
//! `embedding.dense.batch_size` and the embedder threads (`embedding.max_concurrent`, at most
//! 4) are ceilings; `embedding.dense.timeout_ms` is the time allowed per text. The batch
//! starts at its ceiling and requests in flight at one; a request of `n` texts may take `n ×`
//! the current allowance per text, which starts at `timeout_ms`.
//!
//! - A full batch answered within half of `n × timeout_ms` doubles the batch (up to its
//!   ceiling) and adds one request in flight.
//! - A timeout halves the size that timed out (down to one text) and the requests in flight;
//!   at one text and one request, it doubles the allowance per text instead (up to
//!   [`MAX_PER_TEXT`]), so a provider slower than `timeout_ms` per text is still waited for.
//! - A success brings the allowance back toward three times the time per text it took (never
//!   below `timeout_ms`).
//! - A throttle (429/503) halves the requests in flight.
//!
//! A slow provider therefore gets small batches, one at a time, with a timeout it can meet,
//! instead of timing out forever while it computes abandoned requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::slots::{Slot, Slots};

/// Longest allowance per text (a request of one text waits at most this long).
pub const MAX_PER_TEXT: Duration = Duration::from_secs(600);

pub struct Pace {
    max_batch: usize,
    /// `timeout_ms`: the allowance per text at rest, and the yardstick of headroom.
    per_text_floor: Duration,
    state: Mutex<State>,
    slots: Slots,
    /// Requests that timed out, and the texts they carried.
    pub timeouts: AtomicU64,
    pub timed_out_texts: AtomicU64,
    /// 429 / 503 answers.
    pub throttles: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    batch: usize,
    per_text: Duration,
}

impl Pace {
    pub fn new(max_batch: usize, max_in_flight: usize, per_text: Duration) -> Pace {
        let max_batch = max_batch.max(1);
        let per_text = per_text.max(Duration::from_millis(1));
        Pace {
            max_batch,
            per_text_floor: per_text,
            state: Mutex::new(State {
                batch: max_batch,
                per_text,
            }),
            slots: Slots::new(1, max_in_flight),
            timeouts: AtomicU64::new(0),
            timed_out_texts: AtomicU64::new(0),
            throttles: AtomicU64::new(0),
        }
    }

    fn state(&self) -> State {
        self.state.lock().map(|s| *s).unwrap_or(State {
            batch: 1,
            per_text: self.per_text_floor,
        })
    }

    /// Texts to send in the next request.
    pub fn batch(&self) -> usize {
        self.state().batch
    }

    /// The time allowed per text now.
    pub fn per_text(&self) -> Duration {
        self.state().per_text
    }

    /// How long a request of `texts` texts may take.
    pub fn timeout_for(&self, texts: usize) -> Duration {
        self.per_text().saturating_mul(texts.max(1) as u32)
    }

    /// Wait until a request may be sent (in-flight limit); held while it is.
    pub fn slot(&self) -> Slot<'_> {
        self.slots.acquire()
    }

    /// A request of `texts` texts succeeded after `took`.
    pub fn succeeded(&self, texts: usize, took: Duration) {
        let texts = texts.max(1);
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let took_per_text = took / texts as u32;
        s.per_text = s
            .per_text
            .min(took_per_text.saturating_mul(3))
            .max(self.per_text_floor);
        let headroom = took.saturating_mul(2) <= self.per_text_floor.saturating_mul(texts as u32);
        // A short batch (the queue held less) says nothing about a bigger one.
        if headroom && texts >= s.batch {
            s.batch = (s.batch * 2).min(self.max_batch);
            self.slots.set_limit(self.slots.limit() + 1);
        }
    }

    /// A request of `texts` texts timed out. True if the pace was cut or the allowance raised
    /// (false: nothing left to change).
    pub fn timed_out(&self, texts: usize) -> bool {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.timed_out_texts
            .fetch_add(texts as u64, Ordering::Relaxed);
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let before = (*s, self.slots.limit());
        if s.batch > 1 || before.1 > 1 {
            s.batch = s.batch.min(texts / 2).max(1);
            self.slots.set_limit(before.1 / 2);
        } else {
            s.per_text = s.per_text.saturating_mul(2).min(MAX_PER_TEXT);
        }
        before != (*s, self.slots.limit())
    }

    /// The provider answered 429 or 503.
    pub fn throttled(&self) {
        self.throttles.fetch_add(1, Ordering::Relaxed);
        self.slots.set_limit(self.slots.limit() / 2);
    }

    pub fn in_flight_limit(&self) -> usize {
        self.slots.limit()
    }

    pub fn in_flight(&self) -> usize {
        self.slots.held()
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn timeouts_shrink_to_one_text_and_headroom_grows_back() {
        let p = Pace::new(32, 4, 100 * MS);
        assert_eq!((p.batch(), p.in_flight_limit()), (32, 1));
        assert_eq!(p.timeout_for(32), 3200 * MS);
        assert_eq!(p.timeout_for(1), 100 * MS);
        for want in [16, 8, 4, 2, 1] {
            assert!(p.timed_out(p.batch()));
            assert_eq!(p.batch(), want);
        }
        assert_eq!(
            p.timed_out_texts.load(Ordering::Relaxed),
            32 + 16 + 8 + 4 + 2
        );
        // Slow but within the allowance: no growth, allowance unchanged.
        p.succeeded(1, 80 * MS);
        assert_eq!((p.batch(), p.in_flight_limit()), (1, 1));
        assert_eq!(p.per_text(), 100 * MS);
        // Headroom: double the batch and add a request in flight, up to the ceilings.
        for want in [2, 4, 8, 16, 32, 32] {
            p.succeeded(p.batch(), 10 * MS * p.batch() as u32);
            assert_eq!(p.batch(), want);
        }
        assert_eq!(p.in_flight_limit(), 4);
        // A short batch (the queue held less) grows nothing.
        assert!(p.timed_out(32));
        assert_eq!((p.batch(), p.in_flight_limit()), (16, 2));
        p.succeeded(3, MS);
        assert_eq!((p.batch(), p.in_flight_limit()), (16, 2));
    }

    /// A provider slower than `timeout_ms` per text: at one text and one request, timeouts
    /// raise the allowance until a request fits; success keeps it near 3 × what it took.
    #[test]
    fn a_provider_slower_than_the_allowance_is_waited_for() {
        let p = Pace::new(4, 2, 100 * MS);
        while p.batch() > 1 || p.in_flight_limit() > 1 {
            p.timed_out(p.batch());
        }
        assert!(p.timed_out(1));
        assert_eq!(p.timeout_for(1), 200 * MS);
        assert!(p.timed_out(1));
        assert_eq!(p.timeout_for(1), 400 * MS);
        // It took 350 ms: no headroom against 100 ms per text, the allowance stays.
        p.succeeded(1, 350 * MS);
        assert_eq!((p.batch(), p.per_text()), (1, 400 * MS));
        // Faster now: back toward 3 × 120 ms, never below timeout_ms.
        p.succeeded(1, 120 * MS);
        assert_eq!(p.per_text(), 360 * MS);
        p.succeeded(1, 20 * MS);
        assert_eq!(p.per_text(), 100 * MS);
        assert_eq!(p.batch(), 2);
        // The allowance has a ceiling.
        let q = Pace::new(1, 1, 400 * MS);
        for _ in 0..20 {
            q.timed_out(1);
        }
        assert_eq!(q.per_text(), MAX_PER_TEXT);
        assert!(!q.timed_out(1), "nothing left to change");
    }

    #[test]
    fn throttles_cut_requests_in_flight_not_the_batch() {
        let p = Pace::new(8, 4, 100 * MS);
        p.succeeded(8, MS);
        p.succeeded(8, MS);
        assert_eq!(p.in_flight_limit(), 3);
        p.throttled();
        assert_eq!((p.batch(), p.in_flight_limit()), (8, 1));
        p.throttled();
        assert_eq!(p.in_flight_limit(), 1);
        assert_eq!(p.throttles.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_timeout_of_a_stale_smaller_batch_never_grows_the_batch() {
        let p = Pace::new(32, 2, 100 * MS);
        assert!(p.timed_out(32));
        assert_eq!(p.batch(), 16);
        // A request of 8 sent before the cut times out: 4 now.
        assert!(p.timed_out(8));
        assert_eq!(p.batch(), 4);
        // One of 32 cut earlier times out late: never back up to 16.
        p.timed_out(32);
        assert_eq!(p.batch(), 4);
    }
}
