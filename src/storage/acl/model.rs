//! The ACL model of OpenViking 0.5.2 (facts: levels, modes, principals, inheritance) and the
//! two stored files: `<account>/_system/acl.json` (the account's ACL table: one row per node
//! under `viking://resources` that has its own mode or grants) and
//! `<account>/_system/groups.json` (0.5.2's file: groups of users).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, IdKind};

/// Most grants one node may carry (0.5.2 sets none; a bound keeps the table small).
pub const MAX_ENTRIES_PER_NODE: usize = 256;
/// Most nodes with their own ACL in one account (the table every instance holds in memory
/// and turns into the find filter).
pub const MAX_ACL_NODES: usize = 4096;
/// Most groups in one account, and members in one group.
pub const MAX_GROUPS: usize = 1024;
pub const MAX_GROUP_MEMBERS: usize = 10_000;

/// A permission level; each includes the ones below it (0.5.2's masks 1, 3, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Read,
    Write,
    Manage,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Manage => "manage",
        }
    }

    /// 0.5.2's spelling rules: trimmed, one of the three words.
    pub fn parse(raw: &str) -> ServiceResult<Level> {
        match raw.trim() {
            "read" => Ok(Level::Read),
            "write" => Ok(Level::Write),
            "manage" => Ok(Level::Manage),
            _ => Err(ServiceError::invalid_argument(
                "ACL level must be read, write, or manage",
            )),
        }
    }
}

/// How a node combines its own grants with its parent's (0.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No ACL applies (outside `viking://resources`).
    None,
    /// The parent's permissions plus the node's own grants.
    Inherit,
    /// Only the node's own grants: cuts inheritance.
    Restricted,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Inherit => "inherit",
            Mode::Restricted => "restricted",
        }
    }

    /// A mode a client may set (0.5.2 accepts `inherit` and `restricted` only).
    pub fn parse_settable(raw: &str) -> ServiceResult<Mode> {
        match raw {
            "inherit" => Ok(Mode::Inherit),
            "restricted" => Ok(Mode::Restricted),
            _ => Err(ServiceError::invalid_argument(
                "acl_mode must be 'inherit' or 'restricted'",
            )),
        }
    }
}

/// One grant: a principal (`user:<id>`, `user:*`, `group:<id>`) at a level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub principal: String,
    pub level: Level,
}

/// The principal syntax of 0.5.2, trimmed; ids follow the identifier rules.
pub fn normalize_principal(raw: &str) -> ServiceResult<String> {
    let p = raw.trim();
    let bad = || ServiceError::invalid_argument("principal must use user:<id> or group:<id>");
    let (kind, id) = p.split_once(':').ok_or_else(bad)?;
    match kind {
        "user" if id == "*" => {}
        "user" => validate_id(IdKind::User, id)?,
        "group" if id == "*" => {
            return Err(ServiceError::invalid_argument("group:* is not supported"))
        }
        "group" => validate_id(IdKind::Group, id)?,
        _ => return Err(bad()),
    }
    Ok(p.to_string())
}

/// Normalised grants as 0.5.2 keeps them: one per principal (its highest level), sorted by
/// principal.
pub fn normalize_entries(entries: impl IntoIterator<Item = Entry>) -> Vec<Entry> {
    let mut best: BTreeMap<String, Level> = BTreeMap::new();
    for e in entries {
        let slot = best.entry(e.principal).or_insert(e.level);
        if e.level > *slot {
            *slot = e.level;
        }
    }
    best.into_iter()
        .map(|(principal, level)| Entry { principal, level })
        .collect()
}

/// A node's own ACL: its mode (when set) and its direct grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAcl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl_mode: Option<Mode>,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

impl NodeAcl {
    /// A row that says nothing (inherit, no grants) is not kept.
    pub fn is_trivial(&self) -> bool {
        self.entries.is_empty() && self.acl_mode != Some(Mode::Restricted)
    }
}

/// `<account>/_system/acl.json`: rows keyed by the node's path below `viking://resources`
/// (`docs/team`; the resources root itself has a fixed ACL and no row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AclFile {
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeAcl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One group of `groups.json` (0.5.2: users only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `<account>/_system/groups.json` as 0.5.2 writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupsFile {
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_and_levels() {
        assert_eq!(normalize_principal(" user:bob ").unwrap(), "user:bob");
        assert_eq!(normalize_principal("user:*").unwrap(), "user:*");
        assert_eq!(normalize_principal("group:eng").unwrap(), "group:eng");
        for bad in [
            "bob",
            "group:*",
            "team:x",
            "user:",
            "user:a b",
            "group:a/b",
            "",
        ] {
            assert!(normalize_principal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Level::parse(" write").unwrap(), Level::Write);
        assert!(Level::parse("admin").is_err());
        assert!(Level::Manage > Level::Write && Level::Write > Level::Read);
    }

    #[test]
    fn entries_keep_the_highest_level_per_principal() {
        let e = |p: &str, l| Entry {
            principal: p.into(),
            level: l,
        };
        let out = normalize_entries([
            e("user:b", Level::Read),
            e("user:a", Level::Write),
            e("user:b", Level::Manage),
            e("user:a", Level::Read),
        ]);
        assert_eq!(
            out,
            vec![e("user:a", Level::Write), e("user:b", Level::Manage)]
        );
    }
}
