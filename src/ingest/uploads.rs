//! Temp uploads in the shared storage, so an upload through one instance can be added through
//! another: `<account>/_system/uploads/<id>/part-NNNNNN` (the body in pieces of at most
//! [`PART_BYTES`], never held whole in memory) and `meta.json`, written last — an upload
//! without it is incomplete and never consumable. Ids are 128-bit random, and only the user
//! who uploaded may consume one. The sweep removes uploads older than their TTL.

use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::QuotaSettings;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

/// The route uploads arrive on (the HTTP body budget charges them one piece, not their size).
pub const ROUTE: &str = "/api/v1/resources/temp_upload";

/// Size of one stored piece of an upload.
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// What `meta.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadMeta {
    pub user: String,
    pub original_filename: String,
    pub size: u64,
    pub parts: u32,
    pub created_at: f64,
}

/// A fresh id: `upload_<32 hex>[.<ext>]` (the extension is the original's, if short and
/// alphanumeric, as upstream's ids carry it).
pub fn new_id(original_filename: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let ext = super::names::extension(original_filename);
    if !ext.is_empty() && ext.len() <= 10 && ext.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("upload_{}.{ext}", hex::encode(bytes))
    } else {
        format!("upload_{}", hex::encode(bytes))
    }
}

/// True for ids [`new_id`] can produce; nothing else ever reaches storage.
pub fn is_valid_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("upload_") else {
        return false;
    };
    let (hexpart, ext) = rest.split_once('.').unwrap_or((rest, ""));
    hexpart.len() == 32
        && hexpart
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && ext.len() <= 10
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        && (ext.is_empty() != rest.contains('.'))
}

fn uploads_dir(account: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("uploads")
}

fn upload_dir(account: &str, id: &str) -> Result<StorePath, StorageError> {
    uploads_dir(account)?.join(id)
}

fn part_path(account: &str, id: &str, n: u32) -> Result<StorePath, StorageError> {
    upload_dir(account, id)?.join(&format!("part-{n:06}"))
}

fn meta_path(account: &str, id: &str) -> Result<StorePath, StorageError> {
    upload_dir(account, id)?.join("meta.json")
}

/// Store piece `n` of an upload in progress.
pub fn write_part(
    storage: &dyn Storage,
    account: &str,
    id: &str,
    n: u32,
    data: &[u8],
    quota: &QuotaSettings,
) -> ServiceResult<()> {
    // Uploads live outside the account's content, so they are not charged; an account already
    // at its quota cannot stage more through them.
    crate::storage::quota::admit(storage, account, data.len() as u64, 0, quota)?;
    storage.write(&part_path(account, id, n)?, data)?;
    Ok(())
}

/// Make a fully stored upload consumable.
pub fn commit(
    storage: &dyn Storage,
    account: &str,
    id: &str,
    meta: &UploadMeta,
) -> ServiceResult<()> {
    let data = serde_json::to_vec(meta).map_err(ServiceError::internal)?;
    storage.write_if(&meta_path(account, id)?, &data, None)?;
    Ok(())
}

/// Remove an upload (aborted, consumed or expired); missing is fine.
pub fn remove(storage: &dyn Storage, account: &str, id: &str) -> ServiceResult<()> {
    match storage.remove(&upload_dir(account, id)?, true) {
        Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(
        "temp_file",
        id,
        format!("Temporary upload not found or expired: {id}"),
    )
}

/// The upload `id` of `user`; another user's upload is reported exactly like a missing one.
pub fn open(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    id: &str,
) -> ServiceResult<UploadMeta> {
    if !is_valid_id(id) {
        return Err(ServiceError::invalid_argument(format!(
            "Invalid temp_file_id: {:.80}",
            id
        )));
    }
    let data = match storage.read(&meta_path(account, id)?) {
        Ok(d) => d,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            return Err(not_found(id))
        }
        Err(e) => return Err(e.into()),
    };
    let meta: UploadMeta = serde_json::from_slice(&data)
        .map_err(|e| ServiceError::internal(format!("corrupt upload record {id}: {e}")))?;
    if meta.user != user {
        return Err(not_found(id));
    }
    Ok(meta)
}

