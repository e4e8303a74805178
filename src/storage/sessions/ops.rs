//! SE1–SE6: create, list, get, delete and add messages; and the startup sweep of interrupted
//! commits.

use serde_json::{json, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{
    account_names, remove_if_exists, subdir_names, Storage, StorageError, StorePath,
};
use crate::time;

use super::load::{load, load_for_read, load_for_update, not_found};
use super::message::{self, MessageInput};
use super::meta::SessionMeta;
use super::{deps, live, policy, SessionRef, REPAIR_LOCK_TIMEOUT};

/// What SE1 (or an auto-create) stores beside the defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub memory_policy: Value,
    pub auto_commit_policy: Value,
    pub event_tags: Option<Vec<String>>,
}

/// Create the session's files; the caller holds the lock and has checked it does not exist.
fn create_locked(
    storage: &dyn Storage,
    s: &SessionRef,
    opts: &CreateOptions,
) -> ServiceResult<SessionMeta> {
    deps::ensure_user_dirs(storage, &s.account, &s.user)?;
    // Create-only: a live file that is already there (written by a creator that lost the
    // race for the meta below) is left alone.
    match storage.write_if(&s.live()?, b"", None) {
        Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut meta = SessionMeta::new(s, &time::millis_z_now());
    meta.memory_policy = opts.memory_policy.clone();
    meta.auto_commit_policy = opts.auto_commit_policy.clone();
    meta.event_search_tags = opts.event_tags.clone();
    if live::segmented(storage) {
        meta.internal.log = Some(Default::default());
    }
    meta.save(storage, s)?;
    Ok(meta)
}

/// SE1 result shape.
fn summary(s: &SessionRef, meta: &SessionMeta) -> Value {
    json!({
        "session_id": s.sid,
        "uri": s.uri(),
        "user": s.user_json(),
        "auto_commit_policy": meta.auto_commit_policy,
        "memory_extraction_config": policy::extraction_config(meta.event_search_tags.as_ref()),
    })
}

/// SE1: create a session; an existing id → 409.
pub fn create(
    storage: &dyn Storage,
    s: &SessionRef,
    options: &CreateOptions,
) -> ServiceResult<Value> {
    let _lock = s.lock_briefly(storage)?;
    if load(storage, s)?.is_some() {
        return Err(ServiceError::already_exists(
            "session",
            &s.sid,
            format!("Session already exists: {}", s.sid),
        ));
    }
    let meta = create_locked(storage, s, options)?;
    Ok(summary(s, &meta))
}

/// SE2: the user's sessions, newest first.
pub fn list(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<Value> {
    let dir = SessionRef::sessions_dir(account, user)?;
    let mut entries = match storage.list(&dir) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) => return Ok(json!([])),
        Err(e) => return Err(e.into()),
    };
    entries.retain(|e| !e.name.starts_with('.'));
    entries.sort_by(|a, b| {
        b.meta
            .modified
            .cmp(&a.meta.modified)
            .then(a.name.cmp(&b.name))
    });
    let out: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "session_id": e.name,
                "uri": format!("viking://user/{}/sessions/{}", user, e.name),
                "is_dir": e.meta.is_dir(),
                "mod_time": time::utc_z(e.meta.modified, chrono::SecondsFormat::Secs),
            })
        })
        .collect();
    Ok(Value::Array(out))
}

/// SE3: session meta with live counters; `auto_create` creates a missing session.
pub fn get(storage: &dyn Storage, s: &SessionRef, auto_create: bool) -> ServiceResult<Value> {
    let meta = match load_for_read(storage, s)? {
        Some(m) => m,
        None if auto_create => {
            let _lock = s.lock_briefly(storage)?;
            match load_for_update(storage, s)? {
                Some(m) => m,
                None => create_locked(storage, s, &CreateOptions::default())?,
            }
        }
        None => return Err(not_found(s)),
    };
    Ok(meta.view(s))
}

