//! SE7: commit — Phase 1 (archive live messages) and Phase 2 (summaries, `.done`, task), run
//! as one job on the commit pool under the session lock.
//!
//! The live file is never re-serialised: the archived messages are a byte prefix of it and the
//! retained ones its suffix, so a 50k-message commit costs one read, one light parse for ids,
//! and two writes. Write order and crash handling: see [`super::recovery`].

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::decode::{field_error, opt_int_in, opt_object, opt_strict_bool};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::Storage;
use crate::time;

use super::archive::{self, ArchiveMeta, Phase1};
use super::live::{self, Span, YIELD_EVERY};
use super::load::{load_for_update, not_found};
use super::meta::{PendingCommit, SessionMeta};
use super::policy::{self, ExtractionMetadataInput};
use super::{backlog, deps, recovery, tokens, SessionRef};

/// Defaults of turn_budget retention (spec SE7 step 3).
const DEFAULT_TURNS: u64 = 3;
const DEFAULT_TURN_BUDGET: u64 = 12_000;
const MAX_COUNT: i64 = 10_000;

/// A validated SE7 body.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub keep_recent_count: u64,
    pub turn_budget: bool,
    pub keep_recent_turn_count: Option<u64>,
    pub retained_message_token_budget: Option<u64>,
    pub min_raw_tail_steps: Option<u64>,
    pub enable_working_memory: Option<bool>,
    pub reset_context: bool,
    pub event_tags: Option<Vec<String>>,
    /// What Phase 2 does about long-term memories (set by the caller, not the body).
    pub memory: MemoryMode,
}

/// Whether a commit leaves memory extraction to the background extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryMode {
    /// Nothing to extract: the task completes inline with this reason in its
    /// `extraction_outcome` (kind `skipped`).
    Skip(String),
    /// A backlog entry is written before Phase 1 (refused with 429 when the account already has
    /// `backlog_limit` waiting); the extractor completes the task.
    Deferred { backlog_limit: usize },
}

impl Default for MemoryMode {
    fn default() -> Self {
        MemoryMode::Skip(NO_MODEL.to_string())
    }
}

pub use super::archive::{skipped_outcome, NO_MODEL};

/// SE7's body (0.5.2 `CommitRequest`: unknown keys ignored), each field typed and bounded
/// where it is decoded; [`CommitSessionBody::options`] checks the rules across fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CommitSessionBody {
    /// Newest messages kept live (0..=10000, default 0).
    #[serde(default, deserialize_with = "count")]
    keep_recent_count: Option<i64>,
    /// `turn_budget`: keep whole newest turns within a token budget.
    #[serde(default, deserialize_with = "retention_mode")]
    retention_mode: Option<String>,
    #[serde(default, deserialize_with = "count")]
    keep_recent_turn_count: Option<i64>,
    #[serde(default, deserialize_with = "count")]
    min_raw_tail_steps: Option<i64>,
    /// At least 1.
    #[serde(default, deserialize_with = "token_budget")]
    retained_message_token_budget: Option<i64>,
    #[serde(default, deserialize_with = "opt_strict_bool")]
    enable_working_memory: Option<bool>,
    #[serde(default, deserialize_with = "opt_strict_bool")]
    reset_context: Option<bool>,
    #[serde(default, deserialize_with = "opt_object")]
    extraction_metadata: Option<ExtractionMetadataInput>,
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    opt_int_in(Value::deserialize(d)?, 0, Some(MAX_COUNT))
}

fn token_budget<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    opt_int_in(Value::deserialize(d)?, 1, None)
}

fn retention_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(m) if m == "turn_budget" => Ok(Some(m)),
        _ => Err(field_error(
            "literal_error",
            "Input should be 'turn_budget'",
        )),
    }
}

fn value_error(message: &str) -> ServiceError {
    ServiceError::validation(&["body"], &format!("Value error, {message}"), "value_error")
}

