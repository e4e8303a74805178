//! `system/consistency`: does the index (and, with a dense model, the stored vectors and
//! directory summaries) agree with storage for one subtree? A bounded walk of storage compared
//! with the index's documents under the same root; the repair is `content/reindex`.
//!
//! Expected records follow what the indexer indexes: every indexable file is a level-2 record,
//! a directory's `.abstract.md` / `.overview.md` are its level-0/1 records unless they are
//! still placeholders. A record is stale when its size or mtime differs from storage, orphaned
//! when storage no longer holds it.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};

use super::docs::{dir_indexable, file_indexable, level_of, placeholder_sidecar};
use super::embed::Embedder;
use super::index::{IndexedDoc, SearchIndex};
use crate::error::{storage_failure, ServiceError, ServiceResult};
use crate::storage::{okf, EntryKind, Storage, StorageError, StorePath};

/// Records listed per kind in the answer (0.5.2 lists 20 missing records).
pub const LISTED: usize = 20;
const ABSTRACT: &str = ".abstract.md";
const OVERVIEW: &str = ".overview.md";

/// One record in the answer, in 0.5.2's spelling.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    pub uri: String,
    pub path: String,
    pub level: u64,
    pub key: String,
}

/// What to compare and how far to go.
pub struct Check<'a> {
    pub storage: &'a dyn Storage,
    pub index: &'a SearchIndex,
    pub embedder: Option<&'a Embedder>,
    /// The subtree: its storage path and URI (a directory).
    pub root: &'a StorePath,
    pub root_uri: &'a str,
    /// The caller's user id when other users' spaces are hidden from it (all but root).
    pub own_user: Option<&'a str>,
    /// Most storage entries walked before the check refuses the subtree as too large.
    pub max_entries: usize,
    pub stop: &'a dyn Fn() -> bool,
}

/// A file or sidecar storage holds: (storage path, uri, relative path, level, size, mtime s).
struct Expected {
    path: String,
    uri: String,
    rel: String,
    level: u64,
    size: u64,
    mtime_s: i64,
}

fn record(uri: &str, rel: &str, level: u64) -> Record {
    let shown = if rel.is_empty() { "." } else { rel };
    Record {
        uri: uri.to_string(),
        path: rel.to_string(),
        level,
        key: format!("{shown}#level={level}"),
    }
}

fn listed(records: &[Record]) -> Value {
    json!(records.iter().take(LISTED).collect::<Vec<_>>())
}

/// Whether `path` lies in a user space `own_user` may not see (None: sees every one).
pub fn other_users_space(path: &StorePath, own_user: Option<&str>) -> bool {
    let segs: Vec<&str> = path.segments().collect();
    match (own_user, segs.as_slice()) {
        (Some(me), [_, "user", uid, ..]) => *uid != me,
        _ => false,
    }
}

