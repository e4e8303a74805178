//! Dense vector snapshots in a pack (0.5.2's `_ovpack/dense.f32`): every vector is a run of
//! little-endian `f32`s in one file; an index record points at its run
//! (`"vector": {"dense": {"offset": <floats>, "dimensions": n}}`), and the manifest's
//! `index.dense` names the file, its count, dimension, digest and the model that made them
//! (`embedding`: provider, model, input, dimensions — 0.5.2's fields).
//!
//! Longship keys a stored vector by the sha256 of the document's bytes (the first
//! `max_doc_bytes`) and the model. Export reads the vectors of the exported files; import
//! stores them under the imported files' hashes before the tree is published — only when
//! the pack's embedding metadata matches the configured model field by field, as 0.5.2
//! compares it (provider, model, input, query/document params, dimensions) — so the indexer
//! loads them
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
        let embedding = embedding_metadata(self.embedder, dimensions);
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

/// The `embedding` object of a dense snapshot made by `embedder` with vectors of
/// `dimensions`, as 0.5.2 writes it: `provider`, `model`, `input`, `dimensions` (0.5.2's
/// `query_param` / `document_param` are absent: Longship sends neither).
pub fn embedding_metadata(embedder: &Embedder, dimensions: usize) -> Map<String, Value> {
    let mut embedding = Map::new();
    if let Some(p) = embedder.provider_name() {
        embedding.insert("provider".into(), json!(p));
    }
    embedding.insert("model".into(), json!(embedder.model()));
    embedding.insert("input".into(), json!(embedder.input_mode()));
    embedding.insert("dimensions".into(), json!(dimensions));
    embedding
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
    /// The `embedding` object (the model that made the vectors), when present.
    pub embedding: Option<Map<String, Value>>,
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
    Ok(Some(DenseInfo {
        count,
        dimensions,
        sha256,
        embedding: dense.get("embedding").and_then(Value::as_object).cloned(),
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

/// The embedding fields 0.5.2 compares before reusing a snapshot's vectors, in its order.
const COMPARED_FIELDS: [&str; 6] = [
    "provider",
    "model",
    "input",
    "query_param",
    "document_param",
    "dimensions",
];

/// Why the pack's vectors cannot be reused by `embedder` (`None`: they can): 0.5.2's rule,
/// every compared field of the pack's `embedding` equal to the configured model's (a field
/// absent on one side and present on the other differs). A configured dimension of 0
/// ("whatever the model returns") takes the snapshot's.
pub fn incompatibility(info: &DenseInfo, embedder: &Embedder) -> Option<String> {
    let configured = match embedder.dimension() {
        0 => info.dimensions as usize,
        d => d,
    };
    incompatibility_with(info, &embedding_metadata(embedder, configured))
}

fn incompatibility_with(info: &DenseInfo, current: &Map<String, Value>) -> Option<String> {
    let Some(packed) = info.embedding.as_ref() else {
        return Some("missing embedding metadata".into());
    };
    for field in COMPARED_FIELDS {
        if packed.get(field) != current.get(field) {
            return Some(format!("embedding {field} mismatch"));
        }
    }
    if packed.get("dimensions").and_then(Value::as_u64) != Some(info.dimensions) {
        return Some("embedding dimensions mismatch".into());
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
            embedding: None,
        };
        assert!(check_refs(Some(&info), &[r(2, 2), r(0, 2)], Some(16)).is_ok());
        assert!(check_refs(Some(&info), &[r(0, 2), r(3, 2)], Some(16)).is_err());
        assert!(check_refs(Some(&info), &[r(0, 2), r(2, 2)], Some(20)).is_err());
        assert!(check_refs(Some(&info), &[r(0, 2)], Some(8)).is_err());
        assert!(check_refs(None, &[r(0, 2)], None).is_err());
        assert!(check_refs(Some(&info), &[], Some(0)).is_err());
        assert!(check_refs(None, &[], None).is_ok());
    }

    /// The `embedding` object of a dense snapshot exported by OpenViking 0.5.2 (provider
    /// openai, input at its default) is reusable only by a model equal in every field
    /// 0.5.2 compares; Longship's own metadata carries `input` (without it 0.5.2 refused
    /// Longship's vectors with "embedding input mismatch").
    #[test]
    fn reuse_follows_upstream_field_comparison() {
        let upstream = serde_json::json!({
            "dimensions": 64, "input": "multimodal", "model": "m", "provider": "openai"
        });
        let info = |embedding: &Value| DenseInfo {
            count: 1,
            dimensions: 64,
            sha256: String::new(),
            embedding: embedding.as_object().cloned(),
        };
        let current = |input: &str, dims: u64| {
            serde_json::json!({"provider": "openai", "model": "m", "input": input, "dimensions": dims})
                .as_object()
                .cloned()
                .unwrap()
        };
        assert_eq!(
            incompatibility_with(&info(&upstream), &current("multimodal", 64)),
            None
        );
        assert_eq!(
            incompatibility_with(&info(&upstream), &current("text", 64)).as_deref(),
            Some("embedding input mismatch")
        );
        assert_eq!(
            incompatibility_with(&info(&upstream), &current("multimodal", 32)).as_deref(),
            Some("embedding dimensions mismatch")
        );
        let mut asymmetric = upstream.clone();
        asymmetric["document_param"] = json!("passage");
        assert_eq!(
            incompatibility_with(&info(&asymmetric), &current("multimodal", 64)).as_deref(),
            Some("embedding document_param mismatch")
        );
        let mut no_input = upstream.clone();
        no_input.as_object_mut().unwrap().remove("input");
        assert_eq!(
            incompatibility_with(&info(&no_input), &current("multimodal", 64)).as_deref(),
            Some("embedding input mismatch")
        );
        assert_eq!(
            incompatibility_with(&info(&Value::Null), &current("multimodal", 64)).as_deref(),
            Some("missing embedding metadata")
        );
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
