//! S2 glob: globset matching over paths relative to the start directory.
//!
//! The walk visits names in byte order, so pre-order yields matches already sorted
//! component-wise and the first `node_limit` matches are the answer: it stops there. Literal
//! leading components of the pattern are descended directly, and a pattern without `**` bounds
//! the walk's depth, so `docs/*.md` never walks the rest of the tree.

use globset::{GlobBuilder, GlobMatcher};
use serde_json::{json, Value};

use super::entry::{render_many, Item, Render};
use super::walk::{Flow, Order, Walker};
use super::{dir_not_found, not_a_directory, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::tags::{TagCache, TagQuery};
use crate::storage::uri::{child_visible, VikingUri};
use crate::storage::Storage;

/// Compile a glob with `/` as a literal separator (`*` stays inside one component).
pub fn compile(pattern: &str) -> ServiceResult<GlobMatcher> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ServiceError::invalid_argument(format!("Invalid glob pattern: {e}")))
}

const EMPTY: &[u8] = br#"{"matches":[],"count":0}"#;

const META_CHARS: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

/// The pattern's leading literal directory components (never its last component).
pub fn literal_prefix(pattern: &str) -> Vec<&str> {
    let comps: Vec<&str> = pattern.split('/').collect();
    comps[..comps.len().saturating_sub(1)]
        .iter()
        .take_while(|c| !c.is_empty() && !c.contains(META_CHARS))
        .copied()
        .collect()
}

/// The deepest level a match can sit at, if the pattern bounds it.
pub fn depth_bound(pattern: &str) -> Option<usize> {
    if pattern.contains("**") || pattern.contains(['[', '{', '\\']) {
        return None;
    }
    Some(pattern.split('/').count())
}

/// What a glob looks for and how it answers.
#[derive(Clone, Copy)]
pub struct GlobQuery<'a> {
    pub pattern: &'a str,
    /// `None` = unlimited.
    pub node_limit: Option<usize>,
    /// `extra_fields` given: stat-like objects instead of URI strings.
    pub render_as: Option<&'a Render>,
    /// `tags` / `include_tags`.
    pub tags: &'a TagQuery,
}

/// S2: paths below `base` matching `pattern`, as `who` sees them; at most `node_limit`
/// (`None` = unlimited), as URI strings or (`render` given: `extra_fields`) stat-like objects.
/// The result is JSON-encoded here: an unlimited glob can answer megabytes.
pub fn glob(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    who: &Identity,
    base: &VikingUri,
    query: &GlobQuery<'_>,
) -> ServiceResult<Vec<u8>> {
    let GlobQuery {
        pattern,
        node_limit,
        render_as,
        tags,
    } = *query;
    let matcher = compile(pattern)?;
    match stat(storage, base)? {
        Some(m) if m.is_dir() => {}
        Some(_) => return Err(not_a_directory(base)),
        None if base.is_root() => return Ok(EMPTY.to_vec()),
        None => return Err(dir_not_found(base)),
    }
    let mut matches: Vec<Item> = Vec::new();
    let limit = node_limit;
    // Descend the literal prefix directly; each step obeys the same visibility rules.
    let mut start = base.clone();
    let prefix = literal_prefix(pattern);
    for comp in &prefix {
        if !child_visible(&start, comp, who) {
            return Ok(EMPTY.to_vec());
        }
        match start.child(comp) {
            Ok(next) => start = next,
            Err(_) => return Ok(EMPTY.to_vec()),
        }
    }
    if start != *base {
        match stat(storage, &start)? {
            Some(m) if m.is_dir() => {}
            _ => return Ok(EMPTY.to_vec()),
        }
    }
    let walker = Walker {
        who,
        show_hidden_files: false,
        max_depth: depth_bound(pattern)
            .map(|d| d - prefix.len())
            .unwrap_or(usize::MAX),
        order: Order::ByName,
        exclude: None,
    };
    let mut cache = TagCache::default();
    let mut match_tags: Vec<Vec<String>> = Vec::new();
    if limit != Some(0) {
        walker.run(storage, abandoned, &start, |uri, meta, _| {
            let rel = uri.rel_to(base).unwrap_or_default();
            if matcher.is_match(&rel) {
                if tags.active() {
                    let t = cache
                        .tags_of(storage, uri.store_path())
                        .map_err(|e| StorageFail(uri).map(e))?;
                    if !tags.keeps(&t) {
                        return Ok(Flow::Continue);
                    }
                    match_tags.push(t);
                }
                matches.push((uri.clone(), meta.clone(), None));
                if limit.is_some_and(|l| matches.len() >= l) {
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Continue)
        })?;
    }
    let n = matches.len();
    // Rendered entries read their sidecars together (bounded parallel on an object store).
    let matches: Vec<Value> = match render_as {
        Some(r) => render_many(storage, &matches, r, &|| !abandoned()),
        // 0.5.2: with tags asked for, matches are objects carrying them.
        None if tags.active() => matches
            .iter()
            .map(|(uri, _, _)| json!({"uri": uri.uri()}))
            .collect(),
        None => matches
            .into_iter()
            .map(|(uri, meta, _)| match meta.is_dir() {
                true => Value::String(format!("{}/", uri.uri())),
                false => Value::String(uri.uri()),
            })
            .collect(),
    };
    let mut matches = matches;
    if tags.active() {
        for (m, t) in matches.iter_mut().zip(match_tags) {
            if let Value::Object(map) = m {
                map.insert("tags".into(), Value::from(t));
            }
        }
    }
    serde_json::to_vec(&json!({"matches": matches, "count": n})).map_err(ServiceError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_depth() {
        assert_eq!(literal_prefix("docs/api/*.md"), vec!["docs", "api"]);
        assert_eq!(literal_prefix("**/*.md"), Vec::<&str>::new());
        assert_eq!(literal_prefix("a.md"), Vec::<&str>::new());
        assert_eq!(literal_prefix("a/b*/c"), vec!["a"]);
        assert_eq!(depth_bound("docs/*.md"), Some(2));
        assert_eq!(depth_bound("**/*.md"), None);
        assert_eq!(depth_bound("{a,b/c}"), None);
    }
}
