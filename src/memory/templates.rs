//! Account memory templates (0.5.2's `/admin/accounts/{id}/memory-templates`): an account may
//! rewrite what the model reads about a memory type — its description, the descriptions of
//! the fields 0.5.2 lets it edit, and (for `events`) the content template. Everything else is
//! locked: a value may be sent back unchanged (so GET effective → PUT works) but not changed.
//! Overrides live in `<account>/_system/memory/templates/<type>.json` (compare-and-swap
//! writes); DELETE goes back to the default. Existing memories are never rewritten.

use serde_json::{json, Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

use super::types::{self, MemoryType, Mode};

/// Types whose template an account may edit, and the fields whose descriptions it may edit
/// (0.5.2's list, for the types Longship extracts).
pub const EDITABLE: &[(&str, &[&str])] = &[
    ("profile", &["content"]),
    ("events", &["event_name", "summary"]),
    ("preferences", &["topic", "content"]),
    ("entities", &["category", "name", "content"]),
    ("soul", &["core_truths", "boundaries", "vibe", "continuity"]),
    (
        "identity",
        &[
            "creature",
            "name",
            "vibe",
            "avatar",
            "emoji",
            "introduction",
        ],
    ),
];

/// Types whose content template is editable.
const CONTENT_TEMPLATE_EDITABLE: &[&str] = &["events"];
const MAX_DESCRIPTION_CHARS: usize = 50_000;
const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

fn path(account: &str, memory_type: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("memory")?
        .join("templates")?
        .join(&format!("{memory_type}.json"))?)
}

fn editable_fields(memory_type: &str) -> ServiceResult<&'static [&'static str]> {
    EDITABLE
        .iter()
        .find(|(t, _)| *t == memory_type)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            ServiceError::not_found(
                "memory_template",
                memory_type,
                format!("Memory template not found: {memory_type}"),
            )
        })
}

/// A type as template data (0.5.2's vocabulary).
fn data(t: &MemoryType) -> Value {
    json!({
        "memory_type": t.name,
        "description": t.description,
        "directory": format!("viking://user/{{{{ user_space }}}}/{}", t.directory),
        "filename_template": t.filename_template,
        "content_template": t.content_template,
        "enabled": true,
        "peer_enabled": t.peer_enabled,
        "operation_mode": if t.mode == Mode::AddOnly { "add_only" } else { "upsert" },
        "fields": t.fields.iter().map(|f| {
            let mut v = json!({
                "name": f.name, "type": "string", "description": f.description,
                "merge_op": f.merge.as_str(),
            });
            if let Some(init) = f.init_value {
                v["init_value"] = json!(init);
            }
            v
        }).collect::<Vec<_>>(),
    })
}

fn default_type(memory_type: &str) -> ServiceResult<MemoryType> {
    editable_fields(memory_type)?;
    types::builtin()
        .into_iter()
        .find(|t| t.name == memory_type)
        .ok_or_else(|| ServiceError::internal(format!("no built-in type {memory_type}")))
}

