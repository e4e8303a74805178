//! Loading a session's meta below every session operation: synthesising legacy sessions,
//! repairing interrupted commits before a mutation, and reconciling live counters.

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{EntryKind, Storage};
use crate::time;

use super::meta::SessionMeta;
use super::{live, recovery, SessionRef, REPAIR_LOCK_TIMEOUT};

/// 404 for a missing session (spec SE3 wording).
pub fn not_found(s: &SessionRef) -> ServiceError {
    ServiceError::not_found("session", &s.sid, format!("Session {} not found", s.sid))
}

/// The session's meta, synthesising one for a legacy directory without `.meta.json`;
/// `Ok(None)` when there is no session.
pub fn load(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Option<SessionMeta>> {
    if let Some(meta) = SessionMeta::load(storage, s)? {
        return Ok(Some(meta));
    }
    match storage.stat(&s.dir()?)? {
        Some(m) if m.kind == EntryKind::Dir => {
            let mut meta = SessionMeta::new(s, &time::millis_z_now());
            // Force a recount from the file: a legacy session's counters are unknown.
            meta.internal.live_bytes = u64::MAX;
            Ok(Some(meta))
        }
        _ => Ok(None),
    }
}

/// Load under the session lock, finishing any interrupted commit and reconciling counters
/// first, so every mutation starts from a consistent session.
pub fn load_for_update(
    storage: &dyn Storage,
    s: &SessionRef,
) -> ServiceResult<Option<SessionMeta>> {
    let Some(mut meta) = load(storage, s)? else {
        return Ok(None);
    };
    if meta.internal.pending_commit.is_some() {
        recovery::repair(storage, s, &mut meta)?;
    }
    if live::reconcile(storage, s, &mut meta, true)? {
        meta.save(storage, s)?;
    }
    live::ensure_log(storage, s, &mut meta)?;
    Ok(Some(meta))
}

/// Load for a read. A leftover commit marker is repaired if nobody holds the lock (a crashed
/// commit); if a commit is running right now the read proceeds on what is there.
pub fn load_for_read(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Option<SessionMeta>> {
    let Some(mut meta) = load(storage, s)? else {
        return Ok(None);
    };
    if meta.internal.pending_commit.is_some() {
        if let Ok(_guard) = s.lock_within(storage, REPAIR_LOCK_TIMEOUT) {
            return load_for_update(storage, s);
        }
    }
    live::reconcile(storage, s, &mut meta, false)?;
    live::ensure_log(storage, s, &mut meta)?;
    Ok(Some(meta))
}
