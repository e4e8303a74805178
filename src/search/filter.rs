//! The metadata filter tree of find/search (OpenViking's shape), parsed with locations for
//! errors and evaluated against indexed documents.
//!
//! Nodes: `{"op":"and"|"or","conds":[…]}`, `{"op":"must"|"must_not","field":F,"conds":[v…]}`,
//! `{"op":"range","field":F,"gte"|"gt"|"lte"|"lt":x}`, `{"op":"time_range","field":F,
//! "gte"|"lte":time}`, `{"op":"prefix","field":F,"prefix":s}`, `{"op":"contains","field":F,
//! "substring":s}`, `{"op":"regex","field":F,"pattern":s}`. Fields: `uri`, `context_type`,
//! `level`, `updated_at`, `created_at` (Longship keeps no separate creation time: it equals
//! `updated_at`), and `search_tags` (alias `tags`: a document matches a value when one of its
//! tags equals it, normalised as tags are; `prefix`/`contains`/`regex` when one tag matches).

use regex::Regex;
use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};

/// Deepest nesting of `and`/`or`.
const MAX_DEPTH: usize = 16;
/// Most nodes in one tree.
const MAX_NODES: usize = 256;
/// Longest regex pattern; compiled with a size limit too.
const MAX_REGEX: usize = 1024;

pub const FIELDS: &str = "uri, context_type, level, updated_at, created_at, search_tags";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterField {
    Uri,
    ContextType,
    Level,
    /// Both time fields read the file's modification time.
    Time,
    /// The document's `k=v` tags (several values).
    Tags,
}

#[derive(Debug, Clone)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Must(FilterField, Vec<Value>),
    MustNot(FilterField, Vec<Value>),
    /// Bounds as f64 (times in Unix milliseconds): gte, gt, lte, lt.
    Range(FilterField, [Option<f64>; 4]),
    Prefix(FilterField, String),
    Contains(FilterField, String),
    Regex(FilterField, Regex),
}

/// The values of one document a filter sees.
pub struct DocView<'a> {
    pub uri: &'a str,
    pub context_type: &'a str,
    pub level: u64,
    pub mtime_ms: i64,
    pub tags: &'a [String],
}

impl DocView<'_> {
    /// Whether `test` holds for the field's text (for tags: for one of them).
    fn any_text(&self, f: FilterField, test: impl Fn(&str) -> bool) -> bool {
        match f {
            FilterField::Tags => self.tags.iter().any(|t| test(t)),
            _ => test(&self.text(f)),
        }
    }

    fn text(&self, f: FilterField) -> String {
        match f {
            FilterField::Uri => self.uri.to_string(),
            FilterField::ContextType => self.context_type.to_string(),
            FilterField::Level => self.level.to_string(),
            FilterField::Time => self.mtime_ms.to_string(),
            FilterField::Tags => self.tags.join(","),
        }
    }

    fn number(&self, f: FilterField) -> Option<f64> {
        match f {
            FilterField::Level => Some(self.level as f64),
            FilterField::Time => Some(self.mtime_ms as f64),
            _ => None,
        }
    }

    fn equals(&self, f: FilterField, v: &Value) -> bool {
        match (f, v) {
            (FilterField::Level, Value::Number(n)) => n.as_u64() == Some(self.level),
            (FilterField::Time, _) => time_value(v).is_some_and(|t| t as i64 == self.mtime_ms),
            (_, Value::String(s)) => {
                let s = s.trim();
                match f {
                    // A directory URI matches the directory's sidecars too.
                    FilterField::Uri => {
                        let s = s.trim_end_matches('/');
                        self.uri == s
                    }
                    FilterField::Tags => {
                        let want = s.to_lowercase();
                        self.tags.contains(&want)
                    }
                    _ => self.text(f) == s,
                }
            }
            _ => false,
        }
    }
}

impl Filter {
    pub fn matches(&self, d: &DocView<'_>) -> bool {
        match self {
            Filter::And(c) => c.iter().all(|f| f.matches(d)),
            Filter::Or(c) => c.iter().any(|f| f.matches(d)),
            Filter::Must(f, vals) => vals.iter().any(|v| d.equals(*f, v)),
            Filter::MustNot(f, vals) => !vals.iter().any(|v| d.equals(*f, v)),
            Filter::Range(f, [gte, gt, lte, lt]) => {
                let Some(x) = d.number(*f) else {
                    return false;
                };
                gte.is_none_or(|b| x >= b)
                    && gt.is_none_or(|b| x > b)
                    && lte.is_none_or(|b| x <= b)
                    && lt.is_none_or(|b| x < b)
            }
            Filter::Prefix(f, p) => d.any_text(*f, |t| t.starts_with(p.as_str())),
            Filter::Contains(f, s) => d.any_text(*f, |t| t.contains(s.as_str())),
            Filter::Regex(f, r) => d.any_text(*f, |t| r.is_match(t)),
        }
    }
}

