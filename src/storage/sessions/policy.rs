//! Per-session options of SE1 and the session config PATCH: `auto_commit_policy`,
//! `memory_policy` and `memory_extraction_config` as typed inputs (decoded in the handler's
//! extractor, each failure at its location), normalised here as 0.5.2 does (spec §9 SE1).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::decode::{self, field_error, opt_list, opt_object, opt_strict_bool, StrictString};
use crate::error::ServiceError;

/// `auto_commit_policy` keys: (name, default, max).
const AUTO_COMMIT_KEYS: &[(&str, i64, i64)] = &[
    ("pending_token_threshold", 150_000, 1_000_000),
    ("message_count_threshold", 100, 1000),
    ("idle_timeout_seconds", 86_400, 604_800),
    ("keep_recent_count", 0, 1000),
    ("min_commit_interval_seconds", 0, 604_800),
];

/// `auto_commit_policy` (0.5.2 `AutoCommitPolicyRequest`: unknown keys refused). Each key is
/// an integer when present (an explicit `null` is refused: `auto_commit_policy: null` is how
/// automatic commits are switched off); [`auto_commit`] clamps them.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoCommitInput {
    #[serde(default, deserialize_with = "whole_number")]
    pending_token_threshold: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    message_count_threshold: Option<i64>,
    /// 0 (never) or at least 300.
    #[serde(default, deserialize_with = "idle_timeout")]
    idle_timeout_seconds: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    keep_recent_count: Option<i64>,
    #[serde(default, deserialize_with = "whole_number")]
    min_commit_interval_seconds: Option<i64>,
}

impl AutoCommitInput {
    fn get(&self, key: &str) -> Option<i64> {
        match key {
            "pending_token_threshold" => self.pending_token_threshold,
            "message_count_threshold" => self.message_count_threshold,
            "idle_timeout_seconds" => self.idle_timeout_seconds,
            "keep_recent_count" => self.keep_recent_count,
            _ => self.min_commit_interval_seconds,
        }
    }
}

/// An integer, or a float with no fraction (as pydantic's lax `int`).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
        .map(Some)
        .ok_or_else(|| field_error("int_type", "Input should be a valid integer"))
}

fn idle_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = whole_number(d)?;
    if n.is_some_and(|n| n != 0 && n < 300) {
        return Err(field_error(
            "value_error",
            "Value error, auto_commit_policy.idle_timeout_seconds must be 0 or at least 300",
        ));
    }
    Ok(n)
}

/// Normalised `auto_commit_policy`: none → `null`; a policy gets every key, clamped.
pub fn auto_commit(input: Option<&AutoCommitInput>) -> Value {
    let Some(input) = input else {
        return Value::Null;
    };
    let mut out = Map::new();
    for (key, default, max) in AUTO_COMMIT_KEYS {
        let value = input.get(key).map_or(*default, |n| n.clamp(0, *max));
        out.insert((*key).to_string(), value.into());
    }
    Value::Object(out)
}

/// The agent-evolution types: listed only together (with `experiences`) or not at all, as
/// 0.5.2 normalises `memory_types`.
const AGENT_EVOLUTION: &[&str] = &["cases", "experiences", "trajectories"];

/// `{"enabled": bool}` of a memory policy switch (other keys ignored).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PolicySwitch {
    #[serde(default, deserialize_with = "opt_strict_bool")]
    enabled: Option<bool>,
}

/// `memory_policy` (0.5.2: a dictionary its service checks: only these four keys, anything
/// else is refused as a whole).
#[derive(Debug, Clone, Default, ToSchema)]
pub struct MemoryPolicyInput {
    /// Memory type names; `experiences` brings the other agent-evolution types with it.
    memory_types: Option<Vec<String>>,
    #[schema(rename = "self")]
    own: Option<PolicySwitch>,
    peer: Option<PolicySwitch>,
    working_memory: Option<PolicySwitch>,
}

