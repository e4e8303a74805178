//! User routes of the admin API: A4 register, A5/A5b list/get, A6 remove, A7 role, A8 key.

use actix_web::http::StatusCode;
use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ServiceError;
use crate::identity::{validate_id, validate_new_id, IdKind, Role};
use crate::jobs::admin as jobs;
use crate::storage::registry::model::UserEntry;
use crate::storage::registry::query::Paging;
use crate::storage::tasks::TaskOwner;

use super::{
    check_seed, check_user_config, non_null, own_account, path_account, path_ids, registry, run,
};
use crate::http::auth::{Caller, RootOrAdmin};
use crate::http::envelope::{ApiOk, ApiResult};
use crate::http::extract::{ApiJson, ApiQuery, OptionalJson};
use crate::http::AppState;

fn default_role() -> String {
    "user".into()
}

#[derive(Deserialize, ToSchema)]
pub(in crate::http) struct RegisterBody {
    user_id: String,
    #[serde(default = "default_role")]
    role: String,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    user_config: Option<Value>,
}

/// A4, in the spec's order: cross-account 403, ROOT role 403, bad role 400, bad ids 400.
pub(super) async fn register_user(
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
    let job = jobs::RegisterUser {
        registry: registry(&state),
        account: account.clone(),
        user: body.user_id.clone(),
        role: body.role,
        seed: body.seed,
        user_config: non_null(body.user_config),
    };
    let user_key = run(&state, job).await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "user_id": body.user_id,
        "user_key": user_key,
    })))
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct ListUsersQuery {
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
pub(super) async fn list_users(
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
pub(super) async fn get_user(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    path_ids(&account, &user)?;
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
pub(super) async fn remove_user(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    path_ids(&account, &user)?;
    let is_self = caller.account() == account && caller.user() == user;
    let owner = if caller.role() == Role::Root || is_self {
        TaskOwner::system()
    } else {
        TaskOwner::user(caller.account(), caller.user())
    };
    let job = jobs::RemoveUser {
        registry: registry(&state),
        account: account.clone(),
        user: user.clone(),
        owner,
    };
    let removal = run(&state, job).await?;
    Ok(ApiOk::new(json!({
        "account_id": account,
        "user_id": user,
        "status": "deleting",
        "task_id": removal.task_id,
        "deleted": removal.deleted,
    }))
    .status(StatusCode::ACCEPTED))
}

#[derive(Deserialize, ToSchema)]
pub(in crate::http) struct RoleBody {
    role: String,
}

/// A7: promotion only; the role is checked before existence.
pub(super) async fn set_role(
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
    path_ids(&account, &user)?;
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

#[derive(Deserialize, Default, ToSchema)]
pub(in crate::http) struct KeyBody {
    #[serde(default)]
    seed: Option<String>,
}

/// A8.
pub(super) async fn regenerate_key(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    OptionalJson(body): OptionalJson<KeyBody>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    check_seed(&body.seed)?;
    path_ids(&account, &user)?;
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
