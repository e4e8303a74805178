//! `content/reindex` (0.5.2): what a subtree's rebuild covers. The rebuild itself is the
//! search index's: the job records the subtree and the index writer re-reads it from storage
//! (entries, tags, vectors); this module names the target and counts what will be rebuilt.

use serde_json::{json, Value};

use super::walk::{Flow, Order, Walker};
use super::{file_not_found, stat};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorePath};

/// 0.5.2 reindex modes (both for every target type).
pub const MODES: [&str; 2] = ["vectors_only", "semantic_and_vectors"];

/// 0.5.2's `object_type` of a reindex target; 400 for what cannot be reindexed.
pub fn object_type(uri: &VikingUri) -> ServiceResult<&'static str> {
    let segs: Vec<&str> = uri.segments().iter().map(String::as_str).collect();
    Ok(match segs.as_slice() {
        [] => "global_namespace",
        ["user"] | ["user", _] => "user_namespace",
        ["user", _, "sessions", ..] => {
            return Err(ServiceError::invalid_argument(format!(
                "Unsupported reindex URI: {}",
                uri.uri()
            ))
            .detail("uri", uri.uri()))
        }
        ["user", _, "memories", ..] | ["user", _, "peers", _, "memories", ..] => "memory",
        ["user", _, "skills"] | ["agent", "skills"] => "skill_namespace",
        ["user", _, "skills", ..] | ["agent", "skills", ..] => "skill",
        _ => "resource",
    })
}

/// 400 for a mode 0.5.2 does not know.
pub fn check_mode(mode: &str, object_type: &str) -> ServiceResult<()> {
    if MODES.contains(&mode) {
        return Ok(());
    }
    Err(ServiceError::invalid_argument(format!(
        "Mode {} is not supported for {object_type}",
        mode.chars().take(64).collect::<String>()
    ))
    .with_details(json!({"mode": mode, "object_type": object_type, "supported_modes": MODES})))
}

/// A USER may reindex only their own user namespace (0.5.2).
pub fn authorize(uri: &VikingUri, who: &Identity) -> ServiceResult<()> {
    if who.role != Role::User {
        return Ok(());
    }
    match uri.segments() {
        [scope, uid, ..] if scope == "user" && *uid == who.user => Ok(()),
        _ => Err(ServiceError::permission_denied(
            "USER can only reindex their own user namespace.",
        )
        .detail("resource", uri.uri())),
    }
}

/// Count the documents a reindex of `uri` rebuilds (files, and each directory's two summaries),
/// as a ROOT view so hidden sidecars count; `on_dir` sees every directory (the root too).
/// `between_steps` runs after each node.
pub fn scan(
    storage: &dyn Storage,
    uri: &VikingUri,
    recursive: bool,
    on_dir: &mut dyn FnMut(&VikingUri),
    between_steps: &dyn Fn(),
) -> ServiceResult<u64> {
    let meta = stat(storage, uri)?;
    let Some(meta) = meta else {
        if uri.is_root() {
            return Ok(0);
        }
        return Err(file_not_found(uri));
    };
    if !meta.is_dir() {
        return Ok(1);
    }
    let root = Identity {
        role: Role::Root,
        account: String::new(),
        user: String::new(),
    };
    let walker = Walker {
        who: &root,
        show_hidden_files: true,
        max_depth: if recursive { usize::MAX } else { 1 },
        order: Order::ByName,
        exclude: None,
    };
    on_dir(uri);
    let mut n = 0u64;
    walker.run(storage, &|| false, uri, |node, meta, _| {
        if meta.is_dir() {
            on_dir(node);
        } else {
            n += 1;
        }
        between_steps();
        Ok(Flow::Continue)
    })?;
    Ok(n)
}

/// The 0.5.2 result of a finished reindex.
pub fn result(uri: &VikingUri, object_type: &str, mode: &str, docs: u64, ms: u64) -> Value {
    json!({
        "status": "completed",
        "uri": uri.uri(),
        "object_type": object_type,
        "mode": mode,
        "scanned_records": docs,
        "rebuilt_records": docs,
        "deleted_records": 0,
        "unsupported_records": 0,
        "failed_records": 0,
        "duration_ms": ms,
        "warnings": [],
    })
}

/// The files directly in `dir` (sidecars included): what a non-recursive reindex rebuilds.
pub fn direct_files(storage: &dyn Storage, dir: &VikingUri) -> ServiceResult<Vec<StorePath>> {
    match stat(storage, dir)? {
        Some(m) if m.is_dir() => {}
        _ => return Ok(vec![dir.store_path().clone()]),
    }
    let entries = storage
        .list(dir.store_path())
        .map_err(|e| super::StorageFail(dir).map(e))?;
    Ok(entries
        .into_iter()
        .filter(|e| !e.meta.is_dir())
        .filter_map(|e| dir.store_path().join(&e.name).ok())
        .collect())
}
