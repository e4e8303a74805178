//! Which account settings exist, their types and bounds. Longship acts on `acl.enabled`,
//! `acl.hide_denied` (a Longship extension), `audit.enabled` and the per-account `memory.*`
//! extraction settings; 0.5.2's model sections it cannot honour answer 501 with the reason.

use serde_json::{Map, Value};

use crate::error::{ServiceError, ServiceResult};

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    /// An integer within `min..=max`.
    Int(u64, u64),
}

/// (section, field, kind): every field an account may set.
const FIELDS: &[(&str, &str, Kind)] = &[
    ("acl", "enabled", Kind::Bool),
    ("acl", "hide_denied", Kind::Bool),
    ("audit", "enabled", Kind::Bool),
    ("memory", "max_input_tokens", Kind::Int(256, 1_000_000)),
    ("memory", "candidates", Kind::Int(0, 64)),
    ("memory", "repair_attempts", Kind::Int(0, 10)),
    ("memory", "backlog_limit", Kind::Int(1, 1_000_000)),
];

/// Sections only ROOT may change (or see) in an account's configuration, as in 0.5.2.
const ROOT_ONLY: &[&str] = &["vlm", "query_planner", "embedding", "vectordb"];

pub fn is_root_only_section(section: &str) -> bool {
    ROOT_ONLY.contains(&section)
}

/// Why a 0.5.2 section Longship knows cannot be set per account (answered 501).
pub fn unsupported_section_reason(section: &str) -> Option<&'static str> {
    Some(match section {
        "embedding" | "vectordb" => {
            "a per-account embedding model or vector store would put two vector spaces in the \
             one shared index; Longship uses the cluster's [embedding] for every account"
        }
        "vlm" | "query_planner" => {
            "Longship uses the cluster's one chat model ([vlm] in every instance's \
             configuration); per-account models are not supported"
        }
        "agent_evolution" => "Longship has no agent evolution",
        "feishu" | "github" => "Longship has no Feishu or GitHub connectors",
        _ => return None,
    })
}

fn not_modifiable(path: &str) -> ServiceError {
    ServiceError::invalid_argument(format!(
        "field is not modifiable by the config API (at '{path}')"
    ))
}

fn check_value(section: &str, field: &str, kind: Kind, value: &Value) -> ServiceResult<()> {
    let ok = match kind {
        Kind::Bool => value.is_boolean(),
        Kind::Int(min, max) => value.as_u64().is_some_and(|n| (min..=max).contains(&n)),
    };
    if ok {
        return Ok(());
    }
    let want = match kind {
        Kind::Bool => "a boolean".to_string(),
        Kind::Int(min, max) => format!("an integer from {min} to {max}"),
    };
    Err(ServiceError::invalid_argument(format!(
        "{section}.{field} must be {want}"
    )))
}

/// A PATCH body: every path must be a known field (or `null` to remove a whole section).
pub fn validate_patch(patch: &Map<String, Value>) -> ServiceResult<()> {
    for (section, value) in patch {
        if let Some(reason) = unsupported_section_reason(section) {
            return Err(ServiceError::unimplemented(format!(
                "{section} cannot be set per account: {reason}"
            )));
        }
        if !FIELDS.iter().any(|(s, _, _)| s == section) {
            return Err(not_modifiable(section));
        }
        let fields = match value {
            Value::Null => continue,
            Value::Object(fields) => fields,
            _ => {
                return Err(ServiceError::invalid_argument(format!(
                    "{section} must be an object"
                )))
            }
        };
        for (field, v) in fields {
            let Some((_, _, kind)) = FIELDS.iter().find(|(s, f, _)| s == section && f == field)
            else {
                return Err(not_modifiable(&format!("{section}.{field}")));
            };
            if !v.is_null() {
                check_value(section, field, *kind, v)?;
            }
        }
    }
    Ok(())
}

/// A merged document: the sections Longship knows have valid values (others are kept as
/// found, e.g. sections an OpenViking deployment wrote).
pub fn validate_document(doc: &Map<String, Value>) -> ServiceResult<()> {
    for (section, field, kind) in FIELDS {
        if let Some(v) = doc.get(*section).and_then(|s| s.get(*field)) {
            check_value(section, field, *kind, v)?;
        }
    }
    Ok(())
}

/// A field of a stored document, if present and valid (a bad stored value counts as absent).
pub fn stored_bool(doc: &Map<String, Value>, section: &str, field: &str) -> Option<bool> {
    doc.get(section)?.get(field)?.as_bool()
}

pub fn stored_int(doc: &Map<String, Value>, section: &str, field: &str) -> Option<u64> {
    let (_, _, kind) = FIELDS
        .iter()
        .find(|(s, f, _)| *s == section && *f == field)?;
    let n = doc.get(section)?.get(field)?.as_u64()?;
    match kind {
        Kind::Int(min, max) if (*min..=*max).contains(&n) => Some(n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn check(v: Value) -> ServiceResult<()> {
        validate_patch(v.as_object().unwrap())
    }

    #[test]
    fn patch_paths_and_types() {
        assert!(check(json!({"acl": {"enabled": true, "hide_denied": null}})).is_ok());
        assert!(check(json!({"acl": null, "memory": {"candidates": 4}})).is_ok());
        let e = check(json!({"acl": {"level": 1}})).unwrap_err();
        assert!(e.message.contains("'acl.level'"), "{}", e.message);
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(check(json!({"nope": {}})).is_err());
        assert!(check(json!({"acl": {"enabled": "yes"}})).is_err());
        assert!(check(json!({"acl": true})).is_err());
        assert!(check(json!({"memory": {"candidates": 65}})).is_err());
        assert!(check(json!({"memory": {"max_input_tokens": -1}})).is_err());
        let e = check(json!({"embedding": {"dense": {}}})).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unimplemented);
        assert!(e.message.contains("vector spaces"), "{}", e.message);
    }
}
