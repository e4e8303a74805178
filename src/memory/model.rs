//! Asking the chat model for memory operations and judging its answer. The request asks for
//! structured output (see `ChatSession::complete_structured`); every answer is checked
//! against Longship's own schema here, whatever the provider promised. An invalid answer gets
//! a bounded number of repair turns (the model is told what was wrong). Each call's outcome is
//! counted by kind.

use serde_json::{json, Map, Value};

use crate::ingest::chat::{ChatFailure, ChatSession};

use super::types::{MemoryType, MergeOp, Shape};

/// How one model call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutcomeKind {
    /// Valid operations, at least one.
    Ok,
    /// A valid answer with nothing to remember.
    Empty,
    /// Not JSON (prose, truncated output, ...).
    ParseError,
    /// JSON, but not the operations Longship asked for.
    SchemaError,
    /// The provider failed (HTTP errors, unreachable, unreadable answers).
    ProviderError,
    /// The provider did not answer in time.
    Timeout,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 6] = [
        OutcomeKind::Ok,
        OutcomeKind::Empty,
        OutcomeKind::ParseError,
        OutcomeKind::SchemaError,
        OutcomeKind::ProviderError,
        OutcomeKind::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Empty => "empty",
            OutcomeKind::ParseError => "parse_error",
            OutcomeKind::SchemaError => "schema_error",
            OutcomeKind::ProviderError => "provider_error",
            OutcomeKind::Timeout => "timeout",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One operation the model asked for (validated).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Operation {
    pub op: String,
    pub memory_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The peer the memory is about (0.5.2's `peer_id`); `None` = the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
    /// Field values: strings, or `{"blocks": [...]}` on a patch field.
    #[serde(default)]
    pub fields: Map<String, Value>,
}

/// A memory shown to the model as a merge candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub uri: String,
    pub memory_type: String,
    pub body: String,
}

/// The result of asking about one piece of conversation.
#[derive(Debug, Default)]
pub struct Asked {
    pub operations: Vec<Operation>,
    /// Outcome of every call made (first try and repairs).
    pub calls: Vec<OutcomeKind>,
    /// Why the last failing call failed.
    pub last_error: Option<String>,
    pub tokens: u64,
    /// The input and output parts of `tokens`.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The provider failed or timed out: the piece was not judged at all (retry later).
    pub unavailable: Option<ChatFailure>,
}

/// Most operations one answer may hold, as the schema tells the provider: with no bound, a
/// small model under a grammar keeps listing operations until `max_tokens` cuts it off inside
/// the JSON (gemma3-270m did on every call). More than this per piece is never needed.
const SCHEMA_MAX_OPERATIONS: u64 = 8;
/// Character bounds the schema puts on values, for the same reason: a grammar-bound model that
/// never ends a string never closes the object.
const SCHEMA_MAX_SHORT: u64 = 300;
const SCHEMA_MAX_TEXT: u64 = 2000;
const SCHEMA_MAX_URI: u64 = 512;
const SCHEMA_MAX_BLOCKS: u64 = 8;

/// The JSON schema of an answer (sent to providers that accept one): one variant per memory
/// type naming exactly that type's fields, every array and string bounded and no other keys,
/// so a grammar-constrained provider can only produce a closed object of known fields. The
/// answer is still validated by [`judge`]; the schema only keeps weak models on the rails.
pub fn answer_schema(types: &[MemoryType], peers: &[String]) -> Value {
    let text = |max: u64| json!({"type": "string", "maxLength": max});
    let block = json!({"type": "object", "properties": {
        "search": text(SCHEMA_MAX_TEXT), "replace": text(SCHEMA_MAX_TEXT),
        "delete": text(SCHEMA_MAX_TEXT)}, "additionalProperties": false});
    let patch_value = json!({"anyOf": [
        text(SCHEMA_MAX_TEXT),
        {"type": "object",
         "properties": {"blocks": {"type": "array", "items": block,
                                   "maxItems": SCHEMA_MAX_BLOCKS}},
         "required": ["blocks"], "additionalProperties": false}
    ]});
    let variants: Vec<Value> = types
        .iter()
        .map(|t| {
            let fields: Map<String, Value> = t
                .fields
                .iter()
                .map(|f| {
                    let value = match (f.merge, f.shape) {
                        (MergeOp::Patch, _) => patch_value.clone(),
                        (_, Shape::Lines) => text(SCHEMA_MAX_TEXT),
                        (_, Shape::Scalar) => text(SCHEMA_MAX_SHORT),
                    };
                    (f.name.to_string(), value)
                })
                .collect();
            let mut variant = json!({
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": ["add", "update", "delete", "noop"]},
                    "memory_type": {"type": "string", "enum": [t.name]},
                    "uri": text(SCHEMA_MAX_URI),
                    "fields": {"type": "object", "properties": fields,
                               "additionalProperties": false}
                },
                "required": ["op", "memory_type"],
                "additionalProperties": false
            });
            if !peers.is_empty() {
                variant["properties"]["peer_id"] = json!({"type": "string", "enum": peers});
            }
            variant
        })
        .collect();
    json!({
        "type": "object",
        "properties": {
            "operations": {"type": "array", "items": {"anyOf": variants},
                           "maxItems": SCHEMA_MAX_OPERATIONS}
        },
        "required": ["operations"],
        "additionalProperties": false
    })
}