/// Piece `n` of a stored upload (complete or still arriving).
pub fn read_part(storage: &dyn Storage, account: &str, id: &str, n: u32) -> ServiceResult<Vec<u8>> {
    storage
        .read(&part_path(account, id, n)?)
        .map_err(|e| match e {
            StorageError::NotFound(_) => not_found(id),
            other => other.into(),
        })
}

/// Copy a stored upload into a local file, piece by piece.
pub fn copy_to_local(
    storage: &dyn Storage,
    account: &str,
    id: &str,
    meta: &UploadMeta,
    dest: &Path,
) -> ServiceResult<()> {
    let mut out = std::fs::File::create(dest).map_err(ServiceError::internal)?;
    let mut total = 0u64;
    for n in 0..meta.parts {
        let data = storage
            .read(&part_path(account, id, n)?)
            .map_err(|e| match e {
                StorageError::NotFound(_) => not_found(id),
                other => other.into(),
            })?;
        total += data.len() as u64;
        out.write_all(&data).map_err(ServiceError::internal)?;
    }
    if total != meta.size {
        return Err(ServiceError::internal(format!(
            "upload {id} is damaged: {total} of {} bytes",
            meta.size
        )));
    }
    Ok(())
}

/// Remove every upload older than `ttl_secs` (by `meta.json`, or by its first piece when the
/// upload never completed). Returns how many were removed.
pub fn sweep(storage: &dyn Storage, ttl_secs: u64) -> ServiceResult<usize> {
    let cutoff = crate::time::epoch_secs_now() - ttl_secs as f64;
    let mut removed = 0;
    for account in crate::storage::account_names(storage)? {
        let dir = uploads_dir(&account)?;
        let ids = match storage.list(&dir) {
            Ok(ids) => ids,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in ids {
            let id = entry.name;
            let created = match storage.read(&meta_path(&account, &id)?) {
                Ok(d) => serde_json::from_slice::<UploadMeta>(&d)
                    .map(|m| m.created_at)
                    .unwrap_or(0.0),
                Err(StorageError::NotFound(_)) => storage
                    .stat(&part_path(&account, &id, 0)?)?
                    .and_then(|m| m.modified.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64()),
                Err(e) => return Err(e.into()),
            };
            if created < cutoff {
                remove(storage, &account, &id)?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn ids_are_checked() {
        let id = new_id("notes.md");
        assert!(is_valid_id(&id), "{id}");
        assert!(id.ends_with(".md"));
        assert!(is_valid_id(&new_id("noext")));
        assert!(!is_valid_id("upload_../../x"));
        assert!(!is_valid_id("upload_abc.md"));
        assert!(!is_valid_id(&format!("{id}/x")));
    }

    #[test]
    fn upload_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let id = new_id("a.md");
        write_part(&s, "acme", &id, 0, b"hello ", &Default::default()).unwrap();
        // Not consumable before commit.
        assert!(open(&s, "acme", "bob", &id).is_err());
        write_part(&s, "acme", &id, 1, b"world", &Default::default()).unwrap();
        let meta = UploadMeta {
            user: "bob".into(),
            original_filename: "a.md".into(),
            size: 11,
            parts: 2,
            created_at: crate::time::epoch_secs_now(),
        };
        commit(&s, "acme", &id, &meta).unwrap();
        assert!(open(&s, "acme", "eve", &id).is_err());
        let m = open(&s, "acme", "bob", &id).unwrap();
        let local = dir.path().join("copy");
        copy_to_local(&s, "acme", &id, &m, &local).unwrap();
        assert_eq!(std::fs::read(&local).unwrap(), b"hello world");
        assert_eq!(sweep(&s, 3600).unwrap(), 0);
        assert_eq!(sweep(&s, 0).unwrap(), 1);
        assert!(open(&s, "acme", "bob", &id).is_err());
    }
}
