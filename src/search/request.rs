//! The find/search request body (OpenViking 0.5.2 `FindRequest` / `SearchRequest`), validated
//! field by field with pydantic-style locations. Every field 0.5.2 defines is accepted; other
//! keys are ignored (API.md §1.3).

use serde_json::{Map, Value};

use super::filter::{self, Filter, FilterField};
use crate::error::{ServiceError, ServiceResult};

/// Longest query accepted (bytes).
pub const MAX_QUERY_BYTES: usize = 4096;
/// Largest `limit` / `node_limit`.
pub const MAX_LIMIT: u64 = 1000;
/// Most target URIs in one request.
const MAX_TARGETS: usize = 64;
const DEFAULT_LIMIT: u64 = 10;

/// Fields that only mean something with `mode: "context"` (0.5.2 `CONTEXT_ONLY_FIELDS`).
const CONTEXT_ONLY_FIELDS: [&str; 11] = [
    "query_expansion",
    "max_tokens",
    "quotas",
    "purpose",
    "detail",
    "dedup_turns",
    "exclude_uris",
    "peer_scope",
    "other_peer_penalty",
    "rewrite",
    "rewrite_max_bullets",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchType {
    Semantic,
    Keywords,
}

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    /// Target URIs as given (empty = the default scope).
    pub targets: Vec<String>,
    /// memory / resource / skill; empty = all.
    pub context_types: Vec<String>,
    pub limit: usize,
    pub score_threshold: Option<f64>,
    /// `filter` with `since`/`until` merged in (AND).
    pub filter: Option<Filter>,
    /// Allowed levels; empty = all.
    pub levels: Vec<u64>,
    pub include_provenance: bool,
    pub read_content: bool,
    pub search_type: SearchType,
    pub session_id: Option<String>,
}

fn loc_of(field: &str) -> [&str; 2] {
    ["body", field]
}

fn invalid(field: &str, message: &str, kind: &str) -> ServiceError {
    ServiceError::validation(&loc_of(field), message, kind)
}

fn value_error(message: &str) -> ServiceError {
    ServiceError::validation(&["body"], &format!("Value error, {message}"), "value_error")
}

fn get<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn string(body: &Map<String, Value>, key: &str) -> ServiceResult<Option<String>> {
    match get(body, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(
            key,
            "Input should be a valid string",
            "string_type",
        )),
    }
}

fn boolean(body: &Map<String, Value>, key: &str) -> ServiceResult<bool> {
    match get(body, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(
                key,
                "Input should be a valid boolean",
                "bool_parsing",
            )),
        },
        Some(_) => Err(invalid(key, "Input should be a valid boolean", "bool_type")),
    }
}

fn limit(body: &Map<String, Value>, key: &str) -> ServiceResult<Option<u64>> {
    let range = format!("Input should be an integer between 1 and {MAX_LIMIT}");
    match get(body, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (1..=MAX_LIMIT as i64).contains(&v) => Ok(Some(v as u64)),
            _ => Err(invalid(key, &range, "less_than_equal")),
        },
        Some(_) => Err(invalid(key, &range, "int_type")),
    }
}

/// `string | [string]` (target_uri, image_url).
fn one_or_many(body: &Map<String, Value>, key: &str) -> ServiceResult<Vec<String>> {
    match get(body, key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => {
            if items.len() > MAX_TARGETS {
                return Err(invalid(
                    key,
                    &format!("at most {MAX_TARGETS} values"),
                    "too_long",
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ServiceError::validation(
                        &["body", key, &i.to_string()],
                        "Input should be a valid string",
                        "string_type",
                    )),
                })
                .collect()
        }
        Some(_) => Err(invalid(
            key,
            "Input should be a valid string or list of strings",
            "string_type",
        )),
    }
}