fn instructions(types: &[MemoryType], peers: &[String]) -> String {
    let mut s = String::from(
        "You maintain a user's long-term memory. Read the conversation and decide what is worth \
         remembering across future conversations, by memory type below. Reply with one JSON \
         object and nothing else: {\"operations\": [...]}. Each operation is \
         {\"op\": \"add\"|\"update\"|\"delete\"|\"noop\", \"memory_type\": <type>, \
         \"uri\": <only for update/delete: the uri of an existing memory listed below>, \
         \"fields\": {<field>: <string>}}. Use \"update\" to add new facts to an existing \
         memory, \"delete\" when the conversation shows an existing memory is wrong, \"noop\" \
         when an existing memory already says it. Facts the assistant merely repeated from \
         existing memories are not new. Nothing worth remembering: {\"operations\": []}.\n\
         A field value is a string. To change part of an existing memory, a field marked \
         \"patch\" may instead be {\"blocks\": [{\"search\": <exact stored text>, \
         \"replace\": <new text>} or {\"delete\": <exact stored lines>}]}. A plain string on a \
         Markdown field adds its lines; a line '- <Key>: <value>' replaces the stored line with \
         the same key.\n",
    );
    if !peers.is_empty() {
        s.push_str(&format!(
            "Messages marked (peer <id>) come from another person in the conversation. A memory \
             about one of them carries \"peer_id\": <id> (one of: {}); a memory about the user \
             has no peer_id. Events belong to whoever wrote the messages in their ranges.\n",
            peers.join(", ")
        ));
    }
    s.push_str("\nMemory types:\n");
    for t in types {
        s.push_str(&format!("\n## {}\n{}\nFields:\n", t.name, t.description));
        for f in &t.fields {
            s.push_str(&format!(
                "- {} ({}): {}\n",
                f.name,
                f.merge.as_str(),
                f.description
            ));
        }
    }
    s
}

fn user_prompt(conversation: &str, candidates: &[Candidate], today: &str) -> String {
    let mut s = format!("Today is {today}.\n\nExisting memories that may be related:\n");
    if candidates.is_empty() {
        s.push_str("(none)\n");
    }
    for c in candidates {
        s.push_str(&format!("\n[{}] {}\n{}\n", c.memory_type, c.uri, c.body));
    }
    s.push_str("\nConversation (index, role, text):\n");
    s.push_str(conversation);
    s
}