/// Unix milliseconds of a time value: ISO-8601 (UTC when no zone), `YYYY-MM-DD`, or a number
/// of seconds since the epoch.
pub fn time_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().map(|s| s * 1000.0),
        Value::String(s) => parse_time(s.trim(), false).map(|t| t as f64),
        _ => None,
    }
}

/// Parse an absolute time; `end_of_day` makes a bare date mean its last millisecond.
pub fn parse_time(s: &str, end_of_day: bool) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = if end_of_day {
            d.and_hms_milli_opt(23, 59, 59, 999)
        } else {
            d.and_hms_opt(0, 0, 0)
        }?;
        return Some(t.and_utc().timestamp_millis());
    }
    None
}

struct Parser {
    nodes: usize,
}

fn bad(loc: &[String], message: &str) -> ServiceError {
    let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
    ServiceError::validation(&refs, message, "value_error")
}

fn at(loc: &[String], key: &str) -> Vec<String> {
    let mut l = loc.to_vec();
    l.push(key.to_string());
    l
}

/// Parse a filter tree found at `loc` (e.g. `["body","filter"]`).
pub fn parse(value: &Value, loc: &[String]) -> ServiceResult<Filter> {
    Parser { nodes: 0 }.node(value, loc, 0)
}

impl Parser {
    fn node(&mut self, value: &Value, loc: &[String], depth: usize) -> ServiceResult<Filter> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(bad(loc, &format!("filter has more than {MAX_NODES} nodes")));
        }
        if depth > MAX_DEPTH {
            return Err(bad(
                loc,
                &format!("filter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Value::Object(map) = value else {
            return Err(bad(loc, "filter node must be an object"));
        };
        let op = match map.get("op") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad(&at(loc, "op"), "op must be a string")),
            None => return Err(bad(&at(loc, "op"), "Field required")),
        };
        match op {
            "and" | "or" => {
                let conds_loc = at(loc, "conds");
                let Some(Value::Array(items)) = map.get("conds") else {
                    return Err(bad(&conds_loc, "conds must be a list of filter nodes"));
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.node(item, &at(&conds_loc, &i.to_string()), depth + 1)?);
                }
                Ok(if op == "and" {
                    Filter::And(out)
                } else {
                    Filter::Or(out)
                })
            }
            "must" | "must_not" => {
                let field = field(map, loc)?;
                let conds_loc = at(loc, "conds");
                let values = match map.get("conds") {
                    Some(Value::Array(items)) => items.clone(),
                    Some(v @ (Value::String(_) | Value::Number(_))) => vec![v.clone()],
                    _ => return Err(bad(&conds_loc, "conds must be a list of values")),
                };
                if values.len() > MAX_NODES {
                    return Err(bad(&conds_loc, &format!("at most {MAX_NODES} values")));
                }
                for (i, v) in values.iter().enumerate() {
                    if !matches!(v, Value::String(_) | Value::Number(_)) {
                        return Err(bad(&at(&conds_loc, &i.to_string()), "value must be a string or a number"));
                    }
                }
                Ok(if op == "must" {
                    Filter::Must(field, values)
                } else {
                    Filter::MustNot(field, values)
                })
            }
            "range" | "time_range" => {
                let field = field(map, loc)?;
                if !matches!(field, FilterField::Level | FilterField::Time) {
                    return Err(bad(&at(loc, "field"), "range needs a numeric or time field (level, updated_at, created_at)"));
                }
                let mut bounds = [None; 4];
                for (i, key) in ["gte", "gt", "lte", "lt"].iter().enumerate() {
                    let Some(v) = map.get(*key).filter(|v| !v.is_null()) else {
                        continue;
                    };
                    let parsed = if field == FilterField::Time {
                        match v {
                            Value::String(s) => parse_time(s.trim(), *key == "lte" || *key == "lt").map(|t| t as f64),
                            other => time_value(other),
                        }
                    } else {
                        v.as_f64()
                    };
                    match parsed {
                        Some(x) => bounds[i] = Some(x),
                        None => return Err(bad(&at(loc, key), "not a valid bound (a number, or an ISO-8601 time for time fields)")),
                    }
                }
                Ok(Filter::Range(field, bounds))
            }
            "prefix" | "contains" | "regex" => {
                let field = field(map, loc)?;
                let key = match op {
                    "prefix" => "prefix",
                    "contains" => "substring",
                    _ => "pattern",
                };
                let text = match map.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(bad(&at(loc, key), "must be a string")),
                };
                match op {
                    "prefix" => Ok(Filter::Prefix(field, text)),
                    "contains" => Ok(Filter::Contains(field, text)),
                    _ => {
                        if text.len() > MAX_REGEX {
                            return Err(bad(&at(loc, key), &format!("pattern longer than {MAX_REGEX} bytes")));
                        }
                        let re = regex::RegexBuilder::new(&text)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| bad(&at(loc, key), &format!("invalid regex: {e}")))?;
                        Ok(Filter::Regex(field, re))
                    }
                }
            }
            other => Err(bad(
                &at(loc, "op"),
                &format!("unknown filter op {:?}; supported: and, or, must, must_not, range, time_range, prefix, contains, regex", truncate(other)),
            )),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn field(map: &serde_json::Map<String, Value>, loc: &[String]) -> ServiceResult<FilterField> {
    let floc = at(loc, "field");
    match map.get("field") {
        Some(Value::String(s)) => match s.as_str() {
            "uri" => Ok(FilterField::Uri),
            "context_type" => Ok(FilterField::ContextType),
            "level" => Ok(FilterField::Level),
            "updated_at" | "created_at" => Ok(FilterField::Time),
            "search_tags" | "tags" => Ok(FilterField::Tags),
            other => Err(bad(
                &floc,
                &format!("unknown field {:?}; supported: {FIELDS}", truncate(other)),
            )),
        },
        Some(_) => Err(bad(&floc, "field must be a string")),
        None => Err(bad(&floc, "Field required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loc() -> Vec<String> {
        vec!["body".into(), "filter".into()]
    }

    fn view(uri: &str, level: u64, mtime_ms: i64) -> DocView<'_> {
        DocView {
            uri,
            context_type: "resource",
            level,
            mtime_ms,
            tags: &[],
        }
    }

    #[test]
    fn tag_conditions_match_any_of_the_documents_tags() {
        let tags = vec!["team=core".to_string(), "lang=rust".to_string()];
        let d = DocView {
            uri: "viking://resources/a.md",
            context_type: "resource",
            level: 2,
            mtime_ms: 0,
            tags: &tags,
        };
        let f = |v| parse(&v, &loc()).unwrap();
        assert!(f(json!({"op":"must","field":"search_tags","conds":["Team=Core"]})).matches(&d));
        assert!(!f(json!({"op":"must","field":"search_tags","conds":["team=web"]})).matches(&d));
        assert!(f(json!({"op":"must_not","field":"tags","conds":["team=web"]})).matches(&d));
        assert!(f(json!({"op":"prefix","field":"search_tags","prefix":"lang="})).matches(&d));
        assert!(!f(json!({"op":"contains","field":"search_tags","substring":"go"})).matches(&d));
        assert!(parse(&json!({"op":"range","field":"search_tags","gte":1}), &loc()).is_err());
    }

    #[test]
    fn parses_and_evaluates() {
        let f = parse(
            &json!({"op":"and","conds":[
                {"op":"must","field":"level","conds":[0,2]},
                {"op":"prefix","field":"uri","prefix":"viking://resources/docs"},
                {"op":"time_range","field":"updated_at","gte":"2026-01-01","lte":"2026-12-31"},
                {"op":"must_not","field":"uri","conds":["viking://resources/docs/x.md"]}
            ]}),
            &loc(),
        )
        .unwrap();
        let mid = parse_time("2026-06-01T00:00:00Z", false).unwrap();
        assert!(f.matches(&view("viking://resources/docs/a.md", 2, mid)));
        assert!(!f.matches(&view("viking://resources/docs/x.md", 2, mid)));
        assert!(!f.matches(&view("viking://resources/docs/a.md", 1, mid)));
        assert!(!f.matches(&view("viking://resources/other.md", 2, mid)));
        assert!(!f.matches(&view("viking://resources/docs/a.md", 2, 0)));
    }

    #[test]
    fn errors_name_the_location() {
        let e = parse(
            &json!({"op":"and","conds":[{"op":"must","field":"level","conds":[1]},{"op":"nope"}]}),
            &loc(),
        )
        .unwrap_err();
        assert!(
            e.message.contains("body.filter.conds.1.op"),
            "{}",
            e.message
        );
        let e = parse(&json!({"op":"must","field":"owner","conds":["x"]}), &loc()).unwrap_err();
        assert!(e.message.contains("body.filter.field"), "{}", e.message);
        assert!(parse(&json!([1]), &loc()).is_err());
        assert!(parse(&json!({"op":"regex","field":"uri","pattern":"("}), &loc()).is_err());
        let mut deep = json!({"op":"must","field":"level","conds":[1]});
        for _ in 0..40 {
            deep = json!({"op":"and","conds":[deep]});
        }
        assert!(parse(&deep, &loc()).is_err());
    }
}
