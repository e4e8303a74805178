//! What is indexed and how a stored file becomes an indexed document.
//!
//! Indexed: every file under an account's `resources`, `user` and `agent` trees, the
//! `.abstract.md` (level 0) and `.overview.md` (level 1) of every directory, and session
//! archives (`sessions/<id>/history/**`, plus each session's own sidecars). Never indexed:
//! `_system`, hidden directories and dot-files other than the two sidecars, storage-internal
//! names (locks, markers), and live session messages (they change with every message; the
//! archive is what a commit makes findable).

use sha2::{Digest, Sha256};

use crate::storage::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use crate::storage::uri::{is_internal_name, SCHEME};
use crate::storage::{okf, EntryKind, Meta, Storage, StorageError, StorePath};

/// Longest abstract kept in the index and returned in results (characters).
pub const ABSTRACT_CHARS: usize = 256;
/// Deepest directory level walked (a hostile tree cannot make a walk unbounded).
const MAX_DEPTH: usize = 64;
/// Bytes probed for NUL to tell binary files from text.
const BINARY_PROBE: usize = 8192;

/// One file ready to be indexed.
#[derive(Debug, Clone)]
pub struct DocSource {
    /// Full storage path (`acme/resources/docs/a.md`): the document's identity.
    pub path: StorePath,
    pub account: String,
    /// The URI reported in results (`viking://resources/docs/a.md`).
    pub uri: String,
    /// 0 = `.abstract.md`, 1 = `.overview.md`, 2 = any other file.
    pub level: u64,
    pub context_type: &'static str,
    /// Searchable text.
    pub text: String,
    /// Path words (directory and file names), weighted above body text.
    pub name_text: String,
    pub abstract_text: String,
    pub size: u64,
    pub mtime_ms: i64,
    /// sha256 of the indexed bytes (keys stored vectors).
    pub hash: String,
    /// The node's tags (`storage::tags`); a sidecar carries its directory's.
    pub tags: Vec<String>,
}

/// The node whose tags a document carries: the file itself, or for a directory's
/// `.abstract.md`/`.overview.md` the directory.
pub fn tag_owner(path: &StorePath) -> Option<StorePath> {
    if level_of(path.name()) < 2 {
        path.parent()
    } else {
        Some(path.clone())
    }
}

/// Fill in the tags of `docs` (one read of each distinct tag map, together).
fn attach_tags(storage: &dyn Storage, docs: &mut [DocSource]) -> Result<(), StorageError> {
    let owners: Vec<StorePath> = docs.iter().filter_map(|d| tag_owner(&d.path)).collect();
    if owners.is_empty() {
        return Ok(());
    }
    let tags = crate::storage::tags::read_many_nodes(storage, &owners)?;
    for d in docs {
        if let Some(t) = tag_owner(&d.path).and_then(|o| tags.get(&o)) {
            d.tags = t.clone();
        }
    }
    Ok(())
}

/// The skill package a skill URI belongs to (`viking://user/{u}/skills/<name>` or
/// `viking://agent/skills/<name>`); `None` for the skill roots themselves and hidden names
/// (0.5.2 reports skill hits only inside a package, one per package).
pub fn skill_package_root(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("viking://")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let n = match segs.as_slice() {
        ["user", _, "skills", name, ..] if !name.starts_with('.') => 4,
        ["agent", "skills", name, ..] if !name.starts_with('.') => 3,
        _ => return None,
    };
    Some(format!("viking://{}", segs[..n].join("/")))
}

/// `memory` under a user's memories, `skill` under a user's or the agent's skills, else
/// `resource` (spec R2).
pub fn context_type(rel: &[&str]) -> &'static str {
    match rel {
        ["user", _, "memories", ..] | ["user", _, "peers", _, "memories", ..] => "memory",
        ["user", _, "skills", ..] | ["agent", "skills", ..] => "skill",
        _ => "resource",
    }
}

