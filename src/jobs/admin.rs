//! Storage-pool jobs of the admin API (spec §3): one struct per operation. Each runs the
//! registry operation of `storage::registry` with the sink that applies its changes to the
//! AuthActor.

use std::sync::Arc;

use serde_json::Value;

use super::search::{account_paths, record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::registry::accounts::{self, AccountSummary, Created};
use crate::storage::registry::deletion::Removal;
use crate::storage::registry::model::{UserEntry, UsersFile};
use crate::storage::registry::users;
use crate::storage::registry::{OpCtx, RegistrySink};
use crate::storage::scaffold;
use crate::storage::tasks::TaskOwner;

/// How registry-changing jobs reach the AuthActor, and how they store keys.
#[derive(Clone)]
pub struct Registry {
    pub sink: Arc<dyn RegistrySink>,
    pub hashing: bool,
    /// Account and user creation and deletion change indexed content (scaffold sidecars,
    /// whole spaces).
    pub recorder: Arc<Recorder>,
}

impl Registry {
    pub fn cx<'a>(&'a self, ctx: &'a JobContext<'_>) -> OpCtx<'a> {
        OpCtx {
            storage: ctx.storage,
            sink: self.sink.as_ref(),
            hashing: self.hashing,
        }
    }
}

/// A1: create an account with its first admin.
pub struct CreateAccount {
    pub registry: Registry,
    pub account: String,
    pub admin: String,
    pub seed: Option<String>,
    pub user_config: Option<Value>,
}

impl BlockingJob for CreateAccount {
    type Output = ServiceResult<Created>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = accounts::create(
            &self.registry.cx(ctx),
            &self.account,
            &self.admin,
            self.seed.as_deref(),
            self.user_config.as_ref(),
        );
        // The new account's scaffold (directory abstracts) becomes findable at once.
        let sidecars: Vec<String> = scaffold::account_sidecars()
            .into_iter()
            .chain(scaffold::user_sidecars(&self.admin))
            .collect();
        let changed = account_paths(&self.account, &sidecars);
        let kind = ChangeKind::Mkdir;
        let recorder = &self.registry.recorder;
        record_outcome(recorder, ctx, &out, &changed, kind, RecordWhen::OnSuccess);
        out
    }
}

/// A2: every account.
pub struct ListAccounts;

impl BlockingJob for ListAccounts {
    type Output = ServiceResult<Vec<AccountSummary>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        accounts::list(ctx.storage)
    }
}

/// A2b: one account.
pub struct GetAccount {
    pub account: String,
}

impl BlockingJob for GetAccount {
    type Output = ServiceResult<AccountSummary>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        accounts::get(ctx.storage, &self.account)
    }
}

/// A3: delete an account (revoke, delete data, drop the entry).
pub struct DeleteAccount {
    pub registry: Registry,
    pub account: String,
}

impl BlockingJob for DeleteAccount {
    type Output = ServiceResult<Removal>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = accounts::delete(&self.registry.cx(ctx), &self.account);
        // Every instance drops the account's documents (a re-created account starts empty).
        let changed = account_paths(&self.account, &[""]);
        let kind = ChangeKind::Purge;
        let recorder = &self.registry.recorder;
        record_outcome(
            recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// A4: register a user.
pub struct RegisterUser {
    pub registry: Registry,
    pub account: String,
    pub user: String,
    pub role: String,
    pub seed: Option<String>,
    pub user_config: Option<Value>,
}

impl BlockingJob for RegisterUser {
    type Output = ServiceResult<String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = users::register(
            &self.registry.cx(ctx),
            &self.account,
            &self.user,
            &self.role,
            self.seed.as_deref(),
            self.user_config.as_ref(),
        );
        let changed = account_paths(&self.account, &scaffold::user_sidecars(&self.user));
        let kind = ChangeKind::Mkdir;
        let recorder = &self.registry.recorder;
        record_outcome(recorder, ctx, &out, &changed, kind, RecordWhen::OnSuccess);
        out
    }
}

/// A5: the users of an account.
pub struct ListUsers {
    pub account: String,
}

impl BlockingJob for ListUsers {
    type Output = ServiceResult<UsersFile>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        users::list(ctx.storage, &self.account)
    }
}

/// A5b: one user.
pub struct GetUser {
    pub account: String,
    pub user: String,
}

impl BlockingJob for GetUser {
    type Output = ServiceResult<UserEntry>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        users::get(ctx.storage, &self.account, &self.user)
    }
}

/// A6: remove a user (revoke, delete data, drop the entry).
pub struct RemoveUser {
    pub registry: Registry,
    pub account: String,
    pub user: String,
    pub owner: TaskOwner,
}

impl BlockingJob for RemoveUser {
    type Output = ServiceResult<Removal>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = users::remove(
            &self.registry.cx(ctx),
            &self.account,
            &self.user,
            self.owner,
        );
        if out.is_ok() {
            // The user's watches go with the user.
            if let Err(e) =
                crate::storage::watches::forget_user(ctx.storage, &self.account, &self.user)
            {
                tracing::error!(account = %self.account, user = %self.user, error = %e.message, "watches of a removed user not removed");
            }
        }
        let changed = account_paths(&self.account, &[format!("user/{}", self.user)]);
        let kind = ChangeKind::Purge;
        let recorder = &self.registry.recorder;
        record_outcome(
            recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// A7: promote a user to admin.
pub struct SetRole {
    pub registry: Registry,
    pub account: String,
    pub user: String,
    pub role: String,
}

impl BlockingJob for SetRole {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        users::set_role(
            &self.registry.cx(ctx),
            &self.account,
            &self.user,
            &self.role,
        )
    }
}

/// A8: a new key for a user.
pub struct RegenerateKey {
    pub registry: Registry,
    pub account: String,
    pub user: String,
    pub seed: Option<String>,
}

impl BlockingJob for RegenerateKey {
    type Output = ServiceResult<String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        users::regenerate(
            &self.registry.cx(ctx),
            &self.account,
            &self.user,
            self.seed.as_deref(),
        )
    }
}
