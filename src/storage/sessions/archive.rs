//! Archives under `history/` (spec §9.1): naming, the Phase 1 record, terminal markers, Phase 2
//! and SE8.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

use super::{deps, tokens, SessionRef};

pub const DONE: &str = ".done";
pub const FAILED: &str = ".failed.json";
pub const META: &str = ".meta.json";
pub const MESSAGES: &str = "messages.jsonl";
pub const OVERVIEW: &str = ".overview.md";
pub const ABSTRACT: &str = ".abstract.md";

/// `archive_001`; wider past 999.
pub fn name(n: u64) -> String {
    format!("archive_{n:03}")
}

/// The number of an `archive_NNN` name.
pub fn number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("archive_")?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Archive numbers and names, oldest first.
pub fn list(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Vec<(u64, String)>> {
    let mut out: Vec<(u64, String)> = crate::storage::subdir_names(storage, &s.history()?)?
        .into_iter()
        .filter_map(|name| number(&name).map(|n| (n, name)))
        .collect();
    out.sort();
    Ok(out)
}

/// Where an archive stands.
#[derive(Debug, Clone)]
pub enum State {
    /// No terminal marker: being written, or interrupted.
    Pending,
    /// `.done` with its content.
    Done(Value),
    Failed(Value),
}

pub fn state(storage: &dyn Storage, dir: &StorePath) -> ServiceResult<State> {
    if let Some(done) = read_json(storage, &dir.join(DONE)?)? {
        return Ok(State::Done(done));
    }
    if let Some(failed) = read_json(storage, &dir.join(FAILED)?)? {
        return Ok(State::Failed(failed));
    }
    Ok(State::Pending)
}

/// A JSON file, `None` when absent; an unreadable body counts as `{}` (a marker is a marker).
pub fn read_json(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Option<Value>> {
    match storage.read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).unwrap_or_else(|_| json!({})),
        )),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A text file, `None` when absent.
pub fn read_text(storage: &dyn Storage, path: &StorePath) -> ServiceResult<Option<String>> {
    match storage.read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The `phase1` record of an archive's `.meta.json`: enough to finish or undo the commit after
/// a crash without re-reading the archived messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase1 {
    pub version: u32,
    /// `pending` until the live file and session meta are rewritten, then `ready`.
    pub status: String,
    pub created_at: String,
    pub archive_id: String,
    #[serde(default)]
    pub task_id: Option<String>,
    pub archived_message_ids: Vec<String>,
    pub retained_message_ids: Vec<String>,
    pub original_message_count: u64,
    /// User-query messages among the archived ones (Phase 2's `T`).
    pub turn_count: u64,
    pub keep_recent_count: u64,
    #[serde(default)]
    pub retention_mode: Option<String>,
    #[serde(default)]
    pub keep_recent_turn_count: Option<u64>,
    #[serde(default)]
    pub retained_message_token_budget: Option<u64>,
    #[serde(default)]
    pub min_raw_tail_steps: Option<u64>,
    pub enable_working_memory: bool,
}

/// An archive's `.meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveMeta {
    pub phase1: Phase1,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ArchiveMeta {
    pub fn load(storage: &dyn Storage, dir: &StorePath) -> ServiceResult<Option<ArchiveMeta>> {
        match storage.read(&dir.join(META)?) {
            // A record that does not parse was never completely written by us: treat as absent.
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save(&self, storage: &dyn Storage, dir: &StorePath) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(self).map_err(ServiceError::internal)?;
        storage.write(&dir.join(META)?, &bytes)?;
        Ok(())
    }

    /// The first write of a new archive, create-only: an archive number is used once, so an
    /// existing record means a writer that took over a lost lock is committing it.
    pub fn create(&self, storage: &dyn Storage, dir: &StorePath) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(self).map_err(ServiceError::internal)?;
        match storage.write_if(&dir.join(META)?, &bytes, None) {
            Ok(_) => Ok(()),
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => Err(
                ServiceError::conflict("The session was changed concurrently. Please retry.")
                    .with_details(serde_json::json!({
                        "conflict_type": super::BUSY, "retryable": true
                    })),
            ),
            Err(e) => Err(e.into()),
        }
    }
}

/// Phase 2 summary bodies (upstream's model-free fallback).
pub fn overview_body(turns: u64, messages: u64) -> String {
    format!("# Session Summary\n\n**Overview**: {turns} turns, {messages} messages")
}

pub fn abstract_body(turns: u64, messages: u64) -> String {
    format!("{turns} turns, {messages} messages")
}

