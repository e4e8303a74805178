//! Exact nearest-neighbour search over the vectors held in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::refs::Docs;
use super::vectors::dot;

/// The `k` documents inside `scopes` (full storage path prefixes) most similar to `q`.
pub fn nearest(
    docs: &Docs,
    vectors: &HashMap<String, Arc<Vec<f32>>>,
    q: &[f32],
    scopes: &[String],
    k: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Vec<(String, f32)> {
    let in_scope = |p: &str| {
        scopes.iter().any(|s| {
            p == s || (p.starts_with(s.as_str()) && p.as_bytes().get(s.len()) == Some(&b'/'))
        })
    };
    let mut scored: Vec<(String, f32)> = docs
        .by_path
        .iter()
        .filter(|(p, _)| in_scope(p) && keep(p))
        .filter_map(|(p, hash)| {
            let v = vectors.get(hash)?;
            (v.len() == q.len()).then(|| (p.clone(), dot(q, v)))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_documents_in_scope_rank_best_first() {
        let mut d = Docs::default();
        d.insert("acme/resources/a.md", "a");
        d.insert("acme/resources/b.md", "b");
        d.insert("acme/resources-2/c.md", "c");
        let v: HashMap<String, Arc<Vec<f32>>> = [
            ("a", vec![1.0, 0.0]),
            ("b", vec![0.6, 0.8]),
            ("c", vec![1.0, 0.0]),
        ]
        .into_iter()
        .map(|(h, v)| (h.to_string(), Arc::new(v)))
        .collect();
        let got = nearest(&d, &v, &[1.0, 0.0], &["acme/resources".into()], 5, &|_| {
            true
        });
        let paths: Vec<_> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["acme/resources/a.md", "acme/resources/b.md"]);
    }
}
