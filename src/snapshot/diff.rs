//! `diff` (one file between two versions, a size-limited unified diff by `similar`) and
//! `diff-paths` (changed files under directories, paged).

use std::time::Duration;

use gix_object::Kind;
use serde_json::{json, Value};
use similar::TextDiff;

use super::objects::{too_large, ObjectStore};
use super::refs::{unknown_ref, Refs};
use super::scope::within;
use super::tree::{self, Flat};
use super::{repo_root, tree_path_uri};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::uri::{self, Access};
use crate::storage::Storage;

/// 0.5.2's limits: bytes per compared file, lines per file, bytes of diff text, and the time the
/// line matcher may take (after which `similar` settles for a coarser, still correct, diff).
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
pub const MAX_LINES: usize = 100_000;
pub const MAX_OUTPUT_BYTES: usize = 20 * 1024 * 1024;
pub const DIFF_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest `diff-paths` page.
pub const MAX_PAGE: usize = 1000;

/// Derived summaries that do not count as source changes in `diff-paths` (0.5.2).
const DERIVED: [&str; 3] = [".abstract.md", ".overview.md", ".relations.json"];

fn resolve_tree(
    objects: &ObjectStore<'_>,
    refs: &Refs<'_>,
    target: &str,
) -> ServiceResult<(String, gix_hash::ObjectId)> {
    let id = refs.resolve(objects, target)?;
    let commit = tree::read_commit(objects, &id)?.ok_or_else(|| unknown_ref(target))?;
    Ok((id.to_string(), commit.tree))
}

fn file_at(
    objects: &ObjectStore<'_>,
    tree_id: &gix_hash::ObjectId,
    path: &str,
) -> ServiceResult<Option<Vec<u8>>> {
    let found = tree::read(objects, tree_id, path)?;
    match found.files.get(path) {
        Some(id) => objects.get(id, Kind::Blob, MAX_FILE_BYTES).map_err(|e| {
            if e.code == ErrorCode::PayloadTooLarge {
                too_large(MAX_FILE_BYTES).detail("path", tree_path_uri(path))
            } else {
                e
            }
        }),
        None => Ok(None),
    }
}

fn text(bytes: Option<&[u8]>, path: &str) -> ServiceResult<String> {
    let Some(bytes) = bytes else {
        return Ok(String::new());
    };
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ServiceError::invalid_argument("snapshot diff only supports UTF-8 text files")
    })?;
    if text.lines().count() > MAX_LINES {
        return Err(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("snapshot diff line count limit exceeded ({MAX_LINES} lines per file)"),
        )
        .with_details(json!({ "limit_lines": MAX_LINES, "path": tree_path_uri(path) })));
    }
    Ok(text.to_string())
}

/// `GET /snapshot/diff` for tree path `path`.
pub fn diff(
    storage: &dyn Storage,
    account: &str,
    path: &str,
    from: Option<&str>,
    to: &str,
) -> ServiceResult<Value> {
    let repo = repo_root(account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let refs = Refs::new(storage, &repo);
    let from = from.map(|f| resolve_tree(&objects, &refs, f)).transpose()?;
    let (to_oid, to_tree) = resolve_tree(&objects, &refs, to)?;
    let before = match &from {
        Some((_, t)) => file_at(&objects, t, path)?,
        None => None,
    };
    let after = file_at(&objects, &to_tree, path)?;
    let uri = tree_path_uri(path);
    if before.is_none() && after.is_none() {
        return Err(ServiceError::not_found(
            "git_blob",
            &uri,
            format!("{uri} is in neither snapshot"),
        ));
    }
    let change_type = match (&before, &after) {
        (None, _) => "added",
        (_, None) => "deleted",
        (Some(a), Some(b)) if a == b => "unchanged",
        _ => "modified",
    };
    let old = text(before.as_deref(), path)?;
    let new = text(after.as_deref(), path)?;
    let from_oid = from.map(|(o, _)| o).unwrap_or_default();
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(&old, &new);
    let mut out = String::new();
    let header_from = format!("{uri}@{from_oid}");
    let header_to = format!("{uri}@{to_oid}");
    let mut unified = diff.unified_diff();
    unified.header(&header_from, &header_to);
    use std::fmt::Write;
    let _ = write!(out, "{unified}");
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("snapshot diff output size limit exceeded ({MAX_OUTPUT_BYTES} bytes)"),
        )
        .with_details(json!({ "limit_bytes": MAX_OUTPUT_BYTES, "path": uri })));
    }
    Ok(json!({
        "path": uri,
        "from_commit": from_oid,
        "to_commit": to_oid,
        "change_type": change_type,
        "diff_text": out,
    }))
}

pub struct DiffPathsRequest {
    pub who: Identity,
    /// Directory tree paths (deduplicated by the caller).
    pub dirs: Vec<String>,
    pub from: Option<String>,
    pub to: String,
    pub offset: usize,
    pub limit: usize,
}

fn files_under(
    objects: &ObjectStore<'_>,
    tree_id: &gix_hash::ObjectId,
    dirs: &[String],
) -> ServiceResult<Flat> {
    let mut out = Flat::new();
    for d in dirs {
        out.extend(
            tree::read(objects, tree_id, d)?
                .files
                .into_iter()
                .filter(|(p, _)| within(p, d)),
        );
    }
    Ok(out)
}

/// `GET /snapshot/diff-paths`: every changed path needs the caller's read access (any denied →
/// 403 without naming it), then one page in URI order.
pub fn diff_paths(storage: &dyn Storage, req: &DiffPathsRequest) -> ServiceResult<Value> {
    let repo = repo_root(&req.who.account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let refs = Refs::new(storage, &repo);
    let before = match &req.from {
        Some(f) => {
            let (_, t) = resolve_tree(&objects, &refs, f)?;
            files_under(&objects, &t, &req.dirs)?
        }
        None => Flat::new(),
    };
    let (_, to_tree) = resolve_tree(&objects, &refs, &req.to)?;
    let after = files_under(&objects, &to_tree, &req.dirs)?;
    let mut changes: Vec<(String, &str)> = Vec::new();
    for (p, id) in &after {
        match before.get(p) {
            None => changes.push((tree_path_uri(p), "added")),
            Some(old) if old != id => changes.push((tree_path_uri(p), "modified")),
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        changes.push((tree_path_uri(p), "deleted"));
    }
    changes.retain(|(u, _)| !DERIVED.iter().any(|d| u.rsplit('/').next() == Some(*d)));
    changes.sort();
    for (u, _) in &changes {
        let allowed =
            uri::parse(u, &req.who).and_then(|p| uri::authorize(&p, &req.who, Access::Read));
        if allowed.is_err() {
            return Err(ServiceError::permission_denied(
                "Snapshot changes include inaccessible paths",
            ));
        }
    }
    let total = changes.len();
    let page: Vec<Value> = changes
        .iter()
        .skip(req.offset)
        .take(req.limit)
        .map(|(u, c)| json!({ "uri": u, "change_type": c }))
        .collect();
    let next = req.offset.saturating_add(page.len());
    let has_more = next < total;
    Ok(json!({
        "changes": page,
        "offset": req.offset,
        "limit": req.limit,
        "total": total,
        "has_more": has_more,
        "next_offset": if has_more { json!(next) } else { Value::Null },
    }))
}
