//! Per-account configuration (issue #23 "Settings"): the explicit settings one account
//! overrides, stored in `<account>/_system/setting.json` (0.5.2's location), changed by a
//! three-state PATCH (absent: keep; value: set; `null`: remove; objects merge, arrays and
//! scalars replace), validated before anything is written.
//!
//! Reaching every instance: the document is part of the account's registry snapshot
//! (`registry::load`), and a change bumps the registry generation marker like a key change
//! does, so every instance applies it within `auth.refresh_interval_ms` (at once in strict
//! mode) through the AuthActor, which publishes it into [`AccountConfigs`]. Code that needs an
//! account's effective settings calls [`AccountConfigs::effective`].

mod cache;
mod schema;
pub mod stored;

use serde_json::{Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::registry::store::{read_doc, update_doc, Edit};
use crate::storage::registry::users::active_account;
use crate::storage::registry::OpCtx;
use crate::storage::Storage;

pub use cache::{AccountConfigs, ClusterDefaults, Effective};
pub use schema::{is_root_only_section, unsupported_section_reason};
pub use stored::{config_path, read_for_snapshot, StoredConfig};

/// The stored document of an active account (empty when there is none; 404 / 412 for a
/// missing account or one being deleted).
pub fn read(storage: &dyn Storage, account: &str) -> ServiceResult<StoredConfig> {
    active_account(storage, account)?;
    let (doc, _) = read_doc::<StoredConfig>(storage, &config_path(account)?)?;
    Ok(doc)
}

/// Check a PATCH body against the settings Longship has (before any storage is touched):
/// unknown fields 400, sections Longship cannot honour 501 with the reason, bad types 400.
pub fn validate_patch(patch: &Map<String, Value>) -> ServiceResult<()> {
    schema::validate_patch(patch)
}

/// Apply `patch` (already validated) to the stored document of `account` by compare-and-swap
/// and announce the change through the registry, so every instance applies it within the
/// auth refresh bound. Returns the document as stored afterwards.
pub fn patch(
    cx: &OpCtx<'_>,
    account: &str,
    patch: &Map<String, Value>,
) -> ServiceResult<StoredConfig> {
    schema::validate_patch(patch)?;
    active_account(cx.storage, account)?;
    let path = config_path(account)?;
    let (_, doc, _) = update_doc(cx.storage, &path, |doc: &mut StoredConfig| {
        let before = doc.clone();
        merge(doc, patch);
        schema::validate_document(doc)?;
        Ok(if *doc == before {
            Edit::Keep(())
        } else {
            Edit::Write(())
        })
    })?;
    // Announced even when nothing changed: a retry of a patch whose announcement was lost
    // (the writer died after its write) announces it. ACLs and groups travel in the same
    // snapshot, so the account is re-read whole.
    cx.announce_stored(account);
    Ok(doc)
}

/// The three-state merge of one PATCH into a document.
pub fn merge(doc: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                doc.remove(key);
            }
            Value::Object(child) => {
                if let Some(Value::Object(existing)) = doc.get_mut(key) {
                    merge(existing, child);
                } else {
                    let mut fresh = Map::new();
                    merge(&mut fresh, child);
                    // Removing fields of a section that is not there changes nothing; an
                    // explicitly empty object still creates the section.
                    if !fresh.is_empty() || child.is_empty() {
                        doc.insert(key.clone(), Value::Object(fresh));
                    }
                }
            }
            other => {
                doc.insert(key.clone(), other.clone());
            }
        }
    }
}

/// A stored document a PATCH may not show to a non-ROOT caller (model sections).
pub fn visible_to(doc: &StoredConfig, root: bool) -> StoredConfig {
    doc.iter()
        .filter(|(k, _)| root || !is_root_only_section(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn three_state_merge() {
        let mut doc = obj(json!({"acl": {"enabled": true, "hide_denied": true}, "x": [1]}));
        merge(
            &mut doc,
            &obj(json!({"acl": {"hide_denied": null}, "x": [2, 3]})),
        );
        assert_eq!(
            Value::Object(doc.clone()),
            json!({"acl": {"enabled": true}, "x": [2, 3]})
        );
        merge(&mut doc, &obj(json!({"audit": {"enabled": null}})));
        assert!(
            doc.get("audit").is_none(),
            "removing under a missing section is a no-op"
        );
        merge(&mut doc, &obj(json!({"audit": {}})));
        assert_eq!(doc["audit"], json!({}));
        merge(&mut doc, &obj(json!({"acl": null})));
        assert!(doc.get("acl").is_none());
    }
}
