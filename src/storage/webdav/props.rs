//! WebDAV dead properties (PROPPATCH, RFC 4918 §9.2) stored like tags: the properties of node
//! `<dir>/<name>` are the entry `name` of the JSON map `<dir>/.longship-props` (an internal
//! name, never listed or addressable). So a moved collection carries its members' properties
//! with it, and a node's own entry is moved, copied and dropped with the node (`fs/mv.rs`,
//! `fs/cp.rs`, `fs/rm.rs` and the WebDAV move call the functions here). Every change is a
//! compare-and-swap of one map. Bounded per resource: [`MAX_PROPS`] properties and
//! [`MAX_PROP_BYTES`] bytes of names and values (beyond: 507, nothing changed).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::xml::{PropChange, PropName};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorageResult, StorePath, Version};

/// The per-directory map file.
pub const PROPS_FILE: &str = ".longship-props";
/// Most dead properties on one resource.
pub const MAX_PROPS: usize = 64;
/// Most bytes of dead property names and values on one resource.
pub const MAX_PROP_BYTES: usize = 64 * 1024;
const CAS_ATTEMPTS: u32 = 50;

/// One dead property: namespace, local name, value (a self-contained XML fragment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadProp {
    pub ns: String,
    pub name: String,
    pub xml: String,
}

impl DeadProp {
    fn size(&self) -> usize {
        self.ns.len() + self.name.len() + self.xml.len()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PropMap {
    #[serde(default)]
    nodes: BTreeMap<String, Vec<DeadProp>>,
}

fn map_path(dir: &StorePath) -> StorageResult<StorePath> {
    dir.join(PROPS_FILE)
}

fn owner(node: &StorePath) -> StorageResult<(StorePath, &str)> {
    match node.parent() {
        Some(dir) if !node.is_root() => Ok((dir, node.name())),
        _ => Err(StorageError::InvalidPath(
            "the root carries no properties".into(),
        )),
    }
}

fn parse_map(dir: &StorePath, bytes: &[u8]) -> PropMap {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        tracing::warn!(dir = %dir, error = %e, "unreadable property map ignored");
        PropMap::default()
    })
}

fn load(storage: &dyn Storage, dir: &StorePath) -> StorageResult<(PropMap, Option<Version>)> {
    match storage.read_versioned(&map_path(dir)?) {
        Ok((bytes, v)) => Ok((parse_map(dir, &bytes), Some(v))),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            Ok((PropMap::default(), None))
        }
        Err(e) => Err(e),
    }
}

fn update_map(
    storage: &dyn Storage,
    dir: &StorePath,
    change: &mut dyn FnMut(&mut PropMap) -> bool,
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
                std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) + 1));
            }
            Err(e) => return Err(e),
        }
    }
    Err(StorageError::Conflict(format!(
        "property map of {dir}: too many concurrent writers"
    )))
}

/// The dead properties of `node`.
pub fn read(storage: &dyn Storage, node: &StorePath) -> StorageResult<Vec<DeadProp>> {
    let Ok((dir, name)) = owner(node) else {
        return Ok(Vec::new());
    };
    Ok(load(storage, &dir)?
        .0
        .nodes
        .remove(name)
        .unwrap_or_default())
}

/// The dead properties of every child of `dir` that has some, by name (one read).
pub fn read_children(
    storage: &dyn Storage,
    dir: &StorePath,
) -> StorageResult<BTreeMap<String, Vec<DeadProp>>> {
    Ok(load(storage, dir)?.0.nodes)
}

/// Apply PROPPATCH `changes` to `node` in order, all or nothing (one compare-and-swap).
pub fn patch(storage: &dyn Storage, node: &StorePath, changes: &[PropChange]) -> ServiceResult<()> {
    let (dir, name) = owner(node)?;
    let mut over: Option<String> = None;
    update_map(storage, &dir, &mut |map| {
        let mut props = map.nodes.get(name).cloned().unwrap_or_default();
        for c in changes {
            match c {
                PropChange::Set((ns, n), xml) => {
                    let p = DeadProp {
                        ns: ns.clone(),
                        name: n.clone(),
                        xml: xml.clone(),
                    };
                    match props.iter_mut().find(|q| &q.ns == ns && &q.name == n) {
                        Some(q) => *q = p,
                        None => props.push(p),
                    }
                }
                PropChange::Remove((ns, n)) => props.retain(|q| !(&q.ns == ns && &q.name == n)),
            }
        }
        let bytes: usize = props.iter().map(DeadProp::size).sum();
        if props.len() > MAX_PROPS || bytes > MAX_PROP_BYTES {
            over = Some(format!(
                "at most {MAX_PROPS} dead properties of {MAX_PROP_BYTES} bytes in all per resource"
            ));
            return false;
        }
        if props.is_empty() {
            map.nodes.remove(name).is_some()
        } else {
            map.nodes.insert(name.to_string(), props);
            true
        }
    })?;
    match over {
        Some(m) => Err(ServiceError::new(ErrorCode::InsufficientStorage, m)),
        None => Ok(()),
    }
}

