//! Decoding request bodies and query strings into typed values, with every failure reported
//! as a spec §1.3 validation envelope (`{loc, message, type}`). No actix: the HTTP extractors
//! call it on workers for small inputs, and jobs call it on the pools for large bodies.

use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::error::ServiceError;

/// Deserialize a JSON body, reporting the first problem with its location.
///
/// Every request body of the API is a JSON object. serde would otherwise accept a JSON array
/// for a struct (fields by position), so `["acme", "alice"]` must be refused here, before
/// any field is read.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    // serde_json checks UTF-8 only in strings it keeps: invalid bytes inside an ignored
    // (unknown) field would otherwise pass, and the request would run as if they were absent.
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(ServiceError::validation(
            &["body"],
            &format!(
                "JSON decode error: invalid UTF-8 at byte {}",
                e.valid_up_to()
            ),
            "json_invalid",
        ));
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        // Not even the start of a JSON value: report it as the decode error it is.
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
            return Err(ServiceError::validation(
                &["body"],
                "Input should be a valid dictionary",
                "dict_type",
            ))
        }
        _ => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = segments(e.path());
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ServiceError::validation(
                &["body"],
                &format!("JSON decode error: {inner}"),
                "json_invalid",
            );
        }
        describe("body", &path, &inner.to_string())
    })?;
    de.end().map_err(|e| {
        ServiceError::validation(
            &["body"],
            &format!("JSON decode error: {e}"),
            "json_invalid",
        )
    })?;
    Ok(value)
}

/// [`parse_json`] of a body that must be present: empty or whitespace-only is `Field required`.
pub fn parse_required_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::validation(
            &["body"],
            "Field required",
            "missing",
        ));
    }
    parse_json(bytes)
}

/// Deserialize a query string.
///
/// Percent-escapes must decode to UTF-8: the lossy decoding underneath would turn `%FF` into
/// U+FFFD, so `uri=viking://resources/%FF.md` would name (and could delete) a real file
/// called `\u{FFFD}.md` that the client never mentioned.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ServiceError> {
    if let Err(e) = percent_encoding::percent_decode_str(query).decode_utf8() {
        return Err(ServiceError::validation(
            &["query"],
            &format!(
                "Query string percent-escapes are not valid UTF-8 (byte {})",
                e.valid_up_to()
            ),
            "string_unicode",
        ));
    }
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = segments(e.path());
        describe("query", &path, &e.into_inner().to_string())
    })
}

/// Separates a field error's message from its pydantic `type` inside a serde error string.
const KIND_TAG: &str = "\u{1f}type=";

/// A field error raised inside a deserializer, with its pydantic `type` (`string_type`,
/// `literal_error`, …): [`parse_json`] reports it at the field's location with this message
/// and type, exactly as a hand-written check would.
pub fn field_error<E: serde::de::Error>(kind: &str, message: &str) -> E {
    E::custom(field_message(kind, message))
}

/// The text of a [`field_error`], for a conversion serde calls (`#[serde(try_from)]`), whose
/// error serde turns into its own.
pub fn field_message(kind: &str, message: &str) -> String {
    format!("{message}{KIND_TAG}{kind}")
}

/// Separates a nested decode's location (relative to the value being decoded) from its message
/// inside a serde error string: `{NESTED_TAG}a{NESTED_SEP}b{NESTED_END}message`.
const NESTED_TAG: &str = "\u{1d}at=";
const NESTED_SEP: char = '\u{1e}';
const NESTED_END: char = '\u{1d}';

/// [`field_error`] at a location below the value being deserialized (`rel`: field names and
/// indexes), for a deserializer that decodes part of its input in a second step.
pub fn field_error_at<E: serde::de::Error>(rel: &[&str], kind: &str, message: &str) -> E {
    nested_error(rel, &format!("{message}{KIND_TAG}{kind}"))
}

fn nested_error<E: serde::de::Error>(rel: &[&str], message: &str) -> E {
    let sep = NESTED_SEP.to_string();
    E::custom(format!(
        "{NESTED_TAG}{}{NESTED_END}{message}",
        rel.join(&sep)
    ))
}

