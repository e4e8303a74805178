//! Watch routes (docs/API.md, Watches): 0.5.2's eight `/api/v1/watches` routes. Update, delete
//! and trigger name a watch by `{task_id}` or `?to_uri=` (both given: they must name the same
//! watch, else 400); trigger makes the watch due and answers at once.

use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ServiceError;
use crate::jobs::watches::{DeleteWatch, GetWatch, ListWatches, TriggerWatch, UpdateWatch};
use crate::storage::uri;
use crate::storage::watches::{Patch, Watch, MAX_INTERVAL_MINUTES};

use super::auth::{Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(
            at("/api/v1/watches")
                .get(list_or_get)
                .patch(patch_by_uri)
                .delete(delete_by_uri),
        )
        .add(at("/api/v1/watches/trigger").post(trigger_by_uri))
        .add(
            at("/api/v1/watches/{task_id}")
                .get(get_by_id)
                .patch(patch_by_id)
                .delete(delete_by_id),
        )
        .add(at("/api/v1/watches/{task_id}/trigger").post(trigger_by_id));
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only watches with `is_active=true`.
    #[serde(default)]
    active_only: bool,
    /// Answer the one watch with this target instead of the list.
    to_uri: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct KeyQuery {
    /// The watch's target; with `{task_id}` a cross-check (must agree, else 400).
    to_uri: Option<String>,
}

/// 0.5.2's `UpdateWatchRequest`: fields left out are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateWatchBody {
    /// Minutes (> 0, at most a year); raised to `watch.min_interval_minutes` when runs use it.
    watch_interval: Option<f64>,
    is_active: Option<bool>,
    reason: Option<String>,
    instruction: Option<String>,
}

/// A watch as answered: 0.5.2's fields, plus the interval runs use and whether the server's
/// floor raised it.
pub fn shown(w: &Watch, floor_minutes: f64) -> Value {
    let mut v = w.to_public();
    let effective = w.watch_interval.max(floor_minutes);
    v["effective_watch_interval"] = json!(effective);
    v["interval_raised"] = json!(effective > w.watch_interval);
    v
}

/// Check an interval as 0.5.2's validators do (> 0), and refuse more than a year.
pub fn check_interval(loc: &[&str], minutes: f64, positive: bool) -> Result<(), ServiceError> {
    if !minutes.is_finite() {
        return Err(ServiceError::validation(
            loc,
            "Input should be a finite number",
            "finite_number",
        ));
    }
    if positive && minutes <= 0.0 {
        return Err(ServiceError::validation(
            loc,
            "Value error, watch_interval must be > 0 (use is_active=false to pause without \
             losing the cadence)",
            "value_error",
        ));
    }
    if minutes > MAX_INTERVAL_MINUTES {
        return Err(ServiceError::validation(
            loc,
            "Value error, watch_interval must be at most one year (525600 minutes)",
            "value_error",
        ));
    }
    Ok(())
}

/// The canonical spelling of a `to_uri` the caller gave (as 0.5.2 validates it).
fn canonical(
    caller: &Caller<DataAccess>,
    raw: Option<String>,
) -> Result<Option<String>, ServiceError> {
    match raw.filter(|s| !s.trim().is_empty()) {
        Some(raw) => Ok(Some(uri::parse(&raw, &caller.identity)?.uri())),
        None => Ok(None),
    }
}

fn floor(state: &AppState) -> f64 {
    state.settings.watch.min_interval_minutes
}