/// Phase 2 (model-free): summaries when working memory is on, then `.done`. Idempotent, so
/// recovery can run it again. Returns the task result.
pub fn phase2(
    storage: &dyn Storage,
    s: &SessionRef,
    mut meta: ArchiveMeta,
) -> ServiceResult<Value> {
    let rec = meta.phase1.clone();
    let dir = s.archive(&rec.archive_id)?;
    let uri = s.archive_uri(&rec.archive_id);
    let m = rec.archived_message_ids.len() as u64;
    if rec.enable_working_memory {
        let overview = overview_body(rec.turn_count, m);
        let abstract_ = abstract_body(rec.turn_count, m);
        storage.write(
            &dir.join(OVERVIEW)?,
            deps::okf_render(&uri, &overview).as_bytes(),
        )?;
        storage.write(
            &dir.join(ABSTRACT)?,
            deps::okf_render(&uri, &abstract_).as_bytes(),
        )?;
        meta.extra.insert(
            "overview_tokens".into(),
            tokens::estimate_text(&overview).into(),
        );
        meta.extra.insert(
            "abstract_tokens".into(),
            tokens::estimate_text(&abstract_).into(),
        );
        meta.save(storage, &dir)?;
    }
    let done = json!({
        "starting_message_id": rec.archived_message_ids.first(),
        "ending_message_id": rec.archived_message_ids.last(),
        "enable_working_memory": rec.enable_working_memory,
        "coverage_start_archive": rec.archive_id,
        "coverage_end_archive": rec.archive_id,
        "covered_failed_archives": [],
        "completed_memory_steps": {},
    });
    storage.write(&dir.join(DONE)?, done.to_string().as_bytes())?;
    let outcome = meta
        .extra
        .get("extraction_outcome")
        .cloned()
        .unwrap_or_else(|| skipped_outcome(NO_MODEL));
    let mut result = task_result(s, &rec.archive_id);
    result["extraction_outcome"] = outcome;
    Ok(result)
}

/// The reason a commit extracts nothing when no chat model is configured.
pub const NO_MODEL: &str = "no chat model configured";

/// The `extraction_outcome` of a commit that extracts nothing.
pub fn skipped_outcome(reason: &str) -> Value {
    json!({"kind": "skipped", "reason": reason})
}

/// The result of a completed `session_commit` task (spec SE7) with no memories extracted;
/// `extraction_outcome` (Longship's key, always present) says why: by default no model.
pub fn task_result(s: &SessionRef, archive_id: &str) -> Value {
    json!({
        "extraction_outcome": skipped_outcome(NO_MODEL),
        "session_id": s.sid,
        "archive_uri": s.archive_uri(archive_id),
        "memories_extracted": {"total": 0},
        "session_skills_extracted": 0,
        "session_skill_uris": [],
        "memory_extraction": {"skipped": 0, "skipped_operations": []},
        "usage_events_extracted": 0,
        "effective_memory_types": [],
        "agent_evolution_enabled": false,
        "agent_memory_skip_reason": "agent_evolution_disabled",
        "token_usage": {
            "llm": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0},
            "embedding": {"total_tokens": 0},
            "total": {"total_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0}
        }
    })
}

/// Mark an archive failed (spec SE7 failure record).
pub fn mark_failed(
    storage: &dyn Storage,
    dir: &StorePath,
    stage: &str,
    error: &str,
) -> ServiceResult<()> {
    let body = json!({
        "stage": stage,
        "error": error,
        "failed_at": crate::time::iso_micros_now(),
        "skipped": true,
        "completed_memory_steps": {},
    });
    storage.write(&dir.join(FAILED)?, body.to_string().as_bytes())?;
    Ok(())
}

/// The overview body of a completed archive, when it has a non-empty one.
pub fn overview(storage: &dyn Storage, dir: &StorePath) -> ServiceResult<Option<String>> {
    Ok(read_text(storage, &dir.join(OVERVIEW)?)?
        .map(|t| deps::okf_body(&t))
        .filter(|b| !b.trim().is_empty()))
}

/// True when `.done` says working memory was off (0.5.2 key, or the older one).
pub fn working_memory_off(done: &Value) -> bool {
    done.get("enable_working_memory")
        .or_else(|| done.get("working_memory_enabled"))
        .and_then(Value::as_bool)
        == Some(false)
}

pub fn is_reset_boundary(done: &Value) -> bool {
    done.get("context_reset").and_then(Value::as_bool) == Some(true)
}

/// Abstract from an overview: the text after the first `**Label**: `, else its first line.
pub fn derive_abstract(overview: &str) -> String {
    for line in overview.lines() {
        if let Some(rest) = line.strip_prefix("**") {
            if let Some(i) = rest.find("**: ") {
                return rest[i + 4..].trim().to_string();
            }
        }
    }
    overview.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_abstracts() {
        assert_eq!(name(1), "archive_001");
        assert_eq!(name(1234), "archive_1234");
        assert_eq!(number("archive_007"), Some(7));
        assert_eq!(number("archive_1234"), Some(1234));
        for bad in ["archive_7", "archive_", "archive_00x", "x_001"] {
            assert_eq!(number(bad), None, "{bad}");
        }
        assert_eq!(derive_abstract(&overview_body(1, 2)), "1 turns, 2 messages");
        assert_eq!(derive_abstract("first\nsecond"), "first");
    }
}
