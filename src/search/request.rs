//! The find/search request bodies (OpenViking 0.5.2 `FindRequest` / `SearchRequest`) as typed
//! structs: serde decodes them in the handler's extractor (field types, with pydantic-style
//! locations, through `decode::parse_json`); [`validate`] then checks across fields. As in
//! 0.5.2, a key neither model defines is refused (`extra_forbidden`).

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::decode::{field_error, flexible_bool};

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
    /// `tags`, normalised: every one must be on a hit (also in `filter`).
    pub tags: Vec<String>,
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

/// A JSON string (`string_type` otherwise; no coercion from numbers, as in 0.5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            _ => Err(field_error("string_type", "Input should be a valid string")),
        }
    }
}

/// `string | [string]` (target_uri, image_url), at most [`MAX_TARGETS`] values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_unit<E: de::Error>(self) -> Result<OneOrMany, E> {
                Ok(OneOrMany::default())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(s)) = seq.next_element::<Text>()? {
                    if out.len() == MAX_TARGETS {
                        return Err(field_error(
                            "too_long",
                            &format!("at most {MAX_TARGETS} values"),
                        ));
                    }
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V).map_err(|e| {
            if e.to_string().starts_with("invalid type") {
                field_error(
                    "string_type",
                    "Input should be a valid string or list of strings",
                )
            } else {
                e
            }
        })
    }
}

/// `limit` / `node_limit`: an integer in `1..=MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let range = format!("Input should be an integer between 1 and {MAX_LIMIT}");
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_i64() {
                Some(v) if (1..=MAX_LIMIT as i64).contains(&v) => Ok(Limit(v as u64)),
                _ => Err(field_error("less_than_equal", &range)),
            },
            _ => Err(field_error("int_type", &range)),
        }
    }
}

/// A JSON number (`float_type` otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number(pub f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => Ok(Number(n.as_f64().unwrap_or(f64::NAN))),
            _ => Err(field_error("float_type", "Input should be a valid number")),
        }
    }
}

/// A JSON object (`dict_type` otherwise); `filter` is parsed into a [`Filter`] when validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object(pub Map<String, Value>);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Object(m) => Ok(Object(m)),
            _ => Err(field_error(
                "dict_type",
                "Input should be a valid dictionary",
            )),
        }
    }
}

/// `telemetry`: a boolean or an object (accepted, not acted on).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry;

impl<'de> Deserialize<'de> for Telemetry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null | Value::Bool(_) | Value::Object(_) => Ok(Telemetry),
            _ => Err(field_error(
                "bool_type",
                "Input should be a valid boolean or object",
            )),
        }
    }
}

/// A list of strings (`list_type` otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bad = || field_error("list_type", "Input should be a valid list of strings");
        match Value::deserialize(d)? {
            Value::Null => Ok(Strings::default()),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Strings)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// A string literal field (`literal_error` naming the allowed values otherwise).
macro_rules! literal {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
        pub enum $name {
            $(#[schema(rename = $text)] $variant),+
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let expected = [$(concat!("'", $text, "'")),+].join(" or ");
                match Value::deserialize(d)? {
                    $(Value::String(s) if s == $text => Ok($name::$variant),)+
                    _ => Err(field_error(
                        "literal_error",
                        &format!("Input should be {expected}"),
                    )),
                }
            }
        }
    };
}

literal!(
    /// Which timestamp `since` / `until` bound.
    TimeField { UpdatedAt = "updated_at", CreatedAt = "created_at" }
);
literal!(
    /// `search_type` of `search`.
    SearchTypeField { Semantic = "semantic", Keywords = "keywords" }
);
literal!(
    /// `mode` of `search`.
    Mode { List = "list", Context = "context" }
);

