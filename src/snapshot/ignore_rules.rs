//! The account's `.ovgitignore`: gitignore rules (the `ignore` crate's matcher) over tree paths;
//! matching files are left out of commits (counted as `ignored`) and left alone by restores.
//! Stored at `<account>/_system/snapshots/ovgitignore` (0.5.2 keeps it at the account root,
//! which Longship does not expose); 64 KiB at most, UTF-8, checked when set.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

/// 0.5.2's limit on the file.
pub const MAX_BYTES: usize = 64 * 1024;

pub fn path(repo: &StorePath) -> ServiceResult<StorePath> {
    repo.join("ovgitignore").map_err(ServiceError::from)
}

/// Compiled rules (none: nothing ignored).
pub struct Rules(Option<Gitignore>);

impl Rules {
    pub fn ignores(&self, tree_path: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|g| g.matched_path_or_any_parents(tree_path, false).is_ignore())
    }
}

/// Compile `content`; a rule the matcher cannot read → 400 naming its line.
pub fn compile(content: &str) -> ServiceResult<Rules> {
    if content.len() > MAX_BYTES {
        return Err(ServiceError::invalid_argument(format!(
            "ignore file too large: {} bytes, limit {MAX_BYTES} bytes",
            content.len()
        )));
    }
    if content.trim().is_empty() {
        return Ok(Rules(None));
    }
    let mut builder = GitignoreBuilder::new("/");
    for (n, line) in content.lines().enumerate() {
        builder.add_line(None, line).map_err(|e| {
            ServiceError::invalid_argument(format!("invalid ignore rule on line {}: {e}", n + 1))
        })?;
    }
    let built = builder
        .build()
        .map_err(|e| ServiceError::invalid_argument(format!("invalid ignore rules: {e}")))?;
    Ok(Rules(Some(built)))
}

/// The stored content (`""` when absent).
pub fn read(storage: &dyn Storage, repo: &StorePath) -> ServiceResult<String> {
    match storage.read(&path(repo)?) {
        Ok(data) => String::from_utf8(data)
            .map_err(|_| ServiceError::internal("the stored ignore file is not UTF-8")),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(String::new()),
        Err(e) => Err(e.into()),
    }
}

/// The rules in force for a commit or restore.
pub fn load(storage: &dyn Storage, repo: &StorePath) -> ServiceResult<Rules> {
    // Rules that no longer compile (stored before a stricter check) ignore nothing rather than
    // failing every commit; setting them again reports the error.
    Ok(compile(&read(storage, repo)?).unwrap_or(Rules(None)))
}

pub fn write(storage: &dyn Storage, repo: &StorePath, content: &str) -> ServiceResult<()> {
    compile(content)?;
    storage.write(&path(repo)?, content.as_bytes())?;
    Ok(())
}

pub fn delete(storage: &dyn Storage, repo: &StorePath) -> ServiceResult<()> {
    match storage.remove(&path(repo)?, false) {
        Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
