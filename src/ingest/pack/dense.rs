//! Dense vector snapshots in a pack (0.5.2's `_ovpack/dense.f32`): every vector is a run of
//! little-endian `f32`s in one file; an index record points at its run
//! (`"vector": {"dense": {"offset": <floats>, "dimensions": n}}`), and the manifest's
//! `index.dense` names the file, its count, dimension, digest and the model that made them
//! (`embedding`: provider, model, dimensions).
//!
//! Longship keys a stored vector by the sha256 of the document's bytes (the first
//! `max_doc_bytes`) and the model. Export reads the vectors of the exported files; import
//! stores them under the imported files' hashes before the tree is published — only when
//! the pack's model (name and dimension) is the configured one — so the indexer loads them
//! instead of asking the provider. Otherwise the indexer recomputes them in the background
//! like any write.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::format::DENSE_PATH;
use crate::error::{ServiceError, ServiceResult};
use crate::search::embed::Embedder;
use crate::storage::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::Storage;

/// The largest dense file an import reads (it is read whole, like the index records).
pub const MAX_DENSE_BYTES: u64 = 256 * 1024 * 1024;

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

/// Hashes a document's bytes as the embedder keys them: the first `limit` bytes.
pub struct DocHasher {
    hasher: Sha256,
    left: usize,
}

impl DocHasher {
    pub fn new(limit: usize) -> Self {
        DocHasher {
            hasher: Sha256::new(),
            left: limit,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let n = data.len().min(self.left);
        self.hasher.update(&data[..n]);
        self.left -= n;
    }

    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// Export side: the vectors found so far, spooled to an anonymous local file.
pub struct DenseSpool<'a> {
    pub embedder: &'a Embedder,
    account: String,
    file: std::fs::File,
    hasher: Sha256,
    /// Floats written (the next record's offset).
    floats: u64,
    count: u64,
    dimensions: Option<usize>,
}

impl<'a> DenseSpool<'a> {
    pub fn new(embedder: &'a Embedder, account: &str, file: std::fs::File) -> Self {
        DenseSpool {
            embedder,
            account: account.to_string(),
            file,
            hasher: Sha256::new(),
            floats: 0,
            count: 0,
            dimensions: None,
        }
    }

    pub fn doc_hasher(&self) -> DocHasher {
        DocHasher::new(self.embedder.max_doc_bytes())
    }

    /// The stored vector of a document with content hash `hash`, if this account has one.
    pub fn lookup(&self, storage: &dyn Storage, hash: &str) -> Option<Vec<f32>> {
        let v = self.embedder.stored_vector(storage, &self.account, hash)?;
        // One dimension per pack (0.5.2 refuses mixed ones).
        (self.dimensions.is_none() || self.dimensions == Some(v.len())).then_some(v)
    }

    /// Append `v`; returns the record's `vector` reference.
    pub fn push(&mut self, v: &[f32]) -> ServiceResult<Value> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.file
            .write_all(&bytes)
            .map_err(ServiceError::internal)?;
        self.hasher.update(&bytes);
        let reference = json!({"dense": {"offset": self.floats, "dimensions": v.len()}});
        self.floats += v.len() as u64;
        self.count += 1;
        self.dimensions = Some(v.len());
        Ok(reference)
    }

    /// The manifest's `index.dense` and the file to copy into the pack; `None` when no
    /// vector was found.
    pub fn finish(mut self) -> ServiceResult<Option<(Value, std::fs::File)>> {
        let Some(dimensions) = self.dimensions.filter(|_| self.count > 0) else {
            return Ok(None);
        };
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ServiceError::internal)?;
        let mut embedding = Map::new();
        if let Some(p) = self.embedder.provider_name() {
            embedding.insert("provider".into(), json!(p));
        }
        embedding.insert("model".into(), json!(self.embedder.model()));
        embedding.insert("dimensions".into(), json!(dimensions));
        let info = json!({
            "path": DENSE_PATH,
            "count": self.count,
            "dtype": "float32",
            "byte_order": "little",
            "dimensions": dimensions,
            "sha256": hex::encode(self.hasher.finalize()),
            "embedding": Value::Object(embedding),
        });
        Ok(Some((info, self.file)))
    }
}