impl<'de> Deserialize<'de> for MemoryPolicyInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        decode::object::<D, PolicyKeys>(d).map(|keys| keys.0)
    }
}

/// The key-by-key read of a memory policy object (an unknown key is 0.5.2's value error).
struct PolicyKeys(MemoryPolicyInput);

impl<'de> Deserialize<'de> for PolicyKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicyKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a dictionary")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicyKeys, A::Error> {
                let mut p = MemoryPolicyInput::default();
                let switch = |v: Option<decode::Object<PolicySwitch>>| v.map(|o| o.0);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "memory_types" => {
                            let types: Option<decode::List<TypeName>> = map.next_value()?;
                            p.memory_types = types.map(|l| l.0.into_iter().map(|t| t.0).collect());
                        }
                        "self" => p.own = switch(map.next_value()?),
                        "peer" => p.peer = switch(map.next_value()?),
                        "working_memory" => p.working_memory = switch(map.next_value()?),
                        _ => {
                            return Err(field_error(
                                "value_error",
                                "Value error, memory_policy supports only: memory_types, peer, \
                                 self, working_memory",
                            ))
                        }
                    }
                }
                Ok(PolicyKeys(p))
            }
        }
        d.deserialize_map(V)
    }
}

/// A memory type name: a non-blank string, trimmed.
struct TypeName(String);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(t) if !t.trim().is_empty() => Ok(TypeName(t.trim().to_string())),
            _ => Err(field_error(
                "value_error",
                "Value error, memory_types entries must be non-empty strings",
            )),
        }
    }
}

/// Normalised `memory_policy`; none stays `null`. `known` = every memory type name a policy
/// may list (the memory domain's; another name is refused as 0.5.2 does).
pub fn memory(input: Option<&MemoryPolicyInput>, known: &[&str]) -> Result<Value, ServiceError> {
    let Some(p) = input else {
        return Ok(Value::Null);
    };
    let flag = |s: &Option<PolicySwitch>, default: bool| json!({"enabled": s.as_ref().and_then(|s| s.enabled).unwrap_or(default)});
    let mut out = Map::new();
    out.insert("self".into(), flag(&p.own, true));
    out.insert("peer".into(), flag(&p.peer, true));
    out.insert("working_memory".into(), flag(&p.working_memory, false));
    if let Some(types) = &p.memory_types {
        let mut types = types.clone();
        if types.iter().any(|t| t == "experiences") {
            types.extend(AGENT_EVOLUTION.iter().map(|t| t.to_string()));
        } else {
            types.retain(|t| !AGENT_EVOLUTION.contains(&t.as_str()));
        }
        types.sort();
        types.dedup();
        let unknown: Vec<&str> = types
            .iter()
            .map(String::as_str)
            .filter(|t| !known.contains(t))
            .collect();
        if !unknown.is_empty() {
            return Err(ServiceError::invalid_argument(format!(
                "Unknown memory_policy.memory_types: {}",
                unknown.join(", ")
            )));
        }
        out.insert("memory_types".into(), json!(types));
    }
    Ok(Value::Object(out))
}

/// [`memory`] of a stored policy (a user's settings), not a request body; `null` or absent
/// is none.
pub fn memory_from_value(stored: Option<&Value>, known: &[&str]) -> Result<Value, ServiceError> {
    match stored {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(v) => {
            let p: MemoryPolicyInput = decode::from_value(&["memory_policy"], v.clone())?;
            memory(Some(&p), known)
        }
    }
}

/// False when a normalised memory policy switches both self and peer memory off or lists no
/// memory types Longship extracts (peer memories need messages with a `peer_id`: the
/// extraction decides that from the archive).
pub fn extracts_memories(policy: &Value) -> bool {
    let on = |k: &str| policy[k]["enabled"].as_bool() != Some(false);
    (on("self") || on("peer"))
        && policy["memory_types"].as_array().is_none_or(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .any(|t| !AGENT_EVOLUTION.contains(&t))
        })
}

