//! A limit on work in flight between blocking threads: a bounded crossbeam channel of tokens.
//! Taking a slot receives a token (blocking while none is free), returning it sends the token
//! back, so waiting threads are handed the slot directly (no polling). The limit can move at
//! run time between 1 and the channel's capacity: raising it issues tokens, lowering it
//! takes idle ones back and absorbs held ones as they are returned.

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

pub struct Slots {
    tokens_in: Sender<()>,
    tokens_out: Receiver<()>,
    max: usize,
    count: Mutex<Count>,
}

#[derive(Debug, Clone, Copy)]
struct Count {
    limit: usize,
    /// Tokens in existence, held or idle (above `limit` only until held ones come back).
    issued: usize,
    held: usize,
}

/// A taken slot; returned on drop (also on unwind).
pub struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.0.count.lock().unwrap_or_else(|p| p.into_inner());
        c.held = c.held.saturating_sub(1);
        if c.issued > c.limit {
            c.issued -= 1;
        } else {
            // Cannot be full: at most `issued <= max` tokens exist.
            let _ = self.0.tokens_in.try_send(());
        }
    }
}

impl Slots {
    /// `limit` slots now (at least 1), at most `max` ever.
    pub fn new(limit: usize, max: usize) -> Slots {
        let max = max.max(1);
        let (tokens_in, tokens_out) = crossbeam_channel::bounded(max);
        let slots = Slots {
            tokens_in,
            tokens_out,
            max,
            count: Mutex::new(Count {
                limit: 0,
                issued: 0,
                held: 0,
            }),
        };
        slots.set_limit(limit);
        slots
    }

    /// Wait for a free slot.
    pub fn acquire(&self) -> Slot<'_> {
        // Never disconnected: `self` holds both ends.
        let _ = self.tokens_out.recv();
        self.took()
    }

    /// A free slot, if there is one now.
    pub fn try_acquire(&self) -> Option<Slot<'_>> {
        self.tokens_out.try_recv().ok().map(|()| self.took())
    }

    fn took(&self) -> Slot<'_> {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        c.held += 1;
        Slot(self)
    }

    /// Move the limit (clamped to 1..=max).
    pub fn set_limit(&self, limit: usize) {
        let limit = limit.clamp(1, self.max);
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        c.limit = limit;
        while c.issued < c.limit {
            if self.tokens_in.try_send(()).is_err() {
                break;
            }
            c.issued += 1;
        }
        while c.issued > c.limit && self.tokens_out.try_recv().is_ok() {
            c.issued -= 1;
        }
    }

    pub fn limit(&self) -> usize {
        self.count.lock().map(|c| c.limit).unwrap_or(1)
    }

    /// Slots taken now.
    pub fn held(&self) -> usize {
        self.count.lock().map(|c| c.held).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_moves_and_held_slots_are_absorbed_on_return() {
        let s = Slots::new(2, 4);
        let a = s.acquire();
        let b = s.acquire();
        assert!(s.try_acquire().is_none());
        s.set_limit(3);
        let c = s.try_acquire().expect("raised limit issues a slot");
        assert_eq!(s.held(), 3);
        s.set_limit(1);
        drop(a);
        drop(b);
        // Still one held (c): nothing free until it comes back.
        assert!(s.try_acquire().is_none());
        drop(c);
        let d = s.try_acquire().expect("one slot at limit 1");
        assert!(s.try_acquire().is_none());
        drop(d);
        s.set_limit(10);
        assert_eq!(s.limit(), 4);
    }

    #[test]
    fn a_waiting_thread_is_handed_the_returned_slot() {
        let s = std::sync::Arc::new(Slots::new(1, 1));
        let held = s.acquire();
        let s2 = s.clone();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waiter = std::thread::spawn(move || {
            let _slot = s2.acquire();
            let _ = tx.send(());
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok());
        waiter.join().unwrap();
    }
}
