//! F1 ls and F2 tree: bounded pages of a directory or subtree.
//!
//! A page holds at most `node_limit` entries after skipping `offset`; `has_more` reports
//! whether further visible entries exist. ls partially sorts (only the first offset+limit
//! entries are ordered) and renders only the page, so a 100k-entry directory costs one
//! listing and a page of sidecar reads; tree stops walking as soon as the page is full.

use serde_json::Value;

use super::entry::{render_many, Item, Render};
use super::walk::{caseless, Ended, Flow, Order, Walker};
use super::{dir_not_found, not_a_directory, stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::storage::acl::{AclView, Shown};
use crate::storage::tags::{TagCache, TagQuery};
use crate::storage::uri::VikingUri;
use crate::storage::{DirEntry, Storage};
use std::collections::HashMap;

/// `sort_by` of F1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Mtime,
}

/// One page of entries, JSON-encoded on the pool (a client may ask for a very large page).
#[derive(Debug)]
pub struct Page {
    pub items: Vec<u8>,
    pub has_more: bool,
}

fn page(items: &[Value], has_more: bool) -> ServiceResult<Page> {
    Ok(Page {
        items: serde_json::to_vec(items).map_err(ServiceError::internal)?,
        has_more,
    })
}

/// Paging and filtering shared by ls and tree.
#[derive(Debug, Clone)]
pub struct PageOpts {
    pub render: Render,
    pub show_all_hidden: bool,
    pub node_limit: usize,
    pub offset: usize,
    /// `simple=true`: URI strings instead of objects.
    pub simple: bool,
    /// `tags` / `include_tags` (0.5.2).
    pub tags: TagQuery,
}

/// Each entry's tags when the listing asks for them (one map read per directory).
fn entry_tags(
    storage: &dyn Storage,
    cache: &mut TagCache,
    query: &TagQuery,
    uri: &VikingUri,
) -> ServiceResult<Vec<String>> {
    if !query.active() {
        return Ok(Vec::new());
    }
    cache
        .tags_of(storage, uri.store_path())
        .map_err(|e| StorageFail(uri).map(e))
}

/// The start of a listing must be an existing directory. A fresh account has no root
/// directory yet; its `viking://` lists as empty.
fn check_dir(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<bool> {
    match stat(storage, uri)? {
        Some(m) if m.is_dir() => Ok(true),
        Some(_) => Err(not_a_directory(uri)),
        None if uri.is_root() => Ok(false),
        None => Err(dir_not_found(uri)),
    }
}

/// F1 order: directories first, then by name or mtime.
fn ls_order(
    a: &DirEntry,
    b: &DirEntry,
    sort_by: Option<SortBy>,
    descending: bool,
) -> std::cmp::Ordering {
    let dirs_first = b.meta.is_dir().cmp(&a.meta.is_dir());
    let within = match sort_by {
        Some(SortBy::Mtime) => a
            .meta
            .modified
            .cmp(&b.meta.modified)
            .then_with(|| caseless(&a.name, &b.name)),
        _ => caseless(&a.name, &b.name).then_with(|| a.name.cmp(&b.name)),
    };
    let within = if descending { within.reverse() } else { within };
    dirs_first.then(within)
}

/// F1 (non-recursive) ls of one directory.
pub fn ls(
    storage: &dyn Storage,
    who: &Identity,
    dir: &VikingUri,
    opts: &PageOpts,
    sort_by: Option<SortBy>,
    descending: bool,
) -> ServiceResult<Page> {
    if !check_dir(storage, dir)? {
        return page(&[], false);
    }
    let walker = Walker {
        who,
        show_hidden_files: opts.show_all_hidden,
        max_depth: 1,
        order: Order::DirsFirst,
        exclude: None,
    };
    let mut entries = walker.children(storage, dir)?;
    // ACLs: children the caller may not read are placeholders (or left out).
    let acl = AclView::for_caller(who);
    let shown_of = |name: &str| match (&acl, dir.child(name)) {
        (Some(view), Ok(child)) => view.shown(&child),
        _ => Shown::Full,
    };
    if acl.is_some() {
        // A denied node's tags are not the caller's to filter on.
        entries.retain(|e| match shown_of(&e.name) {
            Shown::Full => true,
            Shown::Denied => !opts.tags.active(),
            Shown::Hidden => false,
        });
    }
    let mut cache = TagCache::default();
    let mut tags_by_name: HashMap<String, Vec<String>> = HashMap::new();
    if opts.tags.active() {
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            let Ok(child) = dir.child(&e.name) else {
                continue;
            };
            let tags = entry_tags(storage, &mut cache, &opts.tags, &child)?;
            if opts.tags.keeps(&tags) {
                tags_by_name.insert(e.name.clone(), tags);
                kept.push(e);
            }
        }
        entries = kept;
    }
    let end = opts.offset.saturating_add(opts.node_limit);
    let has_more = entries.len() > end;
    // Order only what the page needs: O(n) selection, then sort the prefix.
    if has_more {
        entries.select_nth_unstable_by(end, |a, b| ls_order(a, b, sort_by, descending));
        entries.truncate(end);
    }
    entries.sort_by(|a, b| ls_order(a, b, sort_by, descending));
    let shown: Vec<Item> = entries
        .into_iter()
        .skip(opts.offset)
        .filter_map(|e| Some((dir.child(&e.name).ok()?, e.meta, None)))
        .collect();
    let tags: Vec<Vec<String>> = shown
        .iter()
        .map(|(u, _, _)| tags_by_name.remove(u.name()).unwrap_or_default())
        .collect();
    let denied: Vec<bool> = shown
        .iter()
        .map(|(u, _, _)| shown_of(u.name()) == Shown::Denied)
        .collect();
    let rendered = render_with_placeholders(storage, &|| false, opts, shown, &denied);
    page(&with_tags(rendered, tags, opts), has_more)
}

