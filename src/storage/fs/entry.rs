//! Listing entries in the two output formats of spec §6 (`original`, `agent`).

use std::collections::HashMap;
use std::time::SystemTime;

use chrono::SecondsFormat;
use serde_json::{Map, Value};

use super::{lossy_string, sidecar_path};
use crate::storage::okf;
use crate::storage::uri::VikingUri;
use crate::storage::{Meta, Storage, StorageError, StorageResult};

pub const ABSTRACT_FILE: &str = ".abstract.md";
pub const OVERVIEW_FILE: &str = ".overview.md";

/// Entry format requested with `output=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Original,
    Agent,
}

/// How entries are rendered (shared by ls, tree and glob's `extra_fields`).
#[derive(Debug, Clone)]
pub struct Render {
    pub output: Output,
    pub abs_limit: usize,
    pub include_abstract: bool,
    pub include_overview: bool,
    pub overview_limit: usize,
    /// `extra_fields=locked` → `isLocked` (always false: this server holds no path locks
    /// between requests).
    pub locked: bool,
}

impl Render {
    /// Defaults of F1/F2 for `output`: abstracts on for agent, off for original.
    pub fn new(output: Output) -> Self {
        Render {
            output,
            abs_limit: 256,
            include_abstract: output == Output::Agent,
            include_overview: false,
            overview_limit: 4000,
            locked: false,
        }
    }
}

/// `modTime` with seconds precision (original) or milliseconds (agent).
pub fn mod_time(t: SystemTime, output: Output) -> String {
    match output {
        Output::Original => crate::time::utc_z(t, SecondsFormat::Secs),
        Output::Agent => crate::time::utc_z(t, SecondsFormat::Millis),
    }
}

/// 0o755 for directories, 0o644 for files.
pub fn mode_of(meta: &Meta) -> u32 {
    if meta.is_dir() {
        0o755
    } else {
        0o644
    }
}

/// Cut `text` to `limit` characters, ending in `...` when shortened (spec §6 agent format).
pub fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    if limit <= 3 {
        return ".".repeat(limit);
    }
    let mut out: String = text.chars().take(limit - 3).collect();
    out.push_str("...");
    out
}

/// The body of a directory's sidecar, or the "not ready" text of spec §6/§7.
pub fn sidecar_text(storage: &dyn Storage, dir: &VikingUri, file: &str) -> String {
    let read = sidecar_path(dir, file)
        .map_err(|_| StorageError::NotFound(file.to_string()))
        .and_then(|path| storage.read(&path));
    sidecar_from(dir, file, read)
}

/// The sidecar text for what reading it gave.
fn sidecar_from(dir: &VikingUri, file: &str, read: StorageResult<Vec<u8>>) -> String {
    match read {
        Ok(bytes) => okf::body(&lossy_string(bytes)).to_string(),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            if file == ABSTRACT_FILE {
                format!("# {} [Directory abstract is not ready]", dir.uri())
            } else {
                format!("# {}\n\n[Directory overview is not ready]", dir.uri())
            }
        }
        Err(e) => {
            tracing::warn!(uri = %dir, error = %e, "sidecar unreadable");
            format!("[{file} is not ready]")
        }
    }
}

/// One entry to render: its URI, metadata and (tree) relative path.
pub type Item = (VikingUri, Meta, Option<String>);

/// Render many entries, reading every sidecar they need in one
/// [`Storage::read_many`] (bounded parallel requests on an object store, from this thread).
pub fn render_many(
    storage: &dyn Storage,
    items: &[Item],
    r: &Render,
    keep_going: &dyn Fn() -> bool,
) -> Vec<Value> {
    let mut wanted: Vec<(usize, &'static str)> = Vec::new();
    let mut paths = Vec::new();
    for (i, (uri, meta, _)) in items.iter().enumerate() {
        if !meta.is_dir() {
            continue;
        }
        for (on, file) in [
            (r.include_abstract, ABSTRACT_FILE),
            (r.include_overview, OVERVIEW_FILE),
        ] {
            if let (true, Ok(path)) = (on, sidecar_path(uri, file)) {
                wanted.push((i, file));
                paths.push(path);
            }
        }
    }
    let mut fetched: HashMap<(usize, &'static str), StorageResult<Vec<u8>>> = wanted
        .into_iter()
        .zip(storage.read_many(&paths, keep_going))
        .collect();
    items
        .iter()
        .enumerate()
        .map(|(i, (uri, meta, rel))| {
            render_with(uri, meta, rel.as_deref(), r, &mut |dir, file| {
                let read = fetched
                    .remove(&(i, file))
                    .unwrap_or_else(|| Err(StorageError::NotFound(file.to_string())));
                sidecar_from(dir, file, read)
            })
        })
        .collect()
}

/// One entry; `rel_path` is set for tree entries; `sidecar` gives a directory's sidecar text.
fn render_with(
    uri: &VikingUri,
    meta: &Meta,
    rel_path: Option<&str>,
    r: &Render,
    sidecar: &mut dyn FnMut(&VikingUri, &'static str) -> String,
) -> Value {
    let mut m = Map::new();
    let is_dir = meta.is_dir();
    match r.output {
        Output::Original => {
            m.insert("name".into(), uri.name().into());
            m.insert("size".into(), meta.size.into());
            m.insert("mode".into(), mode_of(meta).into());
            m.insert("modTime".into(), mod_time(meta.modified, r.output).into());
            m.insert("isDir".into(), is_dir.into());
            if let Some(rel) = rel_path {
                m.insert("rel_path".into(), rel.into());
            }
            m.insert("uri".into(), uri.uri().into());
        }
        Output::Agent => {
            m.insert("uri".into(), uri.uri().into());
            m.insert("size".into(), if is_dir { 0 } else { meta.size }.into());
            m.insert("isDir".into(), is_dir.into());
            m.insert("modTime".into(), mod_time(meta.modified, r.output).into());
            if let Some(rel) = rel_path {
                m.insert("rel_path".into(), rel.into());
            }
        }
    }
    if r.include_abstract {
        let text = if is_dir {
            truncate(&sidecar(uri, ABSTRACT_FILE), r.abs_limit)
        } else {
            String::new()
        };
        m.insert("abstract".into(), text.into());
    }
    if r.include_overview {
        let text = if is_dir {
            truncate(&sidecar(uri, OVERVIEW_FILE), r.overview_limit)
        } else {
            String::new()
        };
        m.insert("overview".into(), text.into());
    }
    if r.locked {
        m.insert("isLocked".into(), false.into());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_rules() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abcdef", 3), "...");
        assert_eq!(truncate("abcdef", 2), "..");
        assert_eq!(truncate("abcdef", 0), "");
        assert_eq!(truncate("ééééé", 4), "é...");
    }

    #[test]
    fn time_formats() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_777_636_800_123);
        assert_eq!(mod_time(t, Output::Original), "2026-05-01T12:00:00Z");
        assert_eq!(mod_time(t, Output::Agent), "2026-05-01T12:00:00.123Z");
    }
}
