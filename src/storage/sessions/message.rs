//! Messages and parts as clients send them (SE5/SE6) and as they are stored (spec §9.1).
//!
//! The bodies are typed ([`MessageInput`], [`MessageBatchBody`], the [`PartInput`] union): serde
//! decodes them in the handler's extractor, each failure at its location (`parts.1.text`).
//! [`build`] then applies the rules that need the caller (URIs canonicalised, `peer_id`
//! checked), stamps ids and timestamps, and splits a user message made only of tool parts into
//! one `tool_transport` message per part: the exact stored JSON.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::openapi::schema::{OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::decode::{
    self, field_error, field_error_at, opt_list, opt_string, strict_string, StrictString,
};
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

/// SE5's body, one message (0.5.2 `AddMessageRequest`: unknown keys ignored). `content` or
/// `parts` must be given; `parts` wins when both are.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct AddMessageBody {
    #[serde(deserialize_with = "strict_string")]
    role: String,
    #[serde(default, deserialize_with = "opt_string")]
    content: Option<String>,
    #[serde(default, deserialize_with = "opt_list")]
    parts: Option<Vec<PartInput>>,
    /// Kept as sent; now when absent.
    #[serde(default, deserialize_with = "opt_string")]
    created_at: Option<String>,
    /// Trimmed; blank means none.
    #[serde(default, deserialize_with = "opt_string")]
    peer_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    turn_id: Option<String>,
    /// `user_query`, `assistant_step`, `tool_transport` or `checkpoint`.
    #[serde(default, deserialize_with = "message_kind")]
    message_kind: Option<String>,
    #[serde(default, deserialize_with = "opt_list")]
    #[schema(value_type = Option<Vec<String>>)]
    source_message_ids: Option<Vec<StrictString>>,
}

/// A validated [`AddMessageBody`] (its model-level rule checked where it was decoded, so the
/// error names the message's location: `body` or `body.messages.<i>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "AddMessageBody")]
pub struct MessageInput(AddMessageBody);

impl TryFrom<AddMessageBody> for MessageInput {
    type Error = String;
    fn try_from(m: AddMessageBody) -> Result<Self, String> {
        if m.content.is_none() && m.parts.is_none() {
            return Err(decode::field_message(
                "value_error",
                "Value error, Either 'content' or 'parts' must be provided",
            ));
        }
        Ok(MessageInput(m))
    }
}

/// SE6's body (0.5.2 `BatchAddMessageRequest`: at most [`MAX_BATCH`] messages; unknown keys
/// ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct MessageBatchBody {
    #[serde(deserialize_with = "batch_messages")]
    #[schema(value_type = Vec<AddMessageBody>)]
    pub messages: Vec<MessageInput>,
}

fn batch_messages<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MessageInput>, D::Error> {
    let items: Vec<decode::Object<MessageInput>> = decode::list_at_most(d, MAX_BATCH)?;
    Ok(items.into_iter().map(|o| o.0).collect())
}

fn message_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let kind = opt_string(d)?;
    if kind.as_deref().is_some_and(|k| !MESSAGE_KINDS.contains(&k)) {
        return Err(field_error(
            "literal_error",
            "Input should be 'user_query', 'assistant_step', 'tool_transport' or 'checkpoint'",
        ));
    }
    Ok(kind)
}

/// `{"type": "text", "text": …}` (a part without `type` is text, as in 0.5.2).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TextPart {
    #[serde(default, deserialize_with = "opt_string")]
    text: Option<String>,
}

/// `{"type": "context", "uri", "context_type", "abstract"}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContextPart {
    /// A viking URI (canonicalised for the caller) or empty.
    #[serde(default, deserialize_with = "opt_string")]
    uri: Option<String>,
    /// `memory` (default), `resource` or `skill`.
    #[serde(default, deserialize_with = "context_type")]
    context_type: Option<String>,
    #[serde(default, rename = "abstract", deserialize_with = "opt_string")]
    summary: Option<String>,
}

fn context_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match opt_string(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(t @ ("memory" | "resource" | "skill")) => Ok(Some(t.to_string())),
        Some(_) => Err(field_error(
            "literal_error",
            "Input should be 'memory', 'resource' or 'skill'",
        )),
    }
}

/// `{"type": "image_url", "image_url": "<url>" | {"url", "detail"}}`; the URL must not be blank.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImagePart {
    #[serde(default)]
    #[schema(value_type = Object)]
    image_url: ImageUrl,
}

#[derive(Debug, Clone, Default)]
struct ImageUrl {
    url: String,
    detail: Option<String>,
}

#[derive(Deserialize)]
struct ImageUrlObject {
    #[serde(default, deserialize_with = "opt_string")]
    url: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    detail: Option<String>,
}

