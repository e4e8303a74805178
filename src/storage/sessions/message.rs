//! Messages and parts as clients send them (SE5/SE6) and as they are stored (spec §9.1).
//!
//! Input is validated and normalised here, on the HTTP side (no I/O), into the exact stored
//! JSON: ids and timestamps are stamped, URIs canonicalised, and a user message made only of
//! tool parts is split into one `tool_transport` message per part.

use serde_json::{Map, Value};

use crate::error::ServiceError;
use crate::identity::{validate_id, IdKind, Identity};
use crate::time;

use super::{id, uri};

/// Accepted `message_kind` values.
pub const MESSAGE_KINDS: &[&str] = &[
    "user_query",
    "assistant_step",
    "tool_transport",
    "checkpoint",
];

/// Largest batch of SE6.
pub const MAX_BATCH: usize = 100;

/// Location helper for validation errors.
fn at(loc: &[String], field: &str) -> Vec<String> {
    let mut v = loc.to_vec();
    if !field.is_empty() {
        v.push(field.to_string());
    }
    v
}

fn invalid(loc: Vec<String>, message: &str, kind: &str) -> ServiceError {
    let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
    ServiceError::validation(&refs, message, kind)
}

fn opt_string(
    obj: &Map<String, Value>,
    loc: &[String],
    field: &str,
) -> Result<Option<String>, ServiceError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(
            at(loc, field),
            "Input should be a valid string",
            "string_type",
        )),
    }
}

/// Validate one client message and turn it into the stored message(s).
pub fn parse(input: &Value, loc: &[String], who: &Identity) -> Result<Vec<Value>, ServiceError> {
    let Some(obj) = input.as_object() else {
        return Err(invalid(
            loc.to_vec(),
            "Input should be a valid dictionary",
            "dict_type",
        ));
    };
    let role = match obj.get("role") {
        None | Some(Value::Null) => {
            return Err(invalid(at(loc, "role"), "Field required", "missing"))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(invalid(
                at(loc, "role"),
                "Input should be a valid string",
                "string_type",
            ))
        }
    };
    let content = opt_string(obj, loc, "content")?;
    let raw_parts = match obj.get("parts") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => {
            return Err(invalid(
                at(loc, "parts"),
                "Input should be a valid list",
                "list_type",
            ))
        }
    };
    let parts: Vec<Value> = match (raw_parts, content) {
        (Some(items), _) => {
            let ploc = at(loc, "parts");
            items
                .iter()
                .enumerate()
                .map(|(i, p)| part(p, &at(&ploc, &i.to_string()), who))
                .collect::<Result<_, _>>()?
        }
        (None, Some(text)) => vec![serde_json::json!({"type": "text", "text": text})],
        (None, None) => {
            return Err(invalid(
                loc.to_vec(),
                "Value error, Either 'content' or 'parts' must be provided",
                "value_error",
            ))
        }
    };
    let created_at = opt_string(obj, loc, "created_at")?.unwrap_or_else(time::iso_micros_now);
    let peer_id = match opt_string(obj, loc, "peer_id")? {
        Some(p) if !p.trim().is_empty() => {
            let p = p.trim().to_string();
            validate_id(IdKind::Peer, &p)?;
            Some(p)
        }
        _ => None,
    };
    let turn_id = opt_string(obj, loc, "turn_id")?;
    let kind = opt_string(obj, loc, "message_kind")?;
    if let Some(k) = &kind {
        if !MESSAGE_KINDS.contains(&k.as_str()) {
            return Err(invalid(
                at(loc, "message_kind"),
                "Input should be 'user_query', 'assistant_step', 'tool_transport' or 'checkpoint'",
                "literal_error",
            ));
        }
    }
    let sources = match obj.get("source_message_ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(Value::Array(items.clone()))
        }
        Some(_) => {
            return Err(invalid(
                at(loc, "source_message_ids"),
                "Input should be a valid list of strings",
                "list_type",
            ))
        }
    };
    let build = |parts: Vec<Value>, kind: Option<&str>| {
        let mut m = Map::new();
        m.insert("id".into(), id::message_id().into());
        m.insert("role".into(), role.clone().into());
        m.insert("parts".into(), Value::Array(parts));
        m.insert("created_at".into(), created_at.clone().into());
        if let Some(p) = &peer_id {
            m.insert("peer_id".into(), p.clone().into());
        }
        if let Some(t) = &turn_id {
            m.insert("turn_id".into(), t.clone().into());
        }
        if let Some(k) = kind {
            m.insert("message_kind".into(), k.into());
        }
        if let Some(s) = &sources {
            m.insert("source_message_ids".into(), s.clone());
        }
        Value::Object(m)
    };
    let tool_only = parts.len() >= 2 && parts.iter().all(|p| p["type"] == "tool");
    if role == "user" && tool_only {
        return Ok(parts
            .into_iter()
            .map(|p| build(vec![p], Some("tool_transport")))
            .collect());
    }
    Ok(vec![build(parts, kind.as_deref())])
}