impl CommitSessionBody {
    /// The commit's options, after 0.5.2's model-level rules.
    pub fn options(self) -> Result<CommitOptions, ServiceError> {
        let as_count = |n: Option<i64>| n.map(|n| n.max(0) as u64);
        let keep_recent_count = as_count(self.keep_recent_count).unwrap_or(0);
        let turn_budget = self.retention_mode.is_some();
        let keep_recent_turn_count = as_count(self.keep_recent_turn_count);
        let min_raw_tail_steps = as_count(self.min_raw_tail_steps);
        let retained_message_token_budget = as_count(self.retained_message_token_budget);
        if !turn_budget
            && (keep_recent_turn_count.is_some()
                || min_raw_tail_steps.is_some()
                || retained_message_token_budget.is_some())
        {
            return Err(value_error(
                "keep_recent_turn_count, retained_message_token_budget and min_raw_tail_steps \
                 require retention_mode='turn_budget'",
            ));
        }
        let reset_context = self.reset_context.unwrap_or(false);
        if reset_context && (keep_recent_count != 0 || turn_budget) {
            return Err(value_error(
                "reset_context requires keep_recent_count=0 and no retention_mode",
            ));
        }
        Ok(CommitOptions {
            keep_recent_count,
            turn_budget,
            keep_recent_turn_count,
            retained_message_token_budget,
            min_raw_tail_steps,
            enable_working_memory: self.enable_working_memory,
            reset_context,
            event_tags: self.extraction_metadata.map(|m| m.event_tags()),
            memory: MemoryMode::default(),
        })
    }
}

/// How the live messages split: `[..at)` archived, `[at..)` retained.
struct Split {
    at: usize,
    retained_tokens: u64,
    budget_exceeded: bool,
}

