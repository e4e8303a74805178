//! The index's records as `debug/vector/scroll` and `debug/vector/count` show them: one record
//! per indexed document of the caller's account (0.5.2 lists its vector store's records),
//! paged by path, narrowed by a subtree and by 0.5.2's `must` filters.

use serde_json::{json, Value};

use super::embed::Embedder;
use super::index::{IndexedDoc, SearchIndex};
use crate::error::{ErrorCode, ServiceError, ServiceResult};

/// Longest `filter` accepted (bytes).
pub const MAX_FILTER_BYTES: usize = 8192;

/// A narrowing of the records: 0.5.2's `{"op": "must", "field": F, "conds": [...]}` on
/// `uri` (the record or anything under it), `level` or `context_type`, or `{"op": "and",
/// "conds": [filters]}` of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Uri(Vec<String>),
    Level(Vec<u64>),
    ContextType(Vec<String>),
    And(Vec<Filter>),
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidFilter, message)
}

impl Filter {
    /// Read a filter from its JSON text.
    pub fn parse(text: &str) -> ServiceResult<Filter> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(invalid(format!(
                "Invalid filter JSON: longer than {MAX_FILTER_BYTES} bytes"
            )));
        }
        let v: Value = serde_json::from_str(text).map_err(|_| invalid("Invalid filter JSON"))?;
        Self::from_value(&v, 0)
    }

    fn from_value(v: &Value, depth: usize) -> ServiceResult<Filter> {
        if depth > 8 {
            return Err(invalid("filter nested too deeply"));
        }
        let op = v["op"].as_str().unwrap_or_default();
        let conds = v["conds"]
            .as_array()
            .ok_or_else(|| invalid("a filter needs \"op\" and a \"conds\" list"))?;
        match op {
            "and" => Ok(Filter::And(
                conds
                    .iter()
                    .map(|c| Self::from_value(c, depth + 1))
                    .collect::<ServiceResult<_>>()?,
            )),
            "must" => {
                let strings = || -> ServiceResult<Vec<String>> {
                    conds
                        .iter()
                        .map(|c| c.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| invalid("conds must be strings for this field"))
                };
                match v["field"].as_str().unwrap_or_default() {
                    "uri" => Ok(Filter::Uri(
                        strings()?
                            .into_iter()
                            .map(|u| u.trim_end_matches('/').to_string())
                            .collect(),
                    )),
                    "context_type" => Ok(Filter::ContextType(strings()?)),
                    "level" => Ok(Filter::Level(
                        conds
                            .iter()
                            .map(Value::as_u64)
                            .collect::<Option<_>>()
                            .ok_or_else(|| invalid("level conds must be integers"))?,
                    )),
                    other => Err(invalid(format!(
                        "filter field {other:?} is not supported (uri, level, context_type)"
                    ))),
                }
            }
            other => Err(invalid(format!(
                "filter op {other:?} is not supported (must, and)"
            ))),
        }
    }

    fn matches(&self, d: &IndexedDoc) -> bool {
        match self {
            Filter::Uri(uris) => uris.iter().any(|u| {
                d.hit.uri == *u
                    || d.hit
                        .uri
                        .strip_prefix(u.as_str())
                        .is_some_and(|r| r.starts_with('/') || u.ends_with("://"))
            }),
            Filter::Level(levels) => levels.contains(&d.hit.level),
            Filter::ContextType(types) => types.contains(&d.hit.context_type),
            Filter::And(all) => all.iter().all(|f| f.matches(d)),
        }
    }
}

/// What to list: the account's documents under `root` (a full storage path), filtered.
pub struct Selection<'a> {
    pub index: &'a SearchIndex,
    pub embedder: &'a Embedder,
    pub root: &'a str,
    pub filter: Option<&'a Filter>,
    /// The caller's user id when other users' spaces are hidden from it (all but root).
    pub own_user: Option<&'a str>,
}

impl Selection<'_> {
    fn docs(&self) -> ServiceResult<Vec<IndexedDoc>> {
        let mut docs = self
            .index
            .documents_under(self.root)
            .map_err(ServiceError::internal)?;
        docs.retain(|d| {
            crate::storage::StorePath::parse(&d.hit.path)
                .is_ok_and(|p| !super::consistency::other_users_space(&p, self.own_user))
        });
        if let Some(f) = self.filter {
            docs.retain(|d| f.matches(d));
        }
        Ok(docs)
    }

    /// How many records the selection holds.
    pub fn count(&self) -> ServiceResult<usize> {
        Ok(self.docs()?.len())
    }

    /// Up to `limit` records after `cursor` and the next cursor (None on the last page), in
    /// path order. The cursor is opaque to clients (hex of the last record's path inside the
    /// account); each page reads only its own documents from the index.
    pub fn scroll(&self, limit: usize, cursor: Option<&str>) -> ServiceResult<Value> {
        let account = self.root.split('/').next().unwrap_or_default();
        let after = match cursor {
            None | Some("") => None,
            Some(c) => {
                let rel = hex::decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ServiceError::invalid_argument("cursor is not one this server gave")
                    })?;
                Some(format!("{account}/{rel}"))
            }
        };
        let keep = |d: &IndexedDoc| {
            crate::storage::StorePath::parse(&d.hit.path)
                .is_ok_and(|p| !super::consistency::other_users_space(&p, self.own_user))
                && self.filter.is_none_or(|f| f.matches(d))
        };
        let (page, more) = self
            .index
            .documents_page(self.root, after.as_deref(), limit, &keep)
            .map_err(ServiceError::internal)?;
        let next = more.then(|| page.last()).flatten().map(|d| {
            let rel = d
                .hit
                .path
                .split_once('/')
                .map(|(_, r)| r)
                .unwrap_or_default();
            hex::encode(rel)
        });
        let records: Vec<Value> = page
            .iter()
            .map(|d| {
                json!({
                    "id": format!("{}#{}", d.hit.uri, d.hit.level),
                    "uri": d.hit.uri,
                    "level": d.hit.level,
                    "context_type": d.hit.context_type,
                    "abstract": d.hit.abstract_text,
                    "account_id": d.account(),
                    "content_hash": d.hit.hash,
                    "size": d.size,
                    "updated_at": crate::time::iso_micros(d.hit.mtime_ms as f64 / 1000.0),
                    "vector_loaded": self.embedder.has_vector(&d.hit.hash),
                })
            })
            .collect();
        Ok(json!({"records": records, "next_cursor": next}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_why_not() {
        assert_eq!(
            Filter::parse(r#"{"op":"must","field":"level","conds":[0,1]}"#).unwrap(),
            Filter::Level(vec![0, 1])
        );
        assert!(matches!(
            Filter::parse(r#"{"op":"and","conds":[{"op":"must","field":"uri","conds":["viking://resources/a/"]}]}"#).unwrap(),
            Filter::And(v) if v == vec![Filter::Uri(vec!["viking://resources/a".into()])]
        ));
        for bad in [
            "not json",
            r#"{"op":"range","field":"level","conds":[1]}"#,
            r#"{"op":"must","field":"vector","conds":[1]}"#,
            r#"{"op":"must","field":"level","conds":["x"]}"#,
            r#"{"op":"must","field":"uri"}"#,
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidFilter, "{bad}");
        }
        let deep = format!(
            "{}{}",
            r#"{"op":"and","conds":["#.repeat(20),
            "]}".repeat(20)
        );
        assert!(Filter::parse(&deep).is_err());
    }
}
