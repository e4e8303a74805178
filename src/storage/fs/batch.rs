//! `content/batch-write` (0.5.2): several file writes under one directory in one request.
//!
//! Two phases, as 0.5.2: every operation is checked first (a directory target, a missing or
//! changed `expected_sha256` revision is a conflict: the whole request is 409 before anything
//! is written, or with `skip_conflicts` that operation is reported and left alone); then the
//! writes run in URI order, and a failure stops the batch with the earlier writes kept. A
//! revision checked in the first phase is written with a compare-and-swap on the version read
//! there, so a writer that slipped in between is a conflict, never overwritten.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use super::write::{self, WriteMode};
use super::{stat, StorageFail};
use crate::config::QuotaSettings;
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::storage::tags::{self, TagMode};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorageError, StorePath, Version};

/// 0.5.2 batch modes: `create` and `upsert` write the whole body like `replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    Replace,
    Append,
    Create,
    Upsert,
}

impl BatchMode {
    pub fn parse(s: &str) -> Option<BatchMode> {
        match s {
            "replace" => Some(BatchMode::Replace),
            "append" => Some(BatchMode::Append),
            "create" => Some(BatchMode::Create),
            "upsert" => Some(BatchMode::Upsert),
            _ => None,
        }
    }
}

/// Content as the request carried it; base64 is decoded on the pool ([`BatchOp::decode`]).
#[derive(Debug, Clone)]
pub enum RawContent {
    Text(String),
    Base64(String),
}

impl RawContent {
    /// Bytes it decodes to (base64: an upper bound), for the request's byte limit.
    pub fn decoded_len(&self) -> u64 {
        match self {
            RawContent::Text(t) => t.len() as u64,
            RawContent::Base64(b) => (b.len() as u64).div_ceil(4) * 3,
        }
    }

    /// The bytes, or 400 naming `uri` for invalid base64.
    pub fn decode(self, uri: &VikingUri) -> ServiceResult<(Vec<u8>, bool)> {
        use base64::Engine;
        match self {
            RawContent::Text(t) => Ok((t.into_bytes(), true)),
            RawContent::Base64(b) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map(|bytes| (bytes, false))
                .map_err(|_| {
                    ServiceError::invalid_argument(format!(
                        "batch-write content_base64 is invalid: {}",
                        uri.uri()
                    ))
                }),
        }
    }
}

/// One validated operation.
#[derive(Debug, Clone)]
pub struct BatchOp {
    pub uri: VikingUri,
    pub content: Vec<u8>,
    /// `content` came as text (not `content_base64`).
    pub text: bool,
    pub mode: BatchMode,
    /// Lower-case hex sha256 the current file must have.
    pub expected_sha256: Option<String>,
    /// Tags after the write (normalised, no reserved keys), and how.
    pub tags: Option<(Vec<String>, TagMode)>,
    /// It carries an ACL (stored by the job): never skipped as unchanged (0.5.2).
    pub acl: bool,
}

/// What a batch did: the answer (or the error that stopped it) and the paths it wrote, which
/// the job records for search either way.
pub struct BatchOutcome {
    pub result: ServiceResult<Value>,
    pub written: Vec<StorePath>,
}

fn conflict(message: String) -> ServiceError {
    ServiceError::conflict(message)
}

fn is_sidecar(uri: &VikingUri) -> bool {
    matches!(uri.name(), ABSTRACT_FILE | OVERVIEW_FILE)
}

/// A checked operation ready to write: whether the file existed, and the version its
/// `expected_sha256` was checked at.
struct Pending<'a> {
    op: &'a BatchOp,
    existed: bool,
    checked: Option<(Version, Vec<u8>)>,
}

/// Phase one for `op`: `Ok(None)` when it needs no write (unchanged under skip_conflicts).
fn check<'a>(
    storage: &dyn Storage,
    op: &'a BatchOp,
    skip_conflicts: bool,
) -> ServiceResult<Option<Pending<'a>>> {
    let uri = &op.uri;
    let shown = uri.uri();
    let meta = stat(storage, uri)?;
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        if !skip_conflicts {
            return Err(ServiceError::invalid_argument(format!(
                "batch-write target must be a file: {shown}"
            )));
        }
        return Err(conflict(format!("Target is a directory: {shown}")));
    }
    let existed = meta.is_some();
    if is_sidecar(uri) && !existed {
        return Err(ServiceError::invalid_argument(format!(
            "cannot create generated abstract overview directly: {shown}"
        )));
    }
    let Some(expected) = &op.expected_sha256 else {
        return Ok(Some(Pending {
            op,
            existed,
            checked: None,
        }));
    };
    let (current, version) = match storage.read_versioned(uri.store_path()) {
        Ok(v) => v,
        Err(StorageError::NotFound(_)) => {
            return Err(conflict(format!(
                "Expected content no longer exists: {shown}"
            )))
        }
        Err(e) => return Err(StorageFail(uri).map(e)),
    };
    if hex::encode(Sha256::digest(&current)) != *expected {
        return Err(conflict(format!("Content revision changed: {shown}")));
    }
    let whole = op.mode != BatchMode::Append;
    if skip_conflicts && whole && current == op.content && op.tags.is_none() && !op.acl {
        return Ok(None);
    }
    Ok(Some(Pending {
        op,
        existed,
        checked: Some((version, current)),
    }))
}

