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
    let account = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    let job = MemoryTemplates {
        account,
        op: TemplateOp::List,
    };
    Ok(ApiOk::new(run(&state, job).await?))
}

pub(super) async fn get(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    let job = MemoryTemplates {
        account,
        op: TemplateOp::Get(memory_type),
    };
    Ok(ApiOk::new(run(&state, job).await?))
}

pub(super) async fn put(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    let job = MemoryTemplates {
        account,
        op: TemplateOp::Put(memory_type, Some(body)),
    };
    Ok(ApiOk::new(run(&state, job).await?))
}

pub(super) async fn reset(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, memory_type) = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    let job = MemoryTemplates {
        account,
        op: TemplateOp::Put(memory_type, None),
    };
    Ok(ApiOk::new(run(&state, job).await?))
}