impl<'de> Deserialize<'de> for ImageUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Another JSON type is no URL at all, reported as a blank one (as 0.5.2 does).
        Ok(match Value::deserialize(d)? {
            Value::String(url) => ImageUrl { url, detail: None },
            Value::Object(o) => {
                let o: ImageUrlObject = decode::decode_nested(Value::Object(o))?;
                ImageUrl {
                    url: o.url.unwrap_or_default(),
                    detail: o.detail,
                }
            }
            _ => ImageUrl::default(),
        })
    }
}

/// `{"type": "tool", …}`: the fields below are strings; any other field (0.5.2's output
/// externalisation fields, future ones) is stored and echoed as sent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ToolPart {
    #[serde(default, deserialize_with = "opt_string")]
    tool_id: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    tool_name: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    tool_uri: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    skill_uri: Option<String>,
    /// `pending` when absent.
    #[serde(default, deserialize_with = "opt_string")]
    tool_status: Option<String>,
    #[serde(skip)]
    other: Map<String, Value>,
}

/// Tool-part fields with their own handling, in stored order.
const TOOL_FIELDS: [&str; 5] = [
    "tool_id",
    "tool_name",
    "tool_uri",
    "skill_uri",
    "tool_status",
];

/// One message part: 0.5.2's union tagged by `type`. Decoding reads the object, picks the
/// variant by its tag and decodes the rest as that variant, each failure located inside the
/// part (`parts.1.text`); a type 0.5.2 does not define is kept as text, as 0.5.2 does.
#[derive(Debug, Clone)]
pub enum PartInput {
    Text(TextPart),
    Context(ContextPart),
    ImageUrl(ImagePart),
    Tool(ToolPart),
    /// An unknown `type`: its `text` if it has one, else the part's JSON, as a text part.
    Other(Map<String, Value>),
}

impl<'de> Deserialize<'de> for PartInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Map<String, Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a dictionary")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Map::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.insert(k, v);
                }
                Ok(out)
            }
        }
        let obj: Map<String, Value> = d.deserialize_map(V).map_err(|e: D::Error| {
            if e.to_string().starts_with("invalid type") {
                field_error("dict_type", "Input should be a valid dictionary")
            } else {
                e
            }
        })?;
        let kind = match obj.get("type") {
            None | Some(Value::Null) => Some("text".to_string()),
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => None,
        };
        Ok(match kind.as_deref() {
            Some("text") => PartInput::Text(decode::decode_nested(Value::Object(obj))?),
            Some("context") => PartInput::Context(decode::decode_nested(Value::Object(obj))?),
            Some("image_url") => {
                let part: ImagePart = decode::decode_nested(Value::Object(obj))?;
                if part.image_url.url.trim().is_empty() {
                    return Err(field_error_at(
                        &["image_url"],
                        "value_error",
                        "Value error, image_url part requires a non-empty URL",
                    ));
                }
                PartInput::ImageUrl(part)
            }
            Some("tool") => {
                let other: Map<String, Value> = obj
                    .iter()
                    .filter(|(k, _)| *k != "type" && !TOOL_FIELDS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let mut part: ToolPart = decode::decode_nested(Value::Object(obj))?;
                part.other = other;
                PartInput::Tool(part)
            }
            _ => PartInput::Other(obj),
        })
    }
}

impl PartialSchema for PartInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(Ref::from_schema_name("TextPart"))
            .item(Ref::from_schema_name("ContextPart"))
            .item(Ref::from_schema_name("ImagePart"))
            .item(Ref::from_schema_name("ToolPart"))
            .description(Some(
                "A part, tagged by `type`: text (the default), context, image_url or tool",
            ))
            .into()
    }
}

impl ToSchema for PartInput {
    fn name() -> std::borrow::Cow<'static, str> {
        "Part".into()
    }
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push(("TextPart".into(), TextPart::schema()));
        out.push(("ContextPart".into(), ContextPart::schema()));
        out.push(("ImagePart".into(), ImagePart::schema()));
        out.push(("ToolPart".into(), ToolPart::schema()));
    }
}

