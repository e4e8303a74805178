//! Routes of the admin API (spec §3, §13.3, §13.4, §13.8). Handlers check the caller's rule
//! (in the extractor type) and ADMIN's own account, validate every id and body field, and only
//! then hand one job to the storage pool: bad input never touches storage.

use actix_web::http::StatusCode;
use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::actors::auth::admin_jobs::{self as jobs, Registry};
use crate::actors::BlockingJob;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, validate_new_id, IdKind, Role};
use crate::storage::registry::model::UserEntry;
use crate::storage::registry::query::Paging;
use crate::storage::registry::{account_not_found, user_not_found};
use crate::storage::tasks::TaskOwner;

use super::auth::{Caller, RootOnly, RootOrAdmin, Rule};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery, OptionalJson};
use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let base = "/api/v1/admin/accounts";
    cfg.service(
        web::resource(base)
            .route(web::post().to(create_account))
            .route(web::get().to(list_accounts)),
    )
    .service(
        web::resource(format!("{base}/{{account_id}}"))
            .route(web::get().to(get_account))
            .route(web::delete().to(delete_account)),
    )
    .service(
        web::resource(format!("{base}/{{account_id}}/users"))
            .route(web::post().to(register_user))
            .route(web::get().to(list_users)),
    )
    .service(
        web::resource(format!("{base}/{{account_id}}/users/{{user_id}}"))
            .route(web::get().to(get_user))
            .route(web::delete().to(remove_user)),
    )
    .service(
        web::resource(format!("{base}/{{account_id}}/users/{{user_id}}/role"))
            .route(web::put().to(set_role)),
    )
    .service(
        web::resource(format!("{base}/{{account_id}}/users/{{user_id}}/key"))
            .route(web::post().to(regenerate_key)),
    );
}

async fn run<J: BlockingJob<Output = ServiceResult<T>>, T: Send + 'static>(
    state: &AppState,
    job: J,
) -> ServiceResult<T> {
    state.pools.storage().run(job).await?
}

fn registry(state: &AppState) -> Registry {
    Registry {
        sink: state.registry_sink.clone(),
        hashing: state.settings.auth.api_key_hashing,
    }
}

/// ADMIN manages only its own account (spec §2.1).
fn own_account<R: Rule>(caller: &Caller<R>, account: &str) -> ServiceResult<()> {
    if caller.role() == Role::Admin && caller.account() != account {
        return Err(ServiceError::permission_denied(format!(
            "ADMIN can only manage account: {}",
            caller.account()
        )));
    }
    Ok(())
}

/// A path id that cannot be valid names nothing: 404 without touching storage.
fn path_account(account: &str) -> ServiceResult<()> {
    validate_id(IdKind::Account, account).map_err(|_| account_not_found(account))
}

fn path_user(user: &str) -> ServiceResult<()> {
    validate_id(IdKind::User, user).map_err(|_| user_not_found(user))
}

fn check_seed(seed: &Option<String>) -> ServiceResult<()> {
    if seed.as_deref() == Some("") {
        return Err(
            ServiceError::invalid_argument("seed must not be empty").with_details(json!({}))
        );
    }
    Ok(())
}

fn check_user_config(config: &Option<Value>) -> ServiceResult<()> {
    match config {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ServiceError::validation(
            &["body", "user_config"],
            "Input should be a valid dictionary",
            "dict_type",
        )),
    }
}

fn non_null(config: Option<Value>) -> Option<Value> {
    config.filter(|v| !v.is_null())
}

#[derive(Deserialize)]
struct CreateAccountBody {
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
    let created = run(
        &state,
        jobs::CreateAccount {
            registry: registry(&state),
            account: body.account_id.clone(),
            admin: body.admin_user_id.clone(),
            seed: body.seed,
            user_config: non_null(body.user_config),
        },
    )
    .await?;
    Ok(ApiOk::new(json!({
        "account_id": body.account_id,
        "admin_user_id": body.admin_user_id,
        "user_key": created.user_key,
    })))
}

#[derive(Deserialize)]
struct ListQuery {
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
    let removal = run(
        &state,
        jobs::DeleteAccount {
            registry: registry(&state),
            account: account.clone(),
        },
    )
    .await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "status": "deleting",
        "task_id": removal.task_id,
    }))
    .status(StatusCode::ACCEPTED))
}

fn default_role() -> String {
    "user".into()
}

#[derive(Deserialize)]
struct RegisterBody {
    user_id: String,
    #[serde(default = "default_role")]
    role: String,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    user_config: Option<Value>,
}

