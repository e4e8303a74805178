//! Documents waiting for a vector, in arrival order; each may carry a time before which it
//! is not taken (another instance's change, a provider pause).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Want {
    pub path: String,
    pub account: String,
    pub hash: String,
    /// This instance made the change (it computes at once and stores the vector).
    pub local: bool,
    pub queued_at: Instant,
    pub not_before: Instant,
}

#[derive(Debug, Default)]
pub struct Queue {
    wants: Mutex<VecDeque<Want>>,
}

impl Queue {
    pub fn push(&self, w: Want) {
        if let Ok(mut q) = self.wants.lock() {
            q.push_back(w);
        }
    }

    /// Up to `max` wants that are due at `now`, oldest first.
    pub fn take(&self, max: usize, now: Instant) -> Vec<Want> {
        let Ok(mut q) = self.wants.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut rest = VecDeque::with_capacity(q.len());
        while let Some(w) = q.pop_front() {
            if out.len() < max && w.not_before <= now {
                out.push(w);
            } else {
                rest.push_back(w);
            }
        }
        *q = rest;
        out
    }

    /// Put wants back, due at `at` (or when they were due, if later).
    pub fn requeue(&self, wants: Vec<Want>, at: Option<Instant>) {
        if let Ok(mut q) = self.wants.lock() {
            q.extend(wants.into_iter().map(|mut w| {
                if let Some(at) = at {
                    w.not_before = w.not_before.max(at);
                }
                w
            }));
        }
    }

    /// True if a want is due now.
    pub fn ready_now(&self) -> bool {
        let now = Instant::now();
        self.wants
            .lock()
            .is_ok_and(|q| q.iter().any(|w| w.not_before <= now))
    }

    pub fn len(&self) -> usize {
        self.wants.lock().map(|q| q.len()).unwrap_or(0)
    }
}