/// The stored override of one type, if any.
fn read_custom(
    storage: &dyn Storage,
    account: &str,
    memory_type: &str,
) -> ServiceResult<Option<Value>> {
    match storage.read(&path(account, memory_type)?) {
        Ok(d) => Ok(serde_json::from_slice(&d).ok()),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn result(account: &str, memory_type: &str, custom: Option<Value>) -> ServiceResult<Value> {
    let defaults = data(&default_type(memory_type)?);
    let (status, mut effective) = match custom {
        Some(c) => ("custom", c),
        None => ("system_default", defaults.clone()),
    };
    let updated_at = effective
        .as_object_mut()
        .and_then(|o| o.remove("_updated_at"))
        .unwrap_or(Value::Null);
    Ok(json!({
        "account_id": account, "memory_type": memory_type, "status": status,
        "updated_at": updated_at, "defaults": defaults, "effective": effective,
    }))
}

pub fn get(storage: &dyn Storage, account: &str, memory_type: &str) -> ServiceResult<Value> {
    editable_fields(memory_type)?;
    result(
        account,
        memory_type,
        read_custom(storage, account, memory_type)?,
    )
}

pub fn list(storage: &dyn Storage, account: &str) -> ServiceResult<Value> {
    let mut out = Vec::new();
    for (t, _) in EDITABLE {
        let mut r = result(account, t, read_custom(storage, account, t)?)?;
        if let Some(o) = r.as_object_mut() {
            o.remove("account_id");
        }
        out.push(r);
    }
    Ok(json!({"account_id": account, "templates": out}))
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid_argument(message)
}

fn apply_values(
    target: &mut Map<String, Value>,
    supplied: &Map<String, Value>,
    editable: &[&str],
    at: &str,
) -> ServiceResult<()> {
    for (k, v) in supplied {
        let loc = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        let Some(current) = target.get(k) else {
            return Err(bad(format!("Unknown configuration field: {loc}")));
        };
        if editable.contains(&k.as_str()) {
            let Some(text) = v.as_str().filter(|t| !t.trim().is_empty()) else {
                return Err(bad(format!("{loc} must be a nonempty string")));
            };
            if k == "description" && text.chars().count() > MAX_DESCRIPTION_CHARS {
                return Err(bad(format!(
                    "{loc} must not exceed 50000 Unicode characters"
                )));
            }
            if k == "content_template" {
                if text.len() > MAX_TEMPLATE_BYTES {
                    return Err(bad(format!(
                        "{loc} must not exceed {MAX_TEMPLATE_BYTES} bytes"
                    )));
                }
                let env = minijinja::Environment::new();
                env.template_from_str(text)
                    .map_err(|e| bad(format!("{loc} is not a valid template: {e}")))?;
            }
            target.insert(k.clone(), v.clone());
        } else if current != v {
            return Err(bad(format!(
                "{loc} is locked and must match the default template"
            )));
        }
    }
    Ok(())
}

/// PUT: the defaults with the supplied editable values; `None` (DELETE) removes the override.
pub fn put(
    storage: &dyn Storage,
    account: &str,
    memory_type: &str,
    body: Option<&Value>,
) -> ServiceResult<Value> {
    let fields_editable = editable_fields(memory_type)?;
    let p = path(account, memory_type)?;
    let Some(body) = body else {
        crate::storage::remove_if_exists(storage, &p, false)?;
        return result(account, memory_type, None);
    };
    let Some(supplied) = body.as_object() else {
        return Err(bad("the body must be a JSON object"));
    };
    let defaults = data(&default_type(memory_type)?);
    let mut out = defaults.as_object().cloned().unwrap_or_default();
    let mut editable = vec!["description"];
    if CONTENT_TEMPLATE_EDITABLE.contains(&memory_type) {
        editable.push("content_template");
    }
    let top: Map<String, Value> = supplied
        .iter()
        .filter(|(k, _)| *k != "fields")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    apply_values(&mut out, &top, &editable, "")?;
    if let Some(fields) = supplied.get("fields") {
        let Some(items) = fields.as_array() else {
            return Err(bad("fields must be a list"));
        };
        let mut current: Vec<Value> = out["fields"].as_array().cloned().unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for item in items {
            let Some((obj, name)) = item
                .as_object()
                .and_then(|o| o.get("name").and_then(Value::as_str).map(|n| (o, n)))
            else {
                return Err(bad(
                    "Each fields entry must identify an existing field by name",
                ));
            };
            let Some(slot) = current.iter_mut().find(|f| f["name"] == name) else {
                return Err(bad(format!("Unknown template field: fields.{name}")));
            };
            if !seen.insert(name.to_string()) {
                return Err(bad(format!("Duplicate template field: fields.{name}")));
            }
            let editable: &[&str] = if fields_editable.contains(&name) {
                &["description"]
            } else {
                &[]
            };
            if let Some(target) = slot.as_object_mut() {
                apply_values(target, obj, editable, &format!("fields.{name}"))?;
            }
        }
        out.insert("fields".into(), Value::Array(current));
    }
    out.insert("_updated_at".into(), json!(crate::time::iso_micros_now()));
    let bytes =
        serde_json::to_vec_pretty(&Value::Object(out.clone())).map_err(ServiceError::internal)?;
    // The new override replaces whatever is stored (last writer wins, as 0.5.2).
    storage.write(&p, &bytes)?;
    result(account, memory_type, Some(Value::Object(out)))
}

/// The built-in types with the account's overrides applied (what extraction uses).
pub fn effective_types(storage: &dyn Storage, account: &str) -> ServiceResult<Vec<MemoryType>> {
    let mut out = types::builtin();
    for t in out.iter_mut() {
        if editable_fields(t.name).is_err() {
            continue;
        }
        let Some(custom) = read_custom(storage, account, t.name)? else {
            continue;
        };
        if let Some(d) = custom["description"].as_str() {
            t.description = d.to_string();
        }
        if CONTENT_TEMPLATE_EDITABLE.contains(&t.name) {
            if let Some(c) = custom["content_template"].as_str() {
                t.content_template = Some(c.to_string());
            }
        }
        for f in custom["fields"].as_array().into_iter().flatten() {
            if let (Some(name), Some(d)) = (f["name"].as_str(), f["description"].as_str()) {
                if let Some(field) = t.fields.iter_mut().find(|x| x.name == name) {
                    field.description = d.to_string();
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn put_get_delete() {
        let d = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(d.path()).unwrap();
        let g = get(&st, "acme", "preferences").unwrap();
        assert_eq!(g["status"], "system_default");
        assert!(get(&st, "acme", "cases").is_err());
        assert_eq!(
            get(&st, "acme", "soul").unwrap()["status"],
            "system_default"
        );
        let body = json!({"description": "Only food preferences.",
            "fields": [{"name": "topic", "description": "The dish."}]});
        let r = put(&st, "acme", "preferences", Some(&body)).unwrap();
        assert_eq!(r["status"], "custom");
        assert_eq!(r["effective"]["description"], "Only food preferences.");
        let t = effective_types(&st, "acme").unwrap();
        let prefs = t.iter().find(|t| t.name == "preferences").unwrap();
        assert_eq!(prefs.description, "Only food preferences.");
        assert_eq!(prefs.field("topic").unwrap().description, "The dish.");
        // Locked values: unchanged is fine, changed is refused.
        let same = json!({"filename_template": "{{ user|lower }}/{{ topic|lower }}.md"});
        assert!(put(&st, "acme", "preferences", Some(&same)).is_ok());
        assert!(put(
            &st,
            "acme",
            "preferences",
            Some(&json!({"filename_template": "x.md"}))
        )
        .is_err());
        assert!(put(
            &st,
            "acme",
            "preferences",
            Some(&json!({"content_template": "x"}))
        )
        .is_err());
        assert!(put(
            &st,
            "acme",
            "preferences",
            Some(&json!({"fields": [{"name": "user", "description": "x"}]}))
        )
        .is_err());
        assert!(put(
            &st,
            "acme",
            "events",
            Some(&json!({"content_template": "{% for %}"}))
        )
        .is_err());
        assert!(put(
            &st,
            "acme",
            "events",
            Some(&json!({"content_template": "When: {{ summary }}"}))
        )
        .is_ok());
        let r = put(&st, "acme", "preferences", None).unwrap();
        assert_eq!(r["status"], "system_default");
        assert_eq!(
            list(&st, "acme").unwrap()["templates"]
                .as_array()
                .unwrap()
                .len(),
            6
        );
    }
}
