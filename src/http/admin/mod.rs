//! Routes of the admin API (spec §3, §13.3, §13.4, §13.8). Handlers check the caller's rule
//! (in the extractor type) and ADMIN's own account, validate every id and body field, and only
//! then hand one job to the storage pool: bad input never touches storage.

use actix_web::http::StatusCode;
use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, validate_new_id, IdKind, Role};
use crate::jobs::admin::{self as jobs, Registry};
use crate::jobs::BlockingJob;
use crate::storage::registry::query::Paging;
use crate::storage::registry::{account_not_found, user_not_found};

use super::auth::{Caller, RootOnly, Rule};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub(super) mod cluster;
pub(super) mod groups;
pub(super) mod settings;
mod templates;
pub(super) mod users;

use users::{get_user, list_users, regenerate_key, register_user, remove_user, set_role};

pub fn configure(routes: &mut Routes) {
    let base = "/api/v1/admin/accounts";
    routes
        .add(
            at("/api/v1/admin/configuration")
                .get(cluster::get_configuration)
                .patch(cluster::patch_configuration),
        )
        .add(at("/api/v1/admin/migrate").post(cluster::migrate))
        .add(at(base).post(create_account).get(list_accounts))
        .add(
            at(format!("{base}/{{account_id}}"))
                .get(get_account)
                .delete(delete_account),
        )
        .add(
            at(format!("{base}/{{account_id}}/users"))
                .post(register_user)
                .get(list_users),
        )
        .add(
            at(format!("{base}/{{account_id}}/users/{{user_id}}"))
                .get(get_user)
                .delete(remove_user),
        )
        .add(at(format!("{base}/{{account_id}}/users/{{user_id}}/role")).put(set_role))
        .add(
            at(format!("{base}/{{account_id}}/users/{{user_id}}/settings"))
                .get(settings::get_user_settings)
                .patch(settings::patch_user_settings),
        )
        .add(at(format!("{base}/{{account_id}}/users/{{user_id}}/key")).post(regenerate_key))
        .add(at(format!("{base}/{{account_id}}/memory-templates")).get(templates::list))
        .add(
            at(format!(
                "{base}/{{account_id}}/memory-templates/{{memory_type}}"
            ))
            .get(templates::get)
            .put(templates::put)
            .delete(templates::reset),
        )
        .add(
            at(format!("{base}/{{account_id}}/groups"))
                .post(groups::create)
                .get(groups::list),
        )
        .add(at(format!("{base}/{{account_id}}/groups/{{group_id}}")).delete(groups::delete))
        .add(at(format!("{base}/{{account_id}}/groups/{{group_id}}/members")).get(groups::members))
        .add(
            at(format!(
                "{base}/{{account_id}}/groups/{{group_id}}/members/{{user_id}}"
            ))
            .put(groups::add_member)
            .delete(groups::remove_member),
        )
        .add(
            at(format!("{base}/{{account_id}}/configuration"))
                .get(settings::get_configuration)
                .patch(settings::patch_configuration),
        )
        .add(
            at(format!("{base}/{{account_id}}/settings"))
                .get(settings::get_settings)
                .patch(settings::patch_settings),
        );
}

pub(super) async fn run<J: BlockingJob<Output = ServiceResult<T>>, T: Send + 'static>(
    state: &AppState,
    job: J,
) -> ServiceResult<T> {
    state.pools.storage().run(job).await?
}

pub(super) fn registry(state: &AppState) -> Registry {
    Registry {
        sink: state.registry_sink.clone(),
        hashing: state.settings.auth.api_key_hashing,
        recorder: state.search.recorder.clone(),
    }
}

/// ADMIN manages only its own account (spec §2.1).
pub(super) fn own_account<R: Rule>(caller: &Caller<R>, account: &str) -> ServiceResult<()> {
    if caller.role() == Role::Admin && caller.account() != account {
        return Err(ServiceError::permission_denied(format!(
            "ADMIN can only manage account: {}",
            caller.account()
        )));
    }
    Ok(())
}

/// A path id that cannot be valid names nothing: 404 without touching storage.
pub(super) fn path_account(account: &str) -> ServiceResult<()> {
    validate_id(IdKind::Account, account).map_err(|_| account_not_found(account))
}

/// [`path_account`], then the user id likewise.
pub(super) fn path_ids(account: &str, user: &str) -> ServiceResult<()> {
    path_account(account)?;
    validate_id(IdKind::User, user).map_err(|_| user_not_found(user))
}

pub(super) fn check_seed(seed: &Option<String>) -> ServiceResult<()> {
    if seed.as_deref() == Some("") {
        return Err(
            ServiceError::invalid_argument("seed must not be empty").with_details(json!({}))
        );
    }
    Ok(())
}

pub(super) fn check_user_config(config: &Option<Value>) -> ServiceResult<()> {
    match config {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ServiceError::validation(
            &["body", "user_config"],
            "Input should be a valid dictionary",
            "dict_type",
        )),
    }
}

pub(super) fn non_null(config: Option<Value>) -> Option<Value> {
    config.filter(|v| !v.is_null())
}

#[derive(Deserialize, ToSchema)]
pub(super) struct CreateAccountBody {
    account_id: String,
    admin_user_id: String,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    user_config: Option<Value>,
}

/// A1.
async fn create_account(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> ApiResult {
    validate_new_id(IdKind::Account, &body.account_id)?;
    validate_new_id(IdKind::User, &body.admin_user_id)?;
    check_seed(&body.seed)?;
    check_user_config(&body.user_config)?;
    let job = jobs::CreateAccount {
        registry: registry(&state),
        account: body.account_id.clone(),
        admin: body.admin_user_id.clone(),
        seed: body.seed,
        user_config: non_null(body.user_config),
    };
    let created = run(&state, job).await?;
    Ok(ApiOk::new(json!({
        "account_id": body.account_id,
        "admin_user_id": body.admin_user_id,
        "user_key": created.user_key,
    })))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    name: Option<String>,
    query: Option<String>,
    limit: Option<i64>,
    page: Option<i64>,
}

/// A2.
async fn list_accounts(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult {
    let paging = Paging::new(q.name, q.query, q.limit, q.page)?;
    let all = run(&state, jobs::ListAccounts).await?;
    let (page, _) = paging.apply(all, |a| a.account_id.as_str());
    Ok(ApiOk::new(page))
}

/// A2b.
async fn get_account(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    path: web::Path<String>,
) -> ApiResult {
    let account = path.into_inner();
    path_account(&account)?;
    let summary = run(&state, jobs::GetAccount { account }).await?;
    Ok(ApiOk::new(summary))
}

/// A3: 202 with the deletion task (already finished when the cleanup ran synchronously).
async fn delete_account(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    path: web::Path<String>,
) -> ApiResult {
    let account = path.into_inner();
    path_account(&account)?;
    let job = jobs::DeleteAccount {
        registry: registry(&state),
        account: account.clone(),
    };
    let removal = run(&state, job).await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "status": "deleting",
        "task_id": removal.task_id,
    }))
    .status(StatusCode::ACCEPTED))
}
