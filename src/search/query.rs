//! Answering find/search: scope resolution (tenant and user isolation), keyword retrieval,
//! filters, the score scale, and the OpenViking result shape.
//!
//! Score scale (every mode): a relevance in [0, 1]. Keyword relevance is
//! `bm25 / (bm25 + 5)` (tantivy's BM25 over body text plus path words weighted ×2); vector
//! relevance is the cosine similarity clamped to [0, 1]. Keyword mode ranks by keyword
//! relevance. Hybrid mode ranks by reciprocal-rank fusion of the two lists (k = 60) and reports
//! each hit's strongest signal, capped by the score of the hit ranked above it, so every list
//! is sorted by score, descending, and a `score_threshold` means the same in every mode.

use serde_json::{json, Value};

use super::access::PathFilter;
use super::docs;
use super::embed::Embedder;
use super::filter::DocView;
use super::index::{Hit, IndexError, SearchIndex};
use super::request::{SearchRequest, SearchType};
use super::tokenizer::query_terms;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::acl::AclView;
use crate::storage::uri::{self, Access, Scope};
use crate::storage::{Storage, StorageError};

/// Most distinct query terms used (the rest of a long query is ignored).
pub const MAX_TERMS: usize = 64;
/// BM25 that maps to a keyword relevance of 0.5.
pub const BM25_HALF: f32 = 5.0;
/// How much file content `read_content` attaches (`search.find_content_max_bytes*`).
#[derive(Debug, Clone, Copy)]
pub struct ContentBounds {
    pub per_hit: usize,
    pub per_answer: usize,
}

/// The keyword relevance of a raw BM25 score, in [0, 1).
pub fn keyword_score(bm25: f32) -> f64 {
    if !bm25.is_finite() || bm25 <= 0.0 {
        return 0.0;
    }
    f64::from(bm25 / (bm25 + BM25_HALF))
}

/// What the index can say about itself when answering.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexState {
    /// The first full build (or a catch-up reconcile) is still running.
    pub catching_up: bool,
}

/// The storage paths a request searches, each inside the caller's account.
pub fn scopes(who: &Identity, req: &SearchRequest) -> ServiceResult<(Vec<String>, Vec<String>)> {
    let acct = &who.account;
    let want = |t: &str| req.context_types.is_empty() || req.context_types.iter().any(|c| c == t);
    let mut paths: Vec<String> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    let mut add = |p: String, u: String| {
        if !paths.contains(&p) {
            paths.push(p);
            shown.push(u);
        }
    };
    let explicit: Vec<&String> = req
        .targets
        .iter()
        .filter(|t| !matches!(t.trim(), "" | "/" | "viking://" | "viking:///"))
        .collect();
    if explicit.is_empty() {
        let user = &who.user;
        if want("memory") || want("resource") {
            add(
                format!("{acct}/user/{user}"),
                format!("viking://user/{user}"),
            );
        }
        if want("resource") {
            add(format!("{acct}/resources"), "viking://resources".into());
        }
        if want("skill") {
            add(
                format!("{acct}/user/{user}/skills"),
                format!("viking://user/{user}/skills"),
            );
            add(
                format!("{acct}/agent/skills"),
                "viking://agent/skills".into(),
            );
        }
        return Ok((paths, shown));
    }
    for raw in explicit {
        let target = uri::parse(raw, who)?;
        uri::authorize_scope(&target, who, Access::Read)?;
        match (target.scope(), target.segments().len()) {
            (Scope::Root, _) => {
                add(format!("{acct}/resources"), "viking://resources".into());
                add(format!("{acct}/agent"), "viking://agent".into());
                if who.role == Role::Root {
                    add(format!("{acct}/user"), "viking://user".into());
                } else {
                    add(
                        format!("{acct}/user/{}", who.user),
                        format!("viking://user/{}", who.user),
                    );
                }
            }
            (Scope::User, 1) if who.role != Role::Root => {
                add(
                    format!("{acct}/user/{}", who.user),
                    format!("viking://user/{}", who.user),
                );
            }
            _ => add(target.store_path().as_str().to_string(), target.uri()),
        }
    }
    Ok((paths, shown))
}

fn index_error(e: IndexError) -> ServiceError {
    tracing::error!(error = %e, "search index query failed");
    ServiceError::internal("search index query failed")
}

/// A candidate in rank order with its calibrated relevance and the signals that found it.
struct Candidate {
    hit: Hit,
    relevance: f64,
    signals: Vec<String>,
}

