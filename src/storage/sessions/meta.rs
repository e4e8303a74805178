//! `.meta.json` of a session (spec §9.1), plus Longship's own bookkeeping under `_longship`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::seglog::LogState;
use crate::storage::{Storage, StorageError, Version};

use super::{policy, SessionRef};

/// The stored session metadata. Unknown keys found in a file are kept on rewrite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionMeta {
    pub session_id: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub created_by_account_id: String,
    #[serde(default)]
    pub created_by_user_id: String,
    #[serde(default)]
    pub message_count: u64,
    #[serde(default)]
    pub total_message_count: u64,
    #[serde(default)]
    pub commit_count: u64,
    #[serde(default = "memories_default")]
    pub memories_extracted: Value,
    #[serde(default)]
    pub last_commit_at: String,
    #[serde(default = "llm_usage_default")]
    pub llm_token_usage: Value,
    #[serde(default = "embedding_usage_default")]
    pub embedding_token_usage: Value,
    #[serde(default)]
    pub pending_tokens: u64,
    #[serde(default)]
    pub keep_recent_count: u64,
    #[serde(default)]
    pub retention_mode: String,
    #[serde(default)]
    pub keep_recent_turn_count: u64,
    #[serde(default)]
    pub retained_message_token_budget: u64,
    #[serde(default = "one")]
    pub min_raw_tail_steps: u64,
    #[serde(default)]
    pub memory_policy: Value,
    #[serde(default)]
    pub auto_commit_policy: Value,
    #[serde(default)]
    pub last_message_at: String,
    #[serde(default)]
    pub last_auto_commit_at: String,
    #[serde(default)]
    pub last_idle_commit_accepted_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_search_tags: Option<Vec<String>>,
    /// Longship's bookkeeping; never shown to clients.
    #[serde(rename = "_longship", default)]
    pub internal: Internal,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The stored version this copy was read at (`None`: not stored yet). Every save is a
    /// compare-and-swap on it: the session meta is the fence of every session mutation, so a
    /// writer whose lock was lost (or who raced one) fails instead of clobbering.
    #[serde(skip)]
    pub version: Option<Version>,
}

/// What Longship keeps beside the spec's fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Internal {
    /// Size of `messages.jsonl` when this meta was written. A different size on disk means a
    /// crash fell between an append and this file's rewrite: counters are then recomputed.
    #[serde(default)]
    pub live_bytes: u64,
    /// Estimated tokens of all live messages.
    #[serde(default)]
    pub live_tokens: u64,
    /// Set while a commit is under way (written before its first archive write, cleared after
    /// its terminal marker); a leftover value after a crash names the archive to repair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_commit: Option<PendingCommit>,
    /// The live messages as a segment log (backends without true appends, i.e. S3): the
    /// session's `messages.jsonl` is then not rewritten per message. `None` on local disk,
    /// and on an S3 session created before the log existed (its `messages.jsonl` is then the
    /// first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogState>,
    /// Memory-extraction tasks already added to `memories_extracted` (the newest
    /// [`COUNTED_KEEP`]), so an extraction resumed after a crash is not counted twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted_extractions: Vec<String>,
}

/// How many counted extraction task ids a session meta remembers.
pub const COUNTED_KEEP: usize = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCommit {
    pub archive: String,
    #[serde(default)]
    pub task_id: Option<String>,
}

fn memories_default() -> Value {
    json!({"total": 0})
}
pub(super) fn llm_usage_default() -> Value {
    json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0})
}
fn embedding_usage_default() -> Value {
    json!({"total_tokens": 0})
}
fn one() -> u64 {
    1
}

impl SessionMeta {
    /// A fresh session's metadata.
    pub fn new(s: &SessionRef, now: &str) -> Self {
        SessionMeta {
            session_id: s.sid.clone(),
            created_at: now.to_string(),
            updated_at: now.to_string(),
            created_by_account_id: s.account.clone(),
            created_by_user_id: s.user.clone(),
            message_count: 0,
            total_message_count: 0,
            commit_count: 0,
            memories_extracted: memories_default(),
            last_commit_at: String::new(),
            llm_token_usage: llm_usage_default(),
            embedding_token_usage: embedding_usage_default(),
            pending_tokens: 0,
            keep_recent_count: 0,
            retention_mode: String::new(),
            keep_recent_turn_count: 0,
            retained_message_token_budget: 0,
            min_raw_tail_steps: 1,
            memory_policy: Value::Null,
            auto_commit_policy: Value::Null,
            last_message_at: String::new(),
            last_auto_commit_at: String::new(),
            last_idle_commit_accepted_at: String::new(),
            event_search_tags: None,
            internal: Internal::default(),
            extra: Map::new(),
            version: None,
        }
    }

    /// Read the stored meta; `Ok(None)` when the file is absent.
    pub fn load(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Option<SessionMeta>> {
        match storage.read_versioned(&s.meta()?) {
            Ok((bytes, version)) => serde_json::from_slice::<SessionMeta>(&bytes)
                .map(|mut meta| {
                    meta.version = Some(version);
                    Some(meta)
                })
                .map_err(|e| super::damaged(format!("session meta of {}: {e}", s.uri()))),
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
            Err(StorageError::IsADirectory(_)) => Err(super::damaged(format!(
                "session meta of {} is a directory",
                s.uri()
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Write compact JSON (spec §4.1: `.meta.json` files are compact), only if the stored
    /// meta is still the version this copy was read at; a lost race is a retryable conflict
    /// and nothing is written.
    pub fn save(&mut self, storage: &dyn Storage, s: &SessionRef) -> ServiceResult<()> {
        let bytes = serde_json::to_vec(self).map_err(ServiceError::internal)?;
        match storage.write_if(&s.meta()?, &bytes, self.version.as_ref()) {
            Ok(v) => {
                self.version = Some(v);
                Ok(())
            }
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
                tracing::warn!(session = %s.uri(), "session changed under a writer that held its lock; the write was refused");
                Err(super::changed_concurrently(s))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The SE3 result: meta fields (no `event_search_tags`, no bookkeeping) plus `uri`, `user`
    /// and `memory_extraction_config`.
    pub fn view(&self, s: &SessionRef) -> Value {
        let mut v = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        v.remove("_longship");
        v.remove("event_search_tags");
        v.insert("uri".into(), s.uri().into());
        v.insert("user".into(), s.user_json());
        v.insert(
            "memory_extraction_config".into(),
            policy::extraction_config(self.event_search_tags.as_ref()),
        );
        Value::Object(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_keys_and_hides_bookkeeping() {
        let s = SessionRef::new("acme", "bob", "s1");
        let mut m = SessionMeta::new(&s, "2026-05-01T12:00:00.000Z");
        m.extra.insert("future".into(), json!(1));
        m.internal.live_bytes = 10;
        let bytes = serde_json::to_vec(&m).unwrap();
        let back: SessionMeta = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.extra["future"], 1);
        assert_eq!(back.internal.live_bytes, 10);
        let v = back.view(&s);
        assert!(v.get("_longship").is_none());
        assert_eq!(v["uri"], "viking://user/bob/sessions/s1");
        assert_eq!(v["min_raw_tail_steps"], 1);
        assert_eq!(v["memory_policy"], Value::Null);
        assert_eq!(
            v["memory_extraction_config"],
            json!({"events": {"tags": []}})
        );
        // A minimal legacy file loads with defaults.
        let legacy: SessionMeta = serde_json::from_str(r#"{"session_id": "x"}"#).unwrap();
        assert_eq!(legacy.min_raw_tail_steps, 1);
    }
}