/// 0.5.2's placeholder for a node the caller may not read: name, type, URI, nothing else.
fn placeholder(item: &Item, simple: bool) -> Value {
    let (uri, meta, rel) = item;
    if simple {
        return Value::String(uri.uri());
    }
    let mut m = serde_json::Map::new();
    m.insert("name".into(), uri.name().into());
    m.insert("isDir".into(), meta.is_dir().into());
    if let Some(rel) = rel {
        m.insert("rel_path".into(), rel.clone().into());
    }
    m.insert("uri".into(), uri.uri().into());
    m.insert("access".into(), "denied".into());
    Value::Object(m)
}

/// [`render_page`] with `denied[i]` items as placeholders (their sidecars are never read).
fn render_with_placeholders(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    opts: &PageOpts,
    items: Vec<Item>,
    denied: &[bool],
) -> Vec<Value> {
    if !denied.iter().any(|d| *d) {
        return render_page(storage, abandoned, opts, items);
    }
    let holders: Vec<Option<Value>> = items
        .iter()
        .zip(denied)
        .map(|(item, d)| d.then(|| placeholder(item, opts.simple)))
        .collect();
    let full: Vec<Item> = items
        .into_iter()
        .zip(denied)
        .filter(|(_, d)| !**d)
        .map(|(item, _)| item)
        .collect();
    let mut rendered = render_page(storage, abandoned, opts, full).into_iter();
    holders
        .into_iter()
        .map(|h| h.unwrap_or_else(|| rendered.next().unwrap_or(Value::Null)))
        .collect()
}

/// `include_tags`: each rendered entry gets its `tags`.
fn with_tags(mut rendered: Vec<Value>, tags: Vec<Vec<String>>, opts: &PageOpts) -> Vec<Value> {
    if opts.tags.include {
        for (item, t) in rendered.iter_mut().zip(tags) {
            if let Value::Object(map) = item {
                map.insert("tags".into(), Value::from(t));
            }
        }
    }
    rendered
}

/// A page's entries as URIs (`simple`) or rendered, their sidecars read together (bounded
/// parallel requests on an object store).
fn render_page(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    opts: &PageOpts,
    items: Vec<Item>,
) -> Vec<Value> {
    if opts.simple {
        return items
            .into_iter()
            .map(|(uri, _, _)| Value::String(uri.uri()))
            .collect();
    }
    render_many(storage, &items, &opts.render, &|| !abandoned())
}

/// F2 tree (and F1 with `recursive=true`).
pub fn tree(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    who: &Identity,
    dir: &VikingUri,
    opts: &PageOpts,
    level_limit: usize,
    directories_only: bool,
) -> ServiceResult<Page> {
    if !check_dir(storage, dir)? {
        return page(&[], false);
    }
    let mut items: Vec<Item> = Vec::new();
    let mut has_more = false;
    let walker = Walker {
        who,
        show_hidden_files: opts.show_all_hidden,
        max_depth: level_limit,
        order: Order::DirsFirst,
        exclude: None,
    };
    let mut seen = 0usize;
    let mut cache = TagCache::default();
    let mut tags = Vec::new();
    let mut denied = Vec::new();
    let ended = walker.run_listing(storage, abandoned, dir, |uri, meta, _depth, shown| {
        if directories_only && !meta.is_dir() {
            return Ok(Flow::Continue);
        }
        let is_denied = shown == Shown::Denied;
        if is_denied && opts.tags.active() {
            return Ok(Flow::SkipChildren);
        }
        // A node without the tags is not listed; its subtree still is walked.
        let node_tags = if is_denied {
            Vec::new()
        } else {
            entry_tags(storage, &mut cache, &opts.tags, uri)?
        };
        if !opts.tags.keeps(&node_tags) {
            return Ok(Flow::Continue);
        }
        if items.len() == opts.node_limit {
            has_more = true;
            return Ok(Flow::Stop);
        }
        seen += 1;
        if seen > opts.offset {
            let rel = uri.rel_to(dir).unwrap_or_default();
            items.push((uri.clone(), meta.clone(), Some(rel)));
            tags.push(node_tags);
            denied.push(is_denied);
        }
        Ok(Flow::Continue)
    })?;
    if ended == Ended::Abandoned {
        tracing::debug!(uri = %dir, "tree abandoned by the client");
        return page(&[], false);
    }
    let rendered = render_with_placeholders(storage, abandoned, opts, items, &denied);
    page(&with_tags(rendered, tags, opts), has_more)
}
