//! `restore`: bring a directory (or the whole account) back to a version, as a forward commit.
//!
//! Order (each step only after the previous succeeded): resolve the source; plan against the
//! live files (what to write, what to delete); authorize every planned path for the caller —
//! one refusal and nothing is written; check every blob is readable; then, holding the
//! account's restore lock, record the live state as a commit (so the restore can be undone by
//! restoring that commit), write and delete, and commit the restored tree on top. A failure
//! while writing puts back what it had changed (from the commit just made) before reporting.

use std::collections::HashSet;
use std::time::Duration;

use gix_hash::ObjectId;
use gix_object::Kind;
use serde_json::{json, Value};

use super::commit::{advance, capture, head_tree};
use super::ignore_rules;
use super::objects::ObjectStore;
use super::refs::{unknown_ref, Refs};
use super::scope::{covered, within};
use super::tree::{self, Flat};
use super::{repo_root, Author};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::uri::{self, Access};
use crate::storage::{Storage, StorageError, StorePath};

/// How long a restore waits for another restore of the same account.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Largest file a restore writes back (bounded by what a content write accepts anyway).
const MAX_BLOB_BYTES: u64 = 1 << 30;

pub struct RestoreRequest {
    pub who: Identity,
    /// Tree path of the directory (`""`: the whole account).
    pub scope: String,
    pub source: String,
    pub branch: String,
    pub dry_run: bool,
    pub message: Option<String>,
    pub author: Author,
}

/// What a restore changes, in tree paths.
pub struct Outcome {
    pub result: Value,
    /// Paths written or deleted (for the search index), also after a failure part-way.
    pub touched: Vec<String>,
    pub error: Option<ServiceError>,
}

fn rel(scope: &str, path: &str) -> String {
    if scope.is_empty() {
        path.to_string()
    } else {
        path.strip_prefix(scope)
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(path)
            .to_string()
    }
}

fn authorize(who: &Identity, path: &str, access: Access) -> ServiceResult<()> {
    let parsed = uri::parse(&super::tree_path_uri(path), who)?;
    uri::authorize(&parsed, who, access)
}

pub fn restore(
    storage: &dyn Storage,
    req: &RestoreRequest,
    abandoned: &dyn Fn() -> bool,
) -> Outcome {
    let mut touched = Vec::new();
    match run(storage, req, abandoned, &mut touched) {
        Ok(result) => Outcome {
            result,
            touched,
            error: None,
        },
        Err(e) => Outcome {
            result: Value::Null,
            touched,
            error: Some(e),
        },
    }
}

fn run(
    storage: &dyn Storage,
    req: &RestoreRequest,
    abandoned: &dyn Fn() -> bool,
    touched: &mut Vec<String>,
) -> ServiceResult<Value> {
    let account = req.who.account.as_str();
    let repo = repo_root(account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let refs = Refs::new(storage, &repo);
    let rules = ignore_rules::load(storage, &repo)?;
    let source_id = refs.resolve(&objects, &req.source)?;
    let source =
        tree::read_commit(&objects, &source_id)?.ok_or_else(|| unknown_ref(&req.source))?;
    let wanted: Flat = tree::read(&objects, &source.tree, &req.scope)?
        .files
        .into_iter()
        .filter(|(p, _)| covered(p) && within(p, &req.scope) && !rules.ignores(p))
        .collect();

    // Live state, hashed (blobs stored as a commit would: the pre-restore commit needs them).
    let head = refs.branch(&req.branch)?;
    let known: HashSet<ObjectId> = head_tree(&objects, &head)?.files.into_values().collect();
    let scopes = vec![req.scope.clone()];
    let live = capture(
        storage, &objects, account, &scopes, &rules, &known, abandoned,
    )?;

    let to_write: Vec<(&String, &ObjectId)> = wanted
        .iter()
        .filter(|(p, id)| live.files.get(*p) != Some(*id))
        .collect();
    let to_delete: Vec<&String> = live
        .files
        .keys()
        .filter(|p| !wanted.contains_key(*p))
        .collect();
    for (path, _) in &to_write {
        authorize(&req.who, path, Access::Write)?;
    }
    for path in &to_delete {
        authorize(&req.who, path, Access::Delete)?;
    }
    let plan = json!({
        "to_write": to_write.iter().map(|(p, id)| json!({"path": rel(&req.scope, p), "oid": id.to_string()})).collect::<Vec<_>>(),
        "to_delete": to_delete.iter().map(|p| rel(&req.scope, p)).collect::<Vec<_>>(),
    });
    if req.dry_run {
        return Ok(json!({
            "result": "dry_run",
            "source_commit": source_id.to_string(),
            "parent_commit": head.commit.map(|c| c.to_string()),
            "diff": plan,
        }));
    }
    if to_write.is_empty() && to_delete.is_empty() {
        return Ok(json!({
            "result": "noop",
            "source_commit": source_id.to_string(),
            "commit_oid": head.commit.map(|c| c.to_string()),
        }));
    }
    for (_, id) in &to_write {
        if !objects.exists(id)? {
            return Err(ServiceError::internal(format!(
                "snapshot object {id} is missing"
            )));
        }
    }

    let _lock = storage
        .lock(&format!("snapshot-restore:{account}"), LOCK_WAIT)
        .map_err(|e| match e {
            StorageError::Busy(_) => ServiceError::conflict(
                "another snapshot restore of this account is running; retry shortly",
            ),
            other => other.into(),
        })?;
    let scope_arg = (!req.scope.is_empty()).then(|| scopes.clone());
    let before = advance(
        &objects,
        &refs,
        &req.branch,
        scope_arg.as_deref(),
        &live.files,
        &req.author,
        &format!("Snapshot before restore to {}", source_id),
    )?;
    let parent = before.commit.or(before.parent);

    let root = StorePath::root()
        .join(account)
        .map_err(ServiceError::from)?;
    let applied = apply(storage, &objects, &root, &to_write, &to_delete, touched);
    if let Err(e) = applied {
        undo(storage, &objects, &root, &live.files, touched);
        return Err(e);
    }
    let pruned = prune_empty_dirs(storage, &root, &req.scope, &to_delete);
    // The ACL rows of what is gone go too, as with `fs rm` (ACLs are not versioned: a
    // restored node has the permissions its place has now).
    let mut gone: Vec<String> = to_delete.iter().map(|p| (*p).clone()).collect();
    gone.extend(pruned);
    if let Err(e) = crate::storage::acl::store::forget_account_paths(storage, account, &gone) {
        tracing::error!(account, error = %e.message, "snapshot restore: ACL rows of removed nodes not dropped");
    }

    let message = req
        .message
        .clone()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| format!("Restore {} to {}", scope_label(&req.scope), source_id));
    let done = advance(
        &objects,
        &refs,
        &req.branch,
        scope_arg.as_deref(),
        &wanted,
        &req.author,
        &message,
    )?;
    let written: Vec<String> = to_write.iter().map(|(p, _)| (*p).clone()).collect();
    let deleted: Vec<String> = to_delete.iter().map(|p| (*p).clone()).collect();
    Ok(json!({
        "result": "applied",
        "new_commit_oid": done.commit.or(done.parent).map(|c| c.to_string()),
        "source_commit": source_id.to_string(),
        "parent_commit": parent.map(|c| c.to_string()),
        "written": written.len(),
        "deleted": deleted.len(),
        "unchanged": wanted.len().saturating_sub(written.len()),
        "written_paths": written,
        "deleted_paths": deleted,
    }))
}