/// A field kept as any JSON value but remembered as present even when `null` (the
/// context-only fields of `search` are refused outside `mode='context'` when named at all).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The body of `POST /api/v1/search/find` (0.5.2 `FindRequest`; unknown fields are refused,
/// as there).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindBody {
    /// The query text (up to 4096 bytes); required unless `image_url` is given.
    #[schema(value_type = Option<String>)]
    pub query: Option<Text>,
    /// Needs a multimodal embedder: refused with 501 here.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub image_url: OneOrMany,
    /// Where to look (`""`, `"/"`, `"viking://"` = the default scope); one URI or a list.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub target_uri: OneOrMany,
    /// `memory`, `resource`, `skill`: one, a list, or a comma-separated string.
    #[schema(value_type = Option<Vec<String>>)]
    #[serde(default)]
    pub context_type: Option<Value>,
    /// Results wanted (default 10).
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    /// Overrides `limit` when set.
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub node_limit: Option<Limit>,
    /// Only hits scoring strictly above this.
    #[schema(value_type = Option<f64>)]
    pub score_threshold: Option<Number>,
    /// A filter tree (`and`/`or`/`must`/`must_not`/`range`/`time_range`/`prefix`/`contains`/`regex`).
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Object>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub include_provenance: bool,
    /// `k=v` tags; this server stores none, so a filter by tags is refused.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub tags: Strings,
    /// `30m`, `2h`, `7d`, `1w`, `45s`, ISO-8601 or `YYYY-MM-DD`.
    #[schema(value_type = Option<String>)]
    pub since: Option<Text>,
    #[schema(value_type = Option<String>)]
    pub until: Option<Text>,
    pub time_field: Option<TimeField>,
    /// 0 (abstract), 1 (overview), 2 (file): one, a list, or a comma-separated string.
    #[schema(value_type = Option<Vec<u64>>)]
    #[serde(default)]
    pub level: Option<Value>,
    /// Attach each hit's readable content.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub read_content: bool,
    #[schema(value_type = Option<Object>)]
    pub telemetry: Option<Telemetry>,
    /// `0` or `<n>m|h|d`; needs a query.
    #[schema(value_type = Option<String>)]
    pub events_time_decay_protection: Option<Text>,
}

/// The body of `POST /api/v1/search/search` (0.5.2 `SearchRequest`): find's fields, the
/// session and search type, and the `mode='context'` fields (that mode answers 501 here).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    #[schema(value_type = Option<String>)]
    pub query: Option<Text>,
    pub search_type: Option<SearchTypeField>,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub image_url: OneOrMany,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub target_uri: OneOrMany,
    #[schema(value_type = Option<Vec<String>>)]
    #[serde(default)]
    pub context_type: Option<Value>,
    #[schema(value_type = Option<String>)]
    pub session_id: Option<Text>,
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub limit: Option<Limit>,
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub node_limit: Option<Limit>,
    #[schema(value_type = Option<f64>)]
    pub score_threshold: Option<Number>,
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Object>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub include_provenance: bool,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub tags: Strings,
    #[schema(value_type = Option<String>)]
    pub since: Option<Text>,
    #[schema(value_type = Option<String>)]
    pub until: Option<Text>,
    pub time_field: Option<TimeField>,
    #[schema(value_type = Option<Vec<u64>>)]
    #[serde(default)]
    pub level: Option<Value>,
    #[serde(default, deserialize_with = "flexible_bool")]
    pub read_content: bool,
    #[schema(value_type = Option<Object>)]
    pub telemetry: Option<Telemetry>,
    #[schema(value_type = Option<String>)]
    pub events_time_decay_protection: Option<Text>,
    pub mode: Option<Mode>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub query_expansion: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_tokens: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub quotas: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub purpose: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub dedup_turns: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub exclude_uris: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub peer_scope: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    pub other_peer_penalty: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    pub rewrite: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub rewrite_max_bullets: Option<Value>,
}

impl From<FindBody> for SearchBody {
    fn from(b: FindBody) -> Self {
        SearchBody {
            query: b.query,
            image_url: b.image_url,
            target_uri: b.target_uri,
            context_type: b.context_type,
            limit: b.limit,
            node_limit: b.node_limit,
            score_threshold: b.score_threshold,
            filter: b.filter,
            include_provenance: b.include_provenance,
            tags: b.tags,
            since: b.since,
            until: b.until,
            time_field: b.time_field,
            level: b.level,
            read_content: b.read_content,
            telemetry: b.telemetry,
            events_time_decay_protection: b.events_time_decay_protection,
            ..SearchBody::default()
        }
    }
}

impl SearchBody {
    /// The context-only fields named in the body, in 0.5.2's order.
    fn context_only_fields(&self) -> Vec<&'static str> {
        let set = [
            self.query_expansion.is_some(),
            self.max_tokens.is_some(),
            self.quotas.is_some(),
            self.purpose.is_some(),
            self.detail.is_some(),
            self.dedup_turns.is_some(),
            self.exclude_uris.is_some(),
            self.peer_scope.is_some(),
            self.other_peer_penalty.is_some(),
            self.rewrite.is_some(),
            self.rewrite_max_bullets.is_some(),
        ];
        CONTEXT_ONLY_FIELDS
            .iter()
            .zip(set)
            .filter_map(|(name, set)| set.then_some(*name))
            .collect()
    }
}

