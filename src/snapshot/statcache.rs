//! The stat cache (git's index, in spirit): per directory, the blob id of each file at the
//! storage version it was read at. A commit reuses the id of a file whose listed version is
//! unchanged instead of reading and hashing it again, so its time follows the change too.
//! Stored as one small JSON object per directory (`statcache/<hash of dir>.json`), rewritten
//! only when one of its entries changed. A version names exactly the bytes read (inode, mtime
//! and length on local disk; the ETag on S3), so an entry is a fact that never turns false;
//! a lost or damaged shard only costs a re-read.

use std::collections::BTreeMap;

use gix_hash::ObjectId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::objects::parse_oid;
use crate::storage::{Storage, StorePath, Version};

#[derive(Default, Serialize, Deserialize)]
struct Shard {
    dir: String,
    /// file name → (version, blob id hex)
    files: BTreeMap<String, (String, String)>,
}

/// The cache of one commit's scan: shards loaded on demand, dirty ones saved at the end.
pub struct StatCache<'a> {
    storage: &'a dyn Storage,
    root: Option<StorePath>,
    shards: BTreeMap<String, (Shard, bool)>,
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl<'a> StatCache<'a> {
    pub fn new(storage: &'a dyn Storage, repo: &StorePath) -> Self {
        StatCache {
            storage,
            root: repo.join("statcache").ok(),
            shards: BTreeMap::new(),
        }
    }

    fn shard_path(&self, dir: &str) -> Option<StorePath> {
        let hex = hex::encode(&Sha256::digest(dir.as_bytes())[..16]);
        self.root.as_ref()?.join(&format!("{hex}.json")).ok()
    }

    fn shard(&mut self, dir: &str) -> &mut (Shard, bool) {
        if !self.shards.contains_key(dir) {
            let loaded = self
                .shard_path(dir)
                .and_then(|p| self.storage.read(&p).ok())
                .and_then(|d| serde_json::from_slice::<Shard>(&d).ok())
                .filter(|s| s.dir == dir)
                .unwrap_or_else(|| Shard {
                    dir: dir.to_string(),
                    files: BTreeMap::new(),
                });
            self.shards.insert(dir.to_string(), (loaded, false));
        }
        // Just inserted when missing.
        self.shards
            .entry(dir.to_string())
            .or_insert_with(|| (Shard::default(), false))
    }

    /// The blob id of `path` if it was read at `version` before.
    pub fn get(&mut self, path: &str, version: &Version) -> Option<ObjectId> {
        let (dir, name) = split(path);
        let (shard, _) = self.shard(dir);
        let (v, id) = shard.files.get(name)?;
        (v == &version.0).then(|| parse_oid(id)).flatten()
    }

    pub fn put(&mut self, path: &str, version: &Version, id: &ObjectId) {
        let (dir, name) = split(path);
        let entry = (version.0.clone(), id.to_string());
        let (shard, dirty) = self.shard(dir);
        if shard.files.get(name) != Some(&entry) {
            shard.files.insert(name.to_string(), entry);
            *dirty = true;
        }
    }

    /// Save changed shards (best effort: a failure only costs re-reading next time).
    pub fn save(self) {
        for (dir, (shard, dirty)) in &self.shards {
            if !dirty {
                continue;
            }
            let Some(path) = self.shard_path(dir) else {
                continue;
            };
            let Ok(data) = serde_json::to_vec(shard) else {
                continue;
            };
            if let Err(e) = self.storage.write(&path, &data) {
                tracing::warn!(error = %e, "snapshot stat cache not saved");
            }
        }
    }
}