/// Decode `T` from an already buffered JSON value, keeping the location of a failure inside
/// it: the caller's deserializer reports it below its own position, exactly as if `T` had
/// been decoded in place. For tagged unions, which must see their tag before they can pick
/// the type of the rest (serde's own tagged enums buffer the value and lose the location).
pub fn decode_nested<T: DeserializeOwned, E: serde::de::Error>(
    value: serde_json::Value,
) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let rel = segments(e.path());
        let rel: Vec<&str> = rel.iter().map(String::as_str).collect();
        nested_error(&rel, &e.into_inner().to_string())
    })
}

/// Decode `T` from a stored JSON value (not a request body): a failure is a validation error
/// located under `loc` (`["memory_policy"]` for a stored policy).
pub fn from_value<T: DeserializeOwned>(
    loc: &[&str],
    value: serde_json::Value,
) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = loc.iter().map(|s| s.to_string()).collect();
        path.extend(segments(e.path()));
        let (origin, rest) = path
            .split_first()
            .map_or(("body", &[][..]), |(o, r)| (o.as_str(), r));
        describe(origin, rest, &e.into_inner().to_string())
    })
}

/// A JSON string; anything else (`null` too) is pydantic's `string_type`.
pub fn strict_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        _ => Err(field_error("string_type", "Input should be a valid string")),
    }
}

/// An optional JSON string: `null` is `None`, another type `string_type`.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        _ => Err(field_error("string_type", "Input should be a valid string")),
    }
}

/// An optional strict boolean (JSON `true`/`false` only, as pydantic's `StrictBool`): `null`
/// is `None`, anything else `bool_type`.
pub fn opt_strict_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(b) => Ok(Some(b)),
        _ => Err(field_error("bool_type", "Input should be a valid boolean")),
    }
}

/// An optional JSON integer within `min..=max` (`max: None`: unbounded): `null` is `None`,
/// another type `int_type`, out of range as [`int_in_range`] says.
pub fn opt_int_in<E: serde::de::Error>(
    value: serde_json::Value,
    min: i64,
    max: Option<i64>,
) -> Result<Option<i64>, E> {
    let n = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    };
    let Some(n) = n else {
        return Err(field_error("int_type", "Input should be a valid integer"));
    };
    if n < min {
        return Err(field_error(
            "greater_than_equal",
            &format!("Input should be greater than or equal to {min}"),
        ));
    }
    if let Some(max) = max.filter(|max| n > *max) {
        return Err(field_error(
            "less_than_equal",
            &format!("Input should be less than or equal to {max}"),
        ));
    }
    Ok(Some(n))
}

/// An optional JSON object decoded as `T` (its fields' locations kept): `null` is `None`,
/// another type pydantic's `dict_type` (a derived struct would report a serde `invalid type`).
pub fn opt_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    d.deserialize_any(ObjectVisitor(PhantomData))
}

/// [`opt_object`] of a field that must be an object when present (`null` is `dict_type`).
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    opt_object(d)?.ok_or_else(not_a_dict)
}

/// A JSON string as a list element or map value (`string_type` otherwise, `null` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictString(pub String);

impl<'de> Deserialize<'de> for StrictString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        strict_string(d).map(StrictString)
    }
}

/// A JSON list of `T` as a map value (`Option<List<T>>`: `null` is `None`); another type is
/// `list_type`.
#[derive(Debug, Clone)]
pub struct List<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        list_at_most(d, usize::MAX).map(List)
    }
}

/// A JSON object decoded as `T`, as a list element or a body: anything else is `dict_type`.
#[derive(Debug, Clone)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        object(d).map(Object)
    }
}

fn not_a_dict<E: serde::de::Error>() -> E {
    field_error("dict_type", "Input should be a valid dictionary")
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a dictionary")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Err(not_a_dict())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Err(not_a_dict())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Err(not_a_dict())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Err(not_a_dict())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Err(not_a_dict())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Option<T>, A::Error> {
        Err(not_a_dict())
    }
}

/// An optional JSON list of `T` (each element's location kept): `null` is `None`, another
/// type pydantic's `list_type`.
pub fn opt_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    d.deserialize_any(ListVisitor {
        max: usize::MAX,
        _item: PhantomData,
    })
}

