//! A user's own settings, `viking://user/{user}/settings/user_config.json` (0.5.2's file): the
//! memory policy (admin `users/{id}/settings`) and the add locations
//! (`/api/v1/user-settings/add-locations`). Read-modify-write by compare-and-swap; other keys
//! of the file are kept as found.

use serde_json::{Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::registry::store::{update_doc, Edit};
use crate::storage::{Storage, StorageError, StorePath};

pub fn path(account: &str, user: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("user")?
        .join(user)?
        .join_path("settings/user_config.json")?)
}

/// The stored file (empty when there is none or it is not a JSON object).
pub fn read(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<Map<String, Value>> {
    match storage.read(&path(account, user)?) {
        Ok(bytes) => Ok(serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default()),
        Err(StorageError::NotFound(_)) => Ok(Map::new()),
        Err(e) => Err(e.into()),
    }
}

/// The memory policy a session of `user` works under (0.5.2's resolution at commit and
/// extraction): the session's own `memory_policy` when it has one, else the user's stored
/// one (admin `users/{id}/settings`, read now, so a change applies to the next commit),
/// else `null` (every default).
pub fn effective_memory_policy(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    session_policy: &Value,
) -> ServiceResult<Value> {
    if !session_policy.is_null() {
        return Ok(session_policy.clone());
    }
    Ok(read(storage, account, user)?
        .remove("memory_policy")
        .unwrap_or(Value::Null))
}

/// Set (`Some`) or remove (`None`) one top-level key; returns the file as stored after.
pub fn set_key(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    key: &str,
    value: Option<Value>,
) -> ServiceResult<Map<String, Value>> {
    let (_, doc, _) = update_doc(storage, &path(account, user)?, |doc: &mut Value| {
        if !doc.is_object() {
            *doc = Value::Object(Map::new());
        }
        let Some(map) = doc.as_object_mut() else {
            return Err(ServiceError::internal("user config is not an object"));
        };
        let before = map.get(key).cloned();
        match &value {
            Some(v) => {
                map.insert(key.to_string(), v.clone());
            }
            None => {
                map.remove(key);
            }
        }
        Ok(if map.get(key) == before.as_ref() {
            Edit::Keep(())
        } else {
            Edit::Write(())
        })
    })?;
    Ok(doc.as_object().cloned().unwrap_or_default())
}

/// Set or remove fields of the object stored under `key` (the key goes when it empties), in
/// one compare-and-swap; returns the file as stored after.
pub fn merge_key(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    key: &str,
    changes: &[(String, Option<Value>)],
) -> ServiceResult<Map<String, Value>> {
    let (_, doc, _) = update_doc(storage, &path(account, user)?, |doc: &mut Value| {
        if !doc.is_object() {
            *doc = Value::Object(Map::new());
        }
        let Some(map) = doc.as_object_mut() else {
            return Err(ServiceError::internal("user config is not an object"));
        };
        let before = map.get(key).cloned();
        let mut obj = before
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (field, value) in changes {
            match value {
                Some(v) => obj.insert(field.clone(), v.clone()),
                None => obj.remove(field),
            };
        }
        if obj.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), Value::Object(obj));
        }
        Ok(if map.get(key) == before.as_ref() {
            Edit::Keep(())
        } else {
            Edit::Write(())
        })
    })?;
    Ok(doc.as_object().cloned().unwrap_or_default())
}
