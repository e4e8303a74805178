//! The .ovpack file format of OpenViking 0.5.2 (format_version 3), both directions.
//!
//! A pack is a ZIP whose every member lies under one base directory `<name>/`:
//! `<name>/files/<rel path>` (content, directories as `…/` entries), then
//! `<name>/_ovpack/index_records.jsonl` (portable index records: level, text, scalars) and
//! `<name>/_ovpack/manifest.json` written last (entries with size and sha256, the content
//! digest, the records' digest). The manifest names the root (`uri`, `scope`, and for a backup
//! `package_type: "backup"` and `scopes`).

use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{ServiceError, ServiceResult};

pub const FORMAT_VERSION: i64 = 3;
pub const KIND: &str = "openviking.ovpack";
pub const FILES_DIR: &str = "files";
pub const INTERNAL_DIR: &str = "_ovpack";
pub const MANIFEST_LEAF: &str = "_ovpack/manifest.json";
pub const RECORDS_PATH: &str = "_ovpack/index_records.jsonl";
pub const DENSE_PATH: &str = "_ovpack/dense.f32";
pub const BACKUP_NAME: &str = "openviking-backup";
pub const BACKUP_TYPE: &str = "backup";
/// The scopes 0.5.2 exports, imports and backs up.
pub const PUBLIC_SCOPES: [&str; 2] = ["resources", "user"];
/// Leaf names never exported or imported (0.5.2's rule).
pub const EXCLUDED_NAMES: [&str; 1] = [".relations.json"];
/// Longship's backup extension (ignored by 0.5.2, which does not read unknown manifest keys):
/// the account's `viking://agent/skills` tree, inline.
pub const SKILLS_EXTENSION: &str = "longship_agent_skills";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

/// A relative path under `files/` as 0.5.2 accepts it: no backslash, not absolute, no drive,
/// no empty, `.` or `..` segment (`""` is the root).
pub fn check_rel_path(rel: &str) -> ServiceResult<()> {
    if rel.is_empty() {
        return Ok(());
    }
    let drive =
        rel.len() >= 2 && rel.as_bytes()[1] == b':' && rel.as_bytes()[0].is_ascii_alphabetic();
    if rel.contains('\\') || rel.starts_with('/') || drive || rel.contains('\0') {
        return Err(unsafe_path(rel));
    }
    if rel
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return Err(unsafe_path(rel));
    }
    Ok(())
}

pub fn unsafe_path(rel: &str) -> ServiceError {
    invalid(format!("Unsafe ovpack relative path: {:.200}", rel)).detail("path", rel)
}

/// The 0.5.2 content digest over `(path, size, sha256)` of every file, sorted by path, as
/// compact JSON with sorted keys.
pub fn content_sha256<'a>(files: impl Iterator<Item = (&'a str, u64, &'a str)>) -> String {
    #[derive(Serialize)]
    struct Item<'b> {
        path: &'b str,
        sha256: &'b str,
        size: u64,
    }
    let mut items: Vec<Item<'_>> = files
        .map(|(path, size, sha256)| Item { path, sha256, size })
        .collect();
    items.sort_by(|a, b| a.path.cmp(b.path));
    // Serialising plain strings and integers cannot fail.
    let payload = serde_json::to_vec(&items).unwrap_or_default();
    sha256_hex(&payload)
}

/// One index record line (compact JSON, sorted keys — `serde_json::Map` is a BTreeMap here).
pub fn record_line(record: &Map<String, Value>) -> Vec<u8> {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The root object of a manifest.
pub fn root_object(
    name: &str,
    uri: &str,
    scope: &str,
    user_id: Option<&str>,
    backup: bool,
) -> Value {
    let mut root = json!({"name": name, "uri": uri, "scope": scope});
    if let Some(uid) = user_id {
        root["user_id"] = json!(uid);
    }
    if backup {
        root["package_type"] = json!(BACKUP_TYPE);
    }
    root
}

/// The user a path of the pack belongs to, given the pack root's URI segments: 0.5.2's
/// `owner_user_id` (`viking://user/<uid>/…`).
pub fn owner_user<'a>(root_segs: &'a [String], rel: &'a str) -> Option<&'a str> {
    let mut segs = root_segs
        .iter()
        .map(String::as_str)
        .chain(rel.split('/').filter(|s| !s.is_empty()));
    match (segs.next(), segs.next()) {
        (Some("user"), Some(uid)) => Some(uid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths_follow_upstream() {
        for ok in ["", "a", "a/b.md", ".abstract.md", "a/.overview.md"] {
            assert!(check_rel_path(ok).is_ok(), "{ok}");
        }
        for bad in ["/a", "a//b", "a/../b", "..", "./a", "a\\b", "C:x", "a/"] {
            assert!(check_rel_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_digest_matches_upstream_encoding() {
        // Upstream: sha256(json.dumps([{"path":..,"sha256":..,"size":..}], sort_keys=True,
        // separators=(",", ":"), ensure_ascii=False)) over entries sorted by path.
        let d = content_sha256([("b", 1u64, "bb"), ("a", 2, "aa")].into_iter());
        let expect = sha256_hex(
            br#"[{"path":"a","sha256":"aa","size":2},{"path":"b","sha256":"bb","size":1}]"#,
        );
        assert_eq!(d, expect);
    }

    #[test]
    fn owners() {
        let root = vec!["user".to_string()];
        assert_eq!(owner_user(&root, "bob/x"), Some("bob"));
        assert_eq!(owner_user(&root, ""), None);
        let res = vec!["resources".to_string()];
        assert_eq!(owner_user(&res, "bob/x"), None);
    }
}
