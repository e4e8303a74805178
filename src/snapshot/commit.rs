//! `commit`: record the live state of some scopes (or the whole account) as a new version.
//!
//! Files are read and hashed once; a blob not already in the branch head is stored (create-only
//! under its id, so a blob another version has is never written twice). The branch then moves
//! by compare-and-swap; a writer that loses (another instance committed meanwhile) rebuilds its
//! tree on the new head — replacing only its own scopes — and tries again, so both commits
//! land, one after the other.

use std::collections::{BTreeMap, HashSet};

use gix_hash::ObjectId;
use gix_object::Kind;
use serde_json::{json, Value};

use super::ignore_rules::{self, Rules};
use super::objects::{blob_id, ObjectStore};
use super::refs::{BranchHead, Refs};
use super::scope::{live_files, within};
use super::statcache::StatCache;
use super::tree::{self, Flat};
use super::{repo_root, tree_path_uri, Author};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

/// How many times a commit rebuilds on a branch that moved under it before giving up (409).
const MAX_ATTEMPTS: usize = 32;

pub struct CommitRequest {
    pub account: String,
    /// Tree paths to record (`None`: the whole account; empty: nothing, a no-op commit).
    pub scopes: Option<Vec<String>>,
    pub branch: String,
    pub author: Author,
    pub message: String,
}

/// The live files of some scopes: tree path → blob id (blobs already stored).
pub struct LiveState {
    pub files: Flat,
    pub ignored: usize,
}

/// Read, hash and store (when new) the covered, not ignored files under `scopes`.
pub fn capture(
    storage: &dyn Storage,
    objects: &ObjectStore<'_>,
    account: &str,
    scopes: &[String],
    rules: &Rules,
    known_blobs: &HashSet<ObjectId>,
    abandoned: &dyn Fn() -> bool,
) -> ServiceResult<LiveState> {
    let root = StorePath::root()
        .join(account)
        .map_err(ServiceError::from)?;
    let mut files = Flat::new();
    let mut ignored = 0;
    let mut cache = StatCache::new(storage, &super::repo_root(account)?);
    for scope in scopes {
        for (path, listed) in live_files(storage, account, scope, abandoned)? {
            if rules.ignores(&path) {
                ignored += 1;
                continue;
            }
            if files.contains_key(&path) {
                continue;
            }
            if let Some(id) = listed.as_ref().and_then(|v| cache.get(&path, v)) {
                files.insert(path, id);
                continue;
            }
            let at = root.join_path(&path).map_err(ServiceError::from)?;
            let (data, version) = match storage.read_versioned(&at) {
                Ok(d) => d,
                // Removed since it was listed: not part of this version.
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let id = blob_id(&data)?;
            if !known_blobs.contains(&id) {
                objects.put(Kind::Blob, &data)?;
            }
            cache.put(&path, &version, &id);
            files.insert(path, id);
        }
    }
    cache.save();
    Ok(LiveState { files, ignored })
}

/// `base` with everything under `scopes` replaced by `live`.
pub fn merge(base: &Flat, scopes: &[String], live: &Flat) -> Flat {
    let mut out: Flat = base
        .iter()
        .filter(|(p, _)| !scopes.iter().any(|s| within(p, s)))
        .map(|(p, id)| (p.clone(), *id))
        .collect();
    out.extend(live.iter().map(|(p, id)| (p.clone(), *id)));
    out
}

/// `{uri, change_type}` for each path that differs between `before` and `after`.
pub fn changes(before: &Flat, after: &Flat) -> Vec<Value> {
    let mut out = BTreeMap::new();
    for (p, id) in after {
        match before.get(p) {
            None => {
                out.insert(p.clone(), "added");
            }
            Some(old) if old != id => {
                out.insert(p.clone(), "modified");
            }
            _ => {}
        }
    }
    for p in before.keys() {
        if !after.contains_key(p) {
            out.insert(p.clone(), "deleted");
        }
    }
    out.into_iter()
        .map(|(p, c)| json!({ "uri": tree_path_uri(&p), "change_type": c }))
        .collect()
}

/// The branch head's files (empty before the first commit).
pub fn head_tree(objects: &ObjectStore<'_>, head: &BranchHead) -> ServiceResult<tree::ReadTree> {
    let Some(id) = head.commit else {
        return Ok(tree::empty());
    };
    let commit = tree::read_commit(objects, &id)?
        .ok_or_else(|| ServiceError::internal("the branch head commit is missing"))?;
    tree::read(objects, &commit.tree, "")
}

/// Result of moving a branch to a tree built from `scopes` ← `files`.
pub struct Advanced {
    pub before: Flat,
    pub after: Flat,
    pub parent: Option<ObjectId>,
    /// `None`: the tree equals the head's (nothing to record).
    pub commit: Option<ObjectId>,
}

/// Replace `scopes` in the head of `branch` by `files` and commit it there, rebuilding on a
/// head that moved meanwhile.
pub fn advance(
    objects: &ObjectStore<'_>,
    refs: &Refs<'_>,
    branch: &str,
    scopes: Option<&[String]>,
    files: &Flat,
    author: &Author,
    message: &str,
) -> ServiceResult<Advanced> {
    for _ in 0..MAX_ATTEMPTS {
        let head = refs.branch(branch)?;
        let base = head_tree(objects, &head)?;
        let after = match scopes {
            Some(scopes) => merge(&base.files, scopes, files),
            None => files.clone(),
        };
        if head.commit.is_some() && after == base.files {
            return Ok(Advanced {
                before: base.files,
                after,
                parent: head.commit,
                commit: None,
            });
        }
        if head.commit.is_none() && after.is_empty() {
            return Ok(Advanced {
                before: base.files,
                after,
                parent: None,
                commit: None,
            });
        }
        let root = tree::write(objects, &after, &base.trees)?;
        let parents: Vec<ObjectId> = head.commit.into_iter().collect();
        let id = tree::write_commit(objects, root, &parents, author, message)?;
        if refs.swap(branch, &head, &id)? {
            return Ok(Advanced {
                before: base.files,
                after,
                parent: head.commit,
                commit: Some(id),
            });
        }
        tracing::debug!(
            branch,
            "snapshot branch moved meanwhile; rebuilding on the new head"
        );
    }
    Err(ServiceError::conflict(
        "the snapshot branch kept moving under this commit; retry",
    ))
}

/// `POST /snapshot/commit`.
pub fn commit(
    storage: &dyn Storage,
    req: &CommitRequest,
    abandoned: &dyn Fn() -> bool,
) -> ServiceResult<Value> {
    let repo = repo_root(&req.account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let refs = Refs::new(storage, &repo);
    let rules = ignore_rules::load(storage, &repo)?;
    let head = refs.branch(&req.branch)?;
    let known: HashSet<ObjectId> = head_tree(&objects, &head)?.files.into_values().collect();
    let all = vec![String::new()];
    let scopes: &[String] = req.scopes.as_deref().unwrap_or(&all);
    let live = capture(
        storage,
        &objects,
        &req.account,
        scopes,
        &rules,
        &known,
        abandoned,
    )?;
    let scoped = req.scopes.as_deref();
    let done = advance(
        &objects,
        &refs,
        &req.branch,
        scoped,
        &live.files,
        &req.author,
        &req.message,
    )?;
    Ok(match done.commit {
        Some(id) => json!({
            "result": "created",
            "commit_oid": id.to_string(),
            "changed": changes(&done.before, &done.after),
            "ignored": live.ignored,
        }),
        None => json!({
            "result": "noop",
            "commit_oid": done.parent.map(|p| p.to_string()),
            "ignored": live.ignored,
        }),
    })
}
