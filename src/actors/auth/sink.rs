//! The bridge from registry operations (on pool threads) to the AuthActor: after a write is
//! persisted and announced, the operation hands the account's new state to the actor and waits
//! (bounded) until it is applied, so for example a revoked key is dead in memory before the
//! user's data is deleted.

use std::time::Duration;

use actix::Addr;

use crate::storage::registry::{AccountSnapshot, RegistrySink};

use super::{ApplyChange, AuthActor};

/// How long a pool thread waits for the actor to apply a change.
const APPLY_DEADLINE: Duration = Duration::from_secs(5);

pub struct ActorSink {
    addr: Addr<AuthActor>,
}

impl ActorSink {
    pub fn new(addr: Addr<AuthActor>) -> Self {
        ActorSink { addr }
    }
}

impl RegistrySink for ActorSink {
    fn publish(&self, generation: u64, account: &str, snapshot: Option<AccountSnapshot>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.addr.do_send(ApplyChange {
            generation,
            account: account.to_string(),
            snapshot,
            ack: Some(tx),
        });
        // The actor never waits on the pool, so this cannot deadlock; the deadline only guards
        // against a stopped actor during shutdown.
        if rx.recv_timeout(APPLY_DEADLINE).is_err() {
            tracing::warn!(
                account,
                "auth actor did not confirm a registry change in time"
            );
        }
    }
}
