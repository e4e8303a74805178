//! `POST /skills/find`: the find of `search` limited to skills, one hit per package (its best,
//! as 0.5.2 merges skill hits by package root), each described by its abstract's header
//! fields.

use serde_json::{json, Map, Value};

use super::format;
use super::store;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::search::docs::skill_package_root;
use crate::search::embed::Embedder;
use crate::search::index::SearchIndex;
use crate::search::query::{self, ContentBounds, IndexState};
use crate::search::request::{self, FindBody, Route, SearchBody};
use crate::storage::fs::entry::{sidecar_text, ABSTRACT_FILE};
use crate::storage::uri::{self, VikingUri};
use crate::storage::Storage;

/// One skills find.
#[derive(Debug, Clone)]
pub struct SkillQuery {
    pub query: String,
    pub limit: usize,
    pub score_threshold: Option<f64>,
    pub level: Option<Vec<u8>>,
    /// The roots searched.
    pub roots: Vec<VikingUri>,
}

/// Run the find and describe each package found, best first, at most `limit`.
pub fn find(
    storage: &dyn Storage,
    index: &SearchIndex,
    who: &Identity,
    q: &SkillQuery,
    state: IndexState,
    dense: Option<&Embedder>,
) -> ServiceResult<Vec<Value>> {
    let mut body = json!({
        "query": q.query,
        "limit": q.limit,
        "context_type": "skill",
        "target_uri": q.roots.iter().map(VikingUri::uri).collect::<Vec<_>>(),
    });
    if let Some(t) = q.score_threshold {
        body["score_threshold"] = t.into();
    }
    if let Some(levels) = &q.level {
        body["level"] = json!(levels);
    }
    let body: FindBody = serde_json::from_value(body)
        .map_err(|e| ServiceError::internal(format!("skills find body: {e}")))?;
    let now = crate::time::epoch_millis_now() as i64;
    let req = match request::validate(SearchBody::from(body), Route::Find, now)? {
        Ok(r) => r,
        Err(_) => return Err(ServiceError::internal("skills find: unsupported request")),
    };
    let bounds = ContentBounds {
        per_hit: 0,
        per_answer: 0,
    };
    let answer = query::run(index, storage, who, &req, state, dense, bounds)?;
    let hits = answer["skills"].as_array().cloned().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for hit in hits {
        let Some(hit_uri) = hit["uri"].as_str() else {
            continue;
        };
        let Some(root) = skill_package_root(hit_uri) else {
            continue;
        };
        if !seen.insert(root.clone()) {
            continue;
        }
        let Ok(root_uri) = uri::parse(&root, who) else {
            continue;
        };
        let abstract_text = sidecar_text(storage, &root_uri, ABSTRACT_FILE);
        let meta: Map<String, Value> = format::abstract_meta(&abstract_text);
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(root_uri.name())
            .to_string();
        let mut item = store::summary_of(&name, &root_uri, &meta);
        item["uri"] = hit_uri.into();
        item["score"] = hit["score"].clone();
        item["match_reason"] = hit["match_reason"].clone();
        item["level"] = hit["level"].clone();
        item["abstract"] = hit["abstract"].clone();
        out.push(item);
        if out.len() >= q.limit {
            break;
        }
    }
    Ok(out)
}