/// After `from` was moved to `to` (`replaced`: over an existing node, whose entry goes).
pub fn move_node(
    storage: &dyn Storage,
    from: &StorePath,
    to: &StorePath,
    replaced: bool,
) -> StorageResult<()> {
    let props = read(storage, from)?;
    if replaced || !props.is_empty() {
        set_node(storage, to, props)?;
    }
    forget_node(storage, from)
}

/// After `from` was copied to `to`: the copy gets `from`'s properties (and only those).
pub fn copy_node(storage: &dyn Storage, from: &StorePath, to: &StorePath) -> StorageResult<()> {
    let props = read(storage, from)?;
    set_node(storage, to, props)
}

fn set_node(storage: &dyn Storage, node: &StorePath, props: Vec<DeadProp>) -> StorageResult<()> {
    let (dir, name) = owner(node)?;
    update_map(storage, &dir, &mut |map| {
        if props.is_empty() {
            map.nodes.remove(name).is_some()
        } else {
            map.nodes.insert(name.to_string(), props.clone());
            true
        }
    })
}

/// While a tree is copied: `from_dir`'s map (its children's properties) into `to_dir`.
pub fn copy_children(
    storage: &dyn Storage,
    from_dir: &StorePath,
    to_dir: &StorePath,
) -> StorageResult<()> {
    let copied = load(storage, from_dir)?.0.nodes;
    if copied.is_empty() {
        return Ok(());
    }
    update_map(storage, to_dir, &mut |map| {
        for (name, props) in &copied {
            map.nodes.insert(name.clone(), props.clone());
        }
        true
    })
}

/// After `node` was removed: its entry goes (its subtree's maps went with it).
pub fn forget_node(storage: &dyn Storage, node: &StorePath) -> StorageResult<()> {
    let Ok((dir, name)) = owner(node) else {
        return Ok(());
    };
    match update_map(storage, &dir, &mut |map| map.nodes.remove(name).is_some()) {
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(()),
        other => other,
    }
}

/// The name of a property, for messages.
pub fn shown(name: &PropName) -> String {
    format!("{{{}}}{}", name.0, name.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn patch_is_bounded_and_props_follow_moves() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let d = StorePath::parse("acme/resources/d").unwrap();
        s.mkdir(&d).unwrap();
        let a = d.join("a.md").unwrap();
        let b = d.join("b.md").unwrap();
        let name = |n: &str| ("urn:x".to_string(), n.to_string());
        patch(
            &s,
            &a,
            &[
                PropChange::Set(name("p"), "1".into()),
                PropChange::Set(name("q"), "2".into()),
                PropChange::Remove(name("q")),
            ],
        )
        .unwrap();
        assert_eq!(read(&s, &a).unwrap().len(), 1);
        let many: Vec<PropChange> = (0..=MAX_PROPS)
            .map(|i| PropChange::Set(name(&format!("n{i}")), "v".into()))
            .collect();
        assert_eq!(
            patch(&s, &a, &many).unwrap_err().code,
            ErrorCode::InsufficientStorage
        );
        assert_eq!(read(&s, &a).unwrap().len(), 1, "nothing changed");
        move_node(&s, &a, &b, false).unwrap();
        assert!(read(&s, &a).unwrap().is_empty());
        assert_eq!(read(&s, &b).unwrap()[0].xml, "1");
        copy_node(&s, &b, &a).unwrap();
        assert_eq!(read(&s, &a).unwrap().len(), 1);
        forget_node(&s, &b).unwrap();
        assert!(read(&s, &b).unwrap().is_empty());
    }
}