async fn list_or_get(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult {
    if let Some(to_uri) = canonical(&caller, q.to_uri)? {
        let job = GetWatch {
            who: caller.identity.clone(),
            task_id: None,
            to_uri: Some(to_uri.clone()),
        };
        let w = state.pools.storage().run(job).await??;
        if q.active_only && !w.is_active {
            return Err(ServiceError::not_found(
                "watch_task",
                &to_uri,
                format!("watch_task not found: {to_uri}"),
            ));
        }
        return Ok(ApiOk::new(shown(&w, floor(&state))));
    }
    let job = ListWatches {
        who: caller.identity.clone(),
        active_only: q.active_only,
    };
    let tasks = state.pools.storage().run(job).await??;
    let shown: Vec<Value> = tasks.iter().map(|w| shown(w, floor(&state))).collect();
    Ok(ApiOk::new(json!({"total": shown.len(), "tasks": shown})))
}

async fn get_by_id(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult {
    let job = GetWatch {
        to_uri: canonical(&caller, q.to_uri)?,
        who: caller.identity,
        task_id: Some(path.into_inner()),
    };
    let w = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(shown(&w, floor(&state))))
}

async fn patch(
    state: &AppState,
    caller: Caller<DataAccess>,
    task_id: Option<String>,
    to_uri: Option<String>,
    body: UpdateWatchBody,
) -> ApiResult {
    if let Some(m) = body.watch_interval {
        check_interval(&["body", "watch_interval"], m, true)?;
    }
    let to_uri = canonical(&caller, to_uri)?;
    require_key(&task_id, &to_uri)?;
    let account = caller.account().to_string();
    let job = UpdateWatch {
        who: caller.identity,
        task_id,
        to_uri,
        patch: Patch {
            watch_interval: body.watch_interval,
            is_active: body.is_active,
            reason: body.reason,
            instruction: body.instruction,
        },
        floor_minutes: floor(state),
    };
    let w = state.pools.storage().run(job).await??;
    state.watches.changed(&account);
    Ok(ApiOk::new(shown(&w, floor(state))))
}

fn require_key(task_id: &Option<String>, to_uri: &Option<String>) -> Result<(), ServiceError> {
    if task_id.is_none() && to_uri.is_none() {
        return Err(ServiceError::invalid_argument(
            "Either {task_id} or ?to_uri= is required",
        ));
    }
    Ok(())
}

async fn patch_by_id(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    ApiJson(body): ApiJson<UpdateWatchBody>,
) -> ApiResult {
    patch(&state, caller, Some(path.into_inner()), q.to_uri, body).await
}

async fn patch_by_uri(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    ApiJson(body): ApiJson<UpdateWatchBody>,
) -> ApiResult {
    patch(&state, caller, None, q.to_uri, body).await
}

async fn delete(
    state: &AppState,
    caller: Caller<DataAccess>,
    task_id: Option<String>,
    to_uri: Option<String>,
) -> ApiResult {
    let to_uri = canonical(&caller, to_uri)?;
    require_key(&task_id, &to_uri)?;
    let account = caller.account().to_string();
    let job = DeleteWatch {
        who: caller.identity,
        task_id,
        to_uri,
    };
    let w = state.pools.storage().run(job).await??;
    state.watches.changed(&account);
    Ok(ApiOk::new(
        json!({"task_id": w.task_id, "to_uri": w.to_uri, "deleted": true}),
    ))
}

async fn delete_by_id(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult {
    delete(&state, caller, Some(path.into_inner()), q.to_uri).await
}

async fn delete_by_uri(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult {
    delete(&state, caller, None, q.to_uri).await
}

async fn trigger(
    state: &AppState,
    caller: Caller<DataAccess>,
    task_id: Option<String>,
    to_uri: Option<String>,
) -> ApiResult {
    let to_uri = canonical(&caller, to_uri)?;
    require_key(&task_id, &to_uri)?;
    let account = caller.account().to_string();
    let job = TriggerWatch {
        who: caller.identity,
        task_id,
        to_uri,
    };
    let w = state.pools.storage().run(job).await??;
    // Due now: the scheduler reads the account again and queues it (fire and forget).
    state.watches.changed(&account);
    Ok(ApiOk::new(
        json!({"task_id": w.task_id, "to_uri": w.to_uri, "scheduled": true}),
    ))
}

async fn trigger_by_id(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult {
    trigger(&state, caller, Some(path.into_inner()), q.to_uri).await
}

async fn trigger_by_uri(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> ApiResult {
    trigger(&state, caller, None, q.to_uri).await
}