fn keyword_only(hits: Vec<Hit>) -> Vec<Candidate> {
    hits.into_iter()
        .map(|hit| Candidate {
            relevance: keyword_score(hit.bm25),
            hit,
            signals: vec!["keywords (BM25)".into()],
        })
        .collect()
}

/// Reciprocal-rank fusion constant.
const RRF_K: f64 = 60.0;

/// Hybrid: rank the union of the keyword and vector lists by reciprocal-rank fusion; each
/// candidate's relevance is its strongest calibrated signal (keyword `bm25/(bm25+5)`, vector
/// cosine clamped to [0, 1]), so a threshold means the same as in keyword mode.
fn fuse(
    index: &SearchIndex,
    e: &Embedder,
    q: &[f32],
    keyword_hits: Vec<Hit>,
    scopes: &[String],
    access: Option<&PathFilter>,
    k: usize,
) -> ServiceResult<Vec<Candidate>> {
    use std::collections::HashMap;
    struct Fused {
        hit: Hit,
        kw: f64,
        kw_rank: Option<usize>,
        vec_rank: Option<usize>,
        vec_sim: f64,
    }
    let mut by_path: HashMap<String, Fused> = HashMap::new();
    for (rank, hit) in keyword_hits.into_iter().enumerate() {
        let kw = keyword_score(hit.bm25);
        let f = Fused {
            hit,
            kw,
            kw_rank: Some(rank),
            vec_rank: None,
            vec_sim: 0.0,
        };
        by_path.insert(f.hit.path.clone(), f);
    }
    let nearest = e.nearest_where(q, scopes, k, &|p| access.is_none_or(|f| f.matches(p)));
    let missing: Vec<String> = nearest
        .iter()
        .filter(|(p, _)| !by_path.contains_key(p))
        .map(|(p, _)| p.clone())
        .collect();
    for hit in index.lookup(&missing).map_err(index_error)? {
        let f = Fused {
            hit,
            kw: 0.0,
            kw_rank: None,
            vec_rank: None,
            vec_sim: 0.0,
        };
        by_path.insert(f.hit.path.clone(), f);
    }
    for (rank, (path, cos)) in nearest.iter().enumerate() {
        if let Some(entry) = by_path.get_mut(path) {
            entry.vec_rank = Some(rank);
            entry.vec_sim = f64::from(cos.clamp(0.0, 1.0));
        }
    }
    let mut out: Vec<(f64, Candidate)> = by_path
        .into_values()
        .map(|f| {
            let Fused {
                hit,
                kw,
                kw_rank: kr,
                vec_rank: vr,
                vec_sim: vs,
            } = f;
            let vs = if vr.is_some() {
                vs
            } else {
                e.similarity(q, &hit.hash)
                    .map(|c| f64::from(c.clamp(0.0, 1.0)))
                    .unwrap_or(0.0)
            };
            let rrf = kr.map(|r| 1.0 / (RRF_K + r as f64 + 1.0)).unwrap_or(0.0)
                + vr.map(|r| 1.0 / (RRF_K + r as f64 + 1.0)).unwrap_or(0.0);
            let mut signals = Vec::new();
            if kr.is_some() {
                signals.push("keywords (BM25)".to_string());
            }
            if vr.is_some() {
                signals.push(format!("vector ({})", e.model()));
            }
            (
                rrf,
                Candidate {
                    hit,
                    relevance: kw.max(vs),
                    signals,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.relevance.total_cmp(&a.1.relevance))
    });
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// A hit with its relevance and why it matched.
struct Scored {
    hit: Hit,
    score: f64,
    reason: String,
}

/// Run a validated request for `who`.
pub fn run(
    index: &SearchIndex,
    storage: &dyn Storage,
    who: &Identity,
    req: &SearchRequest,
    state: IndexState,
    dense: Option<&Embedder>,
    bounds: ContentBounds,
) -> ServiceResult<Value> {
    let (scope_paths, scope_uris) = scopes(who, req)?;
    // ACLs: the caller's readable resources, as a clause of the index query.
    let access = AclView::for_caller(who).and_then(|v| PathFilter::for_view(&v, &who.account));
    let terms = query_terms(&req.query, MAX_TERMS);
    let post_filtered = req.filter.is_some()
        || !req.levels.is_empty()
        || !req.context_types.is_empty()
        || req.score_threshold.is_some();
    let fetch = if post_filtered {
        (req.limit * 10).clamp(200, 5000)
    } else {
        req.limit
    };
    // Dense retrieval when a model is configured and the caller did not ask for keywords.
    let wants_dense = req.search_type == SearchType::Semantic;
    let (dense, dense_note) = match (dense, wants_dense) {
        (Some(e), true) => match e.embed_query(&req.query, &who.account, &who.user) {
            Ok(q) => (Some((e, q)), None),
            Err(err) => (None, Some(format!("vector search unavailable ({err}), keyword results only"))),
        },
        (None, true) => (None, Some("semantic search needs an embedding model and none is configured, so keyword results are returned".to_string())),
        _ => (None, None),
    };
    let kw_fetch = if dense.is_some() {
        fetch.max(50)
    } else {
        fetch
    };
    let keyword_hits = index
        .keyword_search_filtered(
            &who.account,
            &terms,
            &scope_paths,
            &req.tags,
            access.as_ref(),
            kw_fetch,
        )
        .map_err(index_error)?;
    let candidates = match &dense {
        None => keyword_only(keyword_hits),
        Some((e, q)) => fuse(
            index,
            e,
            q,
            keyword_hits,
            &scope_paths,
            access.as_ref(),
            kw_fetch,
        )?,
    };
    let mut scored: Vec<Scored> = Vec::new();
    let mut skill_roots = std::collections::HashSet::new();
    let mut ceiling = 1.0f64;
    for c in candidates {
        let hit = c.hit;
        if !visible(who, &hit) || access.as_ref().is_some_and(|f| !f.matches(&hit.path)) {
            continue;
        }
        if !req.levels.is_empty() && !req.levels.contains(&hit.level) {
            continue;
        }
        if !req.context_types.is_empty() && !req.context_types.contains(&hit.context_type) {
            continue;
        }
        if let Some(f) = &req.filter {
            let view = DocView {
                uri: &hit.uri,
                context_type: &hit.context_type,
                level: hit.level,
                mtime_ms: hit.mtime_ms,
                tags: &hit.tags,
            };
            if !f.matches(&view) {
                continue;
            }
        }
        // Skill hits: only inside a package, and one per package (its best), as 0.5.2.
        if hit.context_type == "skill"
            && !super::docs::skill_package_root(&hit.uri).is_some_and(|p| skill_roots.insert(p))
        {
            continue;
        }
        // Lists are in rank order; the reported score never rises down the list.
        let score = c.relevance.min(ceiling);
        ceiling = score;
        if req.score_threshold.is_some_and(|t| score <= t) {
            continue;
        }
        let mut reason = c.signals.join(" + ");
        if let Some(note) = &dense_note {
            reason = format!("{reason}; {note}");
        }
        scored.push(Scored { hit, score, reason });
        if scored.len() >= req.limit {
            break;
        }
    }
    let mut memories = Vec::new();
    let mut resources = Vec::new();
    let mut skills = Vec::new();
    let mut provenance_items = Vec::new();
    let mut content_left = bounds.per_answer;
    for s in &scored {
        let mut item = json!({
            "context_type": s.hit.context_type,
            "uri": s.hit.uri,
            "level": s.hit.level,
            "score": s.score,
            "abstract": s.hit.abstract_text,
            "tags": s.hit.tags,
            "category": "",
            "match_reason": s.reason,
            "relations": [],
            "overview": null,
        });
        if req.read_content {
            let allowed = bounds.per_hit.min(content_left);
            if let Some(c) = read_content(storage, &s.hit.path, allowed) {
                content_left = content_left.saturating_sub(c.text.len());
                let mut text = c.text;
                if c.truncated {
                    text.push_str(&truncation_note(allowed == bounds.per_hit));
                    item["content_truncated"] = Value::Bool(true);
                }
                item["content"] = Value::String(text);
            }
        }
        if req.include_provenance {
            provenance_items.push(json!({
                "uri": s.hit.uri,
                "tier": format!("L{}", s.hit.level),
                "context_type": s.hit.context_type,
                "score": s.score,
                "match_reason": s.reason,
            }));
        }
        match s.hit.context_type.as_str() {
            "memory" => memories.push(item),
            "skill" => skills.push(item),
            _ => resources.push(item),
        }
    }
    let total = memories.len() + resources.len() + skills.len();
    index.stats.note_query(total);
    let mut result = json!({
        "memories": memories,
        "resources": resources,
        "skills": skills,
        "total": total,
    });
    if req.include_provenance {
        result["provenance"] = json!([{
            "query": req.query,
            "searched_directories": scope_uris,
            "matched_contexts": provenance_items,
            "thinking_trace": {"events": [], "statistics": {"terms": terms.len()}},
        }]);
    }
    if state.catching_up {
        result["index_status"] = json!("catching_up");
        result["warnings"] = json!([
            "The search index is being built from storage; results may be incomplete until it catches up."
        ]);
    }
    Ok(result)
}

/// Defence in depth: the scope already limits hits to what `who` may read.
fn visible(who: &Identity, hit: &Hit) -> bool {
    let Some(rest) = hit.path.strip_prefix(&format!("{}/", who.account)) else {
        return false;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    if !docs::file_indexable(&match crate::storage::StorePath::parse(&hit.path) {
        Ok(p) => p,
        Err(_) => return false,
    }) {
        return false;
    }
    match segs.as_slice() {
        ["user", uid, ..] => who.role == Role::Root || *uid == who.user,
        _ => true,
    }
}

/// A hit's content, cut at a bound.
struct HitContent {
    text: String,
    truncated: bool,
}

/// The line ending content that was cut. 0.5.2 attaches content as a plain string which its
/// clients print as is, so the marker is text they show; `content_truncated` says it to
/// programs.
fn truncation_note(by_hit_bound: bool) -> String {
    let bound = if by_hit_bound {
        "search.find_content_max_bytes_per_hit"
    } else {
        "search.find_content_max_bytes, over all hits of this answer"
    };
    format!(
        "\n[content truncated by the server ({bound}); read the whole file with \
         GET /api/v1/content/read]"
    )
}

/// At most `allowed` bytes of the file at `path` (whole UTF-8 characters).
fn read_content(storage: &dyn Storage, path: &str, allowed: usize) -> Option<HitContent> {
    let p = crate::storage::StorePath::parse(path).ok()?;
    // One byte more tells whether there is more.
    match storage.read_range(&p, 0, allowed as u64 + 1) {
        Ok(bytes) => {
            let truncated = bytes.len() > allowed;
            let mut cut = bytes.len().min(allowed);
            // Back off to the start of a character rather than split one.
            while truncated && cut > 0 && bytes.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
                cut -= 1;
            }
            let text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
            Some(HitContent { text, truncated })
        }
        Err(StorageError::NotFound(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, "read_content: could not read a hit");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::request::{parse, Route};

    fn who(role: Role, user: &str) -> Identity {
        Identity {
            role,
            account: "acme".into(),
            user: user.into(),
        }
    }

    fn req(v: Value) -> SearchRequest {
        parse(&v, Route::Find, 0).unwrap().unwrap()
    }

    #[test]
    fn default_and_explicit_scopes() {
        let alice = who(Role::User, "alice");
        let (p, _) = scopes(&alice, &req(json!({"query":"x"}))).unwrap();
        assert_eq!(
            p,
            vec![
                "acme/user/alice",
                "acme/resources",
                "acme/user/alice/skills",
                "acme/agent/skills"
            ]
        );
        let (p, _) = scopes(&alice, &req(json!({"query":"x","context_type":"memory"}))).unwrap();
        assert_eq!(p, vec!["acme/user/alice"]);
        let (p, _) = scopes(
            &alice,
            &req(json!({"query":"x","target_uri":"viking://user"})),
        )
        .unwrap();
        assert_eq!(p, vec!["acme/user/alice"]);
        let (p, _) = scopes(
            &alice,
            &req(
                json!({"query":"x","target_uri":["viking://resources/docs","viking://~/memories"]}),
            ),
        )
        .unwrap();
        assert_eq!(p, vec!["acme/resources/docs", "acme/user/alice/memories"]);
        let e = scopes(
            &alice,
            &req(json!({"query":"x","target_uri":"viking://user/bob"})),
        )
        .unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::PermissionDenied);
        let root = who(Role::Root, "default");
        let (p, _) = scopes(
            &root,
            &req(json!({"query":"x","target_uri":"viking://user"})),
        )
        .unwrap();
        assert!(p.contains(&"acme/user".to_string()));
    }

    #[test]
    fn scores_are_bounded() {
        assert_eq!(keyword_score(0.0), 0.0);
        assert_eq!(keyword_score(f32::NAN), 0.0);
        assert!((keyword_score(5.0) - 0.5).abs() < 1e-9);
        assert!(keyword_score(1e9) < 1.0 + 1e-9);
    }
}