/// The text between the first `{` and the last `}` (models often wrap JSON in prose or code
/// fences).
fn json_part(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

/// Parse and validate one answer.
pub fn judge(
    text: &str,
    types: &[MemoryType],
    candidates: &[Candidate],
) -> Result<Vec<Operation>, (OutcomeKind, String)> {
    let Some(part) = json_part(text) else {
        return Err((
            OutcomeKind::ParseError,
            "the answer contains no JSON object".into(),
        ));
    };
    let value: Value = serde_json::from_str(part).map_err(|e| {
        (
            OutcomeKind::ParseError,
            format!("the answer is not valid JSON: {e}"),
        )
    })?;
    let schema = |m: String| (OutcomeKind::SchemaError, m);
    let Some(ops) = value.get("operations").and_then(Value::as_array) else {
        return Err(schema("the object has no \"operations\" array".into()));
    };
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let Some(obj) = op.as_object() else {
            return Err(schema(format!("operations[{i}] is not an object")));
        };
        let kind = obj.get("op").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "add" | "update" | "delete" | "noop") {
            return Err(schema(format!(
                "operations[{i}].op must be add, update, delete or noop"
            )));
        }
        let type_name = obj.get("memory_type").and_then(Value::as_str).unwrap_or("");
        let Some(t) = types.iter().find(|t| t.name == type_name) else {
            return Err(schema(format!(
                "operations[{i}].memory_type \"{type_name}\" is not one of the listed types"
            )));
        };
        let fields = match obj.get("fields") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(f)) => f.clone(),
            Some(_) => return Err(schema(format!("operations[{i}].fields must be an object"))),
        };
        let mut clean = Map::new();
        let mut peer_id = match obj.get("peer_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p.trim().is_empty() => None,
            Some(Value::String(p)) => Some(p.trim().to_string()),
            Some(_) => return Err(schema(format!("operations[{i}].peer_id must be a string"))),
        };
        for (k, v) in fields {
            if k == "peer_id" && peer_id.is_none() {
                peer_id = v
                    .as_str()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string);
                continue;
            }
            let Some(field) = t.field(&k) else {
                continue; // unknown fields are dropped, not fatal
            };
            if let Value::Object(patch) = &v {
                if field.merge != super::types::MergeOp::Patch {
                    return Err(schema(format!(
                        "operations[{i}].fields.{k}: blocks are only for patch fields"
                    )));
                }
                check_blocks(patch)
                    .map_err(|m| schema(format!("operations[{i}].fields.{k}: {m}")))?;
                clean.insert(k, v);
                continue;
            }
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Array(items) => items
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => {
                    return Err(schema(format!(
                        "operations[{i}].fields.{k} must be a string"
                    )))
                }
            };
            clean.insert(k, Value::String(s));
        }
        let uri = obj.get("uri").and_then(Value::as_str).map(str::to_string);
        match kind {
            "delete" => {
                let known = uri
                    .as_deref()
                    .is_some_and(|u| candidates.iter().any(|c| c.uri == u));
                if !known {
                    return Err(schema(format!(
                        "operations[{i}]: delete needs the uri of a listed existing memory"
                    )));
                }
            }
            "add" | "update" => {
                let by_candidate = kind == "update"
                    && uri
                        .as_deref()
                        .is_some_and(|u| candidates.iter().any(|c| c.uri == u));
                let required = if by_candidate {
                    vec![]
                } else {
                    t.required_fields()
                };
                for r in required {
                    let given = match clean.get(r) {
                        Some(Value::String(s)) => !s.trim().is_empty(),
                        Some(Value::Object(_)) => true,
                        _ => false,
                    };
                    if !given {
                        return Err(schema(format!(
                            "operations[{i}].fields.{r} is required for {type_name}"
                        )));
                    }
                }
            }
            _ => {}
        }
        out.push(Operation {
            op: kind.to_string(),
            memory_type: type_name.to_string(),
            uri,
            peer_id,
            fields: clean,
        });
    }
    Ok(out)
}

/// `{"blocks": [...]}`: each block `{search, replace}` or `{delete}`, texts non-empty.
fn check_blocks(patch: &Map<String, Value>) -> Result<(), String> {
    let Some(blocks) = patch.get("blocks").and_then(Value::as_array) else {
        return Err("an object value must be {\"blocks\": [...]}".into());
    };
    if blocks.is_empty() || blocks.len() > 64 {
        return Err("blocks must hold 1 to 64 edits".into());
    }
    for (j, b) in blocks.iter().enumerate() {
        let text = |k: &str| b.get(k).and_then(Value::as_str);
        let ok = match (text("search"), text("replace"), text("delete")) {
            (Some(s), Some(_), None) => !s.is_empty(),
            (None, None, Some(d)) => !d.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "blocks[{j}] must be {{\"search\", \"replace\"}} or {{\"delete\"}} with non-empty text"
            ));
        }
    }
    Ok(())
}