/// SE4: delete the session and its history.
pub fn delete(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Value> {
    let lock = s.lock_briefly(storage)?;
    let missing =
        || ServiceError::not_found("session", &s.sid, format!("Session not found: {}", s.sid));
    // Through the repair path, so an interrupted commit's task is settled before its
    // session disappears. A session whose files are damaged cannot be repaired, but it can
    // still be deleted: that is the way out the damaged answer points to.
    match load_for_update(storage, s) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(missing()),
        Err(e) if e.code == crate::error::ErrorCode::Unavailable || super::is_busy(&e) => {
            return Err(e)
        }
        Err(e) => {
            tracing::warn!(session = %s.uri(), error = %e.message,
                "deleting a session that could not be loaded");
            match storage.stat(&s.dir()?)? {
                Some(m) if m.is_dir() => {}
                _ => return Err(missing()),
            }
        }
    }
    // Object stores cannot delete conditionally: the last check that the lock is still ours
    // comes right before the removal.
    super::ensure_held(lock.as_ref(), s)?;
    remove_if_exists(storage, &s.dir()?, true)?;
    Ok(json!({"session_id": s.sid}))
}

/// SE5/SE6: build the stored form of the decoded messages (URIs canonicalised for the
/// session's owner, ids stamped) and append them, creating the session if needed. `batch`:
/// SE6 (answers with `added` too) or SE5.
pub fn add_inputs(
    storage: &dyn Storage,
    s: &SessionRef,
    inputs: &[MessageInput],
    batch: bool,
) -> ServiceResult<Value> {
    let who = s.identity();
    let mut messages = Vec::with_capacity(inputs.len());
    for input in inputs {
        messages.extend(message::build(input, &who)?);
    }
    add(storage, s, &messages, batch)
}

/// Append messages under the session lock (the SE5/SE6 result).
pub fn add(
    storage: &dyn Storage,
    s: &SessionRef,
    messages: &[Value],
    batch: bool,
) -> ServiceResult<Value> {
    let lock = s.lock_briefly(storage)?;
    let mut meta = match load_for_update(storage, s)? {
        Some(m) => m,
        None => create_locked(storage, s, &CreateOptions::default())?,
    };
    let n = messages.len() as u64;
    if n > 0 && meta.internal.log.is_some() && live::segmented(storage) {
        super::ensure_held(lock.as_ref(), s)?;
        live::append_segment(storage, s, &mut meta, messages, &time::millis_z_now())?;
        live::compact_if_due(storage, s, &mut meta);
    } else if n > 0 {
        super::ensure_held(lock.as_ref(), s)?;
        let bytes = live::to_lines(messages)?;
        let added_tokens: u64 = messages.iter().map(super::tokens::estimate_message).sum();
        storage.append(&s.live()?, &bytes)?;
        let now = time::millis_z_now();
        meta.message_count += n;
        meta.total_message_count += n;
        meta.internal.live_bytes += bytes.len() as u64;
        meta.internal.live_tokens += added_tokens;
        meta.pending_tokens = live::pending_tokens(storage, s, &meta)?;
        meta.last_message_at = now.clone();
        meta.updated_at = now;
        meta.save(storage, s)?;
    }
    let mut out = json!({
        "session_id": s.sid,
        "message_count": meta.message_count,
    });
    if batch {
        out["added"] = n.into();
    }
    out["pending_tokens"] = meta.pending_tokens.into();
    Ok(out)
}

/// Startup sweep (commit pool): repair every session a crash left with a commit marker, so the
/// interrupted commits' tasks reach a terminal state even if nobody touches those sessions.
/// Sessions whose lock is held (a commit running on another instance) are skipped. Returns how
/// many were repaired.
pub fn sweep_interrupted(storage: &dyn Storage) -> ServiceResult<usize> {
    let mut repaired = 0;
    let root = StorePath::root();
    for account in account_names(storage)? {
        let users_dir = root.join(&account)?.join("user")?;
        for user in subdir_names(storage, &users_dir)? {
            let Ok(sessions_dir) = SessionRef::sessions_dir(&account, &user) else {
                continue;
            };
            for sid in subdir_names(storage, &sessions_dir)? {
                std::thread::yield_now();
                let s = SessionRef::new(&account, &user, &sid);
                let Some(meta) = SessionMeta::load(storage, &s)? else {
                    continue;
                };
                if meta.internal.pending_commit.is_none() {
                    continue;
                }
                let Ok(_guard) = s.lock_within(storage, REPAIR_LOCK_TIMEOUT) else {
                    continue;
                };
                load_for_update(storage, &s)?;
                repaired += 1;
            }
        }
    }
    if repaired > 0 {
        tracing::info!(repaired, "startup sweep repaired interrupted commits");
    }
    Ok(repaired)
}
