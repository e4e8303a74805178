//! How hard the embedder pushes its provider, adapted to how the provider copes (issue #19).
//!
//! `embedding.dense.batch_size` and the embedder threads (`embedding.max_concurrent`, at most
//! 4) are ceilings. The batch starts at its ceiling and requests in flight at one; a request
//! of `n` texts may take `n × timeout_ms`. A success that took at most half its allowance
//! (the provider has headroom) and sent a full batch doubles the batch (up to its ceiling) and
//! adds one request in flight; a timeout halves the size that timed out (down to one text)
//! and the requests in flight; a throttle (429/503) halves the requests in flight. Slow
//! providers therefore get small batches one at a time instead of timing out forever while
//! they compute abandoned requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::slots::{Slot, Slots};

pub struct Pace {
    max_batch: usize,
    per_text: Duration,
    batch: Mutex<usize>,
    slots: Slots,
    /// Requests that timed out, and the texts they carried.
    pub timeouts: AtomicU64,
    pub timed_out_texts: AtomicU64,
    /// 429 / 503 answers.
    pub throttles: AtomicU64,
}

impl Pace {
    pub fn new(max_batch: usize, max_in_flight: usize, per_text: Duration) -> Pace {
        Pace {
            max_batch: max_batch.max(1),
            per_text,
            batch: Mutex::new(max_batch.max(1)),
            slots: Slots::new(1, max_in_flight),
            timeouts: AtomicU64::new(0),
            timed_out_texts: AtomicU64::new(0),
            throttles: AtomicU64::new(0),
        }
    }

    /// Texts to send in the next request.
    pub fn batch(&self) -> usize {
        self.batch.lock().map(|b| *b).unwrap_or(1)
    }

    /// How long a request of `texts` texts may take.
    pub fn timeout_for(&self, texts: usize) -> Duration {
        self.per_text.saturating_mul(texts.max(1) as u32)
    }

    /// Wait until a request may be sent (in-flight limit); held while it is.
    pub fn slot(&self) -> Slot<'_> {
        self.slots.acquire()
    }

    /// A request of `texts` texts succeeded after `took`.
    pub fn succeeded(&self, texts: usize, took: Duration) {
        if took.saturating_mul(2) > self.timeout_for(texts) {
            return;
        }
        let Ok(mut b) = self.batch.lock() else {
            return;
        };
        if texts < *b {
            // Not a full batch: says nothing about a bigger one or more in flight.
            return;
        }
        *b = (*b * 2).min(self.max_batch);
        self.slots.set_limit(self.slots.limit() + 1);
    }

    /// A request of `texts` texts timed out. True if the pace was cut (false: already at one
    /// text, one request).
    pub fn timed_out(&self, texts: usize) -> bool {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.timed_out_texts
            .fetch_add(texts as u64, Ordering::Relaxed);
        let Ok(mut b) = self.batch.lock() else {
            return false;
        };
        let before = (*b, self.slots.limit());
        *b = (*b).min(texts / 2).max(1);
        self.slots.set_limit(before.1 / 2);
        before != (*b, self.slots.limit())
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
        assert!(!p.timed_out(1), "nothing left to cut");
        assert_eq!(p.batch(), 1);
        assert_eq!(
            p.timed_out_texts.load(Ordering::Relaxed),
            32 + 16 + 8 + 4 + 2 + 1
        );
        // Slow but within the allowance: no growth.
        p.succeeded(1, 80 * MS);
        assert_eq!((p.batch(), p.in_flight_limit()), (1, 1));
        // Headroom: double the batch and add a request in flight, up to the ceilings.
        for want in [2, 4, 8, 16, 32, 32] {
            p.succeeded(p.batch(), 10 * MS);
            assert_eq!(p.batch(), want);
        }
        assert_eq!(p.in_flight_limit(), 4);
        // A short batch (the queue held less) grows nothing.
        assert!(p.timed_out(32));
        assert_eq!((p.batch(), p.in_flight_limit()), (16, 2));
        p.succeeded(3, MS);
        assert_eq!((p.batch(), p.in_flight_limit()), (16, 2));
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
