//! Memory statistics routes (0.5.2 `/api/v1/stats`): the caller's memories by category, and
//! one session's extraction figures.

use actix_web::web;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::jobs::memory::MemoryHealth;
use crate::jobs::sessions::SessionExtractionStats;
use crate::memory::health;
use crate::storage::sessions::{id, SessionRef};

use super::auth::{Caller, DataAccess, SessionAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::ApiQuery;
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/stats/memories").get(memories))
        .add(at("/api/v1/stats/sessions/{session_id}").get(session));
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MemoriesQuery {
    /// One of 0.5.2's memory categories (`profile`, `preferences`, `entities`, `events`,
    /// `cases`, `patterns`, `tools`, `skills`).
    category: Option<String>,
}

async fn memories(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<MemoriesQuery>,
) -> ApiResult {
    health::check_category(q.category.as_deref())?;
    let job = MemoryHealth {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        category: q.category,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

async fn session(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
) -> ApiResult {
    id::validate(&path)?;
    let job = SessionExtractionStats {
        session: SessionRef::new(caller.account(), caller.user(), &path),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}
