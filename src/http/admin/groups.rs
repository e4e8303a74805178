//! The account-group routes of the admin API (0.5.2): create, list, delete, members list,
//! add, remove. ROOT or the account's ADMIN; groups hold users of the account only.

use actix_web::web;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::identity::{validate_id, IdKind};
use crate::jobs::acl::{GroupJob, GroupOp};

use super::{own_account, path_account, path_ids, registry, run};
use crate::http::auth::{Caller, RootOrAdmin};
use crate::http::envelope::{ApiOk, ApiResult};
use crate::http::extract::ApiJson;
use crate::http::AppState;

/// 0.5.2 `CreateGroupRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct CreateGroupBody {
    group_id: String,
}

async fn job(state: &AppState, account: String, group: String, op: GroupOp) -> ApiResult {
    let job = GroupJob {
        registry: registry(state),
        account,
        group,
        op,
    };
    Ok(ApiOk::new(run(state, job).await?))
}

pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<CreateGroupBody>,
) -> ApiResult {
    let account = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    validate_id(IdKind::Group, &body.group_id)?;
    job(&state, account, body.group_id, GroupOp::Create).await
}

pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
) -> ApiResult {
    let account = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    job(&state, account, String::new(), GroupOp::List).await
}

fn group_path(account: &str, group: &str) -> Result<(), crate::error::ServiceError> {
    path_account(account)?;
    validate_id(IdKind::Group, group).map_err(|_| {
        crate::error::ServiceError::not_found("group", group, format!("Group not found: {group}"))
    })
}

pub(super) async fn delete(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, group) = path.into_inner();
    own_account(&caller, &account)?;
    group_path(&account, &group)?;
    job(&state, account, group, GroupOp::Delete).await
}

pub(super) async fn members(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, group) = path.into_inner();
    own_account(&caller, &account)?;
    group_path(&account, &group)?;
    job(&state, account, group, GroupOp::Members).await
}

pub(super) async fn add_member(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    let (account, group, user) = path.into_inner();
    own_account(&caller, &account)?;
    group_path(&account, &group)?;
    path_ids(&account, &user)?;
    job(&state, account, group, GroupOp::AddMember(user)).await
}

pub(super) async fn remove_member(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    let (account, group, user) = path.into_inner();
    own_account(&caller, &account)?;
    group_path(&account, &group)?;
    path_ids(&account, &user)?;
    job(&state, account, group, GroupOp::RemoveMember(user)).await
}
