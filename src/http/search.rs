//! Routes of the search API (docs/API.md, Search): grep, glob, find and search. `recall`
//! (deprecated upstream) answers 501.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::ServiceError;
use crate::jobs::fs::{GlobFiles, GrepFiles};
use crate::jobs::search::FindContext;
use crate::search::query::ContentBounds;
use crate::search::request::{FindBody, Route, SearchBody};
use crate::storage::fs::entry::{Output, Render};
use crate::storage::fs::grep::GrepQuery;
use crate::storage::tags::TagQuery;
use crate::storage::uri::{self, Access};

use super::admission::owner_of;
use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{encoded_ok, encoded_ok_holding, ApiResult};
use super::extract::{flexible_bool, int_in_range, ApiJson};
use super::routes::{at, Routes};
use super::AppState;

/// Longest glob pattern accepted (globset turns a pattern into a regex; nothing real is longer).
const MAX_GLOB_PATTERN: usize = 4096;
/// Directory levels grep descends when `level_limit` is absent.
const DEFAULT_GREP_LEVELS: i64 = 10;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/search/grep").post(grep))
        .add(at("/api/v1/search/glob").post(glob))
        .add(at("/api/v1/search/find").post(find))
        .add(at("/api/v1/search/search").post(search))
        .add(at("/api/v1/search/recall").post(recall));
}

/// Longest wait for this instance's own recent changes to reach the index (read-your-writes).
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// What a find answer is charged before it is built, besides attached content.
const ANSWER_BASE_BYTES: usize = 64 * 1024;

async fn find(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<FindBody>,
) -> Result<HttpResponse, ServiceError> {
    answer(state, caller, body.into(), Route::Find).await
}

