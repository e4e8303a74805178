//! SE8 and SE9, the read views of a session's history: one completed archive, and the context
//! a client feeds back to its model — the latest archive overview plus live (and still-pending
//! archived) messages, fitted to a token budget.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::Storage;

use super::archive::{self, State};
use super::load::{load_for_read, not_found};
use super::{deps, fit, live, tokens, SessionRef};

/// SE9: the context within `token_budget`, serialized here (a large result never occupies an
/// HTTP worker).
pub fn context(storage: &dyn Storage, s: &SessionRef, token_budget: u64) -> ServiceResult<Vec<u8>> {
    let Some(meta) = load_for_read(storage, s)? else {
        return Err(not_found(s));
    };
    // Live first, archives second: a commit running meanwhile writes the archive's copy
    // before it shrinks the live file, so this order never misses a message (duplicates
    // are removed by id below).
    let live_msgs = live::read_live_messages(storage, s, &meta)?;
    let archives = archive::list(storage, s)?;
    let total = archives.len();
    let mut pending: Vec<String> = Vec::new();
    let mut latest_overview: Option<String> = None;
    let mut failed = 0;
    for (_, name) in archives.iter().rev() {
        let dir = s.archive(name)?;
        match archive::state(storage, &dir)? {
            State::Pending => pending.push(name.clone()),
            State::Done(done) => {
                if !archive::is_reset_boundary(&done) {
                    match archive::overview(storage, &dir)? {
                        Some(o) => latest_overview = Some(o),
                        None if archive::working_memory_off(&done) => {}
                        None => failed = 1,
                    }
                }
                break;
            }
            State::Failed(_) => {
                failed = 1;
                break;
            }
        }
    }
    let mut messages = Vec::new();
    for name in pending.iter().rev() {
        messages.extend(live::read_messages(
            storage,
            &s.archive(name)?.join(archive::MESSAGES)?,
        )?);
    }
    messages.extend(live_msgs);
    let mut seen = HashSet::new();
    messages.retain(|m| match m.get("id").and_then(Value::as_str) {
        Some(id) => seen.insert(id.to_string()),
        None => true,
    });
    let (messages, active) = fit::fit(messages, token_budget);
    let left = token_budget.saturating_sub(active);
    let (overview, archive_tokens) = match latest_overview {
        Some(o) if tokens::estimate_text(&o) <= left => {
            let t = tokens::estimate_text(&o);
            (o, t)
        }
        _ => (String::new(), 0),
    };
    let included = 0;
    serde_json::to_vec(&json!({
        "latest_archive_overview": overview,
        "pre_archive_abstracts": [],
        "messages": messages,
        "estimatedTokens": active + archive_tokens,
        "stats": {
            "totalArchives": total,
            "includedArchives": included,
            "droppedArchives": total - failed - included,
            "failedArchives": failed,
            "activeTokens": active,
            "archiveTokens": archive_tokens,
        }
    }))
    .map_err(ServiceError::internal)
}

/// SE8: one completed archive, serialized here (a large result never occupies an HTTP worker).
pub fn get_archive(
    storage: &dyn Storage,
    s: &SessionRef,
    archive_id: &str,
) -> ServiceResult<Vec<u8>> {
    if load_for_read(storage, s)?.is_none() {
        return Err(not_found(s));
    }
    let missing = || {
        ServiceError::not_found(
            "archive",
            archive_id,
            format!("Archive {} not found", archive_id),
        )
    };
    if archive::number(archive_id).is_none() {
        return Err(missing());
    }
    let dir = s.archive(archive_id)?;
    let State::Done(done) = archive::state(storage, &dir)? else {
        return Err(missing());
    };
    if archive::is_reset_boundary(&done) {
        return Err(missing());
    }
    let overview = archive::overview(storage, &dir)?;
    let (overview, abstract_) = match overview {
        Some(o) => {
            let a = match archive::read_text(storage, &dir.join(archive::ABSTRACT)?)? {
                Some(t) => deps::okf_body(&t),
                None => archive::derive_abstract(&o),
            };
            (o, a)
        }
        None if archive::working_memory_off(&done) => (String::new(), String::new()),
        None => return Err(missing()),
    };
    let msgs_path = dir.join(archive::MESSAGES)?;
    if storage.stat(&msgs_path)?.is_none() {
        return Err(missing());
    }
    let messages = live::read_messages(storage, &msgs_path)?;
    serde_json::to_vec(&json!({
        "archive_id": archive_id,
        "abstract": abstract_,
        "overview": overview,
        "messages": messages,
    }))
    .map_err(ServiceError::internal)
}