fn context_types(value: Option<&Value>) -> ServiceResult<Vec<String>> {
    let raw: Vec<String> = match value {
        None | Some(Value::Null) => Vec::new(),
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

fn levels(value: Option<&Value>) -> ServiceResult<Vec<u64>> {
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
    match value {
        None | Some(Value::Null) => {}
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

fn decay_ok(value: Option<&str>, query_empty: bool) -> ServiceResult<()> {
    let Some(v) = value else {
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

/// The checks across fields of a decoded find (`Route::Find`, its body converted with
/// `SearchBody::from`) or search body, then Longship's scope decisions. Unsupported-but-valid
/// requests come back as `Ok(Err(..))`.
pub fn validate(
    body: SearchBody,
    route: Route,
    now_ms: i64,
) -> ServiceResult<Result<SearchRequest, Unsupported>> {
    let query = body.query.clone().map(|t| t.0).unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return Err(invalid(
            "query",
            &format!("query is longer than {MAX_QUERY_BYTES} bytes"),
            "string_too_long",
        ));
    }
    let has_image = body.image_url.0.iter().any(|s| !s.trim().is_empty());
    let targets = body.target_uri.0.clone();
    let context_types = context_types(body.context_type.as_ref())?;
    let limit_v = body.limit.map_or(DEFAULT_LIMIT, |l| l.0);
    let levels = levels(body.level.as_ref())?;
    decay_ok(
        body.events_time_decay_protection
            .as_ref()
            .map(|t| t.0.as_str()),
        query.trim().is_empty() && !has_image,
    )?;

    let search_type = match body.search_type {
        Some(SearchTypeField::Keywords) => SearchType::Keywords,
        _ => SearchType::Semantic,
    };
    let context_mode = body.mode == Some(Mode::Context);
    if route == Route::Search {
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
            let used = body.context_only_fields();
            if !used.is_empty() {
                return Err(value_error(&format!(
                    "{} require mode='context'; set mode='context' or drop these fields",
                    used.join(", ")
                )));
            }
        } else {
            if body.read_content {
                return Err(value_error("read_content is only supported in mode='list'"));
            }
            if targets.iter().any(|t| !t.trim().is_empty()) {
                return Err(value_error("target_uri is not supported in mode='context'"));
            }
        }
    }

    let mut filter = match &body.filter {
        None => None,
        Some(Object(map)) => Some(filter::parse(
            &Value::Object(map.clone()),
            &["body".into(), "filter".into()],
        )?),
    };
    let mut bounds = [None, None, None, None];
    for (key, raw, slot, upper) in [
        ("since", &body.since, 0usize, false),
        ("until", &body.until, 2usize, true),
    ] {
        if let Some(raw) = raw
            .as_ref()
            .map(|t| t.0.as_str())
            .filter(|s| !s.trim().is_empty())
        {
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
    // 0.5.2: every tag must match, ANDed with the rest of the filter.
    let tags = crate::storage::tags::normalize(&body.tags.0)?;
    if !tags.is_empty() {
        let mut all: Vec<Filter> = filter.into_iter().collect();
        all.extend(
            tags.iter()
                .map(|t| Filter::Must(FilterField::Tags, vec![Value::String(t.clone())])),
        );
        filter = Some(Filter::And(all));
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
        limit: body.node_limit.map_or(limit_v, |l| l.0) as usize,
        score_threshold: body.score_threshold.map(|n| n.0),
        filter,
        levels,
        include_provenance: body.include_provenance,
        read_content: body.read_content,
        search_type,
        session_id: body.session_id.map(|t| t.0),
        tags,
    }))
}

/// Decode (as the route's extractor does) and validate in one step.
#[cfg(test)]
pub(crate) fn parse(
    body: &Value,
    route: Route,
    now_ms: i64,
) -> ServiceResult<Result<SearchRequest, Unsupported>> {
    let bytes = body.to_string();
    let body = match route {
        Route::Find => crate::decode::parse_json::<FindBody>(bytes.as_bytes())?.into(),
        Route::Search => crate::decode::parse_json::<SearchBody>(bytes.as_bytes())?,
    };
    validate(body, route, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value, route: Route) -> ServiceResult<SearchRequest> {
        match parse(&v, route, 1_800_000_000_000)? {
            Ok(r) => Ok(r),
            Err(_) => Err(ServiceError::unimplemented("context")),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let r = p(json!({"query":"auth"}), Route::Find).unwrap();
        assert_eq!(r.limit, 10);
        // As in 0.5.2's models, unknown keys are refused, and search-only keys on find.
        for (body, route) in [
            (json!({"query":"a","unknown":1}), Route::Find),
            (json!({"query":"a","mode":"list"}), Route::Find),
            (json!({"query":"a","unknown":1}), Route::Search),
        ] {
            let e = p(body.clone(), route).unwrap_err();
            let d = e.details.unwrap();
            assert_eq!(
                d["validation_errors"][0]["type"], "extra_forbidden",
                "{body}"
            );
        }
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
        assert!(msg(json!({"query":"a","tags":["k=v=w"]}), Route::Find).contains("strict k=v"));
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
            parse(&json!({"query":"a","mode":"context"}), Route::Search, 0),
            Ok(Err(Unsupported::ContextMode))
        ));
    }
}