/// Phase two for one checked operation.
fn apply(storage: &dyn Storage, p: &Pending<'_>, quota: &QuotaSettings) -> ServiceResult<()> {
    let op = p.op;
    let uri = &op.uri;
    let fail = |e: StorageError| StorageFail(uri).map(e);
    let append = op.mode == BatchMode::Append && p.existed;
    if is_sidecar(uri) {
        // Sidecars keep their front matter: the single-write path edits them.
        let text = String::from_utf8_lossy(&op.content);
        let mode = if append {
            WriteMode::Append
        } else {
            WriteMode::Replace
        };
        write::write_file(storage, uri, &text, mode, quota)?;
    } else {
        let account = uri.store_path().segments().next().unwrap_or_default();
        let old = p.checked.as_ref().map(|(_, c)| c.len() as i64);
        let added = match (append, p.existed) {
            (true, _) => op.content.len() as i64,
            (false, true) => op.content.len() as i64 - old.unwrap_or(0),
            (false, false) => op.content.len() as i64,
        };
        let new_files = u64::from(!p.existed);
        crate::storage::quota::admit(storage, account, added.max(0) as u64, new_files, quota)?;
        match &p.checked {
            // The revision the check saw, or a conflict.
            Some((version, current)) => {
                let body = if append {
                    [current.as_slice(), op.content.as_slice()].concat()
                } else {
                    op.content.clone()
                };
                match storage.write_if(uri.store_path(), &body, Some(version)) {
                    Ok(_) => {}
                    Err(StorageError::Conflict(_)) | Err(StorageError::NotFound(_)) => {
                        return Err(conflict(format!("Content revision changed: {}", uri.uri())));
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            None if append => {
                storage
                    .append(uri.store_path(), &op.content)
                    .map_err(fail)?;
            }
            None => {
                storage.write(uri.store_path(), &op.content).map_err(fail)?;
            }
        }
        crate::storage::quota::charge(storage, account, added, new_files as i64, quota);
    }
    if let Some((t, mode)) = &op.tags {
        if !(*mode == TagMode::Replace && t.is_empty()) {
            tags::set_user_tags(storage, uri.store_path(), t, *mode)?;
        }
    }
    Ok(())
}

fn conflict_item(uri: &VikingUri, e: &ServiceError) -> Value {
    json!({"uri": uri.uri(), "code": e.code.as_str(), "message": e.message})
}

/// Run a validated batch under `root` (`ops` sorted by URI, targets checked by the caller).
pub fn batch_write(
    storage: &dyn Storage,
    root: &VikingUri,
    ops: &[BatchOp],
    skip_conflicts: bool,
    quota: &QuotaSettings,
) -> BatchOutcome {
    let mut written = Vec::new();
    let result = run(storage, root, ops, skip_conflicts, quota, &mut written);
    BatchOutcome { result, written }
}

fn run(
    storage: &dyn Storage,
    root: &VikingUri,
    ops: &[BatchOp],
    skip_conflicts: bool,
    quota: &QuotaSettings,
    written: &mut Vec<StorePath>,
) -> ServiceResult<Value> {
    let (mut created, mut updated, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    let mut conflicts = Vec::new();
    let mut pending = Vec::new();
    for op in ops {
        match check(storage, op, skip_conflicts) {
            Ok(Some(p)) => pending.push(p),
            Ok(None) => unchanged.push(op.uri.uri()),
            Err(e) if skip_conflicts && e.code == ErrorCode::Conflict => {
                conflicts.push(conflict_item(&op.uri, &e));
            }
            Err(e) => return Err(e),
        }
    }
    for p in &pending {
        match apply(storage, p, quota) {
            Ok(()) => {
                written.push(p.op.uri.store_path().clone());
                if p.existed {
                    updated.push(p.op.uri.uri());
                } else {
                    created.push(p.op.uri.uri());
                }
            }
            Err(e) if skip_conflicts && e.code == ErrorCode::Conflict => {
                conflicts.push(conflict_item(&p.op.uri, &e));
            }
            // Earlier writes stay (0.5.2); the caller is told what stopped the batch.
            Err(e) => {
                let done: Vec<Value> = created.iter().chain(&updated).map(|u| json!(u)).collect();
                return Err(e.detail("written", done));
            }
        }
    }
    let mut result = json!({
        "root_uri": root.uri(),
        "created": created,
        "updated": updated,
        "unchanged": unchanged,
        "queue_status": null,
        "semantic_status": "skipped",
        "vector_status": "skipped",
    });
    if skip_conflicts {
        result["conflicts"] = Value::from(conflicts);
    }
    Ok(result)
}
