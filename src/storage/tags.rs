//! Tags (issue #21): explicit `k=v` metadata on files and directories, with 0.5.2's rules for
//! search tags — strict `k=v`, trimmed and lower-cased, one value per key (the last one given
//! wins, in the position its key first had), merged by key under a mode.
//!
//! Where they live: the tags of node `<dir>/<name>` are the entry `name` of the JSON map
//! `<dir>/.longship-tags` (an internal name: never listed, never a client's name). So a
//! directory's subtree carries its children's tags when it is moved (a rename moves every
//! object under it) or removed, and one read per directory serves a listing or an index walk.
//! The node's own entry (in its parent's map) is moved, copied and dropped by the fs
//! operations that move, copy and remove the node.
//!
//! Every change is a compare-and-swap on the map (`read_versioned` + `write_if`, retried on
//! `Conflict`), so concurrent tag writes on several instances never lose each other.
//!
//! Reserved keys ([`RESERVED_KEYS`], `memory_type`) are set only by the server
//! ([`set_server_tags`]); a client write keeps the node's reserved tags as they are.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Storage, StorageError, StorageResult, StorePath, Version};
use crate::error::{ServiceError, ServiceResult};

/// The per-directory map of its children's tags.
pub const TAGS_FILE: &str = ".longship-tags";
/// Keys only the server may set (0.5.2 sets `memory_type` on extracted memories).
pub const RESERVED_KEYS: &[&str] = &["memory_type"];
/// Most tags one node may carry.
pub const MAX_TAGS: usize = 64;
/// Longest tag in bytes (`k=v`).
pub const MAX_TAG_BYTES: usize = 256;
/// Compare-and-swap attempts before a tag write gives up with `Conflict`.
const CAS_ATTEMPTS: u32 = 64;

/// How incoming tags combine with a node's tags (0.5.2 `tag_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMode {
    /// The incoming tags become the node's tags.
    Replace,
    /// Merged by key: incoming values win.
    Append,
    /// No tags.
    Clear,
}

impl TagMode {
    pub fn parse(s: &str) -> Option<TagMode> {
        match s {
            "replace" => Some(TagMode::Replace),
            "append" => Some(TagMode::Append),
            "clear" => Some(TagMode::Clear),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TagMode::Replace => "replace",
            TagMode::Append => "append",
            TagMode::Clear => "clear",
        }
    }

    /// 400 in 0.5.2's words for anything but the three modes.
    pub fn parse_or_refuse(s: &str) -> ServiceResult<TagMode> {
        TagMode::parse(s).ok_or_else(|| {
            ServiceError::invalid_argument(format!(
                "unsupported tag mode: {}",
                s.chars().take(64).collect::<String>()
            ))
        })
    }
}

fn shown(tag: &str) -> String {
    tag.chars().take(64).collect()
}

/// One tag, normalised: trimmed, lower-cased, exactly one `=` with a non-empty key and value.
pub fn normalize_tag(raw: &str) -> ServiceResult<String> {
    let value = raw.trim().to_lowercase();
    if value.is_empty() {
        return Err(ServiceError::invalid_argument(
            "search tag must be a non-empty k=v string",
        ));
    }
    if value.len() > MAX_TAG_BYTES {
        return Err(ServiceError::invalid_argument(format!(
            "invalid search tag '{}…': longer than {MAX_TAG_BYTES} bytes",
            shown(raw)
        )));
    }
    if value.matches('=').count() != 1 {
        return Err(ServiceError::invalid_argument(format!(
            "invalid search tag '{}': expected strict k=v format",
            shown(raw)
        )));
    }
    match value.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(value),
        _ => Err(ServiceError::invalid_argument(format!(
            "invalid search tag '{}': key and value must both be non-empty",
            shown(raw)
        ))),
    }
}

fn key_of(tag: &str) -> &str {
    tag.split_once('=').map_or(tag, |(k, _)| k)
}

/// Normalise a list (strict: any bad tag is a 400), one value per key.
pub fn normalize(tags: &[String]) -> ServiceResult<Vec<String>> {
    let normalized = tags
        .iter()
        .map(|t| normalize_tag(t))
        .collect::<ServiceResult<Vec<_>>>()?;
    let out = merge(&[], &normalized);
    if out.len() > MAX_TAGS {
        return Err(ServiceError::invalid_argument(format!(
            "too many tags: {} (at most {MAX_TAGS} per node)",
            out.len()
        )));
    }
    Ok(out)
}