/// Normalise one part.
fn part(input: &Value, loc: &[String], who: &Identity) -> Result<Value, ServiceError> {
    let Some(obj) = input.as_object() else {
        return Err(invalid(
            loc.to_vec(),
            "Input should be a valid dictionary",
            "dict_type",
        ));
    };
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = Map::new();
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => {
            out.insert("type".into(), "text".into());
            out.insert("text".into(), s("text").into());
        }
        Some("context") => {
            let ctype = match obj.get("context_type").and_then(Value::as_str) {
                None | Some("") => "memory".to_string(),
                Some(t @ ("memory" | "resource" | "skill")) => t.to_string(),
                Some(_) => {
                    return Err(invalid(
                        at(loc, "context_type"),
                        "Input should be 'memory', 'resource' or 'skill'",
                        "literal_error",
                    ))
                }
            };
            out.insert("type".into(), "context".into());
            let u = s("uri");
            let u = if u.is_empty() {
                u
            } else {
                uri::canonical(&u, who)?
            };
            out.insert("uri".into(), u.into());
            out.insert("context_type".into(), ctype.into());
            out.insert("abstract".into(), s("abstract").into());
        }
        Some("image_url") => {
            let (url, detail) = match obj.get("image_url") {
                Some(Value::String(u)) => (u.clone(), None),
                Some(Value::Object(o)) => (
                    o.get("url")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    o.get("detail").and_then(Value::as_str).map(str::to_string),
                ),
                _ => (String::new(), None),
            };
            if url.trim().is_empty() {
                return Err(invalid(
                    at(loc, "image_url"),
                    "Value error, image_url part requires a non-empty URL",
                    "value_error",
                ));
            }
            let url = if url.trim_start().starts_with("viking://") {
                uri::canonical(&url, who)?
            } else {
                url
            };
            let mut img = Map::new();
            img.insert("url".into(), url.into());
            if let Some(d) = detail {
                img.insert("detail".into(), d.into());
            }
            out.insert("type".into(), "image_url".into());
            out.insert("image_url".into(), Value::Object(img));
        }
        Some("tool") => {
            out.insert("type".into(), "tool".into());
            // Known fields first in upstream order, then anything else the client sent
            // (0.5.2 output-externalisation fields and future ones are stored and echoed).
            for key in [
                "tool_id",
                "tool_name",
                "tool_uri",
                "skill_uri",
                "tool_status",
            ] {
                let mut v = s(key);
                if key == "tool_status" && v.is_empty() {
                    v = "pending".into();
                }
                if (key == "tool_uri" || key == "skill_uri") && !v.is_empty() {
                    v = uri::canonical(&v, who)?;
                }
                if !v.is_empty() {
                    out.insert(key.into(), v.into());
                }
            }
            for (k, v) in obj {
                if k == "type" || out.contains_key(k) || is_empty_optional(v) {
                    continue;
                }
                if [
                    "tool_id",
                    "tool_name",
                    "tool_uri",
                    "skill_uri",
                    "tool_status",
                ]
                .contains(&k.as_str())
                {
                    continue;
                }
                let v = match (k.as_str(), v) {
                    ("tool_output_storage_uri", Value::String(u)) => uri::canonical(u, who)?.into(),
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
        }
        _ => {
            // Unknown part types are kept as text so nothing the client sent is lost.
            let text = match obj.get("text") {
                Some(Value::String(t)) => t.clone(),
                _ => input.to_string(),
            };
            out.insert("type".into(), "text".into());
            out.insert("text".into(), text.into());
        }
    }
    Ok(Value::Object(out))
}

fn is_empty_optional(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bob() -> Identity {
        Identity {
            role: crate::identity::Role::User,
            account: "acme".into(),
            user: "bob".into(),
        }
    }

    fn loc() -> Vec<String> {
        vec!["body".to_string()]
    }

    #[test]
    fn content_and_parts() {
        let m = parse(
            &json!({"role": "user", "content": "hi", "peer_id": " p1 "}),
            &loc(),
            &bob(),
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["parts"], json!([{"type": "text", "text": "hi"}]));
        assert_eq!(m[0]["peer_id"], "p1");
        assert!(m[0]["id"].as_str().unwrap().starts_with("msg_"));
        assert!(m[0].get("turn_id").is_none());
        // parts win over content
        let m = parse(&json!({"role": "assistant", "content": "x", "parts": [{"type": "context", "uri": "viking://~/m"}]}), &loc(), &bob()).unwrap();
        assert_eq!(
            m[0]["parts"][0],
            json!({"type": "context", "uri": "viking://user/bob/m", "context_type": "memory", "abstract": ""})
        );
        let m = parse(
            &json!({"role": "user", "parts": [{"type": "weird", "a": 1}]}),
            &loc(),
            &bob(),
        )
        .unwrap();
        assert_eq!(m[0]["parts"][0]["type"], "text");
    }

    #[test]
    fn tool_only_user_message_is_split() {
        let m = parse(
            &json!({"role": "user", "turn_id": "t", "parts": [
                {"type": "tool", "tool_id": "a", "tool_output": "", "duration_ms": 3},
                {"type": "tool", "tool_id": "b", "tool_status": "completed"}]}),
            &loc(),
            &bob(),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["message_kind"], "tool_transport");
        assert_eq!(
            m[0]["parts"][0],
            json!({"type": "tool", "tool_id": "a", "tool_status": "pending", "duration_ms": 3})
        );
        assert_eq!(m[1]["parts"][0]["tool_status"], "completed");
        assert_ne!(m[0]["id"], m[1]["id"]);
    }

    #[test]
    fn rejections() {
        let e = parse(&json!({"content": "x"}), &loc(), &bob()).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid request parameters: body.role: Field required"
        );
        let e = parse(&json!({"role": "user"}), &loc(), &bob()).unwrap_err();
        assert!(e
            .message
            .contains("Either 'content' or 'parts' must be provided"));
        assert!(parse(&json!({"role": "user", "content": 5}), &loc(), &bob()).is_err());
        assert!(parse(
            &json!({"role": "user", "content": "x", "message_kind": "nope"}),
            &loc(),
            &bob()
        )
        .is_err());
        assert!(parse(
            &json!({"role": "user", "content": "x", "peer_id": "a/b"}),
            &loc(),
            &bob()
        )
        .is_err());
        let e = parse(
            &json!({"role": "user", "parts": [{"type": "image_url", "image_url": {"url": ""}}]}),
            &loc(),
            &bob(),
        )
        .unwrap_err();
        assert!(e
            .message
            .contains("image_url part requires a non-empty URL"));
    }
}
