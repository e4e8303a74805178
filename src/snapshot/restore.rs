//! `restore`: bring a directory (or the whole account) back to a version, as a forward commit.
//!
//! Order (each step only after the previous succeeded): resolve the source; plan against the
//! live files (what to write, what to delete); authorize every planned path for the caller —
//! one refusal and nothing is written; check every blob is readable; then, holding the
//! account's restore lock, record the live state as a commit (so the restore can be undone by
//! restoring that commit), build each restored directory whole in a staging directory (a copy
//! of the live one with the restored files written and the removed ones deleted), publish it
//! in place of the live one with one atomic replacement (`storage::replace`), and commit the
//! restored tree on top. A failure before the publication leaves the live tree untouched; a
//! crash during it is settled by the staging sweep: the old directory or the new one, whole.

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

/// Where a restore builds the restored directories: a work directory under
/// `<account>/_system/ingest/` that the caller keeps from the staging sweep while the restore
/// lives (its active marker), and `beat` keeps that marker fresh between files.
pub struct Staging<'a> {
    pub dir: StorePath,
    pub beat: &'a mut dyn FnMut(),
}

pub fn restore(
    storage: &dyn Storage,
    req: &RestoreRequest,
    staging: Staging<'_>,
    abandoned: &dyn Fn() -> bool,
) -> Outcome {
    let mut touched = Vec::new();
    match run(storage, req, staging, abandoned, &mut touched) {
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
    staging: Staging<'_>,
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
    let work = staging.dir.clone();
    let applied = publish_restored(
        storage, &objects, &root, &req.scope, &to_write, &to_delete, staging,
    );
    // A replacement a failure interrupted is finished before its trees' directory goes; if
    // that fails too, the staging sweep retries it from the journal.
    match crate::storage::replace::settle(storage, &work) {
        Ok(()) => {
            let _ = storage.remove(&work, true);
        }
        Err(e) => tracing::error!(error = %e, "snapshot restore: replacement left to the sweep"),
    }
    applied?;
    touched.extend(to_write.iter().map(|(p, _)| (*p).clone()));
    touched.extend(to_delete.iter().map(|p| (*p).clone()));
    forget_acl_rows(storage, &root, account, &req.scope, &to_delete);

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

/// The directories a restore replaces whole (tree paths): the scope itself, or for the whole
/// account each scope root it changes (`resources`, `agent`, each `user/<id>`).
fn units(scope: &str, changed: impl Iterator<Item = String>) -> Vec<String> {
    if !scope.is_empty() {
        return vec![scope.to_string()];
    }
    let mut out: Vec<String> = changed
        .filter_map(|p| {
            let segs: Vec<&str> = p.split('/').collect();
            match segs.as_slice() {
                ["user", uid, _, ..] => Some(format!("user/{uid}")),
                [top, _, ..] => Some((*top).to_string()),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The part of tree path `path` below unit `unit` (`None`: not inside it).
fn inside<'p>(unit: &str, path: &'p str) -> Option<&'p str> {
    path.strip_prefix(unit)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|r| !r.is_empty())
}

/// Build every restored directory under `staging` and publish them in place of the live ones.
fn publish_restored(
    storage: &dyn Storage,
    objects: &ObjectStore<'_>,
    root: &StorePath,
    scope: &str,
    to_write: &[(&String, &ObjectId)],
    to_delete: &[&String],
    staging: Staging<'_>,
) -> ServiceResult<()> {
    let Staging { dir, beat } = staging;
    let tree = dir.join("tree")?;
    let changed = to_write
        .iter()
        .map(|(p, _)| (*p).clone())
        .chain(to_delete.iter().map(|p| (*p).clone()));
    let mut pairs = Vec::new();
    for (i, unit) in units(scope, changed).iter().enumerate() {
        let live = root.join_path(unit)?;
        let staged = tree.join(&i.to_string())?;
        storage.mkdir(&staged)?;
        copy_raw(storage, &live, &staged, beat)?;
        for (path, id) in to_write {
            let Some(rel) = inside(unit, path) else {
                continue;
            };
            let data = objects
                .get(id, Kind::Blob, MAX_BLOB_BYTES)?
                .ok_or_else(|| {
                    ServiceError::internal(format!("snapshot object {id} is missing"))
                })?;
            storage.write_staged(&staged.join_path(rel)?, &data)?;
            beat();
        }
        let mut emptied = Vec::new();
        for path in to_delete {
            let Some(rel) = inside(unit, path) else {
                continue;
            };
            let at = staged.join_path(rel)?;
            match storage.remove(&at, false) {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            // A removed node's tags go with it, as with `fs rm` (tags are not versioned).
            forget_tags(storage, &at);
            if let Some((parent, _)) = rel.rsplit_once('/') {
                emptied.push(parent.to_string());
            }
        }
        prune_empty_dirs(storage, &staged, emptied);
        pairs.push((staged, live));
    }
    storage.sync_staged()?;
    crate::storage::replace::publish(storage, &dir, &pairs)?;
    Ok(())
}

/// Copy directory `from` (everything but storage-internal names other than the tag map:
/// locks and publishing flags belong to the live tree) into the existing `to`.
fn copy_raw(
    storage: &dyn Storage,
    from: &StorePath,
    to: &StorePath,
    beat: &mut dyn FnMut(),
) -> ServiceResult<()> {
    let entries = match storage.list(from) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let keep = !crate::storage::is_internal_name(&entry.name)
            || entry.name == crate::storage::tags::TAGS_FILE;
        if !keep {
            continue;
        }
        let (src, dst) = (from.join(&entry.name)?, to.join(&entry.name)?);
        if entry.meta.is_dir() {
            storage.mkdir(&dst)?;
            copy_raw(storage, &src, &dst, beat)?;
        } else {
            match storage.read(&src) {
                Ok(data) => storage.write_staged(&dst, &data)?,
                // Removed while we copied: the restored tree has no such file either.
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            beat();
        }
    }
    Ok(())
}

/// The ACL rows of what the restore removed go too, as with `fs rm` (ACLs are not
/// versioned: a restored node has the permissions its place has now): the deleted files and
/// the directories above them (below the scope) that no longer exist.
fn forget_acl_rows(
    storage: &dyn Storage,
    root: &StorePath,
    account: &str,
    scope: &str,
    deleted: &[&String],
) {
    let mut gone: Vec<String> = deleted.iter().map(|p| (*p).clone()).collect();
    let mut dirs = std::collections::BTreeSet::new();
    for path in deleted {
        let mut cur = path.as_str();
        while let Some((dir, _)) = cur.rsplit_once('/') {
            if !within(dir, scope) || dir == scope || !dirs.insert(dir.to_string()) {
                break;
            }
            cur = dir;
        }
    }
    for dir in dirs {
        let gone_now = root
            .join_path(&dir)
            .ok()
            .is_some_and(|at| matches!(storage.stat(&at), Ok(None)));
        if gone_now {
            gone.push(dir);
        }
    }
    if let Err(e) = crate::storage::acl::store::forget_account_paths(storage, account, &gone) {
        tracing::error!(account, error = %e.message, "snapshot restore: ACL rows of removed nodes not dropped");
    }
}

/// Directories (paths relative to `base`) left empty by deletions go too, walking up, as they
/// would in git; `base` itself (the restored directory) stays.
fn prune_empty_dirs(storage: &dyn Storage, base: &StorePath, mut dirs: Vec<String>) {
    dirs.sort();
    dirs.dedup();
    // Deepest last, so `pop` takes it first; walk up while directories empty out.
    dirs.sort_by_key(|d| d.matches('/').count());
    while let Some(mut cur) = dirs.pop() {
        while let Ok(at) = base.join_path(&cur) {
            match storage.list(&at) {
                Ok(entries)
                    if entries
                        .iter()
                        .all(|e| e.name == crate::storage::tags::TAGS_FILE) =>
                {
                    if storage.remove(&at, true).is_err() {
                        break;
                    }
                    forget_tags(storage, &at);
                }
                _ => break,
            }
            match cur.rsplit_once('/') {
                Some((parent, _)) => cur = parent.to_string(),
                None => break,
            }
        }
    }
}

fn forget_tags(storage: &dyn Storage, node: &StorePath) {
    if let Err(e) = crate::storage::tags::forget_node(storage, node) {
        tracing::warn!(error = %e, "snapshot restore: tags of a removed node not forgotten");
    }
}
