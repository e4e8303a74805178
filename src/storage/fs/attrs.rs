//! `fs/attrs` and `content/set_tags` (0.5.2): a node's logical attributes (its tags) and
//! setting them, over [`crate::storage::tags`].

use serde_json::{json, Value};

use super::{file_not_found, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::tags::{self, TagMode};
use crate::storage::uri::{is_hidden_name, VikingUri};
use crate::storage::{Storage, StorageError, StorePath};

/// Most nodes one recursive tag write visits.
pub const MAX_RECURSIVE_NODES: usize = 100_000;

/// `memory` under a user's memories, `skill` under skills, else `resource` (spec R2).
pub fn context_type(uri: &VikingUri) -> &'static str {
    let segs: Vec<&str> = uri.segments().iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["user", _, "memories", ..] | ["user", _, "peers", _, "memories", ..] => "memory",
        ["user", _, "skills", ..] | ["agent", "skills", ..] => "skill",
        _ => "resource",
    }
}

/// Whether nodes at `uri` may carry tags: content that is indexed (not the account root, not
/// hidden names, not a session's own files).
pub fn supports_tags(uri: &VikingUri) -> bool {
    let segs = uri.segments();
    !segs.is_empty()
        && !segs.iter().any(|s| is_hidden_name(s))
        && !matches!(segs, [u, _, s, ..] if u == "user" && s == "sessions")
}

fn unsupported(uri: &VikingUri) -> ServiceError {
    ServiceError::invalid_argument(format!(
        "tags are not supported for namespace: {}",
        uri.uri()
    ))
}

/// The URI a tag write reports as its root (0.5.2): a top-level resource, a user's resource
/// or memory type directory, else the parent directory; a directory is its own root.
fn root_uri(uri: &VikingUri, is_dir: bool) -> String {
    if is_dir {
        return uri.uri();
    }
    let segs = uri.segments();
    let upto = |n: usize| format!("viking://{}", segs[..n.min(segs.len())].join("/"));
    match segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["resources", _, ..] => upto(2),
        ["user", _, rest @ ..] if rest.contains(&"resources") || rest.contains(&"memories") => {
            let at = segs
                .iter()
                .position(|s| s == "resources" || s == "memories")
                .unwrap_or(0);
            upto(at + 2)
        }
        _ => uri.parent().map_or_else(|| uri.uri(), |p| p.uri()),
    }
}

/// `GET /fs/attrs`: `{uri, context_type, attrs: {tags}}`; 404 when nothing is there.
pub fn attrs(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<Value> {
    stat(storage, uri)?.ok_or_else(|| file_not_found(uri))?;
    let tags = if supports_tags(uri) {
        tags::read_tags(storage, uri.store_path()).map_err(|e| StorageFail(uri).map(e))?
    } else {
        Vec::new()
    };
    Ok(json!({
        "uri": uri.uri(),
        "context_type": context_type(uri),
        "attrs": {"tags": tags},
    }))
}

/// What a tag write did: the answer, and the storage paths whose index entries changed.
pub struct TagsOutcome {
    pub result: Value,
    pub changed: Vec<StorePath>,
}

/// `content/set_tags`: `tags` (normalised, no reserved keys) under `mode` on `uri`, and with
/// `recursive` on every node below a directory. A directory's own tags apply to its
/// `.abstract.md`/`.overview.md`; a sidecar URI tags its directory.
pub fn set_tags(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    uri: &VikingUri,
    incoming: &[String],
    mode: TagMode,
    recursive: bool,
) -> ServiceResult<TagsOutcome> {
    // A sidecar stands for its directory (0.5.2 tags the directory's L0/L1 records).
    let target = match uri.name() {
        ".abstract.md" | ".overview.md" => uri.parent().unwrap_or_else(|| uri.clone()),
        _ => uri.clone(),
    };
    if !supports_tags(&target) {
        return Err(unsupported(uri));
    }
    let meta = stat(storage, &target)?.ok_or_else(|| file_not_found(uri))?;
    let is_dir = meta.is_dir();
    let incoming: &[String] = if mode == TagMode::Clear {
        &[]
    } else {
        incoming
    };
    let mut result = json!({
        "uri": uri.uri(),
        "updated_uris": [],
        "root_uri": root_uri(&target, is_dir),
        "context_type": context_type(&target),
        "tags": incoming,
        "mode": mode.as_str(),
        "success_count": 0,
        "skipped_count": 0,
        "failed_count": 0,
        "tags_updated": false,
    });
    // 0.5.2: replacing with nothing is a no-op (clear is the way to remove tags).
    if mode == TagMode::Replace && incoming.is_empty() {
        result["skipped_count"] = json!(1);
        return Ok(TagsOutcome {
            result,
            changed: Vec::new(),
        });
    }
    let fail = |e: StorageError| StorageFail(&target).map(e);
    tags::set_user_tags(storage, target.store_path(), incoming, mode)?;
    let mut updated = vec![target.uri()];
    let mut changed = if is_dir {
        vec![
            super::sidecar_path(&target, ".abstract.md")?,
            super::sidecar_path(&target, ".overview.md")?,
        ]
    } else {
        vec![target.store_path().clone()]
    };
    if is_dir && recursive {
        let mut stack = vec![target.clone()];
        let mut seen = 0usize;
        while let Some(dir) = stack.pop() {
            if abandoned() {
                break;
            }
            let entries = match storage.list(dir.store_path()) {
                Ok(e) => e,
                Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
                Err(e) => return Err(fail(e)),
            };
            let mut names = Vec::new();
            for e in entries {
                if is_hidden_name(&e.name) {
                    continue;
                }
                seen += 1;
                if seen > MAX_RECURSIVE_NODES {
                    return Err(ServiceError::invalid_argument(format!(
                        "{} holds more than {MAX_RECURSIVE_NODES} nodes: tag it in parts",
                        uri.uri()
                    )));
                }
                let child = dir.child(&e.name)?;
                updated.push(child.uri());
                if e.meta.is_dir() {
                    stack.push(child);
                }
                names.push(e.name);
            }
            names.sort();
            tags::set_user_tags_children(storage, dir.store_path(), &names, incoming, mode)?;
        }
        // The whole subtree's documents carry new tags.
        changed = vec![target.store_path().clone()];
    }
    result["success_count"] = json!(updated.len());
    result["tags_updated"] = json!(true);
    result["updated_uris"] = json!(updated);
    Ok(TagsOutcome { result, changed })
}
