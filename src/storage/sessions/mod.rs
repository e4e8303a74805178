//! Sessions (spec §9): a conversation's live messages, its commits into numbered archives, and
//! the context a client reads back.
//!
//! Everything here is blocking and runs on the pools: reads and message writes on the storage
//! pool, commits (Phase 1 and Phase 2) on the commit pool. Every mutation of one session holds
//! the named cross-instance lock of [`SessionRef::lock`], so two instances never interleave a
//! read-modify-write of the same session. Crash consistency rests on one rule: a commit's
//! point of no return is the atomic rewrite of the live `messages.jsonl`; see [`recovery`].

pub mod archive;
pub mod backlog;
pub mod commit;
pub mod config;
pub mod context;
mod deps;
pub mod fit;
pub mod id;
pub mod live;
pub mod load;
pub mod message;
pub mod meta;
pub mod ops;
pub mod policy;
pub mod recovery;
pub mod tokens;
pub mod uri;

use std::time::Duration;

use crate::error::{ServiceError, ServiceResult};

use super::{LockGuard, Storage, StorageError, StorePath};

/// How long a mutation waits for another one on the same session (a commit of a very large
/// session holds the lock for about a second) before answering 409 retryable.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads that only want to repair an interrupted commit try the lock once: if it is held, a
/// commit is running right now and there is nothing to repair.
pub const REPAIR_LOCK_TIMEOUT: Duration = Duration::ZERO;

/// Storage-pool jobs wait only this long for the session lock, then give their thread back
/// (answering "busy"); the HTTP side waits asynchronously and retries, so a long commit never
/// pins storage threads that other requests need.
pub const BRIEF_LOCK_WAIT: Duration = Duration::from_millis(20);

/// `conflict_type` of the "session busy" answer.
pub const BUSY: &str = "session_busy";

/// True for the retryable "another mutation holds this session" error.
pub fn is_busy(err: &ServiceError) -> bool {
    err.details
        .as_ref()
        .and_then(|d| d.get("conflict_type"))
        .and_then(serde_json::Value::as_str)
        == Some(BUSY)
}

/// A session mutation found the session changed under it although it held the session's lock
/// (the lock was lost: its holder stalled for a whole lease lifetime). Nothing was written past
/// the fence; the client may retry.
pub fn changed_concurrently(s: &SessionRef) -> ServiceError {
    ServiceError::conflict(format!(
        "Session {} was changed concurrently; retry shortly",
        s.sid
    ))
    .with_details(serde_json::json!({
        "resource": s.sid, "conflict_type": BUSY, "retryable": true
    }))
}

/// Stop before writing if the session lock is no longer certainly ours.
pub fn ensure_held(guard: &dyn LockGuard, s: &SessionRef) -> ServiceResult<()> {
    if guard.held() {
        Ok(())
    } else {
        tracing::warn!(session = %s.uri(), "session lock lease ran out before a write; giving up");
        Err(changed_concurrently(s))
    }
}

/// `conflict_type` of the "session files are damaged" answer.
pub const DAMAGED: &str = "session_damaged";

/// 409 for a session whose stored files cannot be read as a session (a file edited or replaced
/// outside the sessions API). The session can still be deleted (SE4).
pub fn damaged(detail: impl std::fmt::Display) -> ServiceError {
    tracing::warn!(%detail, "damaged session data");
    ServiceError::conflict(
        "Session data is damaged and cannot be read; delete the session to start over",
    )
    .with_details(serde_json::json!({"conflict_type": DAMAGED}))
}

/// One session of one user: the names of everything it stores (spec §9.1).
#[derive(Debug, Clone)]
pub struct SessionRef {
    pub account: String,
    pub user: String,
    pub sid: String,
}

impl SessionRef {
    /// `sid` must already have passed [`id::validate`].
    pub fn new(account: &str, user: &str, sid: &str) -> Self {
        SessionRef {
            account: account.to_string(),
            user: user.to_string(),
            sid: sid.to_string(),
        }
    }

    /// `{account}/user/{user}/sessions`.
    pub fn sessions_dir(account: &str, user: &str) -> ServiceResult<StorePath> {
        Ok(StorePath::root()
            .join(account)?
            .join("user")?
            .join(user)?
            .join("sessions")?)
    }

    pub fn dir(&self) -> ServiceResult<StorePath> {
        Ok(Self::sessions_dir(&self.account, &self.user)?.join(&self.sid)?)
    }

    pub fn live(&self) -> ServiceResult<StorePath> {
        Ok(self.dir()?.join("messages.jsonl")?)
    }

    pub fn meta(&self) -> ServiceResult<StorePath> {
        Ok(self.dir()?.join(".meta.json")?)
    }

    pub fn history(&self) -> ServiceResult<StorePath> {
        Ok(self.dir()?.join("history")?)
    }

    pub fn archive(&self, name: &str) -> ServiceResult<StorePath> {
        Ok(self.history()?.join(name)?)
    }

    pub fn uri(&self) -> String {
        format!("viking://user/{}/sessions/{}", self.user, self.sid)
    }

    pub fn archive_uri(&self, name: &str) -> String {
        format!("{}/history/{name}", self.uri())
    }

    /// Serialize every mutation of this session, across instances.
    pub fn lock(&self, storage: &dyn Storage) -> ServiceResult<Box<dyn LockGuard>> {
        self.lock_within(storage, LOCK_TIMEOUT)
    }

    /// The lock for a storage-pool job: a short wait, then "busy" (see [`BRIEF_LOCK_WAIT`]).
    pub fn lock_briefly(&self, storage: &dyn Storage) -> ServiceResult<Box<dyn LockGuard>> {
        self.lock_within(storage, BRIEF_LOCK_WAIT)
    }

    pub fn lock_within(
        &self,
        storage: &dyn Storage,
        timeout: Duration,
    ) -> ServiceResult<Box<dyn LockGuard>> {
        let name = format!("session:{}/{}/{}", self.account, self.user, self.sid);
        storage.lock(&name, timeout).map_err(|e| match e {
            StorageError::Busy(_) => ServiceError::conflict(format!(
                "Session {} is busy with another update; retry shortly",
                self.sid
            ))
            .with_details(serde_json::json!({
                "resource": self.sid, "conflict_type": BUSY, "retryable": true
            })),
            other => other.into(),
        })
    }

    /// The session's owner as a (USER-role) identity, for URI aliases in message parts.
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity {
            role: crate::identity::Role::User,
            account: self.account.clone(),
            user: self.user.clone(),
        }
    }

    pub fn user_json(&self) -> serde_json::Value {
        serde_json::json!({"account_id": self.account, "user_id": self.user})
    }
}