fn context_types(body: &Map<String, Value>) -> ServiceResult<Vec<String>> {
    let raw: Vec<String> = match get(body, "context_type") {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::to_string).collect(),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for v in items {
                match v {
                    Value::String(s) => out.extend(s.split(',').map(str::to_string)),
                    _ => return Err(value_error("context_type must be a ContextType, string, or list of ContextType/string values")),
                }
            }
            out
        }
        Some(_) => {
            return Err(value_error(
                "context_type must be a ContextType, string, or list of ContextType/string values",
            ))
        }
    };
    let mut out: Vec<String> = Vec::new();
    for v in raw {
        let v = v.trim().to_lowercase();
        if v.is_empty() {
            continue;
        }
        if !matches!(v.as_str(), "memory" | "resource" | "skill") {
            return Err(value_error(
                "context_type must be one or more of: memory, resource, skill",
            ));
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn levels(body: &Map<String, Value>) -> ServiceResult<Vec<u64>> {
    let bad = || {
        invalid(
            "level",
            "level must be 0, 1, 2, a comma-separated string of them, or a list",
            "value_error",
        )
    };
    let mut out = Vec::new();
    let mut push = |n: i64| -> ServiceResult<()> {
        if !(0..=2).contains(&n) {
            return Err(bad());
        }
        if !out.contains(&(n as u64)) {
            out.push(n as u64);
        }
        Ok(())
    };
    match get(body, "level") {
        None => {}
        Some(Value::Number(n)) => push(n.as_i64().ok_or_else(bad)?)?,
        Some(Value::String(s)) => {
            for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                push(part.parse().map_err(|_| bad())?)?;
            }
        }
        Some(Value::Array(items)) => {
            for v in items {
                match v {
                    Value::Number(n) => push(n.as_i64().ok_or_else(bad)?)?,
                    Value::String(s) => push(s.trim().parse().map_err(|_| bad())?)?,
                    _ => return Err(bad()),
                }
            }
        }
        Some(_) => return Err(bad()),
    }
    Ok(out)
}

/// A `since`/`until` value: `30m`, `2h`, `7d`, `1w`, `45s`, ISO-8601 or `YYYY-MM-DD` (UTC).
fn time_bound(s: &str, upper: bool, now_ms: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c)) {
        let digits = &s[..s.len() - 1];
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
            let n: i64 = digits.parse().ok()?;
            let secs: i64 = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 604_800,
            };
            return Some(now_ms.saturating_sub(n.checked_mul(secs)?.checked_mul(1000)?));
        }
    }
    filter::parse_time(s, upper)
}

fn telemetry_ok(body: &Map<String, Value>) -> ServiceResult<()> {
    match get(body, "telemetry") {
        None | Some(Value::Bool(_)) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(invalid(
            "telemetry",
            "Input should be a valid boolean or object",
            "bool_type",
        )),
    }
}

fn decay_ok(body: &Map<String, Value>, query_empty: bool) -> ServiceResult<()> {
    let Some(v) = string(body, "events_time_decay_protection")? else {
        return Ok(());
    };
    let valid = v == "0"
        || (v.len() > 1
            && v[..v.len() - 1].chars().all(|c| c.is_ascii_digit())
            && v.ends_with(['m', 'h', 'd']));
    if !valid {
        return Err(value_error("events_time_decay_protection must be '0' or a non-negative integer followed by m, h, or d"));
    }
    if query_empty {
        return Err(value_error(
            "events_time_decay_protection requires a semantic query or image",
        ));
    }
    Ok(())
}

/// What the caller asked for beyond a plain find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Find,
    Search,
}

/// Why a valid request cannot be served (after validation).
#[derive(Debug)]
pub enum Unsupported {
    ContextMode,
}

