//! Inheritance as 0.5.2 defines it: the resources root grants `user:*` manage; each node below
//! it either adds its own grants to its parent's permissions (`inherit`) or replaces them
//! (`restricted`). A node without a row has exactly its parent's permissions, so whether a
//! caller may do something changes only at nodes that have a row — which is what makes the
//! per-caller find filter small ([`transitions`]).

use serde_json::{json, Value};

use super::model::{normalize_entries, AclFile, Entry, Level, Mode, NodeAcl};

/// A node's resolved ACL (0.5.2's report fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub mode: Mode,
    pub direct: Vec<Entry>,
    pub inherited: Vec<Entry>,
}

impl Effective {
    /// `viking://resources` itself: `user:*` manage, fixed.
    pub fn resources_root() -> Effective {
        Effective {
            mode: Mode::Inherit,
            direct: vec![Entry {
                principal: "user:*".into(),
                level: Level::Manage,
            }],
            inherited: Vec::new(),
        }
    }

    /// The permissions in force: the node's own grants when restricted, else the parent's
    /// plus its own.
    pub fn permissions(&self) -> Vec<Entry> {
        if self.mode == Mode::Restricted {
            return self.direct.clone();
        }
        normalize_entries(self.inherited.iter().chain(&self.direct).cloned())
    }

    fn child(&self, row: Option<&NodeAcl>) -> Effective {
        let direct = row.map(|r| r.entries.clone()).unwrap_or_default();
        let mode = match row.and_then(|r| r.acl_mode) {
            Some(Mode::Restricted) => Mode::Restricted,
            // Below the resources root every node is at least `inherit`.
            _ => Mode::Inherit,
        };
        Effective {
            mode,
            direct,
            inherited: self.permissions(),
        }
    }

    /// 0.5.2's ACL report for `uri`.
    pub fn report(&self, uri: &str) -> Value {
        let list = |v: &[Entry]| -> Vec<Value> {
            v.iter()
                .map(|e| json!({"principal": e.principal, "level": e.level.as_str()}))
                .collect()
        };
        json!({
            "uri": uri,
            "acl_mode": self.mode.as_str(),
            "direct_entries": list(&self.direct),
            "inherited_entries": list(&self.inherited),
            "effective_entries": list(&self.permissions()),
        })
    }
}

/// The resolved ACL of the node at `rel` (its path below `viking://resources`, `""` for the
/// root itself).
pub fn resolve(table: &AclFile, rel: &str) -> Effective {
    let mut eff = Effective::resources_root();
    for prefix in prefixes(rel) {
        eff = eff.child(table.nodes.get(prefix));
    }
    eff
}

/// `a`, `a/b`, `a/b/c` for `a/b/c` (nothing for `""`).
pub fn prefixes(rel: &str) -> impl Iterator<Item = &str> {
    let ends = rel
        .match_indices('/')
        .map(|(i, _)| i)
        .chain((!rel.is_empty()).then_some(rel.len()));
    ends.map(move |end| &rel[..end])
}

/// True if one of `grants` holds `level` for one of `principals`.
pub fn grants(entries: &[Entry], principals: &[String], level: Level) -> bool {
    entries
        .iter()
        .any(|e| e.level >= level && principals.contains(&e.principal))
}

/// Whether `principals` hold `level` at `rel`. Exactly `grants(resolve(..).permissions())`,
/// without building permission lists: only rows change the answer.
pub fn allows(table: &AclFile, rel: &str, principals: &[String], level: Level) -> bool {
    if table.nodes.is_empty() {
        return true;
    }
    let mut allowed = true; // the root grants user:* manage
    for prefix in prefixes(rel) {
        if let Some(row) = table.nodes.get(prefix) {
            let own = grants(&row.entries, principals, level);
            allowed = match row.acl_mode {
                Some(Mode::Restricted) => own,
                _ => allowed || own,
            };
        }
    }
    allowed
}

