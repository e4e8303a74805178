//! Longship's backup extension: the account's `viking://agent/skills` tree travels inline in
//! the manifest under [`super::format::SKILLS_EXTENSION`] (0.5.2 reads no unknown manifest
//! key and accepts no member outside `resources`/`user`, so this is the one place it ignores).
//! Each item is `{"path": rel, "data_base64": …}`; the total is bounded.

use base64::Engine;
use serde_json::{json, Value};

use super::format::check_rel_path;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::{is_internal_name, Storage, StorageError, StorePath};

/// The most skill bytes a backup carries inline.
pub const MAX_SKILL_BYTES: u64 = 64 * 1024 * 1024;

/// Every file under `<account>/agent/skills`, as manifest items.
pub fn collect(storage: &dyn Storage, account_root: &VikingUri) -> ServiceResult<Vec<Value>> {
    let root = account_root.child("agent")?.child("skills")?;
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![(root.store_path().clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let children = match storage.list(&dir) {
            Ok(c) => c,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for child in children {
            if is_internal_name(&child.name) {
                continue;
            }
            let path = dir.join(&child.name)?;
            let child_rel = if rel.is_empty() {
                child.name.clone()
            } else {
                format!("{rel}/{}", child.name)
            };
            if child.meta.is_dir() {
                stack.push((path, child_rel));
                continue;
            }
            total += child.meta.size;
            if total > MAX_SKILL_BYTES {
                return Err(ServiceError::invalid_argument(format!(
                    "the account's skills exceed {MAX_SKILL_BYTES} bytes; back them up separately"
                )));
            }
            let data = storage.read(&path)?;
            out.push(json!({
                "path": child_rel,
                "data_base64": base64::engine::general_purpose::STANDARD.encode(&data),
            }));
        }
    }
    Ok(out)
}

/// Write the items under the staged directory `dest`.
pub fn stage(storage: &dyn Storage, items: &[Value], dest: &StorePath) -> ServiceResult<()> {
    let bad =
        || ServiceError::invalid_argument("Invalid longship_agent_skills item in ovpack manifest");
    let mut total = 0u64;
    for item in items {
        let rel = item
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(bad)?;
        check_rel_path(rel)?;
        let data = item
            .get("data_base64")
            .and_then(Value::as_str)
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .ok_or_else(bad)?;
        total += data.len() as u64;
        if total > MAX_SKILL_BYTES {
            return Err(bad());
        }
        let mut path = dest.clone();
        for seg in rel.split('/') {
            if is_internal_name(seg) {
                return Err(bad());
            }
            path = path.join(seg)?;
        }
        storage.write_staged(&path, &data)?;
    }
    Ok(())
}