/// True when a normalised memory policy turns working memory on.
pub fn working_memory_enabled(policy: &Value) -> bool {
    policy["working_memory"]["enabled"]
        .as_bool()
        .unwrap_or(false)
}

/// `{"tags": [...]}` of event memories (0.5.2 `EventExtractionConfigRequest` /
/// `EventExtractionMetadataRequest`: unknown keys refused).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTagsInput {
    /// Strict `key=value` strings; an empty list clears the default.
    #[serde(default, deserialize_with = "opt_list")]
    #[schema(value_type = Option<Vec<String>>)]
    tags: Option<Vec<StrictString>>,
}

/// `memory_extraction_config` of SE1 and the config PATCH (0.5.2
/// `MemoryExtractionConfigRequest`: unknown keys refused).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractionConfigInput {
    #[serde(default, deserialize_with = "opt_object")]
    events: Option<EventTagsInput>,
}

/// `extraction_metadata` of a commit (0.5.2 `ExtractionMetadataRequest`: unknown keys
/// refused).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractionMetadataInput {
    #[serde(default, deserialize_with = "opt_object")]
    event: Option<EventTagsInput>,
}

/// The event tags a config names: none given (no `events`, no `tags`) is an empty list.
fn event_tags(events: Option<&EventTagsInput>) -> Vec<String> {
    events
        .and_then(|e| e.tags.as_ref())
        .map(|tags| tags.iter().map(|t| t.0.clone()).collect())
        .unwrap_or_default()
}

impl ExtractionConfigInput {
    pub fn event_tags(&self) -> Vec<String> {
        event_tags(self.events.as_ref())
    }
}

impl ExtractionMetadataInput {
    pub fn event_tags(&self) -> Vec<String> {
        event_tags(self.event.as_ref())
    }
}