/// The stored message(s) of one validated client message, for the caller `who`.
pub fn build(input: &MessageInput, who: &Identity) -> Result<Vec<Value>, ServiceError> {
    let m = &input.0;
    let parts: Vec<Value> = match (&m.parts, &m.content) {
        (Some(items), _) => items
            .iter()
            .map(|p| stored_part(p, who))
            .collect::<Result<_, _>>()?,
        (None, text) => {
            vec![serde_json::json!({"type": "text", "text": text.clone().unwrap_or_default()})]
        }
    };
    let created_at = m.created_at.clone().unwrap_or_else(time::iso_micros_now);
    let peer_id = match m.peer_id.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => {
            validate_id(IdKind::Peer, p)?;
            Some(p.to_string())
        }
        _ => None,
    };
    let sources: Option<Vec<Value>> = m
        .source_message_ids
        .as_ref()
        .map(|ids| ids.iter().map(|i| Value::String(i.0.clone())).collect());
    let stored = |parts: Vec<Value>, kind: Option<&str>| {
        let mut out = Map::new();
        out.insert("id".into(), id::message_id().into());
        out.insert("role".into(), m.role.clone().into());
        out.insert("parts".into(), Value::Array(parts));
        out.insert("created_at".into(), created_at.clone().into());
        if let Some(p) = &peer_id {
            out.insert("peer_id".into(), p.clone().into());
        }
        if let Some(t) = &m.turn_id {
            out.insert("turn_id".into(), t.clone().into());
        }
        if let Some(k) = kind {
            out.insert("message_kind".into(), k.into());
        }
        if let Some(s) = &sources {
            out.insert("source_message_ids".into(), Value::Array(s.clone()));
        }
        Value::Object(out)
    };
    let tool_only = parts.len() >= 2 && parts.iter().all(|p| p["type"] == "tool");
    if m.role == "user" && tool_only {
        return Ok(parts
            .into_iter()
            .map(|p| stored(vec![p], Some("tool_transport")))
            .collect());
    }
    Ok(vec![stored(parts, m.message_kind.as_deref())])
}

/// A URI a part names, canonicalised for the caller; empty stays empty.
fn canonical_or_empty(raw: Option<&str>, who: &Identity) -> Result<String, ServiceError> {
    match raw {
        None | Some("") => Ok(String::new()),
        Some(u) => uri::canonical(u, who),
    }
}

/// The stored form of one part.
fn stored_part(part: &PartInput, who: &Identity) -> Result<Value, ServiceError> {
    let mut out = Map::new();
    match part {
        PartInput::Text(t) => {
            out.insert("type".into(), "text".into());
            out.insert("text".into(), t.text.clone().unwrap_or_default().into());
        }
        PartInput::Context(c) => {
            out.insert("type".into(), "context".into());
            out.insert(
                "uri".into(),
                canonical_or_empty(c.uri.as_deref(), who)?.into(),
            );
            let ctype = c.context_type.as_deref().unwrap_or("memory");
            out.insert("context_type".into(), ctype.into());
            out.insert(
                "abstract".into(),
                c.summary.clone().unwrap_or_default().into(),
            );
        }
        PartInput::ImageUrl(i) => {
            let url = &i.image_url.url;
            let url = if url.trim_start().starts_with("viking://") {
                uri::canonical(url, who)?
            } else {
                url.clone()
            };
            let mut img = Map::new();
            img.insert("url".into(), url.into());
            if let Some(d) = &i.image_url.detail {
                img.insert("detail".into(), d.clone().into());
            }
            out.insert("type".into(), "image_url".into());
            out.insert("image_url".into(), Value::Object(img));
        }
        PartInput::Tool(t) => {
            out.insert("type".into(), "tool".into());
            // Known fields first in upstream order, then anything else the client sent.
            let known = [
                ("tool_id", &t.tool_id),
                ("tool_name", &t.tool_name),
                ("tool_uri", &t.tool_uri),
                ("skill_uri", &t.skill_uri),
                ("tool_status", &t.tool_status),
            ];
            for (key, value) in known {
                let mut v = value.clone().unwrap_or_default();
                if key == "tool_status" && v.is_empty() {
                    v = "pending".into();
                }
                if key == "tool_uri" || key == "skill_uri" {
                    v = canonical_or_empty(Some(&v), who)?;
                }
                if !v.is_empty() {
                    out.insert(key.into(), v.into());
                }
            }
            for (k, v) in &t.other {
                if is_empty_optional(v) {
                    continue;
                }
                let v = match (k.as_str(), v) {
                    ("tool_output_storage_uri", Value::String(u)) => uri::canonical(u, who)?.into(),
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
        }
        PartInput::Other(obj) => {
            let text = match obj.get("text") {
                Some(Value::String(t)) => t.clone(),
                _ => Value::Object(obj.clone()).to_string(),
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

/// Decode and build one message from JSON, as a request would.
#[cfg(test)]
pub fn parse(input: &Value, loc: &[String], who: &Identity) -> Result<Vec<Value>, ServiceError> {
    let loc: Vec<&str> = loc.iter().map(String::as_str).collect();
    let m: decode::Object<MessageInput> = decode::from_value(&loc, input.clone())?;
    build(&m.0, who)
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
