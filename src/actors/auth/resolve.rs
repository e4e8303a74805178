//! Key resolution (spec §2.4) as a chain of actor futures: freshness wait → in-memory lookup →
//! (Argon2 on the pool) → on a miss, one shared re-check → answer.

use std::time::Instant;

use actix::fut::{ready, wrap_future};
use actix::prelude::*;

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, IdKind, Identity};
use crate::storage::keys::{self, KeyShape};

use super::gate::{CheckResult, Gate};
use super::index::Lookup;
use super::{AuthActor, ResolveKey, Resolved, MAX_ARGON_IN_FLIGHT};
use crate::jobs::auth as jobs;
use crate::storage::keys::HashCandidate;

type Answer = ResponseActFuture<AuthActor, ServiceResult<Resolved>>;

fn invalid() -> ServiceError {
    ServiceError::unauthenticated("Invalid API key")
}

fn answer(result: ServiceResult<Resolved>) -> Answer {
    Box::pin(ready(result))
}

/// Whether a miss may still trigger a re-check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    First,
    Rechecked,
}

struct Pending {
    key: String,
    shape: KeyShape,
    fingerprint: [u8; 32],
    arrival: Instant,
}

impl Handler<ResolveKey> for AuthActor {
    type Result = Answer;

    fn handle(&mut self, msg: ResolveKey, ctx: &mut Self::Context) -> Answer {
        self.counters.resolves += 1;
        if let Some(root) = &self.root_key {
            if keys::ct_eq(root, &msg.key) {
                // Answered from configuration, never the map: cacheable at the current epoch.
                return answer(Ok(Resolved {
                    identity: Identity::root(),
                    cacheable_at: Some(self.map_epoch),
                    hashed: false,
                }));
            }
        }
        let shape = keys::shape(&msg.key);
        match &shape {
            // Cannot be any user's key: no storage is consulted (spec §2.4 step 2).
            KeyShape::Undecodable | KeyShape::Other => return answer(Err(invalid())),
            KeyShape::Hinted { account, user } => {
                if validate_id(IdKind::Account, account).is_err()
                    || validate_id(IdKind::User, user).is_err()
                {
                    return answer(Err(invalid()));
                }
            }
            KeyShape::Legacy => {}
        }
        let arrival = Instant::now();
        let pending = Pending {
            fingerprint: keys::fingerprint(&msg.key),
            key: msg.key,
            shape,
            arrival,
        };
        // The map must come from a check that started within the refresh interval (strict
        // mode, interval 0: after this request arrived).
        let need = arrival.checked_sub(self.interval);
        if self.marker.satisfied(need) {
            return self.lookup(pending, Stage::First, ctx);
        }
        let rx = self.marker.wait(need);
        self.pump_marker(ctx);
        Box::pin(wrap_future::<_, Self>(rx).then(move |_, act, ctx| {
            // A failed check does not stop known keys (README: storage outage); lookup's miss
            // path turns unknown keys into 503 while storage is unreadable.
            act.lookup(pending, Stage::First, ctx)
        }))
    }
}

impl AuthActor {
    fn lookup(&mut self, p: Pending, stage: Stage, ctx: &mut Context<Self>) -> Answer {
        match self.index.lookup(&p.key, &p.shape, &p.fingerprint) {
            Lookup::Found(identity, cached) => {
                if cached {
                    self.counters.cache_hits += 1;
                }
                // Looked up in the map as it is now: a worker may keep it while this epoch
                // holds and the map stays within the refresh bound.
                answer(Ok(Resolved {
                    identity,
                    cacheable_at: Some(self.map_epoch),
                    hashed: cached,
                }))
            }
            Lookup::NeedsArgon(candidates) => self.verify(p, candidates, stage, ctx),
            Lookup::Miss => self.miss(p, stage, ctx),
        }
    }

