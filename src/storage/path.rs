//! Validated storage paths.

use std::fmt;

use super::StorageError;

/// A `/`-separated path relative to the `/local` mount. Every segment is non-empty, not `.` or
/// `..`, and free of `/`, `\`, NUL and control characters, so no path can escape the root.
/// The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

/// Longest segment in bytes (common file-system name limit).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Prefix of every name a backend gives meaning to in storage: local temp files, S3 directory
/// markers, lock leases, move intents, publishing flags, probes and segment-log folders.
pub const INTERNAL_PREFIX: &str = ".longship-";

/// The one "is this segment a storage-internal name" predicate (spec §5.5, issue #26): the
/// server's own names (anything starting with [`INTERNAL_PREFIX`]) and the names upstream's
/// storage gives meaning to. Such a name is never listed, stat'ed, read or found, and no user,
/// account, peer or path segment a client names may be one (400, "reserved").
pub fn is_internal_name(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
        || matches!(name, ".path.ovlock" | ".redirect.json" | ".sync_log.json")
        || name.starts_with(".exact.ovlock.")
}

impl StorePath {
    /// The root of the mount (`/local`).
    pub fn root() -> Self {
        StorePath(String::new())
    }

    /// Parse a relative path, rejecting anything unsafe.
    pub fn parse(raw: &str) -> Result<Self, StorageError> {
        StorePath::root().join_all(raw.split('/').filter(|s| !s.is_empty()))
    }

    /// Append one segment, validating it.
    pub fn join(&self, segment: &str) -> Result<Self, StorageError> {
        check_segment(segment)?;
        if self.0.is_empty() {
            Ok(StorePath(segment.to_string()))
        } else {
            Ok(StorePath(format!("{}/{}", self.0, segment)))
        }
    }

    /// Append every segment of `segs`, validating each, in one pass (linear in the total
    /// length, however many segments there are).
    pub fn join_all<'a>(
        &self,
        segs: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, StorageError> {
        let mut out = self.0.clone();
        for seg in segs {
            check_segment(seg)?;
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(seg);
        }
        Ok(StorePath(out))
    }

    /// Append several `/`-separated segments.
    pub fn join_path(&self, rest: &str) -> Result<Self, StorageError> {
        self.join_all(rest.split('/').filter(|s| !s.is_empty()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The last segment (`""` for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The parent path; the root's parent is `None`.
    pub fn parent(&self) -> Option<StorePath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.rfind('/') {
            Some(i) => Some(StorePath(self.0[..i].to_string())),
            None => Some(StorePath::root()),
        }
    }

    /// True if `self` equals `other` or lies under it.
    pub fn starts_with(&self, other: &StorePath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

fn check_segment(seg: &str) -> Result<(), StorageError> {
    let bad = |why: &str| Err(StorageError::InvalidPath(format!("{why}: {seg:?}")));
    if seg.is_empty() {
        return bad("empty segment");
    }
    if seg == "." || seg == ".." {
        return bad("traversal segment");
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return bad("segment longer than 255 bytes");
    }
    if seg.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return bad("separator or control character in segment");
    }
    Ok(())
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/local/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins() {
        let p = StorePath::parse("/acme//resources/docs/").unwrap();
        assert_eq!(p.as_str(), "acme/resources/docs");
        assert_eq!(p.name(), "docs");
        assert_eq!(p.parent().unwrap().as_str(), "acme/resources");
        assert!(p.starts_with(&StorePath::parse("acme").unwrap()));
        assert!(!StorePath::parse("acmex")
            .unwrap()
            .starts_with(&StorePath::parse("acme").unwrap()));
        assert_eq!(
            StorePath::parse("a").unwrap().parent(),
            Some(StorePath::root())
        );
    }

    #[test]
    fn rejects_unsafe_segments() {
        for bad in ["a/../b", "./a", "a\\b", "a\0b", "a\nb", &"x".repeat(256)] {
            assert!(StorePath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