/// Normalise a client's tags and refuse reserved keys (400).
pub fn normalize_user(tags: &[String]) -> ServiceResult<Vec<String>> {
    let out = normalize(tags)?;
    if let Some(t) = out.iter().find(|t| is_reserved(t)) {
        return Err(ServiceError::invalid_argument(format!(
            "tag key '{}' is reserved: only the server sets it",
            key_of(t)
        )));
    }
    Ok(out)
}

/// Whether a normalised tag has a reserved key.
pub fn is_reserved(tag: &str) -> bool {
    RESERVED_KEYS.contains(&key_of(tag))
}

/// Merge normalised tags by key: `incoming` values replace `existing` ones; a key keeps the
/// position it first had.
pub fn merge(existing: &[String], incoming: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(existing.len() + incoming.len());
    for tag in existing.iter().chain(incoming) {
        let key = key_of(tag);
        match out.iter_mut().find(|t| key_of(t) == key) {
            Some(slot) => *slot = tag.clone(),
            None => out.push(tag.clone()),
        }
    }
    out
}

/// A client's write under `mode` applied to `existing`; reserved tags stay as they were.
pub fn apply_user(existing: &[String], incoming: &[String], mode: TagMode) -> Vec<String> {
    let kept: Vec<String> = existing
        .iter()
        .filter(|t| is_reserved(t))
        .cloned()
        .collect();
    let user = match mode {
        TagMode::Replace => incoming.to_vec(),
        TagMode::Append => merge(existing, incoming),
        TagMode::Clear => Vec::new(),
    };
    let user: Vec<String> = user.into_iter().filter(|t| !is_reserved(t)).collect();
    merge(&kept, &user)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TagMap {
    #[serde(default)]
    nodes: BTreeMap<String, Vec<String>>,
}

fn map_path(dir: &StorePath) -> StorageResult<StorePath> {
    dir.join(TAGS_FILE)
}

/// The directory holding `node`'s entry, and the entry's name.
fn owner(node: &StorePath) -> StorageResult<(StorePath, &str)> {
    match node.parent() {
        Some(dir) if !node.is_root() => Ok((dir, node.name())),
        _ => Err(StorageError::InvalidPath(
            "the root carries no tags".to_string(),
        )),
    }
}

fn parse_map(dir: &StorePath, bytes: &[u8]) -> TagMap {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        // Unreadable map: treated as empty (the next write replaces it); never a failed read.
        tracing::warn!(dir = %dir, error = %e, "unreadable tag map ignored");
        TagMap::default()
    })
}

fn load(storage: &dyn Storage, dir: &StorePath) -> StorageResult<(TagMap, Option<Version>)> {
    match storage.read_versioned(&map_path(dir)?) {
        Ok((bytes, version)) => Ok((parse_map(dir, &bytes), Some(version))),
        Err(StorageError::NotFound(_)) => Ok((TagMap::default(), None)),
        Err(e) => Err(e),
    }
}

