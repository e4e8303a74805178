//! Filters and paging shared by A2 and A5: `name` glob (case-sensitive, `*`/`?`/`[…]`),
//! `query` case-insensitive substring, then `limit`/`page` (spec §3).

use globset::GlobBuilder;

use crate::decode::int_in_range;
use crate::error::ServiceResult;

/// The listing parameters after validation.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    pub name: Option<String>,
    pub query: Option<String>,
    pub limit: Option<usize>,
    pub page: usize,
}

fn at_least_one(field: &str, value: Option<i64>) -> ServiceResult<Option<usize>> {
    value
        .map(|v| int_in_range(&["query", field], v, 1, None))
        .transpose()
}

impl Paging {
    /// Validate raw query values (`limit`, `page` ≥ 1) before anything is read.
    pub fn new(
        name: Option<String>,
        query: Option<String>,
        limit: Option<i64>,
        page: Option<i64>,
    ) -> ServiceResult<Paging> {
        Ok(Paging {
            name,
            query,
            limit: at_least_one("limit", limit)?,
            page: at_least_one("page", page)?.unwrap_or(1),
        })
    }

    fn matcher(&self) -> Box<dyn Fn(&str) -> bool> {
        let name: Box<dyn Fn(&str) -> bool> = match &self.name {
            None => Box::new(|_| true),
            Some(pattern) => match GlobBuilder::new(pattern).build() {
                Ok(glob) => {
                    let m = glob.compile_matcher();
                    Box::new(move |id| m.is_match(id))
                }
                // fnmatch takes a malformed class (`[`) literally; so do we.
                Err(_) => {
                    let literal = pattern.clone();
                    Box::new(move |id| id == literal)
                }
            },
        };
        let query = self.query.as_ref().map(|q| q.to_lowercase());
        Box::new(move |id| {
            name(id)
                && query
                    .as_ref()
                    .is_none_or(|q| id.to_lowercase().contains(q.as_str()))
        })
    }

    /// Keep the items whose id matches; returns the page and the match count before paging.
    pub fn apply<T>(&self, items: Vec<T>, id: impl Fn(&T) -> &str) -> (Vec<T>, usize) {
        let matches = self.matcher();
        let filtered: Vec<T> = items.into_iter().filter(|t| matches(id(t))).collect();
        let total = filtered.len();
        let page = match self.limit {
            None => filtered,
            Some(limit) => filtered
                .into_iter()
                .skip((self.page - 1).saturating_mul(limit))
                .take(limit)
                .collect(),
        };
        (page, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(p: &Paging, items: &[&str]) -> Vec<String> {
        let v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        p.apply(v, |s| s.as_str()).0
    }

    #[test]
    fn filters_and_pages() {
        let items = ["alice", "bob", "Bobby", "carol", "dave"];
        let p = Paging::new(Some("b*".into()), None, None, None).unwrap();
        assert_eq!(ids(&p, &items), ["bob"]);
        let p = Paging::new(None, Some("BOB".into()), None, None).unwrap();
        assert_eq!(ids(&p, &items), ["bob", "Bobby"]);
        let p = Paging::new(Some("[a-c]*".into()), None, Some(2), Some(2)).unwrap();
        assert_eq!(ids(&p, &items), ["carol"]);
        let p = Paging::new(Some("?ave".into()), None, None, None).unwrap();
        assert_eq!(ids(&p, &items), ["dave"]);
        let p = Paging::new(Some("[".into()), None, None, None).unwrap();
        assert!(ids(&p, &items).is_empty());
        assert!(Paging::new(None, None, Some(0), None).is_err());
        assert!(Paging::new(None, None, Some(1), Some(0)).is_err());
        let p = Paging::new(None, None, Some(2), Some(9)).unwrap();
        assert!(ids(&p, &items).is_empty());
    }
}