    /// 401, or 503 while storage cannot be read (an unknown key might exist there).
    fn miss_error(&self) -> ServiceError {
        match &self.storage_error {
            // The reason was logged where the check failed; clients get the kind only (and
            // one prefix, not the failed check's message wrapped in another).
            Some(_) => ServiceError::unavailable("storage", "the account registry cannot be read")
                .retry_after(1),
            None => invalid(),
        }
    }

    fn miss(&mut self, p: Pending, stage: Stage, ctx: &mut Context<Self>) -> Answer {
        if stage == Stage::Rechecked {
            return answer(Err(self.miss_error()));
        }
        let account = match &p.shape {
            KeyShape::Hinted { account, .. } => account.clone(),
            // Legacy keys are never issued any more; they appear only through registry
            // changes, which the periodic check already covers.
            _ => return answer(Err(self.miss_error())),
        };
        let need = Some(p.arrival);
        let rx = if self.index.account(&account).is_some() {
            let spacing = self.probe_spacing;
            let rx = self
                .probes
                .entry(account.clone())
                .or_insert_with(|| Gate::new(spacing))
                .wait(need);
            self.pump_probe(&account, ctx);
            rx
        } else {
            // An account this instance does not know: the marker announces new accounts. A
            // check that starts after this request arrived answers it; misses may start one
            // sooner than the periodic spacing (at most one per PROBE_SPACING_MAX, shared by
            // every miss), so such a key is never held a whole refresh interval.
            let rx = self.marker.wait_within(need, super::PROBE_SPACING_MAX);
            self.pump_marker(ctx);
            rx
        };
        Box::pin(
            wrap_future::<_, Self>(rx).then(move |r: Result<CheckResult, _>, act, ctx| {
                if !matches!(r, Ok(Ok(()))) && act.storage_error.is_none() {
                    return answer(Err(invalid()));
                }
                act.lookup(p, Stage::Rechecked, ctx)
            }),
        )
    }

    /// Verify against Argon2 hashes on the storage pool; identical keys in flight share one
    /// verification.
    fn verify(
        &mut self,
        p: Pending,
        candidates: Vec<HashCandidate>,
        stage: Stage,
        ctx: &mut Context<Self>,
    ) -> Answer {
        self.counters.cache_misses += 1;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(waiters) = self.argon_pending.get_mut(&p.fingerprint) {
            waiters.push(tx);
        } else {
            if self.argon_pending.len() >= MAX_ARGON_IN_FLIGHT {
                self.counters.argon_busy_rejections += 1;
                return answer(Err(ServiceError::unavailable(
                    "auth",
                    "too many key verifications in progress",
                )
                .retry_after(1)));
            }
            self.argon_pending.insert(p.fingerprint, vec![tx]);
            self.counters.argon_verifications += 1;
            let job = jobs::VerifyArgon {
                key: p.key.clone(),
                candidates,
            };
            let fingerprint = p.fingerprint;
            match self.pools.storage().submit(job) {
                Ok(done) => {
                    ctx.spawn(wrap_future::<_, Self>(done).map(move |r, act, _ctx| {
                        let matched = match r {
                            Ok(Ok(m)) => m,
                            _ => None,
                        };
                        let identity = matched.and_then(|c| {
                            act.index
                                .remember_verified(&c.account, &c.user, &c.phc, fingerprint)
                        });
                        for waiter in act.argon_pending.remove(&fingerprint).unwrap_or_default() {
                            let _ = waiter.send(identity.clone());
                        }
                    }));
                }
                Err(e) => {
                    self.argon_pending.remove(&p.fingerprint);
                    return answer(Err(e.into()));
                }
            }
        }
        Box::pin(wrap_future::<_, Self>(rx).then(move |r, act, ctx| match r {
            // The epoch may have moved since the verification was recorded: not cached (the
            // next request finds it in the verification cache and is cached then).
            Ok(Some(identity)) => answer(Ok(Resolved {
                identity,
                cacheable_at: None,
                hashed: true,
            })),
            _ => act.miss(p, stage, ctx),
        }))
    }
}
