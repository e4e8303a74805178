//! The account/user registry (spec §4.2, §4.3): file models, compare-and-swap updates, the
//! generation marker other instances watch, snapshot loading for the AuthActor, and the admin
//! operations (A1–A8) that run on the storage pool.

pub mod accounts;
pub mod bootstrap;
pub mod deletion;
pub mod generation;
pub mod load;
pub mod model;
pub mod query;
pub mod store;
pub mod users;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::keys;
use crate::storage::Storage;

pub use load::AccountSnapshot;

/// Where a registry change is announced inside this process, after it is persisted and the
/// generation marker is bumped: the AuthActor, so a local write is visible at once.
pub trait RegistrySink: Send + Sync + 'static {
    /// `account` changed at `generation`; `snapshot` is its stored state (`None`: gone).
    /// Blocks until the change is applied (bounded), so a revocation is in force in memory
    /// before the operation goes on to delete data.
    fn publish(&self, generation: u64, account: &str, snapshot: Option<AccountSnapshot>);
}

/// A sink that drops announcements (startup tasks that run before the AuthActor loads).
pub struct NoSink;

impl RegistrySink for NoSink {
    fn publish(&self, _: u64, _: &str, _: Option<AccountSnapshot>) {}
}

/// What every registry-changing operation needs.
pub struct OpCtx<'a> {
    pub storage: &'a dyn Storage,
    pub sink: &'a dyn RegistrySink,
    /// Store new keys as Argon2id hashes (auth.api_key_hashing).
    pub hashing: bool,
}

impl OpCtx<'_> {
    /// Bump the marker for `account` and hand its new state to the sink.
    pub fn announce(&self, account: &str, snapshot: Option<AccountSnapshot>) -> ServiceResult<u64> {
        match generation::bump(self.storage, &[account], false) {
            Ok(generation) => {
                self.sink.publish(generation, account, snapshot);
                Ok(generation)
            }
            Err(e) => {
                // The registry write is durable; only the announcement failed. This process
                // still applies it (generation 0 = "not a known generation"), so its memory
                // agrees with storage; peers find it through probes or the sweep.
                self.sink.publish(0, account, snapshot);
                Err(e)
            }
        }
    }

    /// [`OpCtx::announce`] of an active account whose users.json is now `users` at `version`.
    pub fn announce_users(
        &self,
        account: &str,
        users: model::UsersFile,
        version: Option<crate::storage::Version>,
    ) -> ServiceResult<u64> {
        // Groups, ACLs and settings travel in the same snapshot: announcing without them
        // would drop them from memory until the next reload.
        let side = match load::read_side(self.storage, account) {
            Ok(side) => side,
            Err(e) => {
                // The users.json change is durable: announce it anyway, so other instances
                // re-read the whole account; this one does on its next check.
                self.bump_only(account);
                return Err(e);
            }
        };
        self.announce(
            account,
            Some(AccountSnapshot {
                id: account.to_string(),
                deletion: None,
                users,
                users_version: version,
                access: side.access,
                config: side.config,
                side: Some(side.versions),
            }),
        )
    }

    /// Announce a change of `account`'s stored state (its ACL table, groups or settings):
    /// re-read the account and hand it to this process; if it cannot be re-read, the marker
    /// is still bumped (the change is durable: every instance, this one included, re-reads
    /// the account on its next check). Failures are logged, not returned: the change itself
    /// has succeeded, and the sweep finds a change whose announcement was lost.
    pub fn announce_stored(&self, account: &str) {
        let ids = std::collections::BTreeSet::from([account.to_string()]);
        let result = match load::load_accounts(self.storage, &ids) {
            Ok((mut states, _)) => {
                let snapshot = states.pop().and_then(|(_, s)| s);
                self.announce(account, snapshot).map(drop)
            }
            Err(e) => {
                self.bump_only(account);
                Err(e)
            }
        };
        if let Err(e) = result {
            tracing::warn!(account, error = %e.message, "account change stored; announced only through the marker (or the sweep)");
        }
    }

    /// Bump the marker without a snapshot for this process (it finds the change through its
    /// own next marker check, like any other instance).
    fn bump_only(&self, account: &str) {
        if let Err(e) = generation::bump(self.storage, &[account], false) {
            tracing::warn!(account, error = %e.message, "account change stored but the marker could not be bumped; the sweep will find it");
        }
    }
}

/// The stored form of a fresh key: itself, or its Argon2id hash plus the 8-char prefix.
pub fn stored_key(key: &str, hashing: bool) -> ServiceResult<(String, Option<String>)> {
    if hashing {
        let phc = keys::hash(key).map_err(ServiceError::internal)?;
        Ok((phc, Some(keys::prefix(key))))
    } else {
        Ok((key.to_string(), None))
    }
}

pub fn account_not_found(account: &str) -> ServiceError {
    ServiceError::not_found("account", account, format!("Account not found: {account}"))
}

pub fn user_not_found(user: &str) -> ServiceError {
    ServiceError::not_found("user", user, format!("User not found: {user}"))
}

pub fn account_deleting(task_id: &str) -> ServiceError {
    ServiceError::failed_precondition("Account deletion is in progress")
        .with_details(serde_json::json!({"task_id": task_id}))
}

pub fn user_deleting(task_id: &str) -> ServiceError {
    ServiceError::failed_precondition("User deletion is in progress")
        .with_details(serde_json::json!({"task_id": task_id}))
}
