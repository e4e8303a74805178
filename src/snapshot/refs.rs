//! Refs: `refs/heads/<branch>` and `refs/tags/<tag>`, each a file holding one commit id (hex and
//! a newline, as git's loose refs). A branch moves only by compare-and-swap on the version it
//! was read at, so two writers (two instances) never lose each other's commit.

use gix_hash::ObjectId;
use serde_json::json;

use super::objects::{parse_oid, ObjectStore};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath, Version};

/// Longest ref name accepted, in bytes.
pub const MAX_REF_BYTES: usize = 200;

/// Git's rules for a ref name, the subset that matters here (0.5.2 refuses the same): not empty,
/// no `..`, no leading or trailing `/`, no empty component, only `[A-Za-z0-9._/-]`, no component
/// starting with `.` or ending in `.lock`.
pub fn validate_name(name: &str) -> ServiceResult<()> {
    let bad = |why: &str| {
        Err(
            ServiceError::invalid_argument(format!("invalid ref name: {why}"))
                .with_details(json!({ "field": "branch" })),
        )
    };
    if name.is_empty() {
        return bad("ref name cannot be empty");
    }
    if name.len() > MAX_REF_BYTES {
        return bad("ref name is too long");
    }
    if name.contains("..") {
        return bad("ref name cannot contain '..'");
    }
    if name.starts_with('/') || name.ends_with('/') {
        return bad("ref name cannot start or end with '/'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
    {
        return bad("ref name contains invalid characters");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("ref name has an empty or hidden component");
    }
    Ok(())
}

/// The refs of one repository.
pub struct Refs<'a> {
    storage: &'a dyn Storage,
    repo: &'a StorePath,
}

/// A branch as read: its commit (none before the first commit) and the version to swap on.
pub struct BranchHead {
    pub commit: Option<ObjectId>,
    pub version: Option<Version>,
}

impl<'a> Refs<'a> {
    pub fn new(storage: &'a dyn Storage, repo: &'a StorePath) -> Self {
        Refs { storage, repo }
    }

    fn path(&self, full: &str) -> ServiceResult<StorePath> {
        self.repo.join_path(full).map_err(ServiceError::from)
    }

    fn read_ref(&self, full: &str) -> ServiceResult<Option<(ObjectId, Version)>> {
        match self.storage.read_versioned(&self.path(full)?) {
            Ok((data, version)) => {
                let text = String::from_utf8_lossy(&data);
                let id = parse_oid(text.trim()).ok_or_else(|| {
                    ServiceError::internal(format!("snapshot ref {full} is damaged"))
                })?;
                Ok(Some((id, version)))
            }
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The head of `branch` (already validated).
    pub fn branch(&self, branch: &str) -> ServiceResult<BranchHead> {
        Ok(match self.read_ref(&format!("refs/heads/{branch}"))? {
            Some((id, v)) => BranchHead {
                commit: Some(id),
                version: Some(v),
            },
            None => BranchHead {
                commit: None,
                version: None,
            },
        })
    }

    /// Move `branch` from `head` to `to`; `Ok(false)` when another writer moved it first.
    pub fn swap(&self, branch: &str, head: &BranchHead, to: &ObjectId) -> ServiceResult<bool> {
        let path = self.path(&format!("refs/heads/{branch}"))?;
        match self
            .storage
            .write_if(&path, format!("{to}\n").as_bytes(), head.version.as_ref())
        {
            Ok(_) => Ok(true),
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The commit `target` names: a 40-hex commit id, `refs/heads/…`, `refs/tags/…`, a branch
    /// or a tag. Unknown → 404 (`git_ref`), malformed → 400.
    pub fn resolve(&self, objects: &ObjectStore<'_>, target: &str) -> ServiceResult<ObjectId> {
        let target = target.trim();
        if let Some(id) = parse_oid(target) {
            // A commit id only if it is stored as a commit (checked by the reader).
            if objects.exists(&id)? {
                return Ok(id);
            }
            return Err(unknown_ref(target));
        }
        let candidates: Vec<String> = if target.starts_with("refs/") {
            vec![target.to_string()]
        } else {
            vec![
                format!("refs/heads/{target}"),
                format!("refs/tags/{target}"),
            ]
        };
        let name = target.strip_prefix("refs/").unwrap_or(target);
        validate_name(name).map_err(|_| {
            ServiceError::invalid_argument(format!(
                "invalid snapshot ref {:?}: not a commit id, branch or tag",
                short(target)
            ))
        })?;
        for full in candidates {
            if let Some((id, _)) = self.read_ref(&full)? {
                return Ok(id);
            }
        }
        Err(unknown_ref(target))
    }
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

pub fn unknown_ref(target: &str) -> ServiceError {
    ServiceError::not_found(
        "git_ref",
        &short(target),
        format!("snapshot ref not found: {}", short(target)),
    )
}