/// A JSON list of at most `max` elements of `T` (`null` and other types: `list_type`). Past
/// `max`, the rest is only counted (for the message), never decoded or kept.
pub fn list_at_most<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    max: usize,
) -> Result<Vec<T>, D::Error> {
    d.deserialize_any(ListVisitor {
        max,
        _item: PhantomData,
    })?
    .ok_or_else(not_a_list)
}

fn not_a_list<E: serde::de::Error>() -> E {
    field_error("list_type", "Input should be a valid list")
}

struct ListVisitor<T> {
    max: usize,
    _item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Option<Vec<T>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while out.len() < self.max {
            match seq.next_element::<T>()? {
                Some(item) => out.push(item),
                None => return Ok(Some(out)),
            }
        }
        let mut total = out.len();
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            total += 1;
        }
        if total > self.max {
            return Err(field_error(
                "too_long",
                &format!(
                    "List should have at most {} items after validation, not {total}",
                    self.max
                ),
            ));
        }
        Ok(Some(out))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(not_a_list())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(not_a_list())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(not_a_list())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(not_a_list())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(not_a_list())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(not_a_list())
    }
}

/// The location of a decode error as pydantic spells it: field names and list indexes.
fn segments(path: &serde_path_to_error::Path) -> Vec<String> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect()
}

/// Turn a serde message into the pydantic-like `{loc, message, type}` entry.
fn describe(origin: &str, path: &[String], raw: &str) -> ServiceError {
    let msg = raw.split(" at line ").next().unwrap_or(raw);
    // A nested decode's location continues the outer one (nested decodes may nest).
    let mut path = path.to_vec();
    let mut msg = msg;
    while let Some((rel, inner)) = msg
        .strip_prefix(NESTED_TAG)
        .and_then(|rest| rest.split_once(NESTED_END))
    {
        path.extend(
            rel.split(NESTED_SEP)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        msg = inner;
    }
    let msg = msg.to_string();
    let mut loc: Vec<String> = vec![origin.to_string()];
    loc.extend(path.iter().filter(|s| !s.is_empty()).cloned());
    if let Some((message, kind)) = msg.split_once(KIND_TAG) {
        let loc_refs: Vec<&str> = loc.iter().map(String::as_str).collect();
        return ServiceError::validation(&loc_refs, message, kind);
    }
    let field = |m: &str, prefix: &str| {
        m.strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    // The path names the map being read: it stops before a missing field but already ends
    // with an unknown key (`{"x": 1}` → path `x`), so that key is named once.
    let path_names_key = path.last().is_some_and(|s| !s.is_empty());
    let (message, kind) = if let Some(f) = field(&msg, "missing field `") {
        loc.push(f);
        ("Field required".to_string(), "missing")
    } else if let Some(f) = field(&msg, "unknown field `") {
        if !path_names_key {
            loc.push(f);
        }
        (
            "Extra inputs are not permitted".to_string(),
            "extra_forbidden",
        )
    } else if let Some(f) = field(&msg, "duplicate field `") {
        loc.push(f);
        ("Field given more than once".to_string(), "value_error")
    } else if msg.starts_with("invalid type") {
        (msg.clone(), "type_error")
    } else {
        (msg.clone(), "value_error")
    };
    let loc_refs: Vec<&str> = loc.iter().map(String::as_str).collect();
    ServiceError::validation(&loc_refs, &message, kind)
}

/// Query and body booleans: `true|false|1|0|yes|no|on|off`, any case (spec §0); a string
/// that is none of these is `bool_parsing`, any other JSON type `bool_type`.
pub fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean")
        }
        fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(field_error(
                    "bool_parsing",
                    "Input should be a valid boolean",
                )),
            }
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(field_error(
                    "bool_parsing",
                    "Input should be a valid boolean",
                )),
            }
        }
    }
    d.deserialize_any(V).map_err(|e| {
        if e.to_string().starts_with("invalid type") {
            field_error("bool_type", "Input should be a valid boolean")
        } else {
            e
        }
    })
}

/// `flexible_bool` for optional fields.
pub fn flexible_bool_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    flexible_bool(d).map(Some)
}

