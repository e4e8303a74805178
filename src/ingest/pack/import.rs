//! Reading a pack: the upload is copied to local scratch, the ZIP is checked as 0.5.2 checks
//! it (member paths, manifest, entries against members, digests, index records) under the
//! hostile-archive limits of ingestion (entry count, total bytes, per-entry and whole-archive
//! ratio, depth), every file is staged under `<account>/_system/ingest/<id>/tree/<unit>` with
//! its size and sha256 checked as it is read, and each unit (the imported root; for a restore
//! each scope root) is published with one rename — visible whole or not at all; with
//! `on_conflict=overwrite` with one atomic replacement (`storage::replace`), the old tree or
//! the new one whole, also across a crash.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;

use serde_json::{Map, Value};

use super::dense::{self, DenseInfo, DenseRef};
use super::format::{self, check_rel_path, sha256_hex, FILES_DIR, INTERNAL_DIR};
use crate::config::QuotaSettings;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::ingest::archive::{self, ArchiveLimits};
use crate::ingest::uploads;
use crate::search::embed::Embedder;
use crate::storage::uri::{self, Access, VikingUri};
use crate::storage::{acl, tags, Storage, StorageError, StorePath};

/// The largest manifest or index-record file accepted (each is read whole).
const MAX_META_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Fail,
    Skip,
    Overwrite,
}