/// The `memory_extraction_config` shape returned by SE1/SE3.
pub fn extraction_config(tags: Option<&Vec<String>>) -> Value {
    json!({"events": {"tags": tags.cloned().unwrap_or_default()}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::parse_json;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "opt_object")]
        auto_commit_policy: Option<AutoCommitInput>,
        #[serde(default, deserialize_with = "opt_object")]
        memory_policy: Option<MemoryPolicyInput>,
        #[serde(default, deserialize_with = "opt_object")]
        memory_extraction_config: Option<ExtractionConfigInput>,
    }

    fn body(v: Value) -> Result<Body, ServiceError> {
        parse_json(v.to_string().as_bytes())
    }

    fn first_error(e: ServiceError) -> Value {
        e.details.unwrap()["validation_errors"][0].clone()
    }

    #[test]
    fn auto_commit_policy() {
        assert_eq!(auto_commit(None), Value::Null);
        let b = body(json!({"auto_commit_policy": null})).unwrap();
        assert_eq!(auto_commit(b.auto_commit_policy.as_ref()), Value::Null);
        let b = body(json!({"auto_commit_policy": {"message_count_threshold": 5000}})).unwrap();
        let p = auto_commit(b.auto_commit_policy.as_ref());
        assert_eq!(p["message_count_threshold"], 1000);
        assert_eq!(p["pending_token_threshold"], 150_000);
        assert_eq!(p["keep_recent_count"], 0);
        let e = first_error(body(json!({"auto_commit_policy": {"nope": 1}})).unwrap_err());
        assert_eq!(e["type"], "extra_forbidden");
        assert_eq!(e["loc"], json!(["body", "auto_commit_policy", "nope"]));
        let e = first_error(
            body(json!({"auto_commit_policy": {"keep_recent_count": null}})).unwrap_err(),
        );
        assert_eq!(e["type"], "int_type");
        assert_eq!(
            e["loc"],
            json!(["body", "auto_commit_policy", "keep_recent_count"])
        );
        let e = body(json!({"auto_commit_policy": {"idle_timeout_seconds": 10}})).unwrap_err();
        assert!(e.message.contains("must be 0 or at least 300"));
        assert!(body(json!({"auto_commit_policy": {"idle_timeout_seconds": 0}})).is_ok());
        assert!(body(json!({"auto_commit_policy": {"idle_timeout_seconds": 600.0}})).is_ok());
        let e = first_error(body(json!({"auto_commit_policy": "x"})).unwrap_err());
        assert_eq!(e["type"], "dict_type");
    }

    #[test]
    fn memory_policy() {
        let known = ["a", "b", "cases", "experiences", "trajectories"];
        let b = body(
            json!({"memory_policy": {"working_memory": {"enabled": true},
                                              "memory_types": ["b", " a ", "cases"]}}),
        )
        .unwrap();
        let p = memory(b.memory_policy.as_ref(), &known).unwrap();
        assert_eq!(
            p,
            json!({"self": {"enabled": true}, "peer": {"enabled": true},
                   "working_memory": {"enabled": true}, "memory_types": ["a", "b"]})
        );
        assert!(working_memory_enabled(&p));
        let e = first_error(body(json!({"memory_policy": {"other": 1}})).unwrap_err());
        assert_eq!(e["type"], "value_error");
        assert_eq!(e["loc"], json!(["body", "memory_policy"]));
        let e =
            first_error(body(json!({"memory_policy": {"self": {"enabled": "x"}}})).unwrap_err());
        assert_eq!(
            e["loc"],
            json!(["body", "memory_policy", "self", "enabled"])
        );
        let e =
            first_error(body(json!({"memory_policy": {"memory_types": ["a", ""]}})).unwrap_err());
        assert_eq!(
            e["loc"],
            json!(["body", "memory_policy", "memory_types", "1"])
        );
        assert_eq!(memory(None, &known).unwrap(), Value::Null);
        let stored = json!({"memory_types": ["a", "zz"]});
        let e = memory_from_value(Some(&stored), &known).unwrap_err();
        assert_eq!(e.message, "Unknown memory_policy.memory_types: zz");
        let p = memory_from_value(Some(&json!({"memory_types": ["experiences"]})), &known).unwrap();
        assert_eq!(
            p["memory_types"],
            json!(["cases", "experiences", "trajectories"])
        );
        assert!(!extracts_memories(&p));
        assert!(!extracts_memories(
            &json!({"self": {"enabled": false}, "peer": {"enabled": false}})
        ));
        assert!(extracts_memories(
            &json!({"self": {"enabled": false}, "peer": {"enabled": true}})
        ));
        let e = memory_from_value(Some(&json!({"peer": 5})), &known).unwrap_err();
        assert_eq!(first_error(e)["loc"], json!(["memory_policy", "peer"]));
    }

    #[test]
    fn extraction() {
        let b = body(json!({"memory_extraction_config": {"events": {"tags": ["k=v"]}}})).unwrap();
        let c = b.memory_extraction_config.unwrap();
        assert_eq!(c.event_tags(), vec!["k=v".to_string()]);
        let b = body(json!({"memory_extraction_config": {}})).unwrap();
        assert!(b.memory_extraction_config.unwrap().event_tags().is_empty());
        let e = first_error(
            body(json!({"memory_extraction_config": {"events": {"x": 1}}})).unwrap_err(),
        );
        assert_eq!(e["type"], "extra_forbidden");
        assert_eq!(
            e["loc"],
            json!(["body", "memory_extraction_config", "events", "x"])
        );
        assert!(body(json!({"memory_extraction_config": {"y": {}}})).is_err());
        let e = first_error(
            body(json!({"memory_extraction_config": {"events": {"tags": ["a", 1]}}})).unwrap_err(),
        );
        assert_eq!(
            e["loc"],
            json!(["body", "memory_extraction_config", "events", "tags", "1"])
        );
        assert_eq!(e["type"], "string_type");
    }
}