/// The level of a file by name.
pub fn level_of(name: &str) -> u64 {
    match name {
        ABSTRACT_FILE => 0,
        OVERVIEW_FILE => 1,
        _ => 2,
    }
}

/// Whether a directory at `path` (full storage path) may hold indexed files.
pub fn dir_indexable(path: &StorePath) -> bool {
    let segs: Vec<&str> = path.segments().collect();
    match segs.as_slice() {
        [] => true,
        [account] => !account.starts_with('.') && *account != "_system",
        [account, scope, rest @ ..] => {
            if account.starts_with('.') || *account == "_system" {
                return false;
            }
            if !matches!(*scope, "resources" | "user" | "agent") {
                return false;
            }
            if rest
                .iter()
                .any(|s| s.starts_with('.') || is_internal_name(s))
            {
                return false;
            }
            // Nothing of a user's sessions is indexed (0.5.2 skips the session namespace:
            // live messages, archives and their summaries are session internals, found
            // through the sessions API and the memories a commit extracts).
            !(*scope == "user" && matches!(rest, [_, "sessions", ..]))
        }
    }
}

/// Whether a file at `path` is indexed.
pub fn file_indexable(path: &StorePath) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    let segs: Vec<&str> = path.segments().collect();
    if segs.len() < 3 || !dir_indexable(&parent) {
        return false;
    }
    let name = path.name();
    if is_internal_name(name) {
        return false;
    }
    let sidecar = name == ABSTRACT_FILE || name == OVERVIEW_FILE;
    if name.starts_with('.') && !sidecar {
        return false;
    }
    true
}

/// Read and prepare the file at `path` (`meta` from a listing or stat). `Ok(None)` if it is
/// not indexed or vanished.
pub fn load(
    storage: &dyn Storage,
    path: &StorePath,
    meta: &Meta,
    max_bytes: usize,
) -> Result<Option<DocSource>, StorageError> {
    if meta.kind != EntryKind::File || !file_indexable(path) {
        return Ok(None);
    }
    let bytes = if meta.size as usize > max_bytes {
        storage.read_range(path, 0, max_bytes as u64)
    } else {
        storage.read(path)
    };
    let mut doc: Vec<DocSource> = present(bytes)?
        .and_then(|b| prepare(path, meta, &b))
        .into_iter()
        .collect();
    attach_tags(storage, &mut doc)?;
    Ok(doc.pop())
}

/// Read and prepare a batch of files met by one listing or walk. Files within `max_bytes` are
/// fetched together with [`Storage::read_many`] (bounded parallel requests on an object store,
/// all from this thread); larger ones are read up to `max_bytes` one by one. Files that are not
/// indexed or vanished are skipped.
pub fn load_many(
    storage: &dyn Storage,
    files: &[(StorePath, Meta)],
    max_bytes: usize,
) -> Result<Vec<DocSource>, StorageError> {
    let (whole, cut): (Vec<_>, Vec<_>) = files
        .iter()
        .filter(|(p, m)| m.kind == EntryKind::File && file_indexable(p))
        .partition(|(_, m)| m.size as usize <= max_bytes);
    let paths: Vec<StorePath> = whole.iter().map(|(p, _)| p.clone()).collect();
    let mut docs = Vec::with_capacity(files.len());
    for ((path, meta), bytes) in whole.iter().zip(storage.read_many(&paths, &|| true)) {
        if let Some(b) = present(bytes)? {
            // A file that grew after its listing is cut like a large one.
            docs.extend(prepare(path, meta, &b[..b.len().min(max_bytes)]));
        }
    }
    for (path, meta) in cut {
        docs.extend(load(storage, path, meta, max_bytes)?);
    }
    attach_tags(storage, &mut docs)?;
    Ok(docs)
}

