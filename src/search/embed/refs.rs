//! The indexed documents as the embedder sees them: each one's content hash, and how many
//! documents of each account reference each hash (exact, updated with every change).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// A stored vector: the account it is stored under and the content hash it is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VectorRef {
    pub account: String,
    pub hash: String,
}

#[derive(Debug, Default)]
pub struct Docs {
    /// Ordered, so a subtree is one range, not a scan of every document.
    pub(super) by_path: BTreeMap<String, String>,
    refs: HashMap<String, HashMap<String, u32>>,
}

/// The account of a full storage path (its first segment).
pub fn account_of(path: &str) -> &str {
    path.split('/').next().unwrap_or_default()
}

impl Docs {
    /// Index `path` with content `hash`; returns the reference it replaced, if it differs.
    pub fn insert(&mut self, path: &str, hash: &str) -> Option<VectorRef> {
        let old = self.by_path.insert(path.to_string(), hash.to_string());
        if old.as_deref() == Some(hash) {
            return None;
        }
        *self
            .refs
            .entry(hash.to_string())
            .or_default()
            .entry(account_of(path).to_string())
            .or_default() += 1;
        old.map(|h| self.unref(path, h))
    }

    /// Drop one reference of the document at `path` to `hash`.
    fn unref(&mut self, path: &str, hash: String) -> VectorRef {
        let account = account_of(path);
        if let Some(by_account) = self.refs.get_mut(&hash) {
            if let Some(n) = by_account.get_mut(account) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_account.remove(account);
                }
            }
            if by_account.is_empty() {
                self.refs.remove(&hash);
            }
        }
        VectorRef {
            account: account.to_string(),
            hash,
        }
    }

    pub fn remove_subtree(&mut self, prefix: &str) -> Vec<VectorRef> {
        let under = format!("{prefix}/");
        let exact = self.by_path.get_key_value(prefix).map(|(p, _)| p.clone());
        let gone: Vec<String> = exact
            .into_iter()
            .chain(
                self.by_path
                    .range::<str, _>((Bound::Included(under.as_str()), Bound::Unbounded))
                    .map(|(p, _)| p)
                    .take_while(|p| p.starts_with(&under))
                    .cloned(),
            )
            .collect();
        gone.into_iter()
            .filter_map(|p| {
                let hash = self.by_path.remove(&p)?;
                Some(self.unref(&p, hash))
            })
            .collect()
    }

    /// Documents of `account` referencing `hash`.
    pub fn count_in(&self, account: &str, hash: &str) -> u32 {
        self.refs
            .get(hash)
            .and_then(|a| a.get(account))
            .copied()
            .unwrap_or(0)
    }

    pub fn referenced_in(&self, account: &str, hash: &str) -> bool {
        self.count_in(account, hash) > 0
    }

    pub fn referenced(&self, hash: &str) -> bool {
        self.refs.contains_key(hash)
    }

    /// True while the document at `path` is indexed with content `hash`.
    pub fn is_current(&self, path: &str, hash: &str) -> bool {
        self.by_path.get(path).is_some_and(|h| h == hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_is_its_path_and_what_is_under_it_only() {
        let mut d = Docs::default();
        for p in [
            "acme/r/b",
            "acme/r/b/c.md",
            "acme/r/b/d/e.md",
            "acme/r/b-c.md",
            "acme/r/bc",
        ] {
            d.insert(p, p);
        }
        let mut gone: Vec<_> = d
            .remove_subtree("acme/r/b")
            .into_iter()
            .map(|r| r.hash)
            .collect();
        gone.sort();
        assert_eq!(gone, ["acme/r/b", "acme/r/b/c.md", "acme/r/b/d/e.md"]);
        let mut left: Vec<_> = d.by_path.keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["acme/r/b-c.md", "acme/r/bc"]);
    }
}