/// Validate a find (`Route::Find`) or search body. `Err(Ok(Unsupported))` never happens:
/// unsupported-but-valid requests come back as `Ok(Err(..))`.
pub fn parse(
    body: &Map<String, Value>,
    route: Route,
    now_ms: i64,
) -> ServiceResult<Result<SearchRequest, Unsupported>> {
    let query = string(body, "query")?.unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return Err(invalid(
            "query",
            &format!("query is longer than {MAX_QUERY_BYTES} bytes"),
            "string_too_long",
        ));
    }
    let images = one_or_many(body, "image_url")?;
    let has_image = images.iter().any(|s| !s.trim().is_empty());
    let targets = one_or_many(body, "target_uri")?;
    let context_types = context_types(body)?;
    let limit_v = limit(body, "limit")?.unwrap_or(DEFAULT_LIMIT);
    let node_limit = limit(body, "node_limit")?;
    let score_threshold = match get(body, "score_threshold") {
        None => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => {
            return Err(invalid(
                "score_threshold",
                "Input should be a valid number",
                "float_type",
            ))
        }
    };
    let include_provenance = boolean(body, "include_provenance")?;
    let read_content = boolean(body, "read_content")?;
    telemetry_ok(body)?;
    let levels = levels(body)?;
    let time_field = string(body, "time_field")?;
    if let Some(tf) = &time_field {
        if tf != "updated_at" && tf != "created_at" {
            return Err(invalid(
                "time_field",
                "Input should be 'updated_at' or 'created_at'",
                "literal_error",
            ));
        }
    }
    let tags = match get(body, "tags") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                invalid(
                    "tags",
                    "Input should be a valid list of strings",
                    "list_type",
                )
            })?,
        Some(_) => {
            return Err(invalid(
                "tags",
                "Input should be a valid list of strings",
                "list_type",
            ))
        }
    };
    decay_ok(body, query.trim().is_empty() && !has_image)?;

    let mut search_type = SearchType::Semantic;
    let mut session_id = None;
    let mut context_mode = false;
    if route == Route::Search {
        search_type = match string(body, "search_type")?.as_deref() {
            None | Some("semantic") => SearchType::Semantic,
            Some("keywords") => SearchType::Keywords,
            Some(_) => {
                return Err(invalid(
                    "search_type",
                    "Input should be 'semantic' or 'keywords'",
                    "literal_error",
                ))
            }
        };
        session_id = string(body, "session_id")?;
        context_mode = match string(body, "mode")?.as_deref() {
            None | Some("list") => false,
            Some("context") => true,
            Some(_) => {
                return Err(invalid(
                    "mode",
                    "Input should be 'list' or 'context'",
                    "literal_error",
                ))
            }
        };
        if search_type == SearchType::Keywords {
            if query.trim().is_empty() {
                return Err(value_error(
                    "query must not be empty when search_type='keywords'",
                ));
            }
            if has_image {
                return Err(value_error(
                    "image_url is not supported when search_type='keywords'",
                ));
            }
        }
        if !context_mode {
            let used: Vec<&str> = CONTEXT_ONLY_FIELDS
                .iter()
                .copied()
                .filter(|f| body.contains_key(*f))
                .collect();
            if !used.is_empty() {
                return Err(value_error(&format!(
                    "{} require mode='context'; set mode='context' or drop these fields",
                    used.join(", ")
                )));
            }
        } else {
            if read_content {
                return Err(value_error("read_content is only supported in mode='list'"));
            }
            if targets.iter().any(|t| !t.trim().is_empty()) {
                return Err(value_error("target_uri is not supported in mode='context'"));
            }
        }
    }

    let mut filter = match get(body, "filter") {
        None => None,
        Some(v @ Value::Object(_)) => Some(filter::parse(v, &["body".into(), "filter".into()])?),
        Some(_) => {
            return Err(invalid(
                "filter",
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
    };
    let since = string(body, "since")?;
    let until = string(body, "until")?;
    let mut bounds = [None, None, None, None];
    for (key, raw, slot, upper) in [
        ("since", &since, 0usize, false),
        ("until", &until, 2usize, true),
    ] {
        if let Some(raw) = raw.as_deref().filter(|s| !s.trim().is_empty()) {
            let t = time_bound(raw, upper, now_ms).ok_or_else(|| {
                invalid(
                    key,
                    "expected a duration like 30m, 2h, 7d, 1w, an ISO-8601 time or YYYY-MM-DD",
                    "value_error",
                )
            })?;
            bounds[slot] = Some(t as f64);
        }
    }
    if let (Some(s), Some(u)) = (bounds[0], bounds[2]) {
        if s > u {
            return Err(value_error("since must be earlier than or equal to until"));
        }
    }
    if bounds.iter().any(Option::is_some) {
        let range = Filter::Range(FilterField::Time, bounds);
        filter = Some(match filter {
            Some(f) => Filter::And(vec![f, range]),
            None => range,
        });
    }
    if !tags.is_empty() {
        for t in &tags {
            let t = t.trim();
            if t.matches('=').count() != 1 || t.starts_with('=') || t.ends_with('=') {
                return Err(ServiceError::invalid_argument(format!(
                    "invalid search tag '{}': expected strict k=v format",
                    t.chars().take(64).collect::<String>()
                )));
            }
        }
        return Err(ServiceError::invalid_argument(
            "tags are not stored by this server, so a find or search filtered by tags is not supported",
        ));
    }
    if has_image {
        return Err(ServiceError::unimplemented(
            "image_url search needs a multimodal embedding model, which this server does not have",
        ));
    }
    if query.trim().is_empty() {
        return Err(ServiceError::invalid_argument(
            "Search query or image_url must not be empty.",
        ));
    }
    if context_mode {
        return Ok(Err(Unsupported::ContextMode));
    }
    Ok(Ok(SearchRequest {
        query,
        targets,
        context_types,
        limit: node_limit.unwrap_or(limit_v) as usize,
        score_threshold,
        filter,
        levels,
        include_provenance,
        read_content,
        search_type,
        session_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value, route: Route) -> ServiceResult<SearchRequest> {
        match parse(v.as_object().unwrap(), route, 1_800_000_000_000)? {
            Ok(r) => Ok(r),
            Err(_) => Err(ServiceError::unimplemented("context")),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let r = p(json!({"query":"auth","unknown":1}), Route::Find).unwrap();
        assert_eq!(r.limit, 10);
        let r = p(json!({"query":"a","limit":5,"node_limit":7,"level":"0,1","context_type":"memory,skill"}), Route::Find).unwrap();
        assert_eq!(r.limit, 7);
        assert_eq!(r.levels, vec![0, 1]);
        assert_eq!(r.context_types, vec!["memory", "skill"]);
        let r = p(
            json!({"query":"a","since":"2h","until":"2030-01-01"}),
            Route::Find,
        )
        .unwrap();
        assert!(r.filter.is_some());
    }

    #[test]
    fn bad_input() {
        let msg = |v: Value, route| p(v, route).unwrap_err().message;
        assert!(msg(json!({"query":""}), Route::Find).contains("must not be empty"));
        assert!(msg(json!({"query":"a".repeat(5000)}), Route::Find).contains("body.query"));
        assert!(msg(json!({"query":"a","limit":0}), Route::Find).contains("between 1 and 1000"));
        assert!(msg(json!({"query":"a","limit":"x"}), Route::Find).contains("body.limit"));
        assert!(
            msg(json!({"query":"a","node_limit":5000}), Route::Find).contains("body.node_limit")
        );
        assert!(msg(json!({"query":"a","context_type":"nope"}), Route::Find)
            .contains("memory, resource, skill"));
        assert!(msg(json!({"query":"a","tags":["k=v"]}), Route::Find).contains("not stored"));
        assert!(msg(json!({"query":"a","since":"yesterday"}), Route::Find).contains("body.since"));
        assert!(
            msg(json!({"query":"a","filter":{"op":"x"}}), Route::Find).contains("body.filter.op")
        );
        assert!(
            msg(json!({"query":"a","max_tokens":100}), Route::Search).contains("mode='context'")
        );
        assert!(
            msg(json!({"query":" ","search_type":"keywords"}), Route::Search)
                .contains("search_type='keywords'")
        );
        assert!(msg(json!({"query":"a","image_url":"data:x"}), Route::Find).contains("multimodal"));
        assert!(msg(
            json!({"query":"a","events_time_decay_protection":"5x"}),
            Route::Find
        )
        .contains("events_time_decay_protection"));
        assert!(matches!(
            parse(
                json!({"query":"a","mode":"context"}).as_object().unwrap(),
                Route::Search,
                0
            ),
            Ok(Err(Unsupported::ContextMode))
        ));
    }
}
