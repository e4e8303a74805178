//! Routes of the tasks API (spec §10, T1–T3).

use actix_web::web;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ServiceError;
use crate::identity::Role;
use crate::jobs::tasks::{CancelTask, GetTask, ListTasks};
use crate::storage::tasks::query::TaskFilter;

use super::auth::{AnyRole, Caller};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{int_in_range, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/tasks").get(list))
        .add(at("/api/v1/tasks/{task_id}").get(get))
        .add(at("/api/v1/tasks/{task_id}/cancel").post(cancel));
}

async fn get(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    path: web::Path<String>,
) -> ApiResult {
    let job = GetTask {
        caller: caller.identity,
        task_id: path.into_inner(),
    };
    let task = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(task.to_api()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    task_type: Option<String>,
    status: Option<String>,
    resource_id: Option<String>,
    limit: Option<i64>,
}

async fn list(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult {
    let limit = int_in_range(&["query", "limit"], q.limit.unwrap_or(50), 1, Some(200))?;
    let job = ListTasks {
        caller: caller.identity,
        filter: TaskFilter {
            task_type: q.task_type,
            status: q.status,
            resource_id: q.resource_id,
            limit,
        },
    };
    let tasks = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(
        tasks.iter().map(|t| t.to_api()).collect::<Vec<_>>(),
    ))
}

async fn cancel(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    path: web::Path<String>,
) -> ApiResult {
    if caller.role() == Role::Root {
        return Err(ServiceError::permission_denied("ROOT may not cancel tasks"));
    }
    let job = CancelTask {
        caller: caller.identity,
        task_id: path.into_inner(),
    };
    let task = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(task.to_api()))
}
