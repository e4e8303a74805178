//! Shared "this directory needs a refresh" marks, so a refresh requested on one instance is
//! done even if that instance dies, and instances never lose each other's requests.
//!
//! Layout: `<account>/_system/overviews/<dir key>/<mark>.json` (never listed to clients, never
//! indexed). `<dir key>` is a hash of the directory's path inside the account; each mark is a
//! create-only object with a unique name holding that path. Marking never contends with
//! anything. A refresh lists the marks first, then reads the directory, writes its sidecars,
//! and deletes exactly the marks it listed: a mark made after that listing (a child changed
//! meanwhile) survives and causes another refresh, so no change is ever lost to a refresh that
//! started before it, and no deletion needs to be conditional.

use sha2::{Digest, Sha256};

use crate::storage::{Storage, StorageError, StorageResult, StorePath};

/// The folder of every mark of `account`.
fn marks_root(account: &str) -> StorageResult<StorePath> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("overviews")
}

/// The folder of the marks of one directory (`rel` = its path inside the account).
fn marks_dir(account: &str, rel: &str) -> StorageResult<StorePath> {
    let key = hex::encode(&Sha256::digest(rel.as_bytes())[..16]);
    marks_root(account)?.join(&key)
}

/// Split a full directory path into (account, path inside the account).
pub fn split_account(dir: &StorePath) -> Option<(&str, &str)> {
    let s = dir.as_str();
    let (account, rel) = s.split_once('/')?;
    (!account.is_empty() && !rel.is_empty()).then_some((account, rel))
}

/// Leave a mark for `dir` (create-only, uniquely named).
pub fn put(storage: &dyn Storage, dir: &StorePath) -> StorageResult<()> {
    let Some((account, rel)) = split_account(dir) else {
        return Err(StorageError::InvalidPath(dir.as_str().to_string()));
    };
    let name = format!(
        "{:013}-{:016x}.json",
        crate::time::epoch_millis_now(),
        rand::random::<u64>()
    );
    let path = marks_dir(account, rel)?.join(&name)?;
    let body = serde_json::json!({ "dir": rel }).to_string();
    storage.write_if(&path, body.as_bytes(), None).map(|_| ())
}

/// The marks of `dir` as they are now.
pub fn list(storage: &dyn Storage, dir: &StorePath) -> StorageResult<Vec<StorePath>> {
    let Some((account, rel)) = split_account(dir) else {
        return Ok(Vec::new());
    };
    let folder = marks_dir(account, rel)?;
    match storage.list(&folder) {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| !e.meta.is_dir() && e.name.ends_with(".json"))
            .map(|e| folder.join(&e.name))
            .collect(),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Delete marks a refresh listed (and the folder, when that left it empty).
pub fn clear(storage: &dyn Storage, dir: &StorePath, listed: &[StorePath]) -> StorageResult<()> {
    if listed.is_empty() {
        return Ok(());
    }
    storage.remove_files(listed)?;
    if let Some((account, rel)) = split_account(dir) {
        // Only if empty: a mark made meanwhile keeps its folder.
        match storage.remove(&marks_dir(account, rel)?, false) {
            Ok(())
            | Err(StorageError::NotFound(_))
            | Err(StorageError::NotEmpty(_))
            | Err(StorageError::NotADirectory(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every marked directory of every account: (folder key, the directory's full path). Marks
/// that cannot be read are skipped (a mark being written, or garbage).
pub fn all_marked(storage: &dyn Storage) -> StorageResult<Vec<(String, StorePath)>> {
    let mut out = Vec::new();
    for account in crate::storage::account_names(storage)? {
        let root = marks_root(&account)?;
        for key in crate::storage::subdir_names(storage, &root)? {
            let folder = root.join(&key)?;
            let first = match storage.list(&folder) {
                Ok(entries) => entries.into_iter().find(|e| e.name.ends_with(".json")),
                Err(StorageError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let Some(first) = first else {
                // An empty folder a refresh could not remove (a mark arrived, then went).
                let _ = storage.remove(&folder, false);
                continue;
            };
            let dir = storage
                .read(&folder.join(&first.name)?)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["dir"].as_str().map(str::to_string))
                .and_then(|rel| StorePath::root().join(&account).ok()?.join_path(&rel).ok());
            if let Some(dir) = dir {
                out.push((format!("{account}/{key}"), dir));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn marks_made_after_a_listing_survive_its_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(tmp.path()).unwrap();
        let dir = StorePath::parse("acme/resources/docs").unwrap();
        put(&storage, &dir).unwrap();
        put(&storage, &dir).unwrap();
        let listed = list(&storage, &dir).unwrap();
        assert_eq!(listed.len(), 2);
        put(&storage, &dir).unwrap();
        clear(&storage, &dir, &listed).unwrap();
        assert_eq!(list(&storage, &dir).unwrap().len(), 1);
        let marked = all_marked(&storage).unwrap();
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0].1, dir);
        let rest = list(&storage, &dir).unwrap();
        clear(&storage, &dir, &rest).unwrap();
        assert!(all_marked(&storage).unwrap().is_empty());
    }
}