/// One record's reference into the dense file.
#[derive(Debug, Clone)]
pub struct DenseRef {
    /// The manifest path of the file whose content the vector is of (a directory record's
    /// level 0/1 point at its `.abstract.md` / `.overview.md`).
    pub file: String,
    pub offset: u64,
    pub dimensions: u64,
}

/// The file a record of `path` at `level` describes (`None`: no file of its own).
pub fn record_file(path: &str, dir: bool, level: i64) -> Option<String> {
    let join = |leaf: &str| {
        if path.is_empty() {
            leaf.to_string()
        } else {
            format!("{path}/{leaf}")
        }
    };
    match (dir, level) {
        (false, _) => Some(path.to_string()),
        (true, 0) => Some(join(ABSTRACT_FILE)),
        (true, 1) => Some(join(OVERVIEW_FILE)),
        _ => None,
    }
}

/// A record's `vector` field checked as 0.5.2 checks it; `None` when the record has none.
pub fn parse_record_ref(
    record: &Map<String, Value>,
    line: usize,
) -> ServiceResult<Option<(u64, u64)>> {
    let Some(vector) = record.get("vector").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let dense = vector
        .as_object()
        .ok_or_else(|| invalid("Invalid ovpack index record vector").detail("line", line))?
        .get("dense")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            invalid("Invalid ovpack index record dense vector reference").detail("line", line)
        })?;
    let offset = dense
        .get("offset")
        .filter(|v| !v.is_boolean())
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("Invalid ovpack dense vector offset").detail("line", line))?;
    let dimensions = dense
        .get("dimensions")
        .filter(|v| !v.is_boolean())
        .and_then(Value::as_u64)
        .filter(|d| *d > 0)
        .ok_or_else(|| invalid("Invalid ovpack dense vector dimensions").detail("line", line))?;
    Ok(Some((offset, dimensions)))
}

/// The manifest's `index.dense`, checked.
#[derive(Debug, Clone)]
pub struct DenseInfo {
    pub count: u64,
    pub dimensions: u64,
    pub sha256: String,
    pub model: Option<String>,
    pub model_dimensions: Option<u64>,
}

pub fn parse_info(index: &Value) -> ServiceResult<Option<DenseInfo>> {
    let Some(dense) = index.get("dense").filter(|d| !d.is_null()) else {
        return Ok(None);
    };
    let dense = dense
        .as_object()
        .ok_or_else(|| invalid("Invalid ovpack dense vector index"))?;
    if dense.get("path").and_then(Value::as_str) != Some(DENSE_PATH) {
        return Err(invalid("Invalid ovpack dense vector path"));
    }
    let uint = |k: &str| {
        dense
            .get(k)
            .filter(|v| !v.is_boolean())
            .and_then(Value::as_u64)
    };
    let count = uint("count").ok_or_else(|| invalid("Invalid ovpack dense vector count"))?;
    let dimensions = uint("dimensions")
        .filter(|d| *d > 0)
        .ok_or_else(|| invalid("Invalid ovpack dense vector dimensions"))?;
    if dense.get("dtype").and_then(Value::as_str) != Some("float32")
        || dense.get("byte_order").and_then(Value::as_str) != Some("little")
    {
        return Err(invalid("Unsupported ovpack dense vector encoding"));
    }
    let sha256 = dense
        .get("sha256")
        .and_then(Value::as_str)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid("Invalid ovpack index.dense.sha256"))?
        .to_ascii_lowercase();
    let embedding = dense.get("embedding").and_then(Value::as_object);
    Ok(Some(DenseInfo {
        count,
        dimensions,
        sha256,
        model: embedding
            .and_then(|e| e.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string),
        model_dimensions: embedding
            .and_then(|e| e.get("dimensions"))
            .and_then(Value::as_u64),
    }))
}

