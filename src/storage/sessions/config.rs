//! `PATCH /sessions/{id}/config` (the mutable extraction settings of a session) and the
//! per-session extraction statistics of `GET /api/v1/stats/sessions/{id}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::ServiceResult;
use crate::storage::Storage;
use crate::time;

use super::load::{load_for_read, load_for_update, not_found};
use super::meta::SessionMeta;
use super::{archive, live, policy, SessionRef};

/// What a config update changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub event_tags: Option<Vec<String>>,
    /// `Some(Value::Null)` switches automatic commits off.
    pub auto_commit_policy: Option<Value>,
}

pub fn update(storage: &dyn Storage, s: &SessionRef, u: &ConfigUpdate) -> ServiceResult<Value> {
    let _lock = s.lock_briefly(storage)?;
    let Some(mut meta) = load_for_update(storage, s)? else {
        return Err(not_found(s));
    };
    if let Some(tags) = &u.event_tags {
        meta.event_search_tags = Some(tags.clone());
    }
    if let Some(p) = &u.auto_commit_policy {
        meta.auto_commit_policy = p.clone();
    }
    meta.updated_at = time::millis_z_now();
    meta.save(storage, s)?;
    Ok(json!({
        "session_id": s.sid,
        "auto_commit_policy": meta.auto_commit_policy,
        "memory_extraction_config": policy::extraction_config(meta.event_search_tags.as_ref()),
    }))
}

/// `{session_id, total_turns, memories_extracted}`: turns are user queries in the archives and
/// the live messages; memories are the session's running total.
pub fn extraction_stats(storage: &dyn Storage, s: &SessionRef) -> ServiceResult<Value> {
    let Some(meta) = load_for_read(storage, s)? else {
        return Err(not_found(s));
    };
    let mut turns = 0u64;
    for (_, name) in archive::list(storage, s)? {
        if let Some(a) = archive::ArchiveMeta::load(storage, &s.archive(&name)?)? {
            if matches!(
                archive::state(storage, &s.archive(&name)?)?,
                archive::State::Done(_)
            ) {
                turns += a.phase1.turn_count;
            }
        }
    }
    let bytes = live::read_live(storage, s, &meta, false)?;
    let (spans, _) = live::lines(&bytes);
    for sp in spans {
        if live::light(&bytes[sp.start..sp.end]).is_ok_and(|m| m.starts_turn()) {
            turns += 1;
        }
    }
    Ok(json!({
        "session_id": s.sid,
        "total_turns": turns,
        "memories_extracted": meta.memories_extracted["total"].as_u64().unwrap_or(0),
    }))
}

/// Chat tokens one extraction spent (0.5.2's `llm_token_usage` parts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmUsage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

/// Add one extraction's counts (per memory type) to the session's `memories_extracted`, and
/// its chat tokens to `llm_token_usage` as 0.5.2 does (compare-and-swap on the meta, retried;
/// a session deleted meanwhile is left alone). The task id is remembered in the same write: a
/// second call for it (a resumed extraction) adds nothing.
pub fn add_memories_extracted(
    storage: &dyn Storage,
    s: &SessionRef,
    task_id: &str,
    per_type: &BTreeMap<String, u64>,
    usage: &LlmUsage,
) -> ServiceResult<()> {
    let total: u64 = per_type.values().sum();
    if total == 0 && usage.total == 0 {
        return Ok(());
    }
    for _ in 0..16 {
        let Some(mut meta) = SessionMeta::load(storage, s)? else {
            return Ok(());
        };
        if meta
            .internal
            .counted_extractions
            .iter()
            .any(|t| t == task_id)
        {
            return Ok(());
        }
        let counted = &mut meta.internal.counted_extractions;
        counted.push(task_id.to_string());
        if counted.len() > super::meta::COUNTED_KEEP {
            counted.remove(0);
        }
        if !meta.memories_extracted.is_object() {
            meta.memories_extracted = json!({"total": 0});
        }
        let counts = &mut meta.memories_extracted;
        for (k, v) in per_type
            .iter()
            .chain(std::iter::once((&"total".to_string(), &total)))
        {
            let now = counts[k.as_str()].as_u64().unwrap_or(0);
            counts[k.as_str()] = json!(now + v);
        }
        if !meta.llm_token_usage.is_object() {
            meta.llm_token_usage = super::meta::llm_usage_default();
        }
        let llm = &mut meta.llm_token_usage;
        for (k, v) in [
            ("prompt_tokens", usage.prompt),
            ("completion_tokens", usage.completion),
            ("total_tokens", usage.total),
        ] {
            llm[k] = json!(llm[k].as_u64().unwrap_or(0) + v);
        }
        match meta.save(storage, s) {
            Ok(()) => return Ok(()),
            Err(e) if super::is_busy(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(session = %s.uri(), "memories_extracted not updated: the session kept changing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn an_extraction_is_counted_once() {
        let d = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(d.path()).unwrap();
        let s = SessionRef::new("acme", "bob", "s1");
        SessionMeta::new(&s, "2026-12-07T00:00:00Z")
            .save(&st, &s)
            .unwrap();
        let counts: BTreeMap<String, u64> = [("preferences".to_string(), 2)].into();
        let usage = LlmUsage {
            prompt: 100,
            completion: 20,
            total: 120,
        };
        add_memories_extracted(&st, &s, "t1", &counts, &usage).unwrap();
        // The same task again (resumed after a crash before its task completed): no change.
        add_memories_extracted(&st, &s, "t1", &counts, &usage).unwrap();
        add_memories_extracted(&st, &s, "t2", &counts, &usage).unwrap();
        // An extraction that found nothing still spent tokens.
        add_memories_extracted(&st, &s, "t3", &BTreeMap::new(), &usage).unwrap();
        let m = SessionMeta::load(&st, &s).unwrap().unwrap();
        assert_eq!(m.memories_extracted["total"], 4);
        assert_eq!(m.memories_extracted["preferences"], 4);
        assert_eq!(m.llm_token_usage["prompt_tokens"], 300);
        assert_eq!(m.llm_token_usage["completion_tokens"], 60);
        assert_eq!(m.llm_token_usage["total_tokens"], 360);
    }
}