fn join_uri(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

/// Run the check; the answer is 0.5.2's report (`ok`, `expected_count`,
/// `missing_record_count`, `missing_records`, `missing_records_truncated`) plus Longship's
/// stale and orphaned records, directories without summaries and missing stored vectors.
pub fn check(c: &Check<'_>) -> ServiceResult<Value> {
    let fail = |e: StorageError| storage_failure(&e);
    match c.storage.stat(c.root).map_err(fail)? {
        Some(m) if m.kind == EntryKind::Dir => {}
        Some(_) => {
            return Err(ServiceError::invalid_argument(
                "Consistency check only supports directory URIs.",
            ))
        }
        None => {
            return Err(ServiceError::not_found(
                "uri",
                c.root_uri,
                format!("{} not found", c.root_uri),
            ))
        }
    }
    let root_str = c.root.as_str().to_string();
    let rel_of = |p: &str| -> String {
        p.strip_prefix(&root_str)
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or_default()
    };
    // Walk storage: indexable files and the indexable directories (for their summaries).
    let mut files: Vec<Expected> = Vec::new();
    let mut sidecars: Vec<(StorePath, Expected)> = Vec::new();
    let mut dirs: Vec<(String, HashSet<String>)> = Vec::new();
    let mut stack = vec![c.root.clone()];
    let mut walked = 0usize;
    while let Some(dir) = stack.pop() {
        if (c.stop)() {
            return Err(ServiceError::unavailable("storage", "check abandoned"));
        }
        if !dir_indexable(&dir) || other_users_space(&dir, c.own_user) {
            continue;
        }
        let entries = match c.storage.list(&dir) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(fail(e)),
        };
        walked += entries.len();
        if walked > c.max_entries {
            return Err(ServiceError::invalid_argument(format!(
                "{} holds more than {} entries; check a smaller subtree",
                c.root_uri, c.max_entries
            )));
        }
        let rel_dir = rel_of(dir.as_str());
        let mut names = HashSet::new();
        for e in entries {
            let Ok(child) = dir.join(&e.name) else {
                continue;
            };
            match e.meta.kind {
                EntryKind::Dir => stack.push(child),
                EntryKind::File if file_indexable(&child) => {
                    let rel = rel_of(child.as_str());
                    let level = level_of(&e.name);
                    let mtime_s = e
                        .meta
                        .modified
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() as i64)
                        .unwrap_or(0);
                    let exp = Expected {
                        path: child.as_str().to_string(),
                        uri: join_uri(c.root_uri, if level < 2 { &rel_dir } else { &rel }),
                        rel: if level < 2 { rel_dir.clone() } else { rel },
                        level,
                        size: e.meta.size,
                        mtime_s,
                    };
                    if level < 2 {
                        names.insert(e.name.clone());
                        sidecars.push((child, exp));
                    } else {
                        files.push(exp);
                    }
                }
                EntryKind::File => {}
            }
        }
        dirs.push((rel_dir, names));
    }
    // Sidecars that are still placeholders are not indexed (nor summaries yet).
    let paths: Vec<StorePath> = sidecars.iter().map(|(p, _)| p.clone()).collect();
    let mut placeholders: HashSet<String> = HashSet::new();
    for ((path, _), read) in sidecars
        .iter()
        .zip(c.storage.read_many(&paths, &|| !(c.stop)()))
    {
        match read {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                if placeholder_sidecar(okf::body(&text)) {
                    placeholders.insert(path.as_str().to_string());
                }
            }
            Err(StorageError::NotFound(_)) => {
                placeholders.insert(path.as_str().to_string());
            }
            Err(e) => return Err(fail(e)),
        }
    }
    let expected: Vec<Expected> = files
        .into_iter()
        .chain(sidecars.into_iter().map(|(_, e)| e))
        .filter(|e| !placeholders.contains(&e.path))
        .collect();

    // The index's documents under the same root.
    let mut indexed = c
        .index
        .documents_under(&root_str)
        .map_err(ServiceError::internal)?;
    indexed.retain(|d| {
        StorePath::parse(&d.hit.path).is_ok_and(|p| !other_users_space(&p, c.own_user))
    });
    let by_path: HashMap<&str, &IndexedDoc> =
        indexed.iter().map(|r| (r.hit.path.as_str(), r)).collect();
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for e in &expected {
        match by_path.get(e.path.as_str()) {
            None => missing.push((e.rel.clone(), e.uri.clone(), e.level)),
            Some(r) if r.size != e.size || r.hit.mtime_ms.div_euclid(1000) != e.mtime_s => {
                stale.push((e.rel.clone(), e.uri.clone(), e.level))
            }
            Some(_) => {}
        }
    }
    let in_storage: HashSet<&str> = expected.iter().map(|e| e.path.as_str()).collect();
    let mut orphaned: Vec<Record> = indexed
        .iter()
        .filter(|r| !in_storage.contains(r.hit.path.as_str()))
        .map(|r| {
            let rel = rel_of(r.hit.path.as_str());
            let rel = if r.hit.level < 2 {
                rel.rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_default()
            } else {
                rel
            };
            record(&join_uri(c.root_uri, &rel), &rel, r.hit.level)
        })
        .collect();
    let sort = |v: &mut Vec<(String, String, u64)>| -> Vec<Record> {
        v.sort();
        v.iter().map(|(rel, uri, l)| record(uri, rel, *l)).collect()
    };
    let missing = sort(&mut missing);
    let stale = sort(&mut stale);
    orphaned.sort_by(|a, b| (&a.path, a.level).cmp(&(&b.path, b.level)));

    // Directories without (real) summaries.
    let mut no_summary: Vec<String> = dirs
        .iter()
        .filter(|(rel, names)| {
            [ABSTRACT, OVERVIEW].iter().any(|n| {
                let path = if rel.is_empty() {
                    format!("{root_str}/{n}")
                } else {
                    format!("{root_str}/{rel}/{n}")
                };
                !names.contains(*n) || placeholders.contains(&path)
            })
        })
        .map(|(rel, _)| join_uri(c.root_uri, rel))
        .collect();
    no_summary.sort();

    // Stored vectors of the indexed documents (with a dense model).
    let vectors = match c.embedder {
        None => json!({"checked": false}),
        Some(emb) => {
            let mut want: Vec<(String, StorePath)> = Vec::new();
            for r in &indexed {
                if let Some(p) = emb.stored_vector_path(r.account(), &r.hit.hash) {
                    want.push((r.hit.uri.clone(), p));
                }
            }
            let mut missing_vectors = Vec::new();
            for (uri, path) in &want {
                if (c.stop)() {
                    return Err(ServiceError::unavailable("storage", "check abandoned"));
                }
                if c.storage.stat(path).map_err(fail)?.is_none() {
                    missing_vectors.push(uri.clone());
                }
            }
            missing_vectors.sort();
            let backlog = emb.backlog();
            json!({
                "checked": true,
                "expected_count": want.len(),
                "missing_count": missing_vectors.len(),
                "missing": missing_vectors.iter().take(LISTED).collect::<Vec<_>>(),
                "embedding_backlog": backlog,
            })
        }
    };
    let vectors_ok = vectors["missing_count"].as_u64().unwrap_or(0) == 0;
    let ok = missing.is_empty()
        && stale.is_empty()
        && orphaned.is_empty()
        && no_summary.is_empty()
        && vectors_ok;
    Ok(json!({
        "ok": ok,
        "expected_count": expected.len(),
        "missing_record_count": missing.len(),
        "missing_records": listed(&missing),
        "missing_records_truncated": missing.len() > LISTED,
        "stale_record_count": stale.len(),
        "stale_records": listed(&stale),
        "orphaned_record_count": orphaned.len(),
        "orphaned_records": listed(&orphaned),
        "missing_summary_count": no_summary.len(),
        "missing_summaries": no_summary.iter().take(LISTED).collect::<Vec<_>>(),
        "vectors": vectors,
        "repair": "POST /api/v1/content/reindex",
    }))
}