fn split(
    bytes: &[u8],
    spans: &[Span],
    msgs: &[live::LightMsg<'_>],
    o: &CommitOptions,
) -> ServiceResult<Split> {
    let tokens_of = |range: std::ops::Range<usize>| -> ServiceResult<u64> {
        let mut sum = 0;
        for (n, i) in range.enumerate() {
            sum += tokens::estimate_message(&live::full(&bytes[spans[i].start..spans[i].end])?);
            if n % YIELD_EVERY == YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
        }
        Ok(sum)
    };
    let len = spans.len();
    if !o.turn_budget {
        let at = len.saturating_sub(o.keep_recent_count as usize);
        return Ok(Split {
            at,
            retained_tokens: tokens_of(at..len)?,
            budget_exceeded: false,
        });
    }
    // turn_budget: turns start at user-query messages; keep the newest N turns, then evict the
    // oldest kept turns while over budget, never the newest one.
    let starts: Vec<usize> = (0..len).filter(|&i| msgs[i].starts_turn()).collect();
    let turns = o.keep_recent_turn_count.unwrap_or(DEFAULT_TURNS) as usize;
    let budget = o
        .retained_message_token_budget
        .unwrap_or(DEFAULT_TURN_BUDGET);
    if turns == 0 || starts.is_empty() {
        // No user turn at all is "one turn" (the newest), kept whole.
        let at = if turns == 0 { len } else { 0 };
        let t = tokens_of(at..len)?;
        return Ok(Split {
            at,
            retained_tokens: t,
            budget_exceeded: t > budget,
        });
    }
    let first_kept = starts.len().saturating_sub(turns);
    let mut boundaries: Vec<usize> = starts[first_kept..].to_vec();
    if first_kept == 0 {
        // Messages before the first user query belong to the oldest turn.
        boundaries[0] = 0;
    }
    let mut turn_tokens = Vec::with_capacity(boundaries.len());
    for (i, &b) in boundaries.iter().enumerate() {
        let end = boundaries.get(i + 1).copied().unwrap_or(len);
        turn_tokens.push(tokens_of(b..end)?);
    }
    let mut total: u64 = turn_tokens.iter().sum();
    let mut k = 0;
    while k + 1 < boundaries.len() && total > budget {
        total -= turn_tokens[k];
        k += 1;
    }
    Ok(Split {
        at: boundaries[k],
        retained_tokens: total,
        budget_exceeded: total > budget,
    })
}

fn skipped(s: &SessionRef, wm: bool, reason: &str) -> Value {
    json!({
        "session_id": s.sid, "status": "skipped", "task_id": null, "archive_uri": null,
        "archived": false, "effective_enable_working_memory": wm, "reason": reason, "trace_id": "",
    })
}

/// Remember the retention settings of this commit (spec SE7 step 2/5).
fn remember(meta: &mut SessionMeta, o: &CommitOptions) {
    meta.keep_recent_count = o.keep_recent_count;
    meta.retention_mode = if o.turn_budget {
        "turn_budget".into()
    } else {
        String::new()
    };
    meta.keep_recent_turn_count = o.keep_recent_turn_count.unwrap_or(0);
    meta.retained_message_token_budget = o.retained_message_token_budget.unwrap_or(0);
    meta.min_raw_tail_steps = o.min_raw_tail_steps.unwrap_or(1);
}

/// Append a context-reset boundary unless the newest archive already is one; returns whether
/// one was written (spec SE7 step 6).
fn reset_boundary(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
) -> ServiceResult<()> {
    let archives = archive::list(storage, s)?;
    if let Some((_, newest)) = archives.last() {
        if let archive::State::Done(done) = archive::state(storage, &s.archive(newest)?)? {
            if archive::is_reset_boundary(&done) {
                return Ok(());
            }
        }
    }
    let n = archives
        .last()
        .map_or(0, |(n, _)| *n)
        .max(meta.commit_count)
        + 1;
    let name = archive::name(n);
    let done = json!({"context_reset": true, "enable_working_memory": false});
    storage.write(
        &s.archive(&name)?.join(archive::DONE)?,
        done.to_string().as_bytes(),
    )?;
    meta.commit_count = n;
    meta.updated_at = time::millis_z_now();
    meta.save(storage, s)
}

/// Phase 1 and Phase 2 of one commit; the session lock is held throughout.
pub fn commit(storage: &dyn Storage, s: &SessionRef, o: &CommitOptions) -> ServiceResult<Value> {
    let lock = s.lock(storage)?;
    let Some(mut meta) = load_for_update(storage, s)? else {
        return Err(not_found(s));
    };
    recovery::sweep(storage, s, &mut meta)?;
    // The session's policy, else its user's (0.5.2).
    let memory_policy = crate::storage::user_config::effective_memory_policy(
        storage,
        &s.account,
        &s.user,
        &meta.memory_policy,
    )?;
    let wm = o
        .enable_working_memory
        .unwrap_or_else(|| policy::working_memory_enabled(&memory_policy));
    remember(&mut meta, o);
    if let Some(tags) = &o.event_tags {
        meta.extra
            .insert("last_commit_event_tags".into(), json!(tags));
    }

    // Sealed: on a segment log no add can land below what is read here any more.
    let bytes = live::read_live(storage, s, &meta, true)?;
    let (spans, complete) = live::lines(&bytes);
    if spans.is_empty() {
        meta.updated_at = time::millis_z_now();
        meta.save(storage, s)?;
        let mut out = skipped(s, wm, "no_messages");
        if o.reset_context {
            reset_boundary(storage, s, &mut meta)?;
            out["reset_context"] = true.into();
        }
        return Ok(out);
    }
    let mut msgs = Vec::with_capacity(spans.len());
    for (i, sp) in spans.iter().enumerate() {
        msgs.push(live::light(&bytes[sp.start..sp.end])?);
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            std::thread::yield_now();
        }
    }
    let cut = split(&bytes, &spans, &msgs, o)?;
    if cut.at == 0 {
        meta.pending_tokens = live::pending_tokens(storage, s, &meta)?;
        meta.updated_at = time::millis_z_now();
        meta.save(storage, s)?;
        let mut out = skipped(s, wm, "all_within_keep_window");
        out["estimated_active_tokens"] = cut.retained_tokens.into();
        out["budget_exceeded"] = cut.budget_exceeded.into();
        return Ok(out);
    }

    // Phase 1.
    let highest = archive::list(storage, s)?.last().map_or(0, |(n, _)| *n);
    let n = meta.commit_count.max(highest) + 1;
    let name = archive::name(n);
    let task_id = deps::task_create(storage, s)?;
    let mut o = o.clone();
    if matches!(o.memory, MemoryMode::Deferred { .. }) && !policy::extracts_memories(&memory_policy)
    {
        o.memory = MemoryMode::Skip("memory_policy extracts no memory types".into());
    }
    let o = &o;
    if let MemoryMode::Deferred { backlog_limit } = &o.memory {
        // Before anything is archived: a full backlog refuses the commit with nothing changed
        // but a task that fails at once.
        if let Err(e) = backlog::enqueue(storage, s, &name, &task_id, *backlog_limit) {
            let _ = deps::task_fail(storage, s, &task_id, &e.message);
            return Err(e);
        }
    }
    meta.internal.pending_commit = Some(PendingCommit {
        archive: name.clone(),
        task_id: Some(task_id.clone()),
    });
    meta.save(storage, s)?;
    let record = record(&name, &task_id, &msgs, spans.len(), &cut, o, wm);
    drop(msgs);
    let split_byte = spans.get(cut.at).map_or(complete, |sp| sp.start);
    let live_part = Live {
        archived: &bytes[..split_byte],
        retained: &bytes[split_byte..complete],
        retained_count: (spans.len() - cut.at) as u64,
        retained_tokens: cut.retained_tokens,
        whole_file: split_byte == bytes.len(),
    };
    let done = super::ensure_held(lock.as_ref(), s)
        .and_then(|()| archive_and_finish(storage, s, &mut meta, record, &live_part, n));
    if let Err(e) = done {
        // Undo or finish what was written, now rather than on the next touch; if even that
        // fails the marker stays and the next mutation retries. Not when the session changed
        // under us (our lock was lost): then someone else owns it and repairs it.
        tracing::error!(session = %s.uri(), archive = %name, error = %e.message, "commit failed");
        if super::is_busy(&e) {
            return Err(e);
        }
        if let Ok(Some(mut current)) = super::meta::SessionMeta::load(storage, s) {
            if let Err(again) = recovery::repair(storage, s, &mut current) {
                tracing::error!(session = %s.uri(), error = %again.message, "repair after a failed commit failed");
            }
        }
        return Err(e);
    }

    let mut out = json!({
        "session_id": s.sid, "status": "accepted", "task_id": task_id,
        "archive_uri": s.archive_uri(&name), "archived": true,
        "effective_enable_working_memory": wm, "trace_id": "",
        "estimated_active_tokens": cut.retained_tokens, "budget_exceeded": cut.budget_exceeded,
    });
    if o.reset_context {
        reset_boundary(storage, s, &mut meta)?;
        out["reset_context"] = true.into();
    }
    Ok(out)
}

