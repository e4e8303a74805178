//! Account memory templates (0.5.2 `/admin/accounts/{id}/memory-templates`): ROOT, or ADMIN
//! of the account. See `memory::templates` for what may be edited.

use actix_web::web;
use serde_json::Value;

use crate::jobs::memory::{MemoryTemplates, TemplateOp};

use super::super::auth::{Caller, RootOrAdmin};
use super::super::envelope::{ApiOk, ApiResult};
use super::super::extract::ApiJson;
use super::super::AppState;
use super::{own_account, path_account, run};

pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
) -> ApiResult {
    run_templates(&state, &caller, path.into_inner(), TemplateOp::List).await
}

pub(super) async fn get(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    run_templates(&state, &caller, account, TemplateOp::Get(memory_type)).await
}

pub(super) async fn put(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    let op = TemplateOp::Put(memory_type, Some(body));
    run_templates(&state, &caller, account, op).await
}

pub(super) async fn reset(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    let op = TemplateOp::Put(memory_type, None);
    run_templates(&state, &caller, account, op).await
}

/// The checks every template route makes, then the job.
async fn run_templates(
    state: &AppState,
    caller: &Caller<RootOrAdmin>,
    account: String,
    op: TemplateOp,
) -> ApiResult {
    own_account(caller, &account)?;
    path_account(&account)?;
    Ok(ApiOk::new(
        run(state, MemoryTemplates { account, op }).await?,
    ))
}