/// The bytes of a read, `None` for a file that vanished (or became a directory) meanwhile.
fn present(read: Result<Vec<u8>, StorageError>) -> Result<Option<Vec<u8>>, StorageError> {
    match read {
        Ok(b) => Ok(Some(b)),
        Err(StorageError::NotFound(_)) | Err(StorageError::IsADirectory(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a sidecar body says nothing of its own: empty, or only the "not ready" placeholder
/// (spec §6/§7: `# <uri> [Directory abstract is not ready]`, `[.abstract.md is not ready]`)
/// or a bare URI heading. Indexed, such a short text would rank first for any query sharing
/// one of its words.
pub fn placeholder_sidecar(body: &str) -> bool {
    body.lines().all(|line| {
        let mut rest = line.trim();
        if let Some(heading) = rest.strip_prefix("# ") {
            let heading = heading.trim_start();
            if !heading.starts_with(SCHEME) {
                return false;
            }
            rest = heading
                .split_once(' ')
                .map_or("", |(_, after)| after.trim());
        }
        rest.is_empty() || (rest.starts_with('[') && rest.ends_with(" is not ready]"))
    })
}

/// The text indexed for file `name` whose (possibly cut) content is `bytes`: nothing for
/// binary content, a sidecar's body without its front matter, the human text of a `.jsonl`
/// archive, else the content.
pub fn document_text(name: &str, bytes: &[u8]) -> String {
    if bytes[..bytes.len().min(BINARY_PROBE)].contains(&0) {
        return String::new();
    }
    let raw = String::from_utf8_lossy(bytes);
    if level_of(name) < 2 {
        okf::body(&raw).to_string()
    } else if name.ends_with(".jsonl") {
        jsonl_text(&raw)
    } else {
        raw.into_owned()
    }
}

/// The document for the file at `path` whose (possibly cut) content is `bytes`; `None` for a
/// placeholder sidecar (nothing to find).
fn prepare(path: &StorePath, meta: &Meta, bytes: &[u8]) -> Option<DocSource> {
    let segs: Vec<&str> = path.segments().collect();
    let account = segs[0].to_string();
    let rel = &segs[1..];
    let name = path.name();
    let level = level_of(name);
    let hash = hex::encode(Sha256::digest(bytes));
    let text = document_text(name, bytes);
    if level < 2 && placeholder_sidecar(&text) {
        return None;
    }
    let abstract_text = abstract_of(&text);
    let name_text = rel[1..].join(" ");
    Some(DocSource {
        path: path.clone(),
        account,
        uri: format!("{SCHEME}{}", rel.join("/")),
        level,
        context_type: context_type(rel),
        text,
        name_text,
        abstract_text,
        size: meta.size,
        mtime_ms: meta
            .modified
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        hash,
        tags: Vec::new(),
    })
}

/// The first [`ABSTRACT_CHARS`] characters of `text`, whitespace collapsed.
pub fn abstract_of(text: &str) -> String {
    let mut out = String::new();
    for (n, word) in text.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= ABSTRACT_CHARS {
            break;
        }
    }
    match out.char_indices().nth(ABSTRACT_CHARS) {
        Some((i, _)) => out[..i].to_string(),
        None => out,
    }
}

/// The human text of archived session messages: every `text`/`abstract` string of each line.
fn jsonl_text(raw: &str) -> String {
    fn collect(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("text" | "abstract" | "content", serde_json::Value::String(s)) => {
                            out.push_str(s);
                            out.push('\n');
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    for line in raw.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => collect(&v, &mut out),
            Err(_) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Visit every indexed file at or under `root` (a file or a directory), with its metadata.
/// `stop` is polled between directories. A missing `root` visits nothing.
pub fn walk(
    storage: &dyn Storage,
    root: &StorePath,
    stop: &dyn Fn() -> bool,
    visit: &mut dyn FnMut(StorePath, Meta) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let Some(meta) = storage.stat(root)? else {
        return Ok(());
    };
    if meta.kind == EntryKind::File {
        if file_indexable(root) {
            visit(root.clone(), meta)?;
        }
        return Ok(());
    }
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if stop() {
            return Ok(());
        }
        if !dir_indexable(&dir) || depth > MAX_DEPTH {
            continue;
        }
        let entries = match storage.list(&dir) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let Ok(child) = dir.join(&e.name) else {
                continue;
            };
            match e.meta.kind {
                EntryKind::Dir => stack.push((child, depth + 1)),
                EntryKind::File if file_indexable(&child) => visit(child, e.meta)?,
                EntryKind::File => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn placeholder_sidecars_are_recognised() {
        for yes in [
            "",
            "\n",
            "# viking://resources/ [Directory abstract is not ready]",
            "# viking://user/bob/\n\n[Directory overview is not ready]\n",
            "[.abstract.md is not ready]",
        ] {
            assert!(placeholder_sidecar(yes), "{yes:?}");
        }
        for no in [
            "# Resources\n\nShared resources of the account.",
            "# viking://resources/guide\n\nHow to install.",
            "The nightingale is not ready]",
            "[draft] is not ready]\nmore",
        ] {
            assert!(!placeholder_sidecar(no), "{no:?}");
        }
    }

    #[test]
    fn what_is_indexed() {
        for yes in [
            "acme/resources/a.md",
            "acme/resources/docs/.abstract.md",
            "acme/resources/docs/.overview.md",
            "acme/user/bob/memories/facts/x.md",
            "acme/agent/skills/s.md",
            "acme/resources/notes/sessions/s1/x/a.md",
        ] {
            assert!(file_indexable(&p(yes)), "{yes}");
        }
        for no in [
            "_system/accounts.json",
            "acme/_system/users.json",
            "acme/resources/.meta.json",
            "acme/resources/.hidden/a.md",
            "acme/resources/x/.path.ovlock",
            "acme/user/bob/sessions/s1/messages.jsonl",
            "acme/user/bob/sessions/s1/.meta.json",
            "acme/user/bob/sessions/s1/.overview.md",
            "acme/user/bob/sessions/.abstract.md",
            "acme/user/bob/sessions/s1/history/archive_001/messages.jsonl",
            "acme/user/bob/sessions/s1/history/archive_001/.abstract.md",
            "acme/user/bob/sessions/s1/history/archive_001/.done",
            "acme/system/x.md",
            "acme/a.md",
        ] {
            assert!(!file_indexable(&p(no)), "{no}");
        }
    }

    #[test]
    fn context_types() {
        assert_eq!(context_type(&["user", "b", "memories", "x.md"]), "memory");
        assert_eq!(context_type(&["user", "b", "skills", "x.md"]), "skill");
        assert_eq!(context_type(&["agent", "skills", "x.md"]), "skill");
        assert_eq!(
            skill_package_root("viking://user/bob/skills/pdf/scripts/run.py").as_deref(),
            Some("viking://user/bob/skills/pdf")
        );
        assert_eq!(
            skill_package_root("viking://agent/skills/pdf/.abstract.md").as_deref(),
            Some("viking://agent/skills/pdf")
        );
        assert_eq!(
            skill_package_root("viking://agent/skills/.abstract.md"),
            None
        );
        assert_eq!(
            skill_package_root("viking://agent/skills/.pdf.backup/x"),
            None
        );
        assert_eq!(skill_package_root("viking://resources/skills/pdf"), None);
        assert_eq!(context_type(&["resources", "x.md"]), "resource");
        assert_eq!(context_type(&["user", "b", "note.md"]), "resource");
    }

    #[test]
    fn archived_messages_text() {
        let t = jsonl_text(
            "{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"text\":\"hello world\"}]}\nnot json\n",
        );
        assert_eq!(t, "hello world\nnot json\n");
        assert_eq!(abstract_of("  a \n b  "), "a b");
        assert_eq!(abstract_of(&"x".repeat(300)).len(), ABSTRACT_CHARS);
    }
}
