//! Per-session options of SE1: `auto_commit_policy`, `memory_policy` and
//! `memory_extraction_config`, validated and normalised as 0.5.2 does (spec §9 SE1).

use serde_json::{json, Map, Value};

use crate::error::ServiceError;

/// `auto_commit_policy` keys: (name, default, max).
const AUTO_COMMIT_KEYS: &[(&str, i64, i64)] = &[
    ("pending_token_threshold", 150_000, 1_000_000),
    ("message_count_threshold", 100, 1000),
    ("idle_timeout_seconds", 86_400, 604_800),
    ("keep_recent_count", 0, 1000),
    ("min_commit_interval_seconds", 0, 604_800),
];

const MEMORY_POLICY_KEYS: &[&str] = &["memory_types", "peer", "self", "working_memory"];

fn invalid(loc: &[&str], message: &str, kind: &str) -> ServiceError {
    let mut full = vec!["body"];
    full.extend_from_slice(loc);
    ServiceError::validation(&full, message, kind)
}

/// Normalised `auto_commit_policy`: `None`/`null` → `null`; an object gets every key, clamped.
pub fn auto_commit(input: Option<&Value>) -> Result<Value, ServiceError> {
    let obj = match input {
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(invalid(
                &["auto_commit_policy"],
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
    };
    for key in obj.keys() {
        if !AUTO_COMMIT_KEYS.iter().any(|(k, _, _)| k == key) {
            return Err(invalid(
                &["auto_commit_policy", key],
                "Extra inputs are not permitted",
                "extra_forbidden",
            ));
        }
    }
    let mut out = Map::new();
    for (key, default, max) in AUTO_COMMIT_KEYS {
        let value = match obj.get(*key) {
            None => *default,
            Some(v) => {
                let Some(n) = v
                    .as_i64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                else {
                    return Err(invalid(
                        &["auto_commit_policy", key],
                        "Input should be a valid integer",
                        "int_type",
                    ));
                };
                if *key == "idle_timeout_seconds" && n != 0 && n < 300 {
                    return Err(invalid(
                        &[],
                        "Value error, auto_commit_policy.idle_timeout_seconds must be 0 or at least 300",
                        "value_error",
                    ));
                }
                n.clamp(0, *max)
            }
        };
        out.insert((*key).to_string(), value.into());
    }
    Ok(Value::Object(out))
}

/// The agent-evolution types: listed only together (with `experiences`) or not at all, as
/// 0.5.2 normalises `memory_types`.
const AGENT_EVOLUTION: &[&str] = &["cases", "experiences", "trajectories"];

/// Normalised `memory_policy`; absent or `null` stays `null`. `known` = every memory type name
/// a policy may list (the memory domain's; another name is refused as 0.5.2 does).
pub fn memory(input: Option<&Value>, known: &[&str]) -> Result<Value, ServiceError> {
    let obj = match input {
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(invalid(
                &["memory_policy"],
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
    };
    if obj
        .keys()
        .any(|k| !MEMORY_POLICY_KEYS.contains(&k.as_str()))
    {
        return Err(invalid(
            &["memory_policy"],
            "Value error, memory_policy supports only: memory_types, peer, self, working_memory",
            "value_error",
        ));
    }
    let flag = |key: &str, default: bool| -> Result<Value, ServiceError> {
        let enabled = match obj.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Object(o)) => match o.get("enabled") {
                None | Some(Value::Null) => default,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        &["memory_policy", key, "enabled"],
                        "Input should be a valid boolean",
                        "bool_type",
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    &["memory_policy", key],
                    "Input should be a valid dictionary",
                    "dict_type",
                ))
            }
        };
        Ok(json!({"enabled": enabled}))
    };
    let mut out = Map::new();
    out.insert("self".into(), flag("self", true)?);
    out.insert("peer".into(), flag("peer", true)?);
    out.insert("working_memory".into(), flag("working_memory", false)?);
    match obj.get("memory_types") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let mut types = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str().map(str::trim) {
                    Some(t) if !t.is_empty() => types.push(t.to_string()),
                    _ => {
                        return Err(invalid(
                            &["memory_policy", "memory_types"],
                            "Value error, memory_types entries must be non-empty strings",
                            "value_error",
                        ))
                    }
                }
            }
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
        Some(_) => {
            return Err(invalid(
                &["memory_policy", "memory_types"],
                "Input should be a valid list",
                "list_type",
            ))
        }
    }
    Ok(Value::Object(out))
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

