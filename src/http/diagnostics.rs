//! Diagnostics routes (0.5.2): `POST /api/v1/system/consistency` (index, stored vectors and
//! summaries against storage for one subtree) and `GET /api/v1/debug/{health,vector/scroll,
//! vector/count}` (any role, the caller's account only).

use std::time::Duration;

use actix_web::web;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ErrorCode, ServiceError};
use crate::identity::{Identity, Role};
use crate::jobs::diagnostics::{CheckConsistency, VectorQuery, VectorRecords};
use crate::search::records::Filter;
use crate::storage::uri::{self, Access};

use super::auth::{AnyRole, Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{int_in_range, ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

/// Most storage entries one consistency check walks (a larger subtree: check a part of it).
pub const CONSISTENCY_MAX_ENTRIES: usize = 200_000;
/// How long a check waits for this instance's own recorded changes to reach the index.
const FRESH_WAIT: Duration = Duration::from_secs(30);

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/system/consistency").post(consistency))
        .add(at("/api/v1/debug/health").get(debug_health))
        .add(at("/api/v1/debug/vector/scroll").get(vector_scroll))
        .add(at("/api/v1/debug/vector/count").get(vector_count));
}

/// 0.5.2's `ConsistencyRequest`.
#[derive(Deserialize, ToSchema)]
pub(super) struct ConsistencyBody {
    uri: String,
}

/// Who may see other users' spaces: root only (as listings).
fn own_user(who: &Identity) -> Option<String> {
    (who.role != Role::Root).then(|| who.user.clone())
}

async fn consistency(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<ConsistencyBody>,
) -> ApiResult {
    let root = uri::parse(&body.uri, &caller.identity)?;
    uri::authorize(&root, &caller.identity, Access::Read)?;
    // Changes this instance made before the request are in the index before comparing.
    state.search.wait_fresh(caller.account(), FRESH_WAIT).await;
    let job = CheckConsistency {
        index: state.search.index.clone(),
        embedder: state.search.embedder.clone(),
        root,
        own_user: own_user(&caller.identity),
        max_entries: CONSISTENCY_MAX_ENTRIES,
    };
    let mut report = state.pools.storage().run(job).await??;
    report["uri"] = body.uri.into();
    Ok(ApiOk::new(report))
}

/// Account-scoped health: the observer's components all healthy.
async fn debug_health(state: web::Data<AppState>, caller: Caller<AnyRole>) -> ApiResult {
    let healthy = super::system::observers_healthy(&state);
    Ok(ApiOk::new(
        json!({"healthy": healthy, "account_id": caller.account()}),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ScrollQuery {
    /// 1..=1000, default 100.
    limit: Option<i64>,
    cursor: Option<String>,
    uri: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct CountQuery {
    /// JSON: `{"op":"must","field":"uri"|"level"|"context_type","conds":[…]}` or `and`.
    filter: Option<String>,
    uri: Option<String>,
}

/// The storage root of the records a caller may list: its account, or a subtree of it.
fn records_root(who: &Identity, raw: Option<&str>) -> Result<String, ServiceError> {
    match raw {
        None => Ok(uri::VikingUri::root(&who.account)?
            .store_path()
            .as_str()
            .to_string()),
        Some(raw) => {
            // `viking://user` is readable by everyone, its children by their owner; the
            // records are narrowed to the caller's own space by the job (own_user).
            let u = uri::parse(raw, who)?;
            uri::authorize(&u, who, Access::Read)?;
            Ok(u.store_path().as_str().to_string())
        }
    }
}

fn no_vector_db() -> ServiceError {
    ServiceError::new(ErrorCode::NoVectorDb, "Vector DB not initialized")
}

async fn vector_scroll(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    ApiQuery(q): ApiQuery<ScrollQuery>,
) -> ApiResult {
    let limit = int_in_range(&["query", "limit"], q.limit.unwrap_or(100), 1, Some(1000))?;
    let Some(embedder) = state.search.embedder.clone() else {
        return Err(no_vector_db());
    };
    if q.cursor
        .as_ref()
        .is_some_and(|c| c.len() > 2 * (uri::MAX_URI_BYTES + 32))
    {
        return Err(ServiceError::invalid_argument(
            "cursor is not one this server gave",
        ));
    }
    let root = records_root(&caller.identity, q.uri.as_deref())?;
    state.search.wait_fresh(caller.account(), FRESH_WAIT).await;
    let job = VectorRecords {
        index: state.search.index.clone(),
        embedder,
        root,
        filter: None,
        own_user: own_user(&caller.identity),
        query: VectorQuery::Scroll {
            limit,
            cursor: q.cursor,
        },
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

async fn vector_count(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    ApiQuery(q): ApiQuery<CountQuery>,
) -> ApiResult {
    let Some(embedder) = state.search.embedder.clone() else {
        return Err(no_vector_db());
    };
    let filter = q.filter.as_deref().map(Filter::parse).transpose()?;
    let root = records_root(&caller.identity, q.uri.as_deref())?;
    state.search.wait_fresh(caller.account(), FRESH_WAIT).await;
    let job = VectorRecords {
        index: state.search.index.clone(),
        embedder,
        root,
        filter,
        own_user: own_user(&caller.identity),
        query: VectorQuery::Count,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}
