//! The few things sessions need from shared modules (user scaffold, task records, OKF
//! sidecars), behind one seam so every call site names what it means.

use serde_json::Value;

use crate::error::ServiceResult;
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::{okf, scaffold, Storage};

use super::SessionRef;

/// Who generated session and archive summaries.
const SESSION_COMMIT: okf::GeneratedBy = okf::GeneratedBy {
    component: "SessionCompressor",
    trigger: "session_commit",
};

/// SE1 "ensures the caller's user dirs" (spec §4.4).
pub fn ensure_user_dirs(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<()> {
    scaffold::init_user(storage, account, user)?;
    Ok(())
}

fn owner(s: &SessionRef) -> TaskOwner {
    TaskOwner::user(&s.account, &s.user)
}

/// A pending `session_commit` task owned by the session's user; returns its id.
pub fn task_create(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<String> {
    Ok(tasks::create(storage, &owner(s), "session_commit", Some(&s.sid))?.task_id)
}

pub fn task_running(storage: &dyn Storage, s: &SessionRef, id: &str) -> ServiceResult<()> {
    tasks::mark_running(storage, &owner(s), id).map(drop)
}

/// Phase 2's end: completes the task, unless its memory extraction waits in the backlog (then
/// the extractor completes it and the task shows `running`).
pub fn task_complete(
    storage: &dyn Storage,
    s: &SessionRef,
    id: &str,
    result: Value,
) -> ServiceResult<()> {
    if super::backlog::holds(storage, &s.account, id)? {
        return tasks::update(storage, &owner(s), id, |t| {
            if !t.status.is_terminal() {
                t.status = tasks::TaskStatus::Running;
                t.stage = Some("memory_extraction".into());
            }
        })
        .map(drop);
    }
    tasks::complete(storage, &owner(s), id, result).map(drop)
}

pub fn task_fail(
    storage: &dyn Storage,
    s: &SessionRef,
    id: &str,
    error: &str,
) -> ServiceResult<()> {
    tasks::fail(storage, &owner(s), id, error).map(drop)
}

/// An OKF sidecar (spec §4.4) for directory `dir_uri`.
pub fn okf_render(dir_uri: &str, body: &str) -> String {
    okf::render(dir_uri, SESSION_COMMIT, false, body)
}

/// The body of an OKF sidecar without its front matter.
pub fn okf_body(text: &str) -> String {
    okf::body(text).to_string()
}