/// 0.5.2's consistency rules between the records' references, `index.dense` and the data:
/// contiguous runs from 0, one dimension, the count, the byte size.
pub fn check_refs(
    info: Option<&DenseInfo>,
    refs: &[DenseRef],
    data_len: Option<u64>,
) -> ServiceResult<()> {
    if refs.is_empty() {
        if info.is_some() {
            return Err(invalid("ovpack dense vector file has no record references"));
        }
        return Ok(());
    }
    let (Some(info), Some(data_len)) = (info, data_len) else {
        return Err(invalid(
            "ovpack index references dense vectors but dense data is missing",
        ));
    };
    let mut runs: Vec<(u64, u64)> = refs.iter().map(|r| (r.offset, r.dimensions)).collect();
    runs.sort_unstable();
    let mut expected = 0u64;
    for (offset, dimensions) in runs {
        if offset != expected {
            return Err(invalid("ovpack dense vector offsets are not contiguous")
                .detail("expected", expected)
                .detail("actual", offset));
        }
        if dimensions != info.dimensions {
            return Err(invalid(
                "ovpack dense vector dimensions do not match manifest",
            ));
        }
        expected = expected.saturating_add(dimensions);
    }
    if info.count != refs.len() as u64 {
        return Err(invalid(
            "ovpack dense vector count does not match index records",
        ));
    }
    if expected.saturating_mul(4) != data_len {
        return Err(invalid(
            "ovpack dense vector byte size does not match manifest",
        ));
    }
    Ok(())
}

/// Why the pack's vectors cannot be reused by `embedder` (`None`: they can).
pub fn incompatibility(info: &DenseInfo, embedder: &Embedder) -> Option<&'static str> {
    if info.model.as_deref() != Some(embedder.model()) {
        return Some("embedding model mismatch");
    }
    let configured = embedder.dimension() as u64;
    let packed = info.model_dimensions.unwrap_or(info.dimensions);
    if packed != info.dimensions || (configured != 0 && configured != info.dimensions) {
        return Some("embedding dimensions mismatch");
    }
    None
}

/// The vectors to store, by manifest file path.
pub fn vectors_by_file(refs: &[DenseRef], data: &[u8]) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    for r in refs {
        let start = (r.offset * 4) as usize;
        let end = start + (r.dimensions * 4) as usize;
        if let Some(bytes) = data.get(start..end) {
            let v = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(r.file.clone(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, dimensions: u64) -> DenseRef {
        DenseRef {
            file: format!("f{offset}"),
            offset,
            dimensions,
        }
    }

    #[test]
    fn references_must_tile_the_data() {
        let info = DenseInfo {
            count: 2,
            dimensions: 2,
            sha256: String::new(),
            model: None,
            model_dimensions: None,
        };
        assert!(check_refs(Some(&info), &[r(2, 2), r(0, 2)], Some(16)).is_ok());
        assert!(check_refs(Some(&info), &[r(0, 2), r(3, 2)], Some(16)).is_err());
        assert!(check_refs(Some(&info), &[r(0, 2), r(2, 2)], Some(20)).is_err());
        assert!(check_refs(Some(&info), &[r(0, 2)], Some(8)).is_err());
        assert!(check_refs(None, &[r(0, 2)], None).is_err());
        assert!(check_refs(Some(&info), &[], Some(0)).is_err());
        assert!(check_refs(None, &[], None).is_ok());
    }

    #[test]
    fn doc_hash_covers_the_prefix_only() {
        let mut h = DocHasher::new(3);
        h.update(b"ab");
        h.update(b"cdef");
        assert_eq!(h.finish(), hex::encode(Sha256::digest(b"abc")));
        assert_eq!(record_file("d", true, 0).as_deref(), Some("d/.abstract.md"));
        assert_eq!(record_file("", true, 1).as_deref(), Some(".overview.md"));
        assert_eq!(record_file("d/x.md", false, 2).as_deref(), Some("d/x.md"));
        assert_eq!(record_file("d", true, 2), None);
    }
}
