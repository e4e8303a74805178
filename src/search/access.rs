//! ACLs inside the index query (issue #23): a caller's readable part of `viking://resources`,
//! computed from the account's small ACL table (`storage::acl`), becomes a filter clause of
//! the tantivy query (and a predicate on the vector candidates), so a denied document is
//! never ranked, returned or counted and `limit` stays full. Nothing about ACLs is written
//! into indexed documents: a grant on a large tree reaches find on every instance as fast as
//! the table itself (the auth refresh bound), with no re-indexing.

use tantivy::query::{BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
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

    /// The documents the caller may not read, as one clause over the `anc` field (every
    /// ancestor path of a document, itself included) for the query to exclude (`MustNot`:
    /// it never touches scores); `None` when nothing is denied. Denied = under `root` and in
    /// no allowed subtree outside its exceptions. When the root itself is allowed (the usual
    /// table) that is just its exceptions minus the other allowed subtrees, so the clause is
    /// one term set looked up per segment, not a union over every document.
    pub fn denied_query(&self, anc: Field) -> Option<Box<dyn Query>> {
        let term = |p: &str| Term::from_field_text(anc, p);
        let one = |p: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(term(p), IndexRecordOption::Basic))
        };
        let set = |paths: &[String]| -> Box<dyn Query> {
            Box::new(TermSetQuery::new(paths.iter().map(|p| term(p))))
        };
        let root_slot = self.allowed.iter().position(|(a, _)| *a == self.root);
        let base = match root_slot {
            Some(i) if self.allowed[i].1.is_empty() => return None,
            Some(i) => set(&self.allowed[i].1),
            None => one(&self.root),
        };
        let readable: Vec<(Occur, Box<dyn Query>)> = self
            .allowed
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != root_slot)
            .map(|(_, (a, ex))| {
                let mut part = vec![(Occur::Must, one(a))];
                if !ex.is_empty() {
                    part.push((Occur::MustNot, set(ex)));
                }
                (
                    Occur::Should,
                    Box::new(BooleanQuery::new(part)) as Box<dyn Query>,
                )
            })
            .collect();
        if readable.is_empty() {
            return Some(base);
        }
        Some(Box::new(BooleanQuery::new(vec![
            (Occur::Must, base),
            (Occur::MustNot, Box::new(BooleanQuery::new(readable))),
        ])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::docs::{self, DocSource};
    use crate::search::index::{Payload, SearchIndex, SCHEMA_VERSION};
    use crate::search::tokenizer::query_terms;
    use crate::storage::StorePath;

    fn doc(path: &str, text: &str) -> DocSource {
        let p = StorePath::parse(path).unwrap();
        let segs: Vec<&str> = p.segments().collect();
        DocSource {
            path: p.clone(),
            account: segs[0].into(),
            uri: format!("viking://{}", segs[1..].join("/")),
            level: docs::level_of(p.name()),
            context_type: docs::context_type(&segs[1..]),
            text: text.into(),
            name_text: String::new(),
            abstract_text: String::new(),
            size: text.len() as u64,
            mtime_ms: 1_000,
            hash: String::new(),
            tags: Vec::new(),
        }
    }

    fn filter(allowed: &[(&str, &[&str])]) -> PathFilter {
        let full = |rel: &str| {
            if rel.is_empty() {
                "acme/resources".to_string()
            } else {
                format!("acme/resources/{rel}")
            }
        };
        PathFilter {
            root: "acme/resources".into(),
            allowed: allowed
                .iter()
                .map(|(a, ex)| (full(a), ex.iter().map(|e| full(e)).collect()))
                .collect(),
        }
    }

    /// The clause inside the index query returns exactly the documents `matches` lets through,
    /// with the very scores they have without any filter, for every shape of ACL table: the
    /// root allowed with denied subtrees (and single files), an allowed subtree inside a denied
    /// one with a denied subtree inside that, and the root itself denied.
    #[test]
    fn denied_clause_keeps_exactly_the_readable_documents_and_their_scores() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path(), 16).unwrap();
        let paths = [
            "acme/resources/top.md",
            "acme/resources/d1/a.md",
            "acme/resources/d1/sub/b.md",
            "acme/resources/d1/sub/deep/c.md",
            "acme/resources/d2/f.md",
            "acme/resources/d2/g.md",
            "acme/resources/d2/x/h.md",
            "acme/resources/d3/i.md",
            "acme/resources/d30/j.md",
            "acme/user/alice/memories/m.md",
        ];
        for (i, p) in paths.iter().enumerate() {
            // Different lengths and counts, so every document scores differently.
            let text = format!("alpha {} {}", "alpha ".repeat(i % 3), "filler ".repeat(i));
            idx.upsert(&doc(p, &text)).unwrap();
        }
        idx.commit(&Payload {
            schema: SCHEMA_VERSION,
            complete: true,
            cursors: Default::default(),
            committed_at: 0,
            writer: None,
        })
        .unwrap();
        let terms = query_terms("alpha", 64);
        let scopes = ["acme".to_string()];
        let all = idx
            .keyword_search_filtered("acme", &terms, &scopes, &[], None, 100)
            .unwrap();
        assert_eq!(all.len(), paths.len());
        let shapes: [&[(&str, &[&str])]; 5] = [
            &[("", &["d1", "d2/f.md"])],
            &[("", &["d1"]), ("d1/sub", &["d1/sub/deep"])],
            &[("d2", &["d2/x"]), ("d3", &[])],
            &[],
            &[("", &[]), ("d3", &[])],
        ];
        for shape in shapes {
            let f = filter(shape);
            let got = idx
                .keyword_search_filtered("acme", &terms, &scopes, &[], Some(&f), 100)
                .unwrap();
            let want: Vec<(&str, u32)> = all
                .iter()
                .filter(|h| f.matches(&h.path))
                .map(|h| (h.path.as_str(), h.bm25.to_bits()))
                .collect();
            let got: Vec<(&str, u32)> = got
                .iter()
                .map(|h| (h.path.as_str(), h.bm25.to_bits()))
                .collect();
            assert_eq!(got, want, "{shape:?}");
        }
        // Sanity of the shapes themselves: each denies something but the last.
        assert!(!filter(&[("", &["d1"])]).matches("acme/resources/d1/a.md"));
        assert!(filter(&[("", &["d3"])]).matches("acme/resources/d30/j.md"));
    }
}