impl OnConflict {
    pub fn parse(raw: Option<&str>) -> ServiceResult<OnConflict> {
        match raw {
            None | Some("fail") => Ok(OnConflict::Fail),
            Some("skip") => Ok(OnConflict::Skip),
            Some("overwrite") => Ok(OnConflict::Overwrite),
            Some(other) => Err(ServiceError::invalid_argument(format!(
                "Invalid on_conflict value: {other:.40}. Must be one of: fail, overwrite, skip"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorMode {
    Auto,
    Recompute,
    Require,
}

impl VectorMode {
    pub fn parse(raw: Option<&str>) -> ServiceResult<VectorMode> {
        match raw {
            None | Some("auto") => Ok(VectorMode::Auto),
            Some("recompute") => Ok(VectorMode::Recompute),
            Some("require") => Ok(VectorMode::Require),
            Some(other) => Err(ServiceError::invalid_argument(format!(
                "Invalid vector_mode value: {other:.40}. Must be one of: auto, recompute, require"
            ))),
        }
    }
}

/// Where a pack goes.
pub enum Destination {
    /// `import` under this parent (`viking://` for a top-level scope pack).
    Under(VikingUri),
    /// `restore` of a backup to its scope roots.
    Restore,
}

pub struct ImportRequest {
    pub who: Identity,
    pub upload_id: String,
    pub destination: Destination,
    pub on_conflict: OnConflict,
    pub vector_mode: VectorMode,
    /// Names the staging directory (`_system/ingest/<work_id>`) and the active marker.
    pub work_id: String,
    /// The configured dense model, which may reuse the pack's vectors.
    pub embedder: Option<std::sync::Arc<Embedder>>,
}

/// What an import published.
#[derive(Debug)]
pub struct Imported {
    /// The answer's `uri` (the imported root; `viking://` for a restore).
    pub uri: String,
    /// The roots that were written (for change records); empty when skipped.
    pub units: Vec<VikingUri>,
    pub files: u64,
    pub bytes: u64,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Base,
    Manifest,
    Internal(String),
    Dir(String),
    File(String),
}

/// 0.5.2's member path rules; classifies the member.
fn classify(name: &str, base: &str) -> ServiceResult<Member> {
    let unsafe_entry =
        || invalid(format!("Unsafe ovpack entry path: {name:.200}")).detail("path", name);
    if name.is_empty() {
        return Err(invalid("Invalid ovpack entry: empty path"));
    }
    let drive =
        name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic();
    if name.contains('\\') || name.starts_with('/') || drive || name.contains('\0') {
        return Err(unsafe_entry());
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.contains(&"..") {
        return Err(unsafe_entry());
    }
    if parts[0] != base {
        return Err(invalid(format!("Invalid ovpack entry root: {name:.200}")));
    }
    let is_dir = name.ends_with('/');
    let stripped = name.trim_end_matches('/');
    if stripped == base {
        return Ok(Member::Base);
    }
    if name == format!("{base}/{}", format::MANIFEST_LEAF) {
        return Ok(Member::Manifest);
    }
    let internal = format!("{base}/{INTERNAL_DIR}");
    if stripped == internal || stripped.starts_with(&format!("{internal}/")) {
        return Ok(Member::Internal(if is_dir {
            String::new()
        } else {
            name.to_string()
        }));
    }
    let files = format!("{base}/{FILES_DIR}");
    let rel = if stripped == files {
        String::new()
    } else if let Some(rel) = stripped.strip_prefix(&format!("{files}/")) {
        rel.to_string()
    } else {
        return Err(invalid(format!(
            "Unexpected ovpack member outside files directory: {name:.200}"
        )));
    };
    check_rel_path(&rel)?;
    if is_dir {
        Ok(Member::Dir(rel))
    } else if rel.is_empty() {
        Err(unsafe_entry())
    } else {
        Ok(Member::File(rel))
    }
}

/// One manifest entry, checked.
struct Entry {
    dir: bool,
    size: u64,
    sha256: String,
}

fn manifest_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn strict_uint(v: Option<&Value>) -> Option<u64> {
    v.filter(|v| !v.is_boolean()).and_then(Value::as_u64)
}

/// The URI a manifest names, parsed for the caller (`viking://` → the account root).
fn manifest_root(manifest: &Value, who: &Identity) -> ServiceResult<VikingUri> {
    let raw = manifest
        .get("root")
        .and_then(|r| manifest_str(r, "uri"))
        .unwrap_or("");
    if raw.trim_end_matches('/') == "viking:" {
        return VikingUri::root(&who.account);
    }
    uri::parse(raw, who).map_err(|_| invalid("Invalid ovpack manifest root uri").detail("uri", raw))
}

/// Read a whole small member (manifest, index records) within `MAX_META_BYTES`.
fn read_small(zip: &mut zip::ZipArchive<File>, name: &str) -> ServiceResult<Vec<u8>> {
    read_limited(zip, name, MAX_META_BYTES)
}

fn read_limited(zip: &mut zip::ZipArchive<File>, name: &str, limit: u64) -> ServiceResult<Vec<u8>> {
    let mut entry = zip
        .by_name(name)
        .map_err(|e| invalid(format!("cannot read ovpack member {name:.200}: {e}")))?;
    let mut data = Vec::new();
    archive::copy_limited(&mut entry, &mut data, limit, |_| None)
        .map_err(|e| invalid(format!("cannot read ovpack member {name:.200}: {e}")))?;
    Ok(data)
}

/// A checked pack: what to write and where.
struct Plan {
    base: String,
    /// Member index → (rel path, is_dir).
    members: Vec<(usize, String, bool)>,
    entries: BTreeMap<String, Entry>,
    /// path → tags from the index records (Longship's `search_tags`, 0.5.2's field name).
    tags: BTreeMap<String, Vec<String>>,
    /// The dense vector snapshot, checked: `index.dense`, the records' references, the data.
    dense: Option<(DenseInfo, Vec<DenseRef>, Vec<u8>)>,
    backup: bool,
    skills: Vec<Value>,
}

fn check_pack(
    zip: &mut zip::ZipArchive<File>,
    limits: &ArchiveLimits,
) -> ServiceResult<(Plan, Value)> {
    if zip.is_empty() {
        return Err(invalid("Empty ovpack file"));
    }
    if zip.len() > limits.max_entries {
        return Err(invalid(format!(
            "ovpack has {} entries; at most {} are accepted",
            zip.len(),
            limits.max_entries
        )));
    }
    let mut names = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| invalid(format!("corrupt ovpack entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|_| invalid(format!("ovpack entry {i} has an unreadable name")))?
            .into_owned();
        if entry.is_symlink() {
            return Err(invalid(format!(
                "ovpack entry is a symbolic link: {name:.200}"
            )));
        }
        names.push(name);
    }
    let base = names
        .iter()
        .find_map(|n| {
            n.replace('\\', "/")
                .split('/')
                .next()
                .filter(|b| !b.is_empty())
                .map(str::to_string)
        })
        .ok_or_else(|| invalid("Could not determine root directory name from ovpack"))?;
    let mut members = Vec::new();
    let mut zip_files = BTreeSet::new();
    let mut zip_dirs = BTreeSet::new();
    let mut internal_files = BTreeSet::new();
    let mut has_manifest = false;
    for (i, name) in names.iter().enumerate() {
        match classify(name, &base)? {
            Member::Base => {}
            Member::Manifest => has_manifest = true,
            Member::Internal(n) => {
                if !n.is_empty() {
                    internal_files.insert(n);
                }
            }
            Member::Dir(rel) => {
                if rel.split('/').count() > limits.max_depth {
                    return Err(invalid(format!(
                        "ovpack nests deeper than {} levels",
                        limits.max_depth
                    )));
                }
                if !zip_dirs.insert(rel.clone()) {
                    return Err(invalid("Duplicate ovpack directory entry").detail("path", rel));
                }
                members.push((i, rel, true));
            }
            Member::File(rel) => {
                if rel.split('/').count() > limits.max_depth {
                    return Err(invalid(format!(
                        "ovpack nests deeper than {} levels",
                        limits.max_depth
                    )));
                }
                if !zip_files.insert(rel.clone()) {
                    return Err(invalid("Duplicate ovpack file entry").detail("path", rel));
                }
                members.push((i, rel, false));
            }
        }
    }
    if !has_manifest {
        return Err(invalid(
            "Missing ovpack manifest; re-export this package with the current OVPack format",
        ));
    }
    let raw = read_small(zip, &format!("{base}/{}", format::MANIFEST_LEAF))?;
    let manifest: Value = serde_json::from_slice(&raw)
        .map_err(|e| invalid(format!("Invalid JSON in ovpack manifest: {e}")))?;
    if !manifest.is_object() {
        return Err(invalid("Invalid ovpack manifest"));
    }
    match manifest
        .get("format_version")
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
    {
        Some(format::FORMAT_VERSION) => {}
        Some(v) if v >= 1 => {
            return Err(invalid(format!(
                "Unsupported ovpack format_version {v}; this server requires {}",
                format::FORMAT_VERSION
            )))
        }
        _ => return Err(invalid("Missing or invalid ovpack format_version")),
    }
    if manifest_str(&manifest, "kind") != Some(format::KIND) {
        return Err(invalid("Invalid ovpack manifest kind"));
    }
    let root = manifest
        .get("root")
        .filter(|r| r.is_object())
        .ok_or_else(|| invalid("Missing ovpack manifest root"))?;
    if manifest_str(root, "name") != Some(base.as_str()) {
        return Err(invalid("ovpack manifest root name does not match zip root"));
    }
    let backup = manifest_str(root, "package_type") == Some(format::BACKUP_TYPE)
        && manifest_str(root, "uri").map(|u| u.trim_end_matches('/')) == Some("viking:");
    // Entries.
    let list = manifest
        .get("entries")
        .ok_or_else(|| invalid("Missing ovpack manifest entries"))?
        .as_array()
        .ok_or_else(|| invalid("Invalid ovpack manifest: entries must be a list"))?;
    let mut entries = BTreeMap::new();
    for (index, e) in list.iter().enumerate() {
        let path = manifest_str(e, "path")
            .ok_or_else(|| invalid("Invalid ovpack manifest entry path").detail("index", index))?;
        check_rel_path(path)?;
        let dir = match manifest_str(e, "kind") {
            Some("directory") => true,
            Some("file") => false,
            _ => return Err(invalid("Invalid ovpack manifest entry kind").detail("path", path)),
        };
        let (size, sha256) = if dir {
            (0, String::new())
        } else {
            let size = strict_uint(e.get("size"))
                .ok_or_else(|| invalid("Invalid ovpack manifest file size").detail("path", path))?;
            let sha = manifest_str(e, "sha256")
                .filter(|s| is_sha256(s))
                .ok_or_else(|| invalid("Invalid ovpack manifest sha256").detail("path", path))?;
            (size, sha.to_ascii_lowercase())
        };
        if entries
            .insert(path.to_string(), Entry { dir, size, sha256 })
            .is_some()
        {
            return Err(invalid("Duplicate ovpack manifest entry").detail("path", path));
        }
    }
    let manifest_files: BTreeSet<&String> = entries
        .iter()
        .filter(|(_, e)| !e.dir)
        .map(|(p, _)| p)
        .collect();
    let manifest_dirs: BTreeSet<&String> = entries
        .iter()
        .filter(|(_, e)| e.dir)
        .map(|(p, _)| p)
        .collect();
    if manifest_files != zip_files.iter().collect() || manifest_dirs != zip_dirs.iter().collect() {
        return Err(invalid("ovpack entries do not match manifest"));
    }
    // Sizes: the manifest's total must fit the limit before anything is read.
    let total: u64 = entries
        .values()
        .map(|e| e.size)
        .fold(0u64, u64::saturating_add);
    if total > limits.max_total_bytes {
        return Err(invalid(format!(
            "ovpack unpacks to more than {} bytes (limit)",
            limits.max_total_bytes
        )));
    }
    let expected_content = manifest_str(&manifest, "content_sha256")
        .filter(|s| is_sha256(s))
        .ok_or_else(|| invalid("Missing ovpack manifest content_sha256"))?;
    let actual = format::content_sha256(
        entries
            .iter()
            .filter(|(_, e)| !e.dir)
            .map(|(p, e)| (p.as_str(), e.size, e.sha256.as_str())),
    );
    if !actual.eq_ignore_ascii_case(expected_content) {
        return Err(invalid("ovpack manifest content_sha256 mismatch"));
    }
    // Internal members: exactly the records (and the dense file when the manifest has one).
    let index = manifest
        .get("index")
        .filter(|i| i.is_object())
        .ok_or_else(|| invalid("Missing ovpack index"))?;
    let dense_info = dense::parse_info(index)?;
    let has_dense = dense_info.is_some();
    let mut expected_internal = BTreeSet::from([format!("{base}/{}", format::RECORDS_PATH)]);
    if has_dense {
        expected_internal.insert(format!("{base}/{}", format::DENSE_PATH));
    }
    if internal_files != expected_internal {
        return Err(invalid("ovpack internal entries do not match manifest"));
    }
    let records = index
        .get("records")
        .filter(|r| r.is_object())
        .ok_or_else(|| invalid("Missing ovpack index records"))?;
    if manifest_str(records, "path") != Some(format::RECORDS_PATH) {
        return Err(invalid("Invalid ovpack index records path"));
    }
    let count = strict_uint(records.get("count"))
        .ok_or_else(|| invalid("Invalid ovpack index records count"))?;
    let records_sha = manifest_str(records, "sha256")
        .filter(|s| is_sha256(s))
        .ok_or_else(|| invalid("Invalid ovpack index records sha256"))?;
    let data = read_small(zip, &format!("{base}/{}", format::RECORDS_PATH))?;
    if !sha256_hex(&data).eq_ignore_ascii_case(records_sha) {
        return Err(invalid("ovpack index records sha256 mismatch"));
    }
    let text =
        std::str::from_utf8(&data).map_err(|_| invalid("Invalid ovpack index records encoding"))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() as u64 != count {
        return Err(invalid("ovpack index record count does not match manifest"));
    }
    let mut tag_map = BTreeMap::new();
    let mut ids = BTreeSet::new();
    let mut dense_refs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let r: Map<String, Value> = serde_json::from_str(line)
            .map_err(|_| invalid("Invalid JSON in ovpack index record").detail("line", i + 1))?;
        let id = r
            .get("record_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let path = r.get("path").and_then(Value::as_str);
        let (Some(id), Some(path)) = (id, path) else {
            return Err(invalid("Invalid ovpack index record").detail("line", i + 1));
        };
        let Some(entry) = entries.get(path) else {
            return Err(invalid("Invalid ovpack index record path").detail("line", i + 1));
        };
        let kind = if entry.dir { "directory" } else { "file" };
        if r.get("kind").and_then(Value::as_str) != Some(kind)
            || !r.get("level").is_some_and(|l| l.is_i64() || l.is_u64())
        {
            return Err(
                invalid("ovpack index record does not match manifest").detail("line", i + 1)
            );
        }
        if !ids.insert(id.to_string()) {
            return Err(invalid("Duplicate ovpack index record id").detail("record_id", id));
        }
        if let Some((offset, dimensions)) = dense::parse_record_ref(&r, i + 1)? {
            let level = r.get("level").and_then(Value::as_i64).unwrap_or(2);
            // Only a vector of a file in the pack can be keyed by content here.
            let file = dense::record_file(path, entry.dir, level)
                .filter(|f| entries.get(f).is_some_and(|e| !e.dir))
                .unwrap_or_default();
            dense_refs.push(DenseRef {
                file,
                offset,
                dimensions,
            });
        }
        let found = r
            .get("scalars")
            .and_then(|s| s.get("search_tags"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            });
        if let Some(t) = found.filter(|t| !t.is_empty()) {
            let t = tags::normalize(&t).map_err(|e| e.detail("path", path))?;
            tag_map.insert(path.to_string(), t);
        }
    }
    let dense_data = match &dense_info {
        Some(info) => {
            let name = format!("{base}/{}", format::DENSE_PATH);
            let data = read_limited(zip, &name, dense::MAX_DENSE_BYTES)?;
            if !sha256_hex(&data).eq_ignore_ascii_case(&info.sha256) {
                return Err(invalid("ovpack dense vector sha256 mismatch"));
            }
            Some(data)
        }
        None => None,
    };
    dense::check_refs(
        dense_info.as_ref(),
        &dense_refs,
        dense_data.as_ref().map(|d| d.len() as u64),
    )?;
    let dense = match (dense_info, dense_data) {
        (Some(info), Some(data)) => Some((info, dense_refs, data)),
        _ => None,
    };
    let skills = manifest
        .get(format::SKILLS_EXTENSION)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok((
        Plan {
            base,
            members,
            entries,
            tags: tag_map,
            dense,
            backup,
            skills,
        },
        manifest,
    ))
}

/// A unit: one root published by one rename; `prefix` is its path inside the pack.
struct Unit {
    prefix: String,
    target: VikingUri,
}

fn unit_of<'a>(units: &'a [Unit], rel: &str) -> Option<(usize, &'a Unit, String)> {
    units.iter().enumerate().find_map(|(i, u)| {
        if u.prefix.is_empty() {
            return Some((i, u, rel.to_string()));
        }
        if rel == u.prefix {
            Some((i, u, String::new()))
        } else {
            rel.strip_prefix(&format!("{}/", u.prefix))
                .map(|r| (i, u, r.to_string()))
        }
    })
}

/// 0.5.2's target rules for an import: public scopes only, a top-level scope pack only into
/// `viking://`, the same scope, and for `user` the same depth.
fn import_target(
    parent: &VikingUri,
    base: &str,
    manifest: &Value,
    who: &Identity,
    backup: bool,
) -> ServiceResult<VikingUri> {
    if backup {
        return Err(invalid(
            "Backup ovpack packages must be restored with ov restore or the restore API",
        ));
    }
    let source = manifest_root(manifest, who)?;
    let top_level = source.segments().len() == 1
        && format::PUBLIC_SCOPES.contains(&source.segments()[0].as_str());
    let target = if parent.is_root() {
        if !top_level {
            return Err(invalid(
                "Only top-level scope ovpack packages can be imported to viking://",
            ));
        }
        source.clone()
    } else {
        if top_level {
            return Err(invalid(
                "Top-level scope ovpack packages must be imported to viking://",
            ));
        }
        let scope = parent.segments()[0].as_str();
        if !format::PUBLIC_SCOPES.contains(&scope) {
            return Err(invalid(format!(
                "ovpack import is not supported for scope: {scope}"
            )));
        }
        parent
            .child(base)
            .map_err(|_| invalid("ovpack root name is not a usable name"))?
    };
    let s_scope = source.segments().first().map(String::as_str).unwrap_or("");
    if !format::PUBLIC_SCOPES.contains(&s_scope) {
        return Err(invalid("ovpack import is not supported for source scope")
            .detail("source_scope", s_scope));
    }
    if target.segments()[0] != s_scope {
        return Err(invalid("ovpack source scope does not match target scope"));
    }
    if s_scope == "user" && source.segments().len() != target.segments().len() {
        return Err(invalid(
            "ovpack source path is incompatible with target path",
        ));
    }
    Ok(target)
}

fn restore_units(plan: &Plan, who: &Identity) -> ServiceResult<Vec<Unit>> {
    let account_root = VikingUri::root(&who.account)?;
    let mut units = Vec::new();
    let mut seen = BTreeSet::new();
    for rel in plan.entries.keys() {
        let parts: Vec<&str> = rel.split('/').collect();
        let prefix = match parts.as_slice() {
            [""] => continue,
            ["resources", ..] => "resources".to_string(),
            ["user"] => continue,
            ["user", uid, ..] => format!("user/{uid}"),
            _ => {
                return Err(invalid("Backup ovpack contains unsupported roots")
                    .detail("path", rel.as_str()))
            }
        };
        if seen.insert(prefix.clone()) {
            let mut target = account_root.clone();
            for seg in prefix.split('/') {
                target = target.child(seg)?;
            }
            units.push(Unit { prefix, target });
        }
    }
    if plan.entries.get("user").is_some_and(|e| !e.dir) {
        return Err(invalid(
            "Backup ovpack scope roots must be directory entries",
        ));
    }
    Ok(units)
}

/// Check, stage and publish a pack. `heartbeat` is called between files.
pub fn import(
    storage: &dyn Storage,
    req: &ImportRequest,
    limits: ArchiveLimits,
    scratch: &Path,
    quota: &QuotaSettings,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<Imported> {
    let who = &req.who;
    let meta = uploads::open(storage, &who.account, &who.user, &req.upload_id)?;
    let local = scratch.join("input.ovpack");
    uploads::copy_to_local(storage, &who.account, &req.upload_id, &meta, &local)?;
    let file = File::open(&local).map_err(ServiceError::internal)?;
    let archive_size = file.metadata().map(|m| m.len()).unwrap_or(1).max(1);
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| invalid(format!("not a readable ovpack (ZIP) file: {e}")))?;
    let (plan, manifest) = check_pack(&mut zip, &limits)?;
    // Where it goes.
    let units = match &req.destination {
        Destination::Under(parent) => {
            let target = import_target(parent, &plan.base, &manifest, who, plan.backup)?;
            uri::authorize(&target, who, Access::Write)?;
            vec![Unit {
                prefix: String::new(),
                target,
            }]
        }
        Destination::Restore => {
            if !plan.backup {
                return Err(invalid(
                    "Only backup ovpack packages can be restored with ov restore or the restore API",
                ));
            }
            let mut units = restore_units(&plan, who)?;
            if !plan.skills.is_empty() {
                let target = VikingUri::root(&who.account)?
                    .child("agent")?
                    .child("skills")?;
                units.push(Unit {
                    prefix: "\u{0}skills".into(),
                    target,
                });
            }
            for u in &units {
                uri::authorize(&u.target, who, Access::Write)?;
            }
            units
        }
    };
    // Every path must be a name this server can address (VikingUri::child refuses the rest).
    for rel in plan.entries.keys() {
        if let Some((_, unit, inner)) = unit_of(&units, rel) {
            let mut uri = unit.target.clone();
            for seg in inner.split('/').filter(|s| !s.is_empty()) {
                uri = uri.child(seg)?;
            }
        }
    }
    let reuse = vectors_to_reuse(&plan, req.vector_mode, req.embedder.as_deref())?;
    // Conflicts, as 0.5.2: the import root, or (restore) the scope roots.
    let answer = match &req.destination {
        Destination::Under(_) => units[0].target.uri(),
        Destination::Restore => "viking://".to_string(),
    };
    let existing: Vec<&Unit> = match &req.destination {
        Destination::Under(_) => units
            .iter()
            .filter(|u| exists(storage, &u.target))
            .collect(),
        Destination::Restore => {
            let account_root = VikingUri::root(&who.account)?;
            let mut scopes = Vec::new();
            for u in &units {
                let scope = account_root.child(&u.target.segments()[0])?;
                if exists(storage, &scope)
                    && !scopes
                        .iter()
                        .any(|s: &&Unit| s.target.segments()[0] == u.target.segments()[0])
                {
                    scopes.push(u);
                }
            }
            scopes
        }
    };
    if let Some(first) = existing.first() {
        let shown = match &req.destination {
            Destination::Under(_) => first.target.uri(),
            Destination::Restore => format!("viking://{}", first.target.segments()[0]),
        };
        match req.on_conflict {
            OnConflict::Skip => {
                return Ok(Imported {
                    uri: answer,
                    units: Vec::new(),
                    files: 0,
                    bytes: 0,
                });
            }
            OnConflict::Fail => {
                return Err(ServiceError::conflict(format!(
                    "Resource already exists at {shown}. Use on_conflict='overwrite' to replace it."
                ))
                .detail("resource", shown));
            }
            OnConflict::Overwrite => {}
        }
    }
    // Replacing a tree removes it: the same right as `rm` of it (manage on every ACL row
    // below, when ACLs apply), checked before anything is staged.
    if req.on_conflict == OnConflict::Overwrite {
        for u in units.iter().filter(|u| exists(storage, &u.target)) {
            uri::authorize(&u.target, who, Access::Delete)?;
        }
    }
    let files = plan.entries.values().filter(|e| !e.dir).count() as u64;
    let bytes: u64 = plan.entries.values().map(|e| e.size).sum();
    crate::storage::quota::admit(storage, &who.account, bytes, files, quota)?;
    let staging = crate::ingest::pipeline::staging_dir(&who.account, &req.work_id)?;
    let overwrite = req.on_conflict == OnConflict::Overwrite;
    let outcome = stage_and_publish(
        storage,
        &mut zip,
        &plan,
        &units,
        &staging,
        archive_size,
        &limits,
        overwrite,
        &Reuse {
            vectors: &reuse,
            embedder: req.embedder.as_deref(),
            account: &who.account,
        },
        heartbeat,
    );
    // A replacement a failure interrupted is finished before its trees' directory goes;
    // if that fails too, the staging sweep retries it from the journal.
    match crate::storage::replace::settle(storage, &staging) {
        Ok(()) => {
            let _ = storage.remove(&staging, true);
        }
        Err(e) => {
            tracing::error!(error = %e, "pack import: interrupted replacement left to the sweep")
        }
    }
    outcome?;
    crate::storage::quota::charge(storage, &who.account, bytes as i64, files as i64, quota);
    Ok(Imported {
        uri: answer,
        units: units.into_iter().map(|u| u.target).collect(),
        files,
        bytes,
    })
}

/// The pack's vectors this server stores (by manifest file path), following `vector_mode`
/// as 0.5.2: `recompute` never reuses; `auto` reuses when it can, else the indexer
/// recomputes in the background; `require` fails when the vectors cannot be reused.
fn vectors_to_reuse(
    plan: &Plan,
    mode: VectorMode,
    embedder: Option<&Embedder>,
) -> ServiceResult<BTreeMap<String, Vec<f32>>> {
    let require = mode == VectorMode::Require;
    let refuse = |message: &str| invalid(message).detail("vector_mode", "require");
    if mode == VectorMode::Recompute {
        return Ok(BTreeMap::new());
    }
    let Some((info, refs, data)) = plan.dense.as_ref().filter(|(_, r, _)| !r.is_empty()) else {
        if require {
            return Err(refuse(
                "ovpack package does not contain a dense vector snapshot",
            ));
        }
        return Ok(BTreeMap::new());
    };
    let Some(embedder) = embedder else {
        if require {
            return Err(refuse("Vector restore requires a writable vector store"));
        }
        return Ok(BTreeMap::new());
    };
    if let Some(reason) = dense::incompatibility(info, embedder) {
        if require {
            return Err(refuse(
                "ovpack dense vector snapshot is incompatible with current embedding config",
            )
            .detail("reason", reason));
        }
        tracing::info!(
            reason = %reason,
            "pack import: vectors recomputed (the snapshot's model differs)"
        );
        return Ok(BTreeMap::new());
    }
    Ok(dense::vectors_by_file(refs, data))
}

/// Vectors stored as their files are staged (before the tree is published, so the indexer
/// finds them when it first sees the files).
struct Reuse<'a> {
    vectors: &'a BTreeMap<String, Vec<f32>>,
    embedder: Option<&'a Embedder>,
    account: &'a str,
}

impl Reuse<'_> {
    fn store(&self, storage: &dyn Storage, rel: &str, data: &[u8]) {
        let (Some(v), Some(embedder)) = (self.vectors.get(rel), self.embedder) else {
            return;
        };
        let mut hash = dense::DocHasher::new(embedder.max_doc_bytes());
        hash.update(data);
        // Never fails the import: the indexer computes what is not stored.
        if let Err(e) = embedder.store_vector(storage, self.account, &hash.finish(), v) {
            tracing::warn!(error = %e, "pack import: a carried vector was not stored");
        }
    }
}

/// Publish with overwrite, keeping the ACL table right (0.5.2: the replaced tree's ACLs go
/// with it; imported nodes inherit from their parent). Each target's rows become one seal
/// (ADMIN only) before the swap and are dropped after it, so neither tree is ever readable
/// under rows that are not its own; a failed publish puts them back. The resources root's
/// ACL is fixed (no seal): a restore of it drops every row right after the swap. A crash
/// between the swap and the drop leaves the new tree readable by ADMIN only (fail closed)
/// until an ADMIN clears its ACL.
fn replace_sealed(
    storage: &dyn Storage,
    staging: &StorePath,
    units: &[Unit],
    pairs: &[(StorePath, StorePath)],
) -> ServiceResult<()> {
    let mut sealed = Vec::new();
    let mut outcome = Ok(());
    for unit in units {
        match acl::store::seal_subtree(storage, &unit.target) {
            Ok(saved) => sealed.push(saved),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        outcome =
            crate::storage::replace::publish(storage, staging, pairs).map_err(ServiceError::from);
    }
    if let Err(e) = outcome {
        for saved in sealed {
            if let Err(undo) = acl::store::put_back(storage, saved) {
                tracing::error!(error = %undo.message, "ACL rows not put back after a failed import");
            }
        }
        return Err(e);
    }
    for unit in units {
        if let Err(e) = acl::store::take_rows(storage, &unit.target) {
            tracing::error!(target = %unit.target, error = %e.message, "ACL rows of a replaced tree not dropped (it stays sealed)");
        }
    }
    Ok(())
}

fn exists(storage: &dyn Storage, uri: &VikingUri) -> bool {
    matches!(storage.stat(uri.store_path()), Ok(Some(_)))
}

fn staged_path(tree: &StorePath, unit: usize, inner: &str) -> ServiceResult<StorePath> {
    let mut p = tree.join(&unit.to_string())?;
    for seg in inner.split('/').filter(|s| !s.is_empty()) {
        p = p.join(seg)?;
    }
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn stage_and_publish(
    storage: &dyn Storage,
    zip: &mut zip::ZipArchive<File>,
    plan: &Plan,
    units: &[Unit],
    staging: &StorePath,
    archive_size: u64,
    limits: &ArchiveLimits,
    overwrite: bool,
    reuse: &Reuse<'_>,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<()> {
    let tree = staging.join("tree")?;
    for i in 0..units.len() {
        storage.mkdir(&staged_path(&tree, i, "")?)?;
    }
    let mut total = 0u64;
    for (index, rel, dir) in &plan.members {
        let Some((u, _, inner)) = unit_of(units, rel) else {
            continue;
        };
        let target = staged_path(&tree, u, &inner)?;
        if *dir {
            storage.mkdir(&target)?;
            continue;
        }
        heartbeat();
        let expected = &plan.entries[rel];
        let mut entry = zip
            .by_index(*index)
            .map_err(|e| invalid(format!("corrupt ovpack entry {rel:.200}: {e}")))?;
        let compressed = entry.compressed_size().max(1);
        let mut data = Vec::with_capacity(expected.size.min(8 << 20) as usize);
        let so_far = total;
        let read = archive::copy_limited(&mut entry, &mut data, expected.size, |n| {
            if n > archive::ENTRY_RATIO_FLOOR && n / compressed > limits.max_ratio {
                return Some("ratio");
            }
            let all = so_far + n;
            (all > archive::ARCHIVE_RATIO_FLOOR && all / archive_size > limits.max_ratio)
                .then_some("archive ratio")
        })
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => {
                invalid("ovpack file size does not match manifest").detail("path", rel.as_str())
            }
            std::io::ErrorKind::InvalidData if e.to_string().contains("ratio") => invalid(format!(
                "ovpack entry {rel:.200} expands more than {}x (limit)",
                limits.max_ratio
            )),
            _ => invalid(format!("corrupt ovpack entry {rel:.200}: {e}")),
        })?;
        drop(entry);
        if read != expected.size {
            return Err(
                invalid("ovpack file size does not match manifest").detail("path", rel.as_str())
            );
        }
        if sha256_hex(&data) != expected.sha256 {
            return Err(
                invalid("ovpack file sha256 does not match manifest").detail("path", rel.as_str())
            );
        }
        total += read;
        storage.write_staged(&target, &data)?;
        reuse.store(storage, rel, &data);
    }
    // Longship's backup extension: account skills, inline.
    if let Some(u) = units.iter().position(|u| u.prefix == "\u{0}skills") {
        super::skills_ext::stage(storage, &plan.skills, &staged_path(&tree, u, "")?)?;
    }
    // Tags of nodes inside a unit live in their parent's map, which is inside the staged tree.
    let mut maps: BTreeMap<StorePath, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut root_tags = Vec::new();
    for (rel, t) in &plan.tags {
        let Some((u, _, inner)) = unit_of(units, rel) else {
            continue;
        };
        if inner.is_empty() {
            root_tags.push((u, t.clone()));
            continue;
        }
        let node = staged_path(&tree, u, &inner)?;
        if let Some(dir) = node.parent() {
            maps.entry(dir)
                .or_default()
                .insert(node.name().to_string(), t.clone());
        }
    }
    for (dir, nodes) in maps {
        storage.write_staged(&dir.join(tags::TAGS_FILE)?, &tags::map_body(nodes))?;
    }
    storage.sync_staged()?;
    // Publish each unit whole: one rename, or with overwrite one atomic replacement
    // (`storage::replace`: a swap on local disk, a journaled pair of moves on S3).
    let mut pairs = Vec::with_capacity(units.len());
    for (i, unit) in units.iter().enumerate() {
        pairs.push((staged_path(&tree, i, "")?, unit.target.store_path().clone()));
    }
    if overwrite {
        replace_sealed(storage, staging, units, &pairs)?;
    } else {
        for ((staged, target), unit) in pairs.iter().zip(units) {
            if let Some(parent) = target.parent() {
                storage.mkdir(&parent)?;
            }
            storage.rename(staged, target).map_err(|e| match e {
                StorageError::AlreadyExists(_) => {
                    ServiceError::conflict(format!("Resource already exists at {}", unit.target))
                }
                other => other.into(),
            })?;
        }
    }
    for (u, t) in root_tags {
        let unit = &units[u];
        if !unit.target.is_root() && unit.target.segments().len() > 1 {
            let _ = tags::update(storage, unit.target.store_path(), &|_| t.clone());
        }
    }
    Ok(())
}
