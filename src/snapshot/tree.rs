//! Trees as flat maps (`resources/a/b.md` → blob id) and back, and commits as JSON.
//! A version is the root tree of hashes: writing one stores only the trees that changed.

use std::collections::{BTreeMap, HashSet};

use gix_hash::ObjectId;
use gix_object::bstr::ByteSlice;
use gix_object::tree::{Entry, EntryKind};
use gix_object::{Kind, Tree, TreeRef};
use serde_json::{json, Value};

use super::objects::{encode, ObjectStore, HASH};
use crate::error::{ServiceError, ServiceResult};

/// Files of a version (or part of one): tree path → blob id.
pub type Flat = BTreeMap<String, ObjectId>;

/// Largest tree or commit object read (a directory of ~100k entries).
const MAX_META_OBJECT_BYTES: u64 = 8 << 20;
/// Deepest tree walked (the URI segment limit).
const MAX_DEPTH: usize = 256;

/// A version's files read back, with the ids of every tree visited (those need no rewrite).
#[derive(Default)]
pub struct ReadTree {
    pub files: Flat,
    pub trees: HashSet<ObjectId>,
}

fn damaged(what: &str) -> ServiceError {
    ServiceError::internal(format!("snapshot {what} is damaged or missing"))
}

/// The files of tree `root` under `under` (a tree path; `""` for all), with full paths.
pub fn read(objects: &ObjectStore<'_>, root: &ObjectId, under: &str) -> ServiceResult<ReadTree> {
    let mut out = ReadTree::default();
    // Walk down to `under` first, reading only the trees on the way.
    let mut id = *root;
    let mut prefix = String::new();
    for seg in under.split('/').filter(|s| !s.is_empty()) {
        let data = objects
            .get(&id, Kind::Tree, MAX_META_OBJECT_BYTES)?
            .ok_or_else(|| damaged("tree"))?;
        let tree = TreeRef::from_bytes(&data, HASH).map_err(|_| damaged("tree"))?;
        let next = tree
            .entries
            .iter()
            .find(|e| e.filename.as_bytes() == seg.as_bytes());
        let Some(entry) = next else { return Ok(out) };
        if !entry.mode.is_tree() {
            // `under` names a file: that one file.
            let path = format!("{prefix}{seg}");
            out.files.insert(path, entry.oid.to_owned());
            return Ok(out);
        }
        id = entry.oid.to_owned();
        prefix.push_str(seg);
        prefix.push('/');
    }
    walk(objects, &id, &prefix, 0, &mut out)?;
    Ok(out)
}

fn walk(
    objects: &ObjectStore<'_>,
    id: &ObjectId,
    prefix: &str,
    depth: usize,
    out: &mut ReadTree,
) -> ServiceResult<()> {
    if depth > MAX_DEPTH {
        return Err(damaged("tree (too deep)"));
    }
    out.trees.insert(*id);
    let data = objects
        .get(id, Kind::Tree, MAX_META_OBJECT_BYTES)?
        .ok_or_else(|| damaged("tree"))?;
    let tree = TreeRef::from_bytes(&data, HASH).map_err(|_| damaged("tree"))?;
    for e in &tree.entries {
        let name = e.filename.to_str().map_err(|_| damaged("tree name"))?;
        let path = format!("{prefix}{name}");
        if e.mode.is_tree() {
            walk(
                objects,
                &e.oid.to_owned(),
                &format!("{path}/"),
                depth + 1,
                out,
            )?;
        } else if e.mode.is_blob() {
            out.files.insert(path, e.oid.to_owned());
        }
    }
    Ok(())
}

#[derive(Default)]
struct Dir {
    files: BTreeMap<String, ObjectId>,
    dirs: BTreeMap<String, Dir>,
}

/// Store the trees of `files`; returns the root tree's id. Trees in `known` are already stored.
pub fn write(
    objects: &ObjectStore<'_>,
    files: &Flat,
    known: &HashSet<ObjectId>,
) -> ServiceResult<ObjectId> {
    let mut root = Dir::default();
    for (path, id) in files {
        let mut dir = &mut root;
        let mut segs: Vec<&str> = path.split('/').collect();
        let name = segs.pop().unwrap_or_default();
        for seg in segs {
            dir = dir.dirs.entry(seg.to_string()).or_default();
        }
        dir.files.insert(name.to_string(), *id);
    }
    store_dir(objects, &root, known)
}

fn store_dir(
    objects: &ObjectStore<'_>,
    dir: &Dir,
    known: &HashSet<ObjectId>,
) -> ServiceResult<ObjectId> {
    let mut tree = Tree::empty();
    for (name, sub) in &dir.dirs {
        tree.entries.push(Entry {
            mode: EntryKind::Tree.into(),
            filename: name.as_str().into(),
            oid: store_dir(objects, sub, known)?,
        });
    }
    for (name, id) in &dir.files {
        tree.entries.push(Entry {
            mode: EntryKind::Blob.into(),
            filename: name.as_str().into(),
            oid: *id,
        });
    }
    tree.entries.sort();
    let payload = encode(&tree)?;
    let id = gix_object::compute_hash(HASH, Kind::Tree, &payload)
        .map_err(|e| ServiceError::internal(format!("hashing a tree: {e}")))?;
    if known.contains(&id) {
        return Ok(id);
    }
    objects.put(Kind::Tree, &payload)
}

/// A commit as read back.
pub struct CommitInfo {
    pub id: ObjectId,
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub json: Value,
}

fn signature(sig: gix_actor::SignatureRef<'_>) -> Value {
    let time = sig.time().unwrap_or_default();
    json!({
        "name": sig.name.to_str_lossy(),
        "email": sig.email.to_str_lossy(),
        "time_seconds": time.seconds,
        "tz_offset_seconds": time.offset,
    })
}

/// Commit `id`; `Ok(None)` when there is no commit of that id.
pub fn read_commit(objects: &ObjectStore<'_>, id: &ObjectId) -> ServiceResult<Option<CommitInfo>> {
    let Some(data) = objects.get(id, Kind::Commit, MAX_META_OBJECT_BYTES)? else {
        return Ok(None);
    };
    let c = gix_object::CommitRef::from_bytes(&data, HASH).map_err(|_| damaged("commit"))?;
    let parents: Vec<ObjectId> = c.parents().collect();
    let author = c.author().map_err(|_| damaged("commit"))?;
    let committer = c.committer().map_err(|_| damaged("commit"))?;
    let json = json!({
        "oid": id.to_string(),
        "tree": c.tree().to_string(),
        "parents": parents.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "author": signature(author),
        "committer": signature(committer),
        "message": c.message.to_str_lossy(),
    });
    Ok(Some(CommitInfo {
        id: *id,
        tree: c.tree(),
        parents,
        json,
    }))
}

/// Store a commit of `tree` on `parents`; returns its id.
pub fn write_commit(
    objects: &ObjectStore<'_>,
    tree: ObjectId,
    parents: &[ObjectId],
    author: &super::Author,
    message: &str,
) -> ServiceResult<ObjectId> {
    let now = gix_object::date::Time::now_utc();
    let sig = gix_actor::Signature {
        name: author.name.as_str().into(),
        email: author.email.as_str().into(),
        time: now,
    };
    let commit = gix_object::Commit {
        tree,
        parents: parents.iter().copied().collect(),
        author: sig.clone(),
        committer: sig,
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    objects.put(Kind::Commit, &encode(&commit)?)
}

/// The empty tree's files.
pub fn empty() -> ReadTree {
    ReadTree::default()
}