/// Ask about one piece of conversation, repairing invalid answers up to `repairs` times.
pub fn ask(
    chat: &ChatSession<'_>,
    types: &[MemoryType],
    peers: &[String],
    conversation: &str,
    candidates: &[Candidate],
    today: &str,
    repairs: u32,
) -> Asked {
    let schema = answer_schema(types, peers);
    let mut messages = vec![
        json!({"role": "system", "content": instructions(types, peers)}),
        json!({"role": "user", "content": user_prompt(conversation, candidates, today)}),
    ];
    let mut asked = Asked::default();
    for _ in 0..=repairs {
        let answer = match chat.complete_structured(&messages, "memory_operations", &schema) {
            Ok(a) => a,
            Err(f) => {
                asked.calls.push(match f {
                    ChatFailure::Timeout(_) => OutcomeKind::Timeout,
                    ChatFailure::Provider(_) => OutcomeKind::ProviderError,
                });
                asked.last_error = Some(f.message().to_string());
                asked.unavailable = Some(f);
                return asked;
            }
        };
        asked.tokens += answer.total_tokens;
        asked.input_tokens += answer.prompt_tokens;
        asked.output_tokens += answer.completion_tokens;
        match judge(&answer.text, types, candidates) {
            Ok(ops) => {
                let useful = ops.iter().any(|o| o.op != "noop");
                asked.calls.push(if useful {
                    OutcomeKind::Ok
                } else {
                    OutcomeKind::Empty
                });
                asked.operations = ops;
                return asked;
            }
            Err((kind, why)) => {
                asked.calls.push(kind);
                asked.last_error = Some(why.clone());
                messages.push(json!({"role": "assistant", "content": answer.text}));
                messages.push(json!({"role": "user", "content": format!(
                    "That answer cannot be used: {why}. Reply again with only the JSON object \
                     {{\"operations\": [...]}} as described."
                )}));
            }
        }
    }
    asked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_answers_by_kind() {
        let types = super::super::types::builtin();
        let ok = r#"Sure! ```json
{"operations":[{"op":"add","memory_type":"preferences","fields":{"user":"bob","topic":"tea","content":"- green tea"}}]}
```"#;
        assert_eq!(judge(ok, &types, &[]).unwrap().len(), 1);
        assert_eq!(
            judge("I think the user likes tea.", &types, &[])
                .unwrap_err()
                .0,
            OutcomeKind::ParseError
        );
        assert_eq!(
            judge(
                r#"{"operations":[{"op":"add","memory_type":"pref"#,
                &types,
                &[]
            )
            .unwrap_err()
            .0,
            OutcomeKind::ParseError
        );
        assert_eq!(
            judge(r#"{"memories":[]}"#, &types, &[]).unwrap_err().0,
            OutcomeKind::SchemaError
        );
        assert_eq!(
            judge(r#"{"operations":[{"op":"add","memory_type":"preferences","fields":{"topic":"tea"}}]}"#, &types, &[]).unwrap_err().0,
            OutcomeKind::SchemaError
        );
        assert_eq!(
            judge(r#"{"operations":[{"op":"delete","memory_type":"preferences","uri":"viking://x"}]}"#, &types, &[]).unwrap_err().0,
            OutcomeKind::SchemaError
        );
        assert!(judge(r#"{"operations":[]}"#, &types, &[])
            .unwrap()
            .is_empty());
        // Blocks on a patch field, a peer id; blocks on an immutable field are refused.
        let ops = judge(
            r#"{"operations":[{"op":"add","memory_type":"preferences","peer_id":"bob","fields":{"user":"bob","topic":"tea","content":{"blocks":[{"search":"a","replace":"b"}]}}}]}"#,
            &types,
            &[],
        )
        .unwrap();
        assert_eq!(ops[0].peer_id.as_deref(), Some("bob"));
        assert!(ops[0].fields["content"].is_object());
        assert_eq!(
            judge(r#"{"operations":[{"op":"add","memory_type":"preferences","fields":{"user":"bob","topic":{"blocks":[{"search":"a","replace":"b"}]},"content":"x"}}]}"#, &types, &[]).unwrap_err().0,
            OutcomeKind::SchemaError
        );
        assert_eq!(
            judge(r#"{"operations":[{"op":"add","memory_type":"profile","fields":{"content":{"blocks":[{"search":"","replace":"b"}]}}}]}"#, &types, &[]).unwrap_err().0,
            OutcomeKind::SchemaError
        );
    }

    /// Every object in the schema is closed and every array and free string bounded: a
    /// grammar-constrained provider can then only produce an answer that ends (an unbounded
    /// schema let gemma3-270m list operations until max_tokens cut it off on every call).
    #[test]
    fn the_answer_schema_is_closed_and_bounded() {
        fn walk(v: &Value, path: &str) {
            match v.get("type").and_then(Value::as_str) {
                Some("object") => {
                    assert_eq!(v["additionalProperties"], json!(false), "{path} is open");
                }
                Some("array") => assert!(v["maxItems"].is_u64(), "{path} is unbounded"),
                Some("string") => assert!(
                    v["maxLength"].is_u64() || v["enum"].is_array(),
                    "{path} is an unbounded string"
                ),
                _ => {}
            }
            if let Value::Object(map) = v {
                for (k, child) in map {
                    walk(child, &format!("{path}.{k}"));
                }
            }
            if let Value::Array(items) = v {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"));
                }
            }
        }
        let types = super::super::types::builtin();
        let schema = answer_schema(&types, &["bob".to_string()]);
        walk(&schema, "schema");
        let variants = schema["properties"]["operations"]["items"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(variants.len(), types.len());
        for (t, v) in types.iter().zip(variants) {
            assert_eq!(v["properties"]["memory_type"]["enum"], json!([t.name]));
            let listed: Vec<&str> = v["properties"]["fields"]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut expected: Vec<&str> = t.fields.iter().map(|f| f.name).collect();
            expected.sort_unstable();
            let mut listed = listed;
            listed.sort_unstable();
            assert_eq!(listed, expected, "fields of {}", t.name);
            assert_eq!(v["properties"]["peer_id"]["enum"], json!(["bob"]));
        }
        let without_peers = answer_schema(&types, &[]);
        assert!(
            without_peers["properties"]["operations"]["items"]["anyOf"][0]["properties"]
                .get("peer_id")
                .is_none()
        );
    }
}
