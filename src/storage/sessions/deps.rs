//! The few things sessions need from modules other branches own (user scaffold, task records,
//! OKF sidecars), behind one seam so each call site stays the same when they change.
//!
//! TEMPORARY bodies until the lead's `scaffold`, `tasks` and `okf` modules land on main; then
//! every function here forwards to them.

use serde_json::Value;

use crate::error::ServiceResult;
use crate::storage::Storage;

use super::SessionRef;

/// SE1 "ensures the caller's user dirs" (spec §4.4).
pub fn ensure_user_dirs(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<()> {
    storage.mkdir(&SessionRef::sessions_dir(account, user)?)?;
    Ok(())
}

/// A pending `session_commit` task owned by the session's user; returns its id.
pub fn task_create(_storage: &dyn Storage, _s: &SessionRef) -> ServiceResult<String> {
    Ok(uuid::Uuid::new_v4().to_string())
}

pub fn task_running(_storage: &dyn Storage, _s: &SessionRef, _id: &str) -> ServiceResult<()> {
    Ok(())
}

pub fn task_complete(
    _storage: &dyn Storage,
    _s: &SessionRef,
    _id: &str,
    _result: Value,
) -> ServiceResult<()> {
    Ok(())
}

pub fn task_fail(
    _storage: &dyn Storage,
    _s: &SessionRef,
    _id: &str,
    _error: &str,
) -> ServiceResult<()> {
    Ok(())
}

/// An OKF sidecar (spec §4.4) for directory `dir_uri`.
pub fn okf_render(dir_uri: &str, body: &str) -> String {
    format!(
        "---\ndirectory: {dir_uri}/\ngenerated_by:\n  component: SessionCommit\n  trigger: session_commit\n---\n\n{}\n",
        body.trim_end()
    )
}

/// The body of an OKF sidecar without its front matter.
pub fn okf_body(text: &str) -> String {
    let body = match text.strip_prefix("---\n") {
        Some(rest) => match rest.find("\n---\n") {
            Some(i) => &rest[i + 5..],
            None => text,
        },
        None => text,
    };
    body.trim_matches('\n').to_string()
}
