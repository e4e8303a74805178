//! ACLs inside the index query (issue #23): a caller's readable part of `viking://resources`,
//! computed from the account's small ACL table (`storage::acl`), becomes a filter clause of
//! the tantivy query (and a predicate on the vector candidates), so a denied document is
//! never ranked, returned or counted and `limit` stays full. Nothing about ACLs is written
//! into indexed documents: a grant on a large tree reaches find on every instance as fast as
//! the table itself (the auth refresh bound), with no re-indexing.

use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::Term;

use crate::storage::acl::AclView;

/// Readable documents under `root` (`<account>/resources`): those inside one of `allowed`'s
/// subtrees and none of its exceptions (full storage paths). Everything outside `root` passes.
#[derive(Debug, Clone)]
pub struct PathFilter {
    root: String,
    allowed: Vec<(String, Vec<String>)>,
}

fn under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

impl PathFilter {
    /// The filter for one caller; `None` when the caller may read all of the resources.
    pub fn for_view(view: &AclView, account: &str) -> Option<PathFilter> {
        let root = format!("{account}/resources");
        let join = |rel: &str| {
            if rel.is_empty() {
                root.clone()
            } else {
                format!("{root}/{rel}")
            }
        };
        let subtrees = view.readable_subtrees();
        if subtrees.len() == 1 && subtrees[0].0.is_empty() && subtrees[0].1.is_empty() {
            return None;
        }
        let allowed = subtrees
            .iter()
            .map(|(a, ex)| (join(a), ex.iter().map(|e| join(e)).collect()))
            .collect();
        Some(PathFilter { root, allowed })
    }

    /// The same decision in memory (vector candidates, defence in depth).
    pub fn matches(&self, path: &str) -> bool {
        if !under(path, &self.root) {
            return true;
        }
        self.allowed
            .iter()
            .any(|(a, ex)| under(path, a) && !ex.iter().any(|e| under(path, e)))
    }

    /// A no-score clause over the `anc` field (every ancestor path of a document, itself
    /// included).
    pub fn query(&self, anc: Field) -> Box<dyn Query> {
        let term = |p: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(anc, p),
                IndexRecordOption::Basic,
            ))
        };
        let mut any: Vec<(Occur, Box<dyn Query>)> = vec![(
            Occur::Should,
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, term(&self.root)),
            ])),
        )];
        for (a, ex) in &self.allowed {
            let mut clause: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, term(a))];
            clause.extend(ex.iter().map(|e| (Occur::MustNot, term(e))));
            any.push((Occur::Should, Box::new(BooleanQuery::new(clause))));
        }
        Box::new(ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), 0.0))
    }
}
