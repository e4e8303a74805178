//! Registry jobs the AuthActor delegates to (it never does I/O or Argon2 itself).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::search::changes::Recorder;
use crate::storage::keys::{self, HashCandidate};
use crate::storage::registry::load::{self, AccountStates, CheckOutcome, ProbeOutcome};
use crate::storage::Version;

/// Everything: the marker, accounts.json and every users.json.
pub struct LoadRegistry;

impl BlockingJob for LoadRegistry {
    type Output = ServiceResult<CheckOutcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        load::load_all(ctx.storage)
    }
}

/// The freshness check: stat the generation marker; re-read what changed since `loaded`.
pub struct CheckMarker {
    pub loaded: u64,
    pub known_version: Option<Version>,
}

impl BlockingJob for CheckMarker {
    type Output = ServiceResult<CheckOutcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        load::check(ctx.storage, self.loaded, self.known_version.as_ref())
    }
}

/// Stat one account's users.json; re-read the account if it moved.
pub struct ProbeAccount {
    pub account: String,
    pub known_version: Option<Version>,
}

impl BlockingJob for ProbeAccount {
    type Output = ServiceResult<ProbeOutcome>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        load::probe_account(ctx.storage, &self.account, self.known_version.as_ref())
    }
}

/// Re-read some accounts (those changed locally while a reload was in flight).
pub struct LoadAccounts {
    pub ids: BTreeSet<String>,
}

impl BlockingJob for LoadAccounts {
    type Output = ServiceResult<(AccountStates, u64)>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        load::load_accounts(ctx.storage, &self.ids)
    }
}

/// Argon2id verification of a presented key against candidate hashes (tens of ms each, which
/// is why it runs here and not on the actor's thread or an HTTP worker).
pub struct VerifyArgon {
    pub key: String,
    pub candidates: Vec<HashCandidate>,
}

impl BlockingJob for VerifyArgon {
    type Output = Option<HashCandidate>;

    fn run(self, _ctx: &JobContext<'_>) -> Self::Output {
        keys::first_match(self.candidates, &self.key)
    }
}

/// Startup: create/scaffold the registry and migrate plaintext keys when hashing is on.
pub struct BootstrapRegistry {
    pub hashing: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for BootstrapRegistry {
    type Output = ServiceResult<crate::storage::registry::bootstrap::Report>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let report = crate::storage::registry::bootstrap::run(ctx.storage, self.hashing)?;
        record_default_scaffold(&self.recorder, ctx);
        Ok(report)
    }
}

/// Startup in dev mode: the `default` account and user exist as the contract promises (§4.4).
pub struct ScaffoldDefault {
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for ScaffoldDefault {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::storage::scaffold::init_default(ctx.storage)?;
        record_default_scaffold(&self.recorder, ctx);
        Ok(())
    }
}

/// Startup scaffolds run while the search index may already be building from storage: name
/// the sidecars they may have written, so the live index holds them like a rebuilt one would.
fn record_default_scaffold(recorder: &Recorder, ctx: &JobContext<'_>) {
    use crate::storage::scaffold;
    let sidecars: Vec<String> = scaffold::account_sidecars()
        .into_iter()
        .chain(scaffold::user_sidecars(scaffold::DEFAULT_ID))
        .collect();
    let refs: Vec<&str> = sidecars.iter().map(String::as_str).collect();
    recorder.record_paths(
        ctx.storage,
        scaffold::DEFAULT_ID,
        &refs,
        crate::search::ChangeKind::Mkdir,
    );
}

/// The periodic sweep for unannounced registry changes.
pub struct SweepRegistry {
    pub known: Vec<load::KnownAccount>,
}

impl BlockingJob for SweepRegistry {
    type Output = ServiceResult<(AccountStates, u64)>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        load::sweep(ctx.storage, &self.known)
    }
}