/// Event tags of `memory_extraction_config` (`{"events": {"tags": [...]}}`), unknown keys refused.
pub fn extraction_tags(
    input: Option<&Value>,
    field: &str,
    inner: &str,
) -> Result<Option<Vec<String>>, ServiceError> {
    let obj = match input {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(invalid(
                &[field],
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
    };
    if let Some(k) = obj.keys().find(|k| *k != inner) {
        return Err(invalid(
            &[field, k],
            "Extra inputs are not permitted",
            "extra_forbidden",
        ));
    }
    let events = match obj.get(inner) {
        None | Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(invalid(
                &[field, inner],
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
    };
    if let Some(k) = events.keys().find(|k| *k != "tags") {
        return Err(invalid(
            &[field, inner, k],
            "Extra inputs are not permitted",
            "extra_forbidden",
        ));
    }
    match events.get("tags") {
        None | Some(Value::Null) => Ok(Some(Vec::new())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str().map(str::to_string).ok_or_else(|| {
                    invalid(
                        &[field, inner, "tags"],
                        "Input should be a valid string",
                        "string_type",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(
            &[field, inner, "tags"],
            "Input should be a valid list",
            "list_type",
        )),
    }
}

/// The `memory_extraction_config` shape returned by SE1/SE3.
pub fn extraction_config(tags: Option<&Vec<String>>) -> Value {
    json!({"events": {"tags": tags.cloned().unwrap_or_default()}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_commit_policy() {
        assert_eq!(auto_commit(None).unwrap(), Value::Null);
        assert_eq!(auto_commit(Some(&Value::Null)).unwrap(), Value::Null);
        let p = auto_commit(Some(&json!({"message_count_threshold": 5000}))).unwrap();
        assert_eq!(p["message_count_threshold"], 1000);
        assert_eq!(p["pending_token_threshold"], 150_000);
        assert_eq!(p["keep_recent_count"], 0);
        assert!(auto_commit(Some(&json!({"nope": 1}))).is_err());
        assert!(auto_commit(Some(&json!({"keep_recent_count": null}))).is_err());
        let e = auto_commit(Some(&json!({"idle_timeout_seconds": 10}))).unwrap_err();
        assert!(e.message.contains("must be 0 or at least 300"));
        assert!(auto_commit(Some(&json!({"idle_timeout_seconds": 0}))).is_ok());
    }

    #[test]
    fn memory_policy() {
        let known = ["a", "b", "cases", "experiences", "trajectories"];
        let p = memory(
            Some(
                &json!({"working_memory": {"enabled": true}, "memory_types": ["b", "a", "cases"]}),
            ),
            &known,
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"self": {"enabled": true}, "peer": {"enabled": true},
                   "working_memory": {"enabled": true}, "memory_types": ["a", "b"]})
        );
        assert!(working_memory_enabled(&p));
        assert!(memory(Some(&json!({"other": 1})), &known).is_err());
        assert_eq!(memory(None, &known).unwrap(), Value::Null);
        let e = memory(Some(&json!({"memory_types": ["a", "zz"]})), &known).unwrap_err();
        assert_eq!(e.message, "Unknown memory_policy.memory_types: zz");
        let p = memory(Some(&json!({"memory_types": ["experiences"]})), &known).unwrap();
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
    }

    #[test]
    fn extraction() {
        let t = extraction_tags(
            Some(&json!({"events": {"tags": ["k=v"]}})),
            "memory_extraction_config",
            "events",
        )
        .unwrap();
        assert_eq!(t, Some(vec!["k=v".to_string()]));
        assert!(extraction_tags(Some(&json!({"events": {"x": 1}})), "m", "events").is_err());
        assert!(extraction_tags(Some(&json!({"y": {}})), "m", "events").is_err());
    }
}