async fn search(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<HttpResponse, ServiceError> {
    answer(state, caller, body, Route::Search).await
}

/// The body is decoded by the extractor; the checks across its fields and retrieval run on
/// the storage pool; the wait for this instance's own writes is asynchronous (it holds
/// neither a worker nor a pool thread).
async fn answer(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    body: SearchBody,
    route: Route,
) -> Result<HttpResponse, ServiceError> {
    // The answer is memory held until sent: reserve what it may attach before building it,
    // then count what it really is.
    let content = ContentBounds {
        per_hit: state.settings.search.find_content_max_bytes_per_hit,
        per_answer: state.settings.search.find_content_max_bytes,
    };
    let wants_content = body.read_content;
    let charge = state
        .body_budget
        .charge(owner_of(&caller.identity, state.mode));
    let expected = ANSWER_BASE_BYTES + if wants_content { content.per_answer } else { 0 };
    charge.add(expected).map_err(|r| r.error())?;
    let fresh = state
        .search
        .wait_fresh(caller.account(), FRESHNESS_WAIT)
        .await;
    let job = FindContext {
        index: state.search.index.clone(),
        who: caller.identity.clone(),
        body,
        route,
        catching_up: !fresh || state.search.catching_up(),
        embedder: state.search.embedder.clone(),
        content,
    };
    let answer = state.pools.storage().run(job).await??;
    charge.set(answer.len());
    Ok(encoded_ok_holding(answer, &[], charge))
}

async fn recall(_caller: Caller<DataAccess>) -> ApiResult {
    Err(ServiceError::unimplemented(
        "search/recall (deprecated upstream) is not implemented; use POST /api/v1/search/search",
    ))
}

/// `null`, 0 or negative = unlimited.
fn limit(v: Option<i64>) -> Option<usize> {
    v.filter(|n| *n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn non_negative(field: &str, v: Option<i64>) -> Result<usize, ServiceError> {
    int_in_range(&["body", field], v.unwrap_or(0), 0, None)
}

/// S1 body (0.5.2 `GrepRequest`: unknown keys ignored).
#[derive(Deserialize, ToSchema)]
pub(super) struct GrepBody {
    uri: String,
    pattern: String,
    #[serde(default, deserialize_with = "flexible_bool")]
    case_insensitive: bool,
    node_limit: Option<i64>,
    level_limit: Option<i64>,
    exclude_uri: Option<String>,
    before_context: Option<i64>,
    after_context: Option<i64>,
    /// Only files carrying every `k=v` tag; each match then reports its file's `tags`.
    tags: Option<Vec<String>>,
    /// Each match with its file's `tags`.
    #[serde(default, deserialize_with = "flexible_bool")]
    include_tags: bool,
}

fn tag_query(tags: Option<&[String]>, include: bool) -> Result<TagQuery, ServiceError> {
    let raw = tags.unwrap_or_default();
    if raw.len() > 4 * crate::storage::tags::MAX_TAGS {
        return Err(ServiceError::invalid_argument("too many tags"));
    }
    Ok(TagQuery {
        required: crate::storage::tags::normalize(raw)?,
        include,
    })
}

/// S1.
async fn grep(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<GrepBody>,
) -> Result<HttpResponse, ServiceError> {
    crate::storage::fs::grep::check_pattern_size(&body.pattern)?;
    let uri = resolve_uri(&caller, &body.uri, Access::Read)?;
    let exclude = match body.exclude_uri.as_deref() {
        Some(raw) if !raw.trim().is_empty() => Some(uri::parse(raw, &caller.identity)?),
        _ => None,
    };
    let before_context = non_negative("before_context", body.before_context)?;
    let after_context = non_negative("after_context", body.after_context)?;
    let level_limit = int_in_range(
        &["body", "level_limit"],
        body.level_limit.unwrap_or(DEFAULT_GREP_LEVELS),
        1,
        None,
    )?;
    let job = GrepFiles {
        who: caller.identity.clone(),
        uri,
        query: GrepQuery {
            pattern: body.pattern,
            case_insensitive: body.case_insensitive,
            node_limit: limit(body.node_limit),
            level_limit,
            exclude,
            before_context,
            after_context,
            tags: tag_query(body.tags.as_deref(), body.include_tags)?,
        },
    };
    Ok(encoded_ok(state.pools.storage().run(job).await??))
}

fn root_uri() -> String {
    uri::SCHEME.to_string()
}

/// S2 body (0.5.2 `GlobRequest`: unknown keys ignored).
#[derive(Deserialize, ToSchema)]
pub(super) struct GlobBody {
    pattern: String,
    #[serde(default = "root_uri")]
    uri: String,
    node_limit: Option<i64>,
    extra_fields: Option<Vec<String>>,
    /// Only paths carrying every `k=v` tag; matches are then `{uri, tags}` objects.
    tags: Option<Vec<String>>,
    /// Matches as objects with their `tags`.
    #[serde(default, deserialize_with = "flexible_bool")]
    include_tags: bool,
}

/// S2.
async fn glob(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<GlobBody>,
) -> Result<HttpResponse, ServiceError> {
    if body.pattern.trim().is_empty() {
        return Err(ServiceError::invalid_argument(
            "Search query or image_url must not be empty.",
        ));
    }
    if body.pattern.len() > MAX_GLOB_PATTERN {
        return Err(ServiceError::invalid_argument(format!(
            "Invalid glob pattern: longer than {MAX_GLOB_PATTERN} bytes"
        )));
    }
    let uri = resolve_uri(&caller, &body.uri, Access::Read)?;
    let render = body.extra_fields.map(|fields| {
        let mut r = Render::new(Output::Original);
        r.include_abstract = false;
        r.locked = fields.iter().any(|f| f == "locked");
        r
    });
    let job = GlobFiles {
        who: caller.identity.clone(),
        uri,
        pattern: body.pattern,
        node_limit: limit(body.node_limit),
        render,
        tags: tag_query(body.tags.as_deref(), body.include_tags)?,
    };
    Ok(encoded_ok(state.pools.storage().run(job).await??))
}