/// The Phase 1 record of a new archive.
fn record(
    name: &str,
    task_id: &str,
    msgs: &[live::LightMsg<'_>],
    total: usize,
    cut: &Split,
    o: &CommitOptions,
    wm: bool,
) -> ArchiveMeta {
    let ids = |r: std::ops::Range<usize>| msgs[r].iter().map(|m| m.id.to_string()).collect();
    ArchiveMeta {
        phase1: Phase1 {
            version: 1,
            status: "pending".into(),
            created_at: time::iso_micros_now(),
            archive_id: name.to_string(),
            task_id: Some(task_id.to_string()),
            archived_message_ids: ids(0..cut.at),
            retained_message_ids: ids(cut.at..total),
            original_message_count: total as u64,
            turn_count: msgs[..cut.at].iter().filter(|m| m.starts_turn()).count() as u64,
            keep_recent_count: o.keep_recent_count,
            retention_mode: o.turn_budget.then(|| "turn_budget".to_string()),
            keep_recent_turn_count: o.keep_recent_turn_count,
            retained_message_token_budget: o.retained_message_token_budget,
            min_raw_tail_steps: o.min_raw_tail_steps,
            enable_working_memory: wm,
        },
        extra: match &o.memory {
            MemoryMode::Skip(reason) => {
                let mut m = Map::new();
                m.insert("extraction_outcome".into(), skipped_outcome(reason));
                m
            }
            MemoryMode::Deferred { .. } => Map::new(),
        },
    }
}

/// The live file cut in two.
struct Live<'a> {
    archived: &'a [u8],
    retained: &'a [u8],
    retained_count: u64,
    retained_tokens: u64,
    /// Everything in the file is archived (the common `keep_recent_count: 0`).
    whole_file: bool,
}

/// Test hook standing in for a process crash at a named step: the commit stops dead there,
/// exactly as after kill -9 (nothing after it runs, the lock is released).
#[cfg(test)]
pub mod crash {
    use std::cell::RefCell;

    thread_local! {
        pub static AT: RefCell<Option<&'static str>> = const { RefCell::new(None) };
    }

    pub fn point(name: &'static str) {
        if AT.with(|a| *a.borrow() == Some(name)) {
            panic!("simulated crash at {name}");
        }
    }
}

