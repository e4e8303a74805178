//! Snapshots (issue #22): git-style versions of an account's context tree, as 0.5.2's
//! `/api/v1/snapshot/*` routes describe them.
//!
//! One repository per account under `<account>/_system/snapshots/`: content-addressed objects in
//! git's object model (blobs, trees, commits, SHA-1 ids; encoded and hashed by the gitoxide
//! crates) and refs (`refs/heads/<branch>`, `refs/tags/<tag>`) holding a commit id, moved only by
//! compare-and-swap. Unchanged files keep their blob id, so a version costs what changed; any
//! instance reads any version from the shared storage. See docs/ARCHITECTURE.md "Snapshots".

pub mod commit;
pub mod diff;
pub mod history;
pub mod ignore_rules;
pub mod objects;
pub mod refs;
pub mod restore;
pub mod scope;
pub mod statcache;
pub mod tree;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::StorePath;

/// The author 0.5.2 records when the caller names none.
pub const DEFAULT_AUTHOR_NAME: &str = "viking-bot";
pub const DEFAULT_AUTHOR_EMAIL: &str = "bot@viking.local";
/// The default branch.
pub const DEFAULT_BRANCH: &str = "main";

/// `<account>/_system/snapshots`: the account's repository.
pub fn repo_root(account: &str) -> ServiceResult<StorePath> {
    StorePath::root()
        .join(account)
        .and_then(|p| p.join("_system"))
        .and_then(|p| p.join("snapshots"))
        .map_err(|e| ServiceError::internal(format!("snapshot repository of {account:?}: {e}")))
}

/// A tree path (`resources/a/b.md`) as the URI clients see.
pub fn tree_path_uri(tree_path: &str) -> String {
    format!("viking://{tree_path}")
}

/// Who asks and with which author fields (0.5.2's defaults when absent).
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    pub fn or_default(name: Option<String>, email: Option<String>) -> Self {
        Author {
            name: name
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_AUTHOR_NAME.into()),
            email: email
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_AUTHOR_EMAIL.into()),
        }
    }
}