/// An integer parameter within `min..=max` (`max: None`: unbounded) as a `usize` (saturating),
/// or the pydantic-style validation error at `loc` (`greater_than_equal` / `less_than_equal`).
pub fn int_in_range(
    loc: &[&str],
    value: i64,
    min: i64,
    max: Option<i64>,
) -> Result<usize, ServiceError> {
    if value < min {
        return Err(ServiceError::validation(
            loc,
            &format!("Input should be greater than or equal to {min}"),
            "greater_than_equal",
        ));
    }
    if let Some(max) = max.filter(|max| value > *max) {
        return Err(ServiceError::validation(
            loc,
            &format!("Input should be less than or equal to {max}"),
            "less_than_equal",
        ));
    }
    Ok(usize::try_from(value).unwrap_or(usize::MAX))
}

/// A details object listing one validation error (for hand-written checks).
pub fn validation_details(loc: &[&str], message: &str, kind: &str) -> serde_json::Value {
    json!({"validation_errors": [{"loc": loc, "message": message, "type": kind}]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        role: String,
        n: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    struct Q {
        #[serde(default, deserialize_with = "flexible_bool")]
        recursive: bool,
        limit: Option<i64>,
    }

    #[test]
    fn json_errors_are_located() {
        let e = parse_json::<Body>(br#"{"n": 1}"#).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid request parameters: body.role: Field required"
        );
        let e = parse_json::<Body>(br#"{"role": 5}"#).unwrap_err();
        assert!(e
            .message
            .starts_with("Invalid request parameters: body.role: invalid type"));
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(
            e.details.unwrap()["validation_errors"][0]["type"],
            "json_invalid"
        );
        assert!(parse_json::<Body>(br#"{"role": "x"} trailing"#).is_err());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        role: String,
    }

    #[test]
    fn arrays_and_scalars_are_not_objects() {
        for body in [
            &br#"["x", 1]"#[..],
            b"[]",
            b"\"x\"",
            b"null",
            b"5",
            b" true",
        ] {
            let e = parse_json::<Body>(body).unwrap_err();
            let d = e.details.unwrap();
            assert_eq!(d["validation_errors"][0]["type"], "dict_type", "{body:?}");
            assert_eq!(
                d["validation_errors"][0]["loc"],
                json!(["body"]),
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_in_an_ignored_field_is_refused() {
        let e = parse_json::<Body>(b"{\"role\": \"x\", \"other\": \"\xff\"}").unwrap_err();
        assert_eq!(
            e.details.unwrap()["validation_errors"][0]["type"],
            "json_invalid"
        );
    }

    #[test]
    fn unknown_field_is_named_once() {
        let e = parse_json::<Strict>(br#"{"role": "x", "extra": 1}"#).unwrap_err();
        let d = e.details.unwrap();
        assert_eq!(d["validation_errors"][0]["loc"], json!(["body", "extra"]));
        assert_eq!(d["validation_errors"][0]["type"], "extra_forbidden");
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(int_in_range(&["query", "n"], 5, 0, None).unwrap(), 5);
        assert_eq!(
            int_in_range(&["query", "n"], 200, 1, Some(200)).unwrap(),
            200
        );
        let e = int_in_range(&["query", "n"], 0, 1, Some(200)).unwrap_err();
        let d = e.details.unwrap();
        assert_eq!(d["validation_errors"][0]["type"], "greater_than_equal");
        assert_eq!(d["validation_errors"][0]["loc"], json!(["query", "n"]));
        let e = int_in_range(&["body", "n"], 201, 1, Some(200)).unwrap_err();
        assert_eq!(
            e.details.unwrap()["validation_errors"][0]["type"],
            "less_than_equal"
        );
    }

    #[test]
    fn query_bools_and_ints() {
        let q: Q = parse_query("recursive=YES&limit=5").unwrap();
        assert!(q.recursive);
        assert_eq!(q.limit, Some(5));
        let q: Q = parse_query("recursive=off").unwrap();
        assert!(!q.recursive);
        let e = parse_query::<Q>("recursive=maybe").unwrap_err();
        assert!(e.message.contains("query.recursive"), "{}", e.message);
        assert!(parse_query::<Q>("limit=abc").is_err());
        let e = parse_query::<Q>("limit=5&x=%FF").unwrap_err();
        assert_eq!(
            e.details.unwrap()["validation_errors"][0]["type"],
            "string_unicode"
        );
        assert!(parse_query::<Q>("limit=5&x=%C3%A9").is_ok());
    }
}