#[cfg(not(test))]
mod crash {
    #[inline(always)]
    pub fn point(_name: &'static str) {}
}

/// Phase 1 writes in crash-safe order, then Phase 2 and the task; clears the marker.
fn archive_and_finish(
    storage: &dyn Storage,
    s: &SessionRef,
    meta: &mut SessionMeta,
    mut record: ArchiveMeta,
    live_part: &Live<'_>,
    n: u64,
) -> ServiceResult<()> {
    let name = record.phase1.archive_id.clone();
    let task_id = record.phase1.task_id.clone().unwrap_or_default();
    let dir = s.archive(&name)?;
    crash::point("before_record");
    record.create(storage, &dir)?;
    crash::point("after_record");
    if live::segmented(storage) && meta.internal.log.is_some() {
        // Create-only: the archive number is new, so an existing copy means another writer
        // (one that took over our lost lock) is committing it.
        storage
            .write_if(&dir.join(archive::MESSAGES)?, live_part.archived, None)
            .map_err(|e| match e {
                crate::storage::StorageError::Conflict(_)
                | crate::storage::StorageError::AlreadyExists(_) => super::changed_concurrently(s),
                other => other.into(),
            })?;
        crash::point("after_archive_messages");
        // The point of no return: one compare-and-swap of the meta drops the archived
        // messages from the log, with the counters of what stays.
        meta.message_count = live_part.retained_count;
        meta.internal.live_bytes = live_part.retained.len() as u64;
        meta.internal.live_tokens = live_part.retained_tokens;
        meta.pending_tokens = 0;
        live::rewrite_log(storage, s, meta, live_part.retained)?;
    } else if live_part.whole_file {
        // Archive everything by moving the file, not copying tens of megabytes through the page
        // cache. The move is the point of no return (the live file is gone; recovery rolls
        // forward), then an empty live file takes its place.
        storage.rename(&s.live()?, &dir.join(archive::MESSAGES)?)?;
        crash::point("after_archive_messages");
        storage.write(&s.live()?, b"")?;
    } else {
        storage.write(&dir.join(archive::MESSAGES)?, live_part.archived)?;
        crash::point("after_archive_messages");
        // The point of no return: after this write the archive owns the archived messages.
        storage.write(&s.live()?, live_part.retained)?;
    }
    crash::point("after_live_rewrite");

    let now = time::millis_z_now();
    meta.message_count = live_part.retained_count;
    meta.internal.live_bytes = live_part.retained.len() as u64;
    meta.internal.live_tokens = live_part.retained_tokens;
    meta.pending_tokens = 0;
    meta.commit_count = n;
    meta.last_commit_at = now.clone();
    meta.updated_at = now;
    meta.save(storage, s)?;
    let archived = record.phase1.archived_message_ids.len() as u64;
    let turns = record.phase1.turn_count;
    storage.write(
        &s.dir()?.join(archive::OVERVIEW)?,
        deps::okf_render(&s.uri(), &archive::overview_body(turns, archived)).as_bytes(),
    )?;
    storage.write(
        &s.dir()?.join(archive::ABSTRACT)?,
        deps::okf_render(&s.uri(), &archive::abstract_body(turns, archived)).as_bytes(),
    )?;
    record.phase1.status = "ready".into();
    record.save(storage, &dir)?;
    crash::point("after_ready");

    // Phase 2 (model-free, inline).
    deps::task_running(storage, s, &task_id)?;
    let result = archive::phase2(storage, s, record)?;
    crash::point("after_done");
    deps::task_complete(storage, s, &task_id, result)?;
    crash::point("after_task");
    meta.internal.pending_commit = None;
    meta.save(storage, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_options(v: Value) -> Result<CommitOptions, ServiceError> {
        crate::decode::parse_json::<CommitSessionBody>(v.to_string().as_bytes())?.options()
    }

    #[test]
    fn validates_bodies() {
        let o = parse_options(json!({})).unwrap();
        assert_eq!(o.keep_recent_count, 0);
        assert!(!o.reset_context);
        assert!(o.event_tags.is_none());
        let e = parse_options(json!({"keep_recent_count": 10001})).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid request parameters: body.keep_recent_count: Input should be less than or equal to 10000"
        );
        assert!(parse_options(json!({"keep_recent_count": -1})).is_err());
        assert!(parse_options(json!({"keep_recent_count": 1.5})).is_err());
        assert!(parse_options(json!({"retention_mode": "other"})).is_err());
        assert!(parse_options(json!({"keep_recent_turn_count": 2})).is_err());
        assert!(parse_options(
            json!({"retention_mode": "turn_budget", "keep_recent_turn_count": 2})
        )
        .is_ok());
        assert!(parse_options(
            json!({"retention_mode": "turn_budget", "retained_message_token_budget": 0})
        )
        .is_err());
        assert!(parse_options(json!({"enable_working_memory": "yes"})).is_err());
        let e = parse_options(json!({"reset_context": true, "keep_recent_count": 1})).unwrap_err();
        assert!(e
            .message
            .contains("reset_context requires keep_recent_count=0"));
        let o =
            parse_options(json!({"extraction_metadata": {"event": {"tags": ["a=b"]}}})).unwrap();
        assert_eq!(o.event_tags, Some(vec!["a=b".to_string()]));
        assert!(parse_options(json!({"extraction_metadata": {"other": 1}})).is_err());
        assert!(parse_options(json!({"unknown_top": 1})).is_ok());
    }
}