fn scope_label(scope: &str) -> String {
    if scope.is_empty() {
        "viking://".into()
    } else {
        super::tree_path_uri(scope)
    }
}

fn apply(
    storage: &dyn Storage,
    objects: &ObjectStore<'_>,
    root: &StorePath,
    to_write: &[(&String, &ObjectId)],
    to_delete: &[&String],
    touched: &mut Vec<String>,
) -> ServiceResult<()> {
    for (path, id) in to_write {
        let data = objects
            .get(id, Kind::Blob, MAX_BLOB_BYTES)?
            .ok_or_else(|| ServiceError::internal(format!("snapshot object {id} is missing")))?;
        touched.push((*path).clone());
        storage.write(&root.join_path(path).map_err(ServiceError::from)?, &data)?;
    }
    for path in to_delete {
        touched.push((*path).clone());
        let at = root.join_path(path).map_err(ServiceError::from)?;
        match storage.remove(&at, false) {
            Ok(()) | Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // A removed node's tags go with it, as with `fs rm` (tags are not versioned).
        forget_tags(storage, &at);
    }
    Ok(())
}

/// Put every touched path back as it was (`live`); best effort, logged.
fn undo(
    storage: &dyn Storage,
    objects: &ObjectStore<'_>,
    root: &StorePath,
    live: &Flat,
    touched: &[String],
) {
    for path in touched {
        let Ok(at) = root.join_path(path) else {
            continue;
        };
        let outcome = match live.get(path) {
            Some(id) => match objects.get(id, Kind::Blob, MAX_BLOB_BYTES) {
                Ok(Some(data)) => storage
                    .write(&at, &data)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Ok(None) => Err("object missing".into()),
                Err(e) => Err(e.message),
            },
            None => match storage.remove(&at, false) {
                Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(why) = outcome {
            tracing::error!(
                path,
                why,
                "snapshot restore: could not put a file back after a failure"
            );
        }
    }
}

/// Directories left empty by deletions (below the scope) go too, as they would in git.
fn prune_empty_dirs(
    storage: &dyn Storage,
    root: &StorePath,
    scope: &str,
    deleted: &[&String],
) -> Vec<String> {
    let mut pruned = Vec::new();
    let mut dirs: Vec<String> = deleted
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(d, _)| d.to_string()))
        .collect();
    dirs.sort();
    dirs.dedup();
    // Deepest last, so `pop` takes it first; walk up while directories empty out.
    dirs.sort_by_key(|d| d.matches('/').count());
    while let Some(mut cur) = dirs.pop() {
        loop {
            // Never a scope root or a user's home, whatever the restore emptied.
            let depth = cur.matches('/').count();
            let home = cur.starts_with("user/") && depth < 2;
            if !within(&cur, scope) || cur == scope || depth == 0 || home {
                break;
            }
            let Ok(at) = root.join_path(&cur) else { break };
            match storage.list(&at) {
                Ok(entries) if entries.is_empty() => {
                    if storage.remove(&at, false).is_err() {
                        break;
                    }
                    forget_tags(storage, &at);
                    pruned.push(cur.clone());
                }
                _ => break,
            }
            match cur.rsplit_once('/') {
                Some((parent, _)) => cur = parent.to_string(),
                None => break,
            }
        }
    }
    pruned
}

fn forget_tags(storage: &dyn Storage, node: &StorePath) {
    if let Err(e) = crate::storage::tags::forget_node(storage, node) {
        tracing::warn!(error = %e, "snapshot restore: tags of a removed node not forgotten");
    }
}
