//! SE1–SE6: create, list, get, delete and add messages — the storage-pool side of sessions.

use serde_json::{json, Value};

use crate::actors::pool::{BlockingJob, JobContext};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::{EntryKind, Storage, StorageError};

use super::meta::SessionMeta;
use super::{deps, live, message, policy, recovery, time, SessionRef, REPAIR_LOCK_TIMEOUT};

/// What SE1 (or an auto-create) stores beside the defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub memory_policy: Value,
    pub auto_commit_policy: Value,
    pub event_tags: Option<Vec<String>>,
}

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
            let mut meta = SessionMeta::new(s, &time::meta_now());
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
    let mut meta = SessionMeta::new(s, &time::meta_now());
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
#[derive(Clone)]
pub struct CreateSession {
    pub session: SessionRef,
    pub options: CreateOptions,
}

impl BlockingJob for CreateSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let s = &self.session;
        let _lock = s.lock_briefly(ctx.storage)?;
        if load(ctx.storage, s)?.is_some() {
            return Err(ServiceError::already_exists(
                "session",
                &s.sid,
                format!("Session already exists: {}", s.sid),
            ));
        }
        let meta = create_locked(ctx.storage, s, &self.options)?;
        Ok(summary(s, &meta))
    }
}

/// SE2: the caller's sessions, newest first.
pub struct ListSessions {
    pub account: String,
    pub user: String,
}

impl BlockingJob for ListSessions {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let dir = SessionRef::sessions_dir(&self.account, &self.user)?;
        let mut entries = match ctx.storage.list(&dir) {
            Ok(e) => e,
            Err(crate::storage::StorageError::NotFound(_)) => return Ok(json!([])),
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
                    "uri": format!("viking://user/{}/sessions/{}", self.user, e.name),
                    "is_dir": e.meta.is_dir(),
                    "mod_time": time::rfc3339_secs(e.meta.modified),
                })
            })
            .collect();
        Ok(Value::Array(out))
    }
}

/// SE3: session meta with live counters; `auto_create` creates a missing session.
#[derive(Clone)]
pub struct GetSession {
    pub session: SessionRef,
    pub auto_create: bool,
}

impl BlockingJob for GetSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let s = &self.session;
        let meta = match load_for_read(ctx.storage, s)? {
            Some(m) => m,
            None if self.auto_create => {
                let _lock = s.lock_briefly(ctx.storage)?;
                match load_for_update(ctx.storage, s)? {
                    Some(m) => m,
                    None => create_locked(ctx.storage, s, &CreateOptions::default())?,
                }
            }
            None => return Err(not_found(s)),
        };
        Ok(meta.view(s))
    }
}

/// SE4: delete the session and its history.
#[derive(Clone)]
pub struct DeleteSession {
    pub session: SessionRef,
}

impl BlockingJob for DeleteSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let s = &self.session;
        let lock = s.lock_briefly(ctx.storage)?;
        // Through the repair path, so an interrupted commit's task is settled before its
        // session disappears.
        if load_for_update(ctx.storage, s)?.is_none() {
            return Err(ServiceError::not_found(
                "session",
                &s.sid,
                format!("Session not found: {}", s.sid),
            ));
        }
        // Object stores cannot delete conditionally: the last check that the lock is still
        // ours comes right before the removal.
        super::ensure_held(lock.as_ref(), s)?;
        match ctx.storage.remove(&s.dir()?, true) {
            Ok(()) | Err(crate::storage::StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(json!({"session_id": s.sid}))
    }
}

/// SE5/SE6: decode, validate and append messages, creating the session if needed.
///
/// The body is decoded here, on the pool, not on an HTTP worker: a 1 MiB batch costs a few
/// milliseconds of parsing, which on a worker's event loop would delay every other request
/// multiplexed onto it (`/health` included).
#[derive(Clone)]
pub struct AddMessages {
    pub session: SessionRef,
    pub body: bytes::Bytes,
    /// SE6 (`{messages: [...]}`, answers with `added` too) or SE5 (one message).
    pub batch: bool,
}

impl BlockingJob for AddMessages {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let messages = decode_messages(&self.body, self.batch, &self.session.identity())?;
        add(ctx.storage, &self.session, &messages, self.batch)
    }
}

/// The stored messages of an SE5 or SE6 body, with spec §1.3 validation errors.
pub fn decode_messages(body: &[u8], batch: bool, who: &Identity) -> ServiceResult<Vec<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::validation(
            &["body"],
            "Field required",
            "missing",
        ));
    }
    let value: Value = crate::http::extract::parse_json(body)?;
    if !batch {
        return message::parse(&value, &["body".to_string()], who);
    }
    let items = match value.get("messages") {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(ServiceError::validation(
                &["body", "messages"],
                "Field required",
                "missing",
            ))
        }
        Some(_) => {
            return Err(ServiceError::validation(
                &["body", "messages"],
                "Input should be a valid list",
                "list_type",
            ))
        }
    };
    if items.len() > message::MAX_BATCH {
        return Err(ServiceError::validation(
            &["body", "messages"],
            &format!(
                "List should have at most {} items after validation, not {}",
                message::MAX_BATCH,
                items.len()
            ),
            "too_long",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let loc = ["body".to_string(), "messages".to_string(), i.to_string()];
        out.extend(message::parse(item, &loc, who)?);
    }
    Ok(out)
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
        live::append_segment(storage, s, &mut meta, messages, &time::meta_now())?;
        live::compact_if_due(storage, s, &mut meta);
    } else if n > 0 {
        super::ensure_held(lock.as_ref(), s)?;
        let bytes = live::to_lines(messages)?;
        let added_tokens: u64 = messages.iter().map(super::tokens::estimate_message).sum();
        storage.append(&s.live()?, &bytes)?;
        let now = time::meta_now();
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
