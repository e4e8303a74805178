//! Mapping between [`StorePath`]s and object keys under the configured prefix.
//!
//! `/local/<p>` is the key `<prefix>/<p>`. A directory is a key prefix; directories the backend
//! creates also get a marker object `<dir>/.longship-dir` (empty, or the id of the move that
//! claimed the directory), so empty directories persist (object_store cannot name keys that
//! end in `/`, the other common convention).
//! Names starting with `.longship-` (`storage::INTERNAL_PREFIX`: markers, probes, lock leases, move intents,
//! publishing flags) are never listed.

use object_store::path::Path;

use crate::storage::{StorageError, StorageResult, StorePath};

/// The marker object that makes a directory exist without any file in it.
pub const DIR_MARKER: &str = ".longship-dir";
/// Top-level folder of lock leases.
pub const LOCKS_DIR: &str = ".longship-locks";
/// Top-level folder of the intents of directory moves in progress (see `moves`).
pub const MOVES_DIR: &str = ".longship-moves";
/// Prefix of a publishing flag: `<parent>/.longship-pub-<name>` hides the directory
/// `<parent>/<name>` while a move fills it. As long as the marker suffix `/.longship-dir`, so
/// any directory whose marker fits a key fits its flag too.
pub const FLAG_PREFIX: &str = ".longship-pub-";

/// Builds object keys for one bucket prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The prefix as a key (`None` = bucket root).
    prefix: Option<Path>,
}

impl Keys {
    pub fn new(prefix: &str) -> StorageResult<Self> {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(Keys { prefix: None });
        }
        Ok(Keys {
            prefix: Some(parse(prefix)?),
        })
    }

    /// The key of `path` itself (a file, or the prefix a directory's objects share). `None` is
    /// the bucket root, which only the root of an unprefixed store maps to.
    pub fn of(&self, path: &StorePath) -> StorageResult<Option<Path>> {
        match (&self.prefix, path.is_root()) {
            (None, true) => Ok(None),
            (Some(p), true) => Ok(Some(p.clone())),
            (None, false) => parse(path.as_str()).map(Some),
            (Some(p), false) => parse(&format!("{}/{}", p.as_ref(), path.as_str())).map(Some),
        }
    }

    /// The key of a file; the root is never a file.
    pub fn file(&self, path: &StorePath) -> StorageResult<Path> {
        if path.is_root() {
            return Err(StorageError::IsADirectory(path.to_string()));
        }
        self.of(path)?
            .ok_or_else(|| StorageError::IsADirectory(path.to_string()))
    }

    /// The marker key of a directory.
    pub fn marker(&self, dir: &StorePath) -> StorageResult<Path> {
        self.child(dir, DIR_MARKER)
    }

    /// The publishing flag of a directory (a sibling object in its parent); `None` for the root.
    pub fn flag(&self, dir: &StorePath) -> StorageResult<Option<Path>> {
        match dir.parent() {
            Some(parent) => self
                .child(&parent, &format!("{FLAG_PREFIX}{}", dir.name()))
                .map(Some),
            None => Ok(None),
        }
    }

    /// The directory name a publishing flag hides, if `name` is one.
    pub fn flagged(name: &str) -> Option<&str> {
        name.strip_prefix(FLAG_PREFIX).filter(|n| !n.is_empty())
    }

    /// A backend-internal object under the top of the prefix (`rel` may contain `/`).
    pub fn internal(&self, rel: &str) -> StorageResult<Path> {
        self.child(&StorePath::root(), rel)
    }

    fn child(&self, dir: &StorePath, rel: &str) -> StorageResult<Path> {
        match self.of(dir)? {
            Some(base) => parse(&format!("{}/{rel}", base.as_ref())),
            None => parse(rel),
        }
    }

    /// The store path of a key under the prefix (`None` for keys outside it).
    pub fn rel(&self, key: &Path) -> Option<StorePath> {
        let raw = key.as_ref();
        let rest = match &self.prefix {
            None => raw,
            Some(p) => raw.strip_prefix(p.as_ref())?.strip_prefix('/')?,
        };
        StorePath::parse(rest).ok()
    }

    /// The last segment of a key.
    pub fn name(key: &Path) -> &str {
        key.as_ref().rsplit('/').next().unwrap_or("")
    }

    /// True for names of the backend's own objects (and every other reserved name).
    pub fn is_internal(name: &str) -> bool {
        crate::storage::is_internal_name(name)
    }
}

