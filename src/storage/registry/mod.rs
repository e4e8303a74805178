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
        // Groups and ACLs travel in the same snapshot: announcing without them would drop
        // them from memory until the next reload.
        let access = crate::storage::acl::files::read_access(self.storage, account)?;
        self.announce(
            account,
            Some(AccountSnapshot {
                id: account.to_string(),
                deletion: None,
                users,
                users_version: version,
                access: std::sync::Arc::new(access),
                // Re-read so the snapshot carries it; unreadable now: keep what is known.
                config: crate::storage::account_config::stored::read_for_snapshot(
                    self.storage,
                    account,
                )
                .ok()
                .flatten(),
            }),
        )
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
