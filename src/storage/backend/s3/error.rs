//! One mapping from object-store failures to [`StorageError`].
//!
//! Anything that says the store cannot serve us right now (unreachable, 5xx after retries,
//! throttling, refused credentials, a missing bucket) is `Unavailable`, which the HTTP layer
//! answers with 503 UNAVAILABLE and `Retry-After`.

use crate::storage::StorageError;

/// Map `err`, raised while working on `what` (a store path for messages), for the store at
/// `endpoint`.
pub fn map(err: object_store::Error, what: &str, endpoint: &str) -> StorageError {
    use object_store::Error as E;
    match err {
        E::NotFound { ref source, .. } if mentions_missing_bucket(&source.to_string()) => {
            StorageError::Unavailable(format!("object store {endpoint}: the bucket does not exist"))
        }
        E::NotFound { .. } => StorageError::NotFound(what.to_string()),
        E::AlreadyExists { .. } => StorageError::AlreadyExists(what.to_string()),
        E::Precondition { .. } | E::NotModified { .. } => StorageError::Conflict(what.to_string()),
        E::InvalidPath { source } => StorageError::InvalidPath(format!("{what}: {source}")),
        E::Unauthenticated { source, .. } => StorageError::Unavailable(format!(
            "object store {endpoint} rejected the credentials: {source}"
        )),
        E::PermissionDenied { source, .. } => StorageError::Unavailable(format!(
            "object store {endpoint} denied access (check the credentials and bucket policy): {source}"
        )),
        E::NotSupported { source } => StorageError::Unavailable(format!(
            "object store {endpoint} does not support an operation Longship needs: {source}"
        )),
        E::NotImplemented { operation, .. } => StorageError::Unavailable(format!(
            "object store {endpoint} does not support {operation}"
        )),
        other => StorageError::Unavailable(format!("object store {endpoint} failed: {other}")),
    }
}

fn mentions_missing_bucket(text: &str) -> bool {
    text.contains("NoSuchBucket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_each_kind() {
        let nf = object_store::Error::NotFound {
            path: "k".into(),
            source: "404".into(),
        };
        assert!(matches!(map(nf, "/local/x", "e"), StorageError::NotFound(p) if p == "/local/x"));
        let nb = object_store::Error::NotFound {
            path: "k".into(),
            source: "<Code>NoSuchBucket</Code>".into(),
        };
        assert!(matches!(map(nb, "x", "e"), StorageError::Unavailable(_)));
        let pre = object_store::Error::Precondition {
            path: "k".into(),
            source: "412".into(),
        };
        assert!(matches!(map(pre, "x", "e"), StorageError::Conflict(_)));
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        };
        match map(denied, "x", "http://store") {
            StorageError::Unavailable(m) => {
                assert!(m.contains("http://store") && m.contains("credentials"))
            }
            other => panic!("{other:?}"),
        }
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert!(
            matches!(map(generic, "x", "e"), StorageError::Unavailable(m) if m.contains("connection refused"))
        );
    }
}