/// Longest object key S3 accepts, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// `Path::parse` keeps the key byte for byte (no percent-encoding), and rejects only what
/// [`StorePath`] already rejects (empty, `.`/`..`, control characters). Keys longer than S3
/// allows are refused here, before any request (as ENAMETOOLONG is on local disk), so a very
/// deep path costs nothing and answers 400.
fn parse(raw: &str) -> StorageResult<Path> {
    if raw.len() > MAX_KEY_BYTES {
        return Err(StorageError::InvalidPath(format!(
            "path too long for the object store ({} bytes with the prefix; the limit is {MAX_KEY_BYTES})",
            raw.len()
        )));
    }
    Path::parse(raw).map_err(|e| StorageError::InvalidPath(format!("{raw:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    #[test]
    fn keys_with_and_without_prefix() {
        let k = Keys::new("team/a/").unwrap();
        assert_eq!(
            k.of(&p("x/y.md")).unwrap().unwrap().as_ref(),
            "team/a/x/y.md"
        );
        assert_eq!(
            k.of(&StorePath::root()).unwrap().unwrap().as_ref(),
            "team/a"
        );
        assert_eq!(
            k.marker(&p("x")).unwrap().as_ref(),
            "team/a/x/.longship-dir"
        );
        assert_eq!(
            k.rel(&Path::parse("team/a/x/y.md").unwrap()),
            Some(p("x/y.md"))
        );
        assert_eq!(k.rel(&Path::parse("team/ab/x").unwrap()), None);
        let bare = Keys::new("").unwrap();
        assert!(bare.of(&StorePath::root()).unwrap().is_none());
        assert_eq!(
            bare.marker(&StorePath::root()).unwrap().as_ref(),
            ".longship-dir"
        );
        assert!(bare.file(&StorePath::root()).is_err());
    }

    #[test]
    fn a_flag_is_a_hidden_sibling_as_long_as_the_marker() {
        let k = Keys::new("pre").unwrap();
        let flag = k.flag(&p("a/b/doc")).unwrap().unwrap();
        assert_eq!(flag.as_ref(), "pre/a/b/.longship-pub-doc");
        assert!(Keys::is_internal(Keys::name(&flag)));
        assert_eq!(Keys::flagged(Keys::name(&flag)), Some("doc"));
        assert_eq!(Keys::flagged(".longship-dir"), None);
        assert_eq!(Keys::flagged(FLAG_PREFIX), None);
        assert!(k.flag(&StorePath::root()).unwrap().is_none());
        let deep = p(&vec!["a"; 300].join("/"));
        assert_eq!(
            k.flag(&deep).unwrap().unwrap().as_ref().len(),
            k.marker(&deep).unwrap().as_ref().len()
        );
    }

    #[test]
    fn keys_longer_than_s3_allows_are_invalid_paths() {
        let k = Keys::new("pre").unwrap();
        let deep = p(&vec!["a"; 600].join("/")); // 1199 bytes
        assert!(matches!(k.file(&deep), Err(StorageError::InvalidPath(_))));
        let fits = p(&vec!["a"; 505].join("/")); // 1009 + "pre/" = 1013 bytes
        assert!(k.file(&fits).is_ok());
        assert!(
            matches!(k.marker(&fits), Err(StorageError::InvalidPath(_))),
            "the marker adds /.longship-dir"
        );
    }

    #[test]
    fn unusual_names_round_trip_unencoded() {
        let k = Keys::new("pre").unwrap();
        for name in ["a b", "100%", "q?x#y", "ünï", "[x]{y}", "a~b"] {
            let key = k.file(&p(name)).unwrap();
            assert_eq!(key.as_ref(), format!("pre/{name}"));
            assert_eq!(k.rel(&key), Some(p(name)));
        }
    }
}