/// Read-modify-write `dir`'s map by compare-and-swap. `change` returns false when it changed
/// nothing (no write). An emptied map stays as `{}`: deleting it could not be conditional.
fn update_map(
    storage: &dyn Storage,
    dir: &StorePath,
    change: &mut dyn FnMut(&mut TagMap) -> bool,
) -> StorageResult<()> {
    let path = map_path(dir)?;
    for attempt in 0..CAS_ATTEMPTS {
        let (mut map, version) = load(storage, dir)?;
        if !change(&mut map) {
            return Ok(());
        }
        let body =
            serde_json::to_vec(&map).map_err(|e| StorageError::Io(std::io::Error::other(e)))?;
        match storage.write_if(&path, &body, version.as_ref()) {
            Ok(_) => return Ok(()),
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
                // Another writer won the round: re-read and apply again, after a short pause
                // that grows with contention so N writers do not collide in lockstep.
                std::thread::sleep(Duration::from_millis(
                    u64::from(attempt.min(20))
                        + rand::Rng::gen_range(
                            &mut rand::thread_rng(),
                            0..=u64::from(attempt.min(20)),
                        ),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::Conflict(format!(
        "tag map of {dir}: too many concurrent writers"
    )))
}

/// The body of a directory's tag map holding `nodes` (child name → tags), for a tree written
/// whole before anyone reads it (a staged pack import).
pub fn map_body(nodes: BTreeMap<String, Vec<String>>) -> Vec<u8> {
    serde_json::to_vec(&TagMap { nodes }).unwrap_or_default()
}

/// The tags of `node` (empty when it has none).
pub fn read_tags(storage: &dyn Storage, node: &StorePath) -> StorageResult<Vec<String>> {
    let (dir, name) = owner(node)?;
    Ok(load(storage, &dir)?
        .0
        .nodes
        .remove(name)
        .unwrap_or_default())
}

/// The tags of every tagged child of `dir`, by name (one read).
pub fn read_children(
    storage: &dyn Storage,
    dir: &StorePath,
) -> StorageResult<BTreeMap<String, Vec<String>>> {
    Ok(load(storage, dir)?.0.nodes)
}

fn too_many(n: usize) -> ServiceError {
    ServiceError::invalid_argument(format!("too many tags: {n} (at most {MAX_TAGS} per node)"))
}

/// Set `node`'s tags to `compute(current)`; returns what was stored. An empty result drops the
/// entry; more than [`MAX_TAGS`] is a 400 and changes nothing.
pub fn update(
    storage: &dyn Storage,
    node: &StorePath,
    compute: &dyn Fn(&[String]) -> Vec<String>,
) -> ServiceResult<Vec<String>> {
    let (dir, name) = owner(node)?;
    let mut stored = Vec::new();
    update_map(storage, &dir, &mut |map| {
        let current = map.nodes.get(name).cloned().unwrap_or_default();
        stored = compute(&current);
        if stored == current || stored.len() > MAX_TAGS {
            return false;
        }
        if stored.is_empty() {
            map.nodes.remove(name);
        } else {
            map.nodes.insert(name.to_string(), stored.clone());
        }
        true
    })?;
    if stored.len() > MAX_TAGS {
        return Err(too_many(stored.len()));
    }
    Ok(stored)
}

/// A client's tag write (already normalised by [`normalize_user`]) on `node` under `mode`.
pub fn set_user_tags(
    storage: &dyn Storage,
    node: &StorePath,
    incoming: &[String],
    mode: TagMode,
) -> ServiceResult<Vec<String>> {
    update(storage, node, &|current| {
        apply_user(current, incoming, mode)
    })
}

/// The server's own tags on `node` (reserved keys allowed, e.g. `memory_type=events`), merged
/// by key into what the node has. For code other than the HTTP API (memory extraction): the
/// caller records the node for search afterwards, as for any write.
pub fn set_server_tags(
    storage: &dyn Storage,
    node: &StorePath,
    tags: &[String],
) -> ServiceResult<Vec<String>> {
    let incoming = normalize(tags)?;
    update(storage, node, &|current| merge(current, &incoming))
}

/// A client's tag write on every child of `dir` in one compare-and-swap of its map. Hidden
/// names (sidecars) are skipped: a directory's tags cover its `.abstract.md`/`.overview.md`.
/// A node that would exceed [`MAX_TAGS`] keeps its tags (the call answers 400).
pub fn set_user_tags_children(
    storage: &dyn Storage,
    dir: &StorePath,
    names: &[String],
    incoming: &[String],
    mode: TagMode,
) -> ServiceResult<()> {
    let mut over = 0;
    update_map(storage, dir, &mut |map| {
        let mut changed = false;
        over = 0;
        for name in names {
            let current = map.nodes.get(name).cloned().unwrap_or_default();
            let next = apply_user(&current, incoming, mode);
            if next.len() > MAX_TAGS {
                over = next.len();
                continue;
            }
            if next != current {
                changed = true;
                if next.is_empty() {
                    map.nodes.remove(name);
                } else {
                    map.nodes.insert(name.clone(), next);
                }
            }
        }
        changed
    })?;
    if over > 0 {
        return Err(too_many(over));
    }
    Ok(())
}

/// After `from` was moved to `to`: its entry moves with it (the subtree's maps moved with the
/// tree). Written at the destination first, so a failure in between duplicates, never loses.
pub fn move_node(storage: &dyn Storage, from: &StorePath, to: &StorePath) -> ServiceResult<()> {
    let tags = read_tags(storage, from)?;
    if tags.is_empty() {
        return Ok(());
    }
    update(storage, to, &|_| tags.clone())?;
    Ok(forget_node(storage, from)?)
}

/// After `from` was copied to `to`: the copy gets `from`'s tags.
pub fn copy_node(storage: &dyn Storage, from: &StorePath, to: &StorePath) -> ServiceResult<()> {
    let tags = read_tags(storage, from)?;
    if tags.is_empty() {
        return Ok(());
    }
    update(storage, to, &|_| tags.clone()).map(drop)
}

/// While a directory tree is copied: `from_dir`'s map (its children's tags) to `to_dir`, which
/// the copy has just created (create-only: never over a map someone wrote meanwhile).
pub fn copy_children(
    storage: &dyn Storage,
    from_dir: &StorePath,
    to_dir: &StorePath,
) -> StorageResult<()> {
    let bytes = match storage.read(&map_path(from_dir)?) {
        Ok(b) => b,
        Err(StorageError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    match storage.write_if(&map_path(to_dir)?, &bytes, None) {
        Ok(_) => Ok(()),
        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
            let copied = parse_map(from_dir, &bytes).nodes;
            update_map(storage, to_dir, &mut |map| {
                for (name, tags) in &copied {
                    map.nodes.insert(name.clone(), tags.clone());
                }
                !copied.is_empty()
            })
        }
        Err(e) => Err(e),
    }
}

/// After `node` was removed: its entry goes (its subtree's maps went with it).
pub fn forget_node(storage: &dyn Storage, node: &StorePath) -> StorageResult<()> {
    let (dir, name) = owner(node)?;
    match update_map(storage, &dir, &mut |map| map.nodes.remove(name).is_some()) {
        // The parent went too (removed meanwhile): nothing left to forget.
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(()),
        other => other,
    }
}

/// Tags of many nodes at once (an index batch): each distinct parent's map is read once, all
/// together through [`Storage::read_many`]. Nodes without tags are absent from the answer.
pub fn read_many_nodes(
    storage: &dyn Storage,
    nodes: &[StorePath],
) -> StorageResult<HashMap<StorePath, Vec<String>>> {
    let mut dirs: Vec<StorePath> = nodes
        .iter()
        .filter_map(|n| owner(n).ok())
        .map(|(d, _)| d)
        .collect();
    dirs.sort();
    dirs.dedup();
    let paths = dirs
        .iter()
        .map(map_path)
        .collect::<StorageResult<Vec<_>>>()?;
    let mut maps: HashMap<StorePath, TagMap> = HashMap::new();
    for (dir, read) in dirs.iter().zip(storage.read_many(&paths, &|| true)) {
        match read {
            Ok(bytes) => {
                maps.insert(dir.clone(), parse_map(dir, &bytes));
            }
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = HashMap::new();
    for node in nodes {
        let Ok((dir, name)) = owner(node) else {
            continue;
        };
        if let Some(tags) = maps.get(&dir).and_then(|m| m.nodes.get(name)) {
            out.insert(node.clone(), tags.clone());
        }
    }
    Ok(out)
}

/// The tag part of a listing request (ls, tree, grep, glob): keep only nodes carrying every
/// tag of `required`, and report each node's tags when `include`.
#[derive(Debug, Clone, Default)]
pub struct TagQuery {
    /// Normalised `k=v`.
    pub required: Vec<String>,
    pub include: bool,
}

impl TagQuery {
    /// Whether the listing needs any node's tags at all.
    pub fn active(&self) -> bool {
        self.include || !self.required.is_empty()
    }

    /// Whether a node with `tags` is kept.
    pub fn keeps(&self, tags: &[String]) -> bool {
        self.required.iter().all(|t| tags.contains(t))
    }
}

/// Tags of nodes met by a walk: each directory's map is read once.
#[derive(Default)]
pub struct TagCache {
    maps: HashMap<StorePath, BTreeMap<String, Vec<String>>>,
}

impl TagCache {
    pub fn tags_of(
        &mut self,
        storage: &dyn Storage,
        node: &StorePath,
    ) -> StorageResult<Vec<String>> {
        let (dir, name) = owner(node)?;
        if !self.maps.contains_key(&dir) {
            let map = match read_children(storage, &dir) {
                Ok(m) => m,
                Err(StorageError::NotADirectory(_)) => BTreeMap::new(),
                Err(e) => return Err(e),
            };
            // A walk of a huge tree keeps a bounded number of maps.
            if self.maps.len() >= 4096 {
                self.maps.clear();
            }
            self.maps.insert(dir.clone(), map);
        }
        Ok(self
            .maps
            .get(&dir)
            .and_then(|m| m.get(name))
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn store() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn normalisation_is_strict_and_keeps_one_value_per_key() {
        assert_eq!(normalize_tag("  Team=Core ").unwrap(), "team=core");
        for bad in ["", "  ", "k", "k=v=w", "=v", "k=", "a=b=c"] {
            assert!(normalize_tag(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_tag(&format!("k={}", "x".repeat(300))).is_err());
        assert_eq!(
            normalize(&strings(&["a=1", "b=2", "A=3"])).unwrap(),
            strings(&["a=3", "b=2"])
        );
        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert!(normalize(&many).is_err());
        assert!(normalize_user(&strings(&["memory_type=events"])).is_err());
        assert!(normalize_user(&strings(&["Memory_Type=x"])).is_err());
    }

    #[test]
    fn modes_merge_by_key_and_keep_reserved_tags() {
        let existing = strings(&["memory_type=events", "a=1", "b=2"]);
        assert_eq!(
            apply_user(&existing, &strings(&["b=3", "c=4"]), TagMode::Append),
            strings(&["memory_type=events", "a=1", "b=3", "c=4"])
        );
        assert_eq!(
            apply_user(&existing, &strings(&["c=4"]), TagMode::Replace),
            strings(&["memory_type=events", "c=4"])
        );
        assert_eq!(
            apply_user(&existing, &[], TagMode::Clear),
            strings(&["memory_type=events"])
        );
    }

    #[test]
    fn stored_per_directory_and_moved_copied_forgotten() {
        let (_d, s) = store();
        let a = StorePath::parse("acme/resources/docs/a.md").unwrap();
        let b = StorePath::parse("acme/resources/other/b.md").unwrap();
        s.write(&a, b"x").unwrap();
        s.write(&b, b"y").unwrap();
        set_user_tags(&s, &a, &strings(&["k=v"]), TagMode::Replace).unwrap();
        set_server_tags(&s, &a, &strings(&["memory_type=events"])).unwrap();
        assert_eq!(
            read_tags(&s, &a).unwrap(),
            strings(&["k=v", "memory_type=events"])
        );
        // The map is invisible to listings.
        let names: Vec<String> = s
            .list(&a.parent().unwrap())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a.md"]);
        let moved = StorePath::parse("acme/resources/other/c.md").unwrap();
        s.rename(&a, &moved).unwrap();
        move_node(&s, &a, &moved).unwrap();
        assert!(read_tags(&s, &a).unwrap().is_empty());
        assert_eq!(read_tags(&s, &moved).unwrap().len(), 2);
        copy_node(&s, &moved, &b).unwrap();
        assert_eq!(read_tags(&s, &b).unwrap().len(), 2);
        forget_node(&s, &moved).unwrap();
        assert!(read_tags(&s, &moved).unwrap().is_empty());
        let many = read_many_nodes(&s, &[b.clone(), moved.clone()]).unwrap();
        assert_eq!(many.len(), 1);
        assert_eq!(many[&b].len(), 2);
    }

    #[test]
    fn concurrent_writers_never_lose_a_tag() {
        let (_d, s) = store();
        let s = std::sync::Arc::new(s);
        let node = StorePath::parse("acme/resources/n.md").unwrap();
        s.write(&node, b"x").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (s, node) = (s.clone(), node.clone());
                std::thread::spawn(move || {
                    for j in 0..5 {
                        let tag = vec![format!("k{i}x{j}=v")];
                        set_user_tags(s.as_ref(), &node, &tag, TagMode::Append).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(read_tags(s.as_ref(), &node).unwrap().len(), 40);
    }
}
