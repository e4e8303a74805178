//! Storage-pool jobs of the settings routes (issue #23): account configuration.

use serde_json::{Map, Value};

use super::admin::Registry;
use super::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::storage::account_config::{self, StoredConfig};

/// The stored configuration of an active account.
pub struct ReadAccountConfig {
    pub account: String,
}

impl BlockingJob for ReadAccountConfig {
    type Output = ServiceResult<StoredConfig>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        account_config::read(ctx.storage, &self.account)
    }
}

/// A three-state PATCH of an account's configuration, announced to every instance.
pub struct PatchAccountConfig {
    pub registry: Registry,
    pub account: String,
    pub patch: Map<String, Value>,
}

impl BlockingJob for PatchAccountConfig {
    type Output = ServiceResult<StoredConfig>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        account_config::patch(&self.registry.cx(ctx), &self.account, &self.patch)
    }
}

/// A user's stored settings file (the user must exist in an active account).
pub struct ReadUserConfig {
    pub account: String,
    pub user: String,
    /// Check the user exists (admin routes); a caller's own file needs no check.
    pub check_user: bool,
}

impl BlockingJob for ReadUserConfig {
    type Output = ServiceResult<Map<String, Value>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        if self.check_user {
            crate::storage::registry::users::existing_user(ctx.storage, &self.account, &self.user)?;
        }
        crate::storage::user_config::read(ctx.storage, &self.account, &self.user)
    }
}

/// Set or remove one key of a user's settings file.
pub struct SetUserConfigKey {
    pub account: String,
    pub user: String,
    pub check_user: bool,
    pub key: &'static str,
    pub value: Option<Value>,
}

impl BlockingJob for SetUserConfigKey {
    type Output = ServiceResult<Map<String, Value>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        if self.check_user {
            crate::storage::registry::users::existing_user(ctx.storage, &self.account, &self.user)?;
        }
        crate::storage::user_config::set_key(
            ctx.storage,
            &self.account,
            &self.user,
            self.key,
            self.value,
        )
    }
}

/// Set or remove fields of one object key of the caller's settings file, atomically.
pub struct MergeUserConfigKey {
    pub account: String,
    pub user: String,
    pub key: &'static str,
    pub changes: Vec<(String, Option<Value>)>,
}

impl BlockingJob for MergeUserConfigKey {
    type Output = ServiceResult<Map<String, Value>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::storage::user_config::merge_key(
            ctx.storage,
            &self.account,
            &self.user,
            self.key,
            &self.changes,
        )
    }
}
