//! `show` (a commit's metadata, or one file at a version) and `log` (history along first
//! parents, optionally only commits that changed some paths).

use gix_hash::ObjectId;
use gix_object::Kind;
use serde_json::Value;

use super::objects::ObjectStore;
use super::refs::{unknown_ref, Refs};
use super::scope::within;
use super::tree::{self, Flat};
use super::{repo_root, tree_path_uri};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::Storage;

/// 0.5.2's limits on `log`.
pub const MAX_LOG_LIMIT: usize = 500;
pub const MAX_LOG_PATHS: usize = 32;
/// Commits a filtered `log` examines at most (a path changed long ago must not walk forever).
const MAX_LOG_WALK: usize = 10_000;
/// Largest file `show` returns.
pub const MAX_SHOW_BYTES: u64 = 64 * 1024 * 1024;

/// Commit metadata of `target`.
pub fn show(storage: &dyn Storage, account: &str, target: &str) -> ServiceResult<Value> {
    let repo = repo_root(account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let id = Refs::new(storage, &repo).resolve(&objects, target)?;
    Ok(tree::read_commit(&objects, &id)?
        .ok_or_else(|| unknown_ref(target))?
        .json)
}

/// One file at `target`: its blob id and bytes. A directory or a missing path → 404 `git_blob`.
pub fn show_file(
    storage: &dyn Storage,
    account: &str,
    target: &str,
    path: &str,
) -> ServiceResult<(ObjectId, Vec<u8>)> {
    let repo = repo_root(account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let id = Refs::new(storage, &repo).resolve(&objects, target)?;
    let commit = tree::read_commit(&objects, &id)?.ok_or_else(|| unknown_ref(target))?;
    let found = tree::read(&objects, &commit.tree, path)?;
    let uri = tree_path_uri(path);
    let missing = || {
        ServiceError::not_found(
            "git_blob",
            &uri,
            format!("{uri} is not a file in snapshot {id}"),
        )
    };
    let blob = found.files.get(path).ok_or_else(missing)?;
    let data = objects
        .get(blob, Kind::Blob, MAX_SHOW_BYTES)?
        .ok_or_else(missing)?;
    Ok((*blob, data))
}

fn files_under(
    objects: &ObjectStore<'_>,
    tree_id: &ObjectId,
    paths: &[String],
) -> ServiceResult<Flat> {
    let mut out = Flat::new();
    for p in paths {
        out.extend(
            tree::read(objects, tree_id, p)?
                .files
                .into_iter()
                .filter(|(f, _)| within(f, p)),
        );
    }
    Ok(out)
}

/// Up to `limit` commits of `branch`, newest first along first parents; with `paths`, only
/// commits whose files under them differ from their parent's.
pub fn log(
    storage: &dyn Storage,
    account: &str,
    branch: &str,
    limit: usize,
    paths: &[String],
    abandoned: &dyn Fn() -> bool,
) -> ServiceResult<Vec<Value>> {
    let repo = repo_root(account)?;
    let objects = ObjectStore::new(storage, &repo)?;
    let head = Refs::new(storage, &repo).branch(branch)?;
    let Some(mut next) = head.commit else {
        return Err(unknown_ref(branch));
    };
    let mut out = Vec::new();
    for _ in 0..MAX_LOG_WALK {
        if out.len() >= limit {
            break;
        }
        if abandoned() {
            return Err(ServiceError::unavailable(
                "snapshot",
                "the request was abandoned",
            ));
        }
        let commit = tree::read_commit(&objects, &next)?
            .ok_or_else(|| ServiceError::internal("a snapshot history commit is missing"))?;
        let parent = commit.parents.first().copied();
        let keep = if paths.is_empty() {
            true
        } else {
            let mine = files_under(&objects, &commit.tree, paths)?;
            let theirs = match parent {
                Some(p) => {
                    let pc = tree::read_commit(&objects, &p)?.ok_or_else(|| {
                        ServiceError::internal("a snapshot history commit is missing")
                    })?;
                    files_under(&objects, &pc.tree, paths)?
                }
                None => Flat::new(),
            };
            mine != theirs
        };
        if keep {
            out.push(commit.json);
        }
        match parent {
            Some(p) => next = p,
            None => break,
        }
    }
    Ok(out)
}