/// A4, in the spec's order: cross-account 403, ROOT role 403, bad role 400, bad ids 400.
async fn register_user(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult {
    let account = path.into_inner();
    own_account(&caller, &account)?;
    if body.role == "root" {
        return Err(ServiceError::permission_denied(
            "Account users cannot be assigned ROOT; use server.root_api_key for ROOT access.",
        ));
    }
    if body.role != "user" && body.role != "admin" {
        return Err(
            ServiceError::invalid_argument("Account user role must be user or admin.")
                .with_details(json!({})),
        );
    }
    validate_id(IdKind::Account, &account)?;
    validate_new_id(IdKind::User, &body.user_id)?;
    check_seed(&body.seed)?;
    check_user_config(&body.user_config)?;
    let user_key = run(
        &state,
        jobs::RegisterUser {
            registry: registry(&state),
            account: account.clone(),
            user: body.user_id.clone(),
            role: body.role,
            seed: body.seed,
            user_config: non_null(body.user_config),
        },
    )
    .await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "user_id": body.user_id,
        "user_key": user_key,
    })))
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct ListUsersQuery {
    name: Option<String>,
    query: Option<String>,
    role: Option<String>,
    limit: Option<i64>,
    page: Option<i64>,
    #[serde(
        default = "default_true",
        deserialize_with = "crate::http::extract::flexible_bool"
    )]
    include_credentials: bool,
    #[serde(default, deserialize_with = "crate::http::extract::flexible_bool")]
    include_summary: bool,
}

/// One A5 entry: never a plaintext key (spec §13.3).
fn user_entry(id: &str, entry: &UserEntry, credentials: bool) -> Value {
    let mut v = json!({"user_id": id, "role": entry.role});
    if credentials {
        if let Some(prefix) = entry.shown_prefix() {
            v["key_prefix"] = prefix.into();
        }
    } else {
        v["api_key_available"] = (!entry.key.is_empty()).into();
    }
    v
}

/// A5: users without a pending deletion, filtered, then paged.
async fn list_users(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> ApiResult {
    let account = path.into_inner();
    own_account(&caller, &account)?;
    let paging = Paging::new(q.name, q.query, q.limit, q.page)?;
    path_account(&account)?;
    let file = run(&state, jobs::ListUsers { account }).await?;
    let active: Vec<(String, UserEntry)> = file
        .users
        .into_iter()
        .filter(|(_, e)| e.deletion.is_none())
        .collect();
    let account_total = active.len();
    let manager_count = active.iter().filter(|(_, e)| e.is_admin()).count();
    let key_count = active.iter().filter(|(_, e)| e.has_usable_key()).count();
    let by_role: Vec<(String, UserEntry)> = active
        .into_iter()
        .filter(|(_, e)| q.role.as_ref().is_none_or(|r| &e.role == r))
        .collect();
    let (page, total) = paging.apply(by_role, |(id, _)| id.as_str());
    let users: Vec<Value> = page
        .iter()
        .map(|(id, e)| user_entry(id, e, q.include_credentials))
        .collect();
    if q.include_summary {
        return Ok(ApiOk::new(json!({
            "users": users,
            "total": total,
            "account_total": account_total,
            "manager_count": manager_count,
            "key_count": key_count,
        })));
    }
    Ok(ApiOk::new(users))
}

/// A5b: role only, never key material.
async fn get_user(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    path_user(&user)?;
    let entry = run(
        &state,
        jobs::GetUser {
            account,
            user: user.clone(),
        },
    )
    .await?;
    Ok(ApiOk::new(json!({"user_id": user, "role": entry.role})))
}

/// A6: 202 with the deletion task; the task belongs to the system when ROOT or the user
/// itself asks, else to the calling ADMIN, so the caller can poll it.
async fn remove_user(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    path_account(&account)?;
    path_user(&user)?;
    let is_self = caller.account() == account && caller.user() == user;
    let owner = if caller.role() == Role::Root || is_self {
        TaskOwner::system()
    } else {
        TaskOwner::user(caller.account(), caller.user())
    };
    let removal = run(
        &state,
        jobs::RemoveUser {
            registry: registry(&state),
            account: account.clone(),
            user: user.clone(),
            owner,
        },
    )
    .await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "user_id": user,
        "status": "deleting",
        "task_id": removal.task_id,
        "deleted": removal.deleted,
    }))
    .status(StatusCode::ACCEPTED))
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
}

/// A7: promotion only; the role is checked before existence.
async fn set_role(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    if body.role != "admin" {
        return Err(ServiceError::invalid_argument(
            "set_user_role only supports promotion to admin.",
        )
        .with_details(json!({})));
    }
    path_account(&account)?;
    path_user(&user)?;
    run(
        &state,
        jobs::SetRole {
            registry: registry(&state),
            account: account.clone(),
            user: user.clone(),
            role: body.role,
        },
    )
    .await?;
    Ok(ApiOk::new(
        json!({"account_id": account, "user_id": user, "role": "admin"}),
    ))
}

#[derive(Deserialize, Default)]
struct KeyBody {
    #[serde(default)]
    seed: Option<String>,
}

/// A8.
async fn regenerate_key(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    OptionalJson(body): OptionalJson<KeyBody>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    check_seed(&body.seed)?;
    path_account(&account)?;
    path_user(&user)?;
    let user_key = run(
        &state,
        jobs::RegenerateKey {
            registry: registry(&state),
            account,
            user,
            seed: body.seed,
        },
    )
    .await?;
    Ok(ApiOk::new(json!({"user_key": user_key})))
}
