//! The preset directories of accounts and users, each with its two sidecars (spec §4.4).
//! Idempotent: existing directories and sidecars are left untouched.

use super::okf::{self, CONTEXT_WRITE};
use super::{Storage, StorageError, StorageResult, StorePath};

/// (relative path under the account, URI, abstract, overview)
type Preset = (&'static str, &'static str, &'static str, &'static str);

const ACCOUNT_DIRS: &[Preset] = &[
    (
        "resources",
        "viking://resources/",
        "Resources scope. Independent knowledge and resource storage shared across the account.",
        "# Resources\n\nShared resources of the account: documents, code and reference material.",
    ),
    (
        "agent",
        "viking://agent/",
        "Shared agent capabilities and configuration available across the account.",
        "# Agent\n\nShared skills, endpoints, tools and payments of the account's agents.",
    ),
    (
        "agent/skills",
        "viking://agent/skills/",
        "Shared skill registry. Skills available to every agent of the account.",
        "# Skills\n\nShared skill registry of the account.",
    ),
    (
        "agent/endpoints",
        "viking://agent/endpoints/",
        "Shared endpoint registry of the account's agents.",
        "# Endpoints\n\nShared endpoint registry of the account.",
    ),
    (
        "agent/tools",
        "viking://agent/tools/",
        "Shared tool registry of the account's agents.",
        "# Tools\n\nShared tool registry of the account.",
    ),
    (
        "agent/payments",
        "viking://agent/payments/",
        "Shared payment configuration of the account's agents.",
        "# Payments\n\nShared payment configuration of the account.",
    ),
];

const USER_DIRS: &[(&str, &str, &str)] = &[
    (
        "",
        "User scope. Stores user's long-term memory, resources and sessions.",
        "# User\n\nThe user's private space: memories, resources, privacy, peers, skills, sessions.",
    ),
    (
        "memories",
        "User memories extracted from sessions and written by agents.",
        "# Memories\n\nLong-term memories of the user.",
    ),
    (
        "resources",
        "User's private resources.",
        "# Resources\n\nResources private to the user.",
    ),
    (
        "privacy",
        "User privacy settings and protected data.",
        "# Privacy\n\nPrivacy configuration of the user.",
    ),
    (
        "peers",
        "Peers the user interacts with, and what is known about them.",
        "# Peers\n\nPeer records of the user.",
    ),
    (
        "skills",
        "User-specific skills.",
        "# Skills\n\nSkills private to the user.",
    ),
    (
        "sessions",
        "User session registry. Conversation sessions and their archives.",
        "# Sessions\n\nConversation sessions of the user.",
    ),
];

/// The account and user a dev-mode request acts as when its headers name none (spec §4.4:
/// scaffolded at startup in either auth mode).
pub const DEFAULT_ID: &str = "default";

/// Scaffold `default` and `default/default`. Safe for any number of instances at once over
/// one storage: every directory is mkdir -p and every sidecar create-only.
pub fn init_default(storage: &dyn Storage) -> StorageResult<()> {
    init_account(storage, DEFAULT_ID)?;
    init_user(storage, DEFAULT_ID, DEFAULT_ID)
}

/// Create the account's preset directories (`resources`, `agent` and its children).
pub fn init_account(storage: &dyn Storage, account: &str) -> StorageResult<()> {
    let root = StorePath::root().join(account)?;
    for (rel, uri, abstract_text, overview) in ACCOUNT_DIRS {
        ensure_dir(storage, &root.join_path(rel)?, uri, abstract_text, overview)?;
    }
    Ok(())
}

/// Create the user's space `user/{user}` and its first-level preset directories.
pub fn init_user(storage: &dyn Storage, account: &str, user: &str) -> StorageResult<()> {
    let user_root = StorePath::root().join(account)?.join("user")?.join(user)?;
    for (rel, abstract_text, overview) in USER_DIRS {
        let dir = user_root.join_path(rel)?;
        let uri = if rel.is_empty() {
            format!("viking://user/{user}/")
        } else {
            format!("viking://user/{user}/{rel}/")
        };
        ensure_dir(storage, &dir, &uri, abstract_text, overview)?;
    }
    Ok(())
}

/// The sidecar files [`init_account`] may write, relative to the account: what a search
/// change record of an account's creation names (not the whole account, which may already
/// hold data that would then be re-indexed for nothing).
pub fn account_sidecars() -> Vec<String> {
    ACCOUNT_DIRS
        .iter()
        .flat_map(|(rel, ..)| sidecars_of(rel))
        .collect()
}

/// The sidecar files [`init_user`] may write for `user`, relative to the account.
pub fn user_sidecars(user: &str) -> Vec<String> {
    USER_DIRS
        .iter()
        .flat_map(|(rel, ..)| match *rel {
            "" => sidecars_of(&format!("user/{user}")),
            rel => sidecars_of(&format!("user/{user}/{rel}")),
        })
        .collect()
}

fn sidecars_of(dir: &str) -> [String; 2] {
    [format!("{dir}/.abstract.md"), format!("{dir}/.overview.md")]
}

/// mkdir plus both sidecars, each written only if absent.
fn ensure_dir(
    storage: &dyn Storage,
    dir: &StorePath,
    uri: &str,
    abstract_text: &str,
    overview: &str,
) -> StorageResult<()> {
    storage.mkdir(dir)?;
    for (name, body) in [(".abstract.md", abstract_text), (".overview.md", overview)] {
        let text = okf::render(uri, CONTEXT_WRITE, false, body);
        match storage.write_if(&dir.join(name)?, text.as_bytes(), None) {
            Ok(_) | Err(StorageError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn scaffolds_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        init_account(&s, "acme").unwrap();
        init_user(&s, "acme", "bob").unwrap();
        let custom = StorePath::parse("acme/user/bob/memories/.abstract.md").unwrap();
        s.write(&custom, b"kept").unwrap();
        init_user(&s, "acme", "bob").unwrap();
        assert_eq!(s.read(&custom).unwrap(), b"kept");
        let names: Vec<String> = s
            .list(&StorePath::parse("acme/user/bob").unwrap())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for want in [
            "memories",
            "resources",
            "privacy",
            "peers",
            "skills",
            "sessions",
            ".abstract.md",
        ] {
            assert!(names.iter().any(|n| n == want), "{want}");
        }
        let text = String::from_utf8(
            s.read(&StorePath::parse("acme/agent/skills/.overview.md").unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(text.starts_with("---\ndirectory: viking://agent/skills/\n"));
        // The sidecar lists name exactly the sidecars the scaffold wrote.
        let listed: Vec<String> = account_sidecars()
            .into_iter()
            .chain(user_sidecars("bob"))
            .collect();
        assert_eq!(listed.len(), 2 * (ACCOUNT_DIRS.len() + USER_DIRS.len()));
        for rel in &listed {
            let p = StorePath::parse(&format!("acme/{rel}")).unwrap();
            assert!(s.stat(&p).unwrap().is_some(), "{rel}");
        }
    }
}