/// The nodes where the answer for `principals` at `level` flips, as allowed subtrees: each
/// item is a node (`""` = the resources root) whose subtree is allowed except the listed
/// descendant subtrees (denied; any allowed node inside them is an item of its own). A path
/// is allowed iff it lies in some item's subtree and in none of that item's exceptions.
pub fn allowed_subtrees(
    table: &AclFile,
    principals: &[String],
    level: Level,
) -> Vec<(String, Vec<String>)> {
    // Rows whose answer differs from their parent's.
    let mut flips: std::collections::BTreeMap<&str, bool> = Default::default();
    for (rel, row) in &table.nodes {
        let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
        let before = allows(table, parent, principals, level);
        let own = grants(&row.entries, principals, level);
        let after = match row.acl_mode {
            Some(Mode::Restricted) => own,
            _ => before || own,
        };
        if after != before {
            flips.insert(rel.as_str(), after);
        }
    }
    let mut out: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
    for (rel, allowed) in &flips {
        if *allowed {
            out.push((rel.to_string(), Vec::new()));
        }
    }
    let slot: std::collections::HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, (r, _))| (r.clone(), i))
        .collect();
    for (rel, allowed) in &flips {
        if *allowed {
            continue;
        }
        // The nearest flip above a denying flip allows (flips alternate along a path).
        let above: Vec<&str> = prefixes(rel).collect();
        let owner = above
            .iter()
            .rev()
            .skip(1)
            .find(|p| flips.contains_key(**p))
            .copied()
            .unwrap_or("");
        if let Some(&i) = slot.get(owner) {
            out[i].1.push(rel.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: Option<Mode>, grants: &[(&str, Level)]) -> NodeAcl {
        NodeAcl {
            acl_mode: mode,
            entries: grants
                .iter()
                .map(|(p, l)| Entry {
                    principal: p.to_string(),
                    level: *l,
                })
                .collect(),
        }
    }

    fn table(rows: Vec<(&str, NodeAcl)>) -> AclFile {
        AclFile {
            nodes: rows.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Default::default()
        }
    }

    fn who(ids: &[&str]) -> Vec<String> {
        ids.iter()
            .map(|s| s.to_string())
            .chain(["user:*".to_string()])
            .collect()
    }

    #[test]
    fn prefixes_walk_down() {
        assert_eq!(prefixes("a/b/c").collect::<Vec<_>>(), ["a", "a/b", "a/b/c"]);
        assert_eq!(prefixes("").count(), 0);
    }

    #[test]
    fn inheritance_as_0_5_2() {
        let t = table(vec![
            (
                "team",
                row(Some(Mode::Restricted), &[("group:eng", Level::Write)]),
            ),
            ("team/pub", row(None, &[("user:*", Level::Read)])),
            (
                "team/secret",
                row(Some(Mode::Restricted), &[("user:carol", Level::Manage)]),
            ),
        ]);
        let bob = who(&["user:bob", "group:eng"]);
        let dave = who(&["user:dave"]);
        let carol = who(&["user:carol"]);
        // Outside any row: the root's user:* manage.
        assert!(allows(&t, "other/x", &dave, Level::Manage));
        assert!(allows(&t, "team/a.md", &bob, Level::Write));
        assert!(!allows(&t, "team/a.md", &bob, Level::Manage));
        assert!(!allows(&t, "team/a.md", &dave, Level::Read));
        // inherit adds to the parent's permissions.
        assert!(allows(&t, "team/pub/x", &dave, Level::Read));
        assert!(!allows(&t, "team/pub/x", &dave, Level::Write));
        assert!(allows(&t, "team/pub/x", &bob, Level::Write));
        // restricted cuts the chain.
        assert!(!allows(&t, "team/secret/x", &bob, Level::Read));
        assert!(allows(&t, "team/secret/x", &carol, Level::Manage));
        let e = resolve(&t, "team/pub");
        assert_eq!(e.mode, Mode::Inherit);
        assert_eq!(e.inherited.len(), 1);
        assert_eq!(e.permissions().len(), 2);
        // allows() agrees with the permissions resolve() reports, everywhere.
        for rel in ["", "team", "team/pub", "team/pub/x", "team/secret", "zz"] {
            for p in [&bob, &dave, &carol] {
                for l in [Level::Read, Level::Write, Level::Manage] {
                    assert_eq!(
                        allows(&t, rel, p, l),
                        grants(&resolve(&t, rel).permissions(), p, l),
                        "{rel} {p:?} {l:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn allowed_subtrees_match_allows() {
        let t = table(vec![
            ("a", row(Some(Mode::Restricted), &[("user:x", Level::Read)])),
            ("a/b", row(None, &[("user:bob", Level::Read)])),
            (
                "a/b/c",
                row(Some(Mode::Restricted), &[("user:x", Level::Read)]),
            ),
            ("a/b/c/d", row(None, &[("user:bob", Level::Read)])),
            ("e", row(None, &[("user:bob", Level::Read)])),
        ]);
        let bob = who(&["user:bob"]);
        let items = allowed_subtrees(&t, &bob, Level::Read);
        let under = |p: &str, root: &str| {
            root.is_empty() || p == root || p.starts_with(&format!("{root}/"))
        };
        for path in [
            "a",
            "a/x",
            "a/b",
            "a/b/y",
            "a/b/c",
            "a/b/c/z",
            "a/b/c/d",
            "a/b/c/d/w",
            "e/1",
            "f",
        ] {
            let by_items = items
                .iter()
                .any(|(root, ex)| under(path, root) && !ex.iter().any(|x| under(path, x)));
            assert_eq!(by_items, allows(&t, path, &bob, Level::Read), "{path}");
        }
    }
}
