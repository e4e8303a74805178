//! The object store: git objects (`<kind> <size>\0<payload>`, uncompressed) at
//! `objects/<2 hex>/<38 hex>`, written create-only under their id. Encoding, decoding and
//! hashing are gix-object's; an object read back is re-hashed, so a damaged one is an error,
//! never wrong content.

use gix_hash::ObjectId;
use gix_object::{Kind, WriteTo};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

/// The hash every object id uses (0.5.2's ids are 40-hex SHA-1, as git's).
pub const HASH: gix_hash::Kind = gix_hash::Kind::Sha1;

/// Objects of one account's repository.
pub struct ObjectStore<'a> {
    pub storage: &'a dyn Storage,
    root: StorePath,
}

/// A 40-hex object id, or `None` for anything else.
pub fn parse_oid(text: &str) -> Option<ObjectId> {
    if text.len() != 40 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    ObjectId::from_hex(text.to_ascii_lowercase().as_bytes()).ok()
}

fn hash(kind: Kind, payload: &[u8]) -> ServiceResult<ObjectId> {
    gix_object::compute_hash(HASH, kind, payload)
        .map_err(|e| ServiceError::internal(format!("hashing a snapshot object: {e}")))
}

/// The id a blob of `data` has.
pub fn blob_id(data: &[u8]) -> ServiceResult<ObjectId> {
    hash(Kind::Blob, data)
}

/// The encoded payload of a tree or commit.
pub fn encode(object: &dyn WriteTo) -> ServiceResult<Vec<u8>> {
    let mut out = Vec::new();
    object
        .write_to(&mut out)
        .map_err(|e| ServiceError::internal(format!("encoding a snapshot object: {e}")))?;
    Ok(out)
}

impl<'a> ObjectStore<'a> {
    pub fn new(storage: &'a dyn Storage, repo: &StorePath) -> ServiceResult<Self> {
        let root = repo.join("objects").map_err(ServiceError::from)?;
        Ok(ObjectStore { storage, root })
    }

    fn path(&self, id: &ObjectId) -> ServiceResult<StorePath> {
        let hex = id.to_string();
        self.root
            .join(&hex[..2])
            .and_then(|p| p.join(&hex[2..]))
            .map_err(ServiceError::from)
    }

    /// Store `payload` as an object of `kind`; returns its id. Create-only: an object already
    /// there has this very content (same id), so losing the race is success.
    pub fn put(&self, kind: Kind, payload: &[u8]) -> ServiceResult<ObjectId> {
        let id = hash(kind, payload)?;
        let mut data = gix_object::encode::loose_header(kind, payload.len() as u64).to_vec();
        data.extend_from_slice(payload);
        match self.storage.write_if(&self.path(&id)?, &data, None) {
            Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    /// The payload of object `id`, which must be of `kind`; `Ok(None)` when it does not exist.
    /// Objects larger than `max_bytes` are refused before being read whole.
    pub fn get(&self, id: &ObjectId, kind: Kind, max_bytes: u64) -> ServiceResult<Option<Vec<u8>>> {
        let path = self.path(id)?;
        if let Some(meta) = self.storage.stat(&path)? {
            if meta.size > max_bytes.saturating_add(64) {
                return Err(too_large(max_bytes));
            }
        }
        let data = match self.storage.read(&path) {
            Ok(d) => d,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (found, size, header) = gix_object::decode::loose_header(&data)
            .map_err(|e| damaged(id, format!("header: {e}")))?;
        let payload = data.get(header..).unwrap_or_default();
        if found != kind {
            // A commit id given where a file was expected, or the other way round: not found
            // as what the caller asked for.
            return Ok(None);
        }
        if size != payload.len() as u64 || hash(kind, payload)? != *id {
            return Err(damaged(id, "content does not match its id".into()));
        }
        if payload.len() as u64 > max_bytes {
            return Err(too_large(max_bytes));
        }
        Ok(Some(payload.to_vec()))
    }

    /// Whether object `id` is stored (any kind).
    pub fn exists(&self, id: &ObjectId) -> ServiceResult<bool> {
        Ok(self.storage.stat(&self.path(id)?)?.is_some())
    }
}

fn damaged(id: &ObjectId, why: String) -> ServiceError {
    tracing::error!(object = %id, why, "damaged snapshot object");
    ServiceError::internal(format!("snapshot object {id} is damaged"))
}

pub fn too_large(limit: u64) -> ServiceError {
    ServiceError::new(
        crate::error::ErrorCode::PayloadTooLarge,
        format!("snapshot file size limit exceeded ({limit} bytes)"),
    )
    .with_details(serde_json::json!({ "limit_bytes": limit }))
}
