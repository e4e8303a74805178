//! What a snapshot covers, and the live files under a scope.
//!
//! Covered: the account's `resources/`, `user/` and `agent/` trees (tree paths relative to the
//! account, as 0.5.2's). Never covered: internal names (`storage::is_internal_name`: lock,
//! publishing and tag files), everything outside those scopes (`_system`, …), and a user's
//! `sessions/` — live messages and archives belong to the sessions API, whose meta is a
//! compare-and-swap fence a restore must not write behind (0.5.2 likewise refuses its session
//! namespace as a snapshot path). Memories (`user/<id>/memories/…`) are ordinary files.

use crate::error::{ServiceError, ServiceResult};
use crate::reserved::is_internal_name;
use crate::storage::uri::VikingUri;
use crate::storage::{EntryKind, Storage, StorageError, StorePath, Version};

const SCOPES: [&str; 3] = ["resources", "user", "agent"];

/// Whether a file at `tree_path` is part of snapshots.
pub fn covered(tree_path: &str) -> bool {
    let segs: Vec<&str> = tree_path.split('/').collect();
    match segs.as_slice() {
        [first, ..] if !SCOPES.contains(first) => false,
        _ if segs.iter().any(|s| s.is_empty() || is_internal_name(s)) => false,
        ["user", _, "sessions", ..] => false,
        _ => true,
    }
}

/// The tree path of a scope URI (`""` for `viking://`); a URI snapshots never cover → 400.
pub fn tree_path(uri: &VikingUri) -> ServiceResult<String> {
    let path = uri.segments().join("/");
    let segs: Vec<&str> = uri.segments().iter().map(String::as_str).collect();
    if let ["user", _, "sessions", ..] = segs.as_slice() {
        return Err(ServiceError::invalid_uri(
            &uri.uri(),
            "session directories are not covered by snapshots (the sessions API owns them)",
        ));
    }
    Ok(path)
}

/// Whether `path` is `scope` or below it (`""` is everything).
pub fn within(path: &str, scope: &str) -> bool {
    scope.is_empty()
        || path == scope
        || (path.len() > scope.len()
            && path.starts_with(scope)
            && path.as_bytes()[scope.len()] == b'/')
}

/// Covered files stored under `scope` now (tree paths, sorted, with the listed version). A file
/// scope yields itself.
pub fn live_files(
    storage: &dyn Storage,
    account: &str,
    scope: &str,
    abandoned: &dyn Fn() -> bool,
) -> ServiceResult<Vec<(String, Option<Version>)>> {
    let root = StorePath::root()
        .join(account)
        .map_err(ServiceError::from)?;
    let mut out = Vec::new();
    let mut stack: Vec<String> = if scope.is_empty() {
        SCOPES.iter().map(|s| s.to_string()).collect()
    } else {
        let at = root.join_path(scope).map_err(ServiceError::from)?;
        match storage.stat(&at)? {
            None => return Ok(out),
            Some(meta) if meta.kind == EntryKind::File => {
                if covered(scope) {
                    out.push((scope.to_string(), meta.version));
                }
                return Ok(out);
            }
            Some(_) => vec![scope.to_string()],
        }
    };
    while let Some(dir) = stack.pop() {
        if abandoned() {
            return Err(ServiceError::unavailable(
                "snapshot",
                "the request was abandoned",
            ));
        }
        let entries = match storage.list(&root.join_path(&dir).map_err(ServiceError::from)?) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            let path = format!("{dir}/{}", e.name);
            if !covered(&path) {
                continue;
            }
            match e.meta.kind {
                EntryKind::Dir => stack.push(path),
                EntryKind::File => out.push((path, e.meta.version)),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
