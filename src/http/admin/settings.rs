//! Account configuration routes (issue #23, 0.5.2 `admin.py`): the account layer's explicit
//! settings (`/configuration`) and the deprecated two-switch view (`/settings`). ROOT, or an
//! ADMIN of the account; model sections are ROOT's only (to change, and to see).

use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::decode::opt_object;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Role;
use crate::jobs::settings::{PatchAccountConfig, ReadAccountConfig};
use crate::storage::account_config::{self, is_root_only_section, StoredConfig};
use crate::storage::sessions::policy::{self, MemoryPolicyInput};

use super::super::auth::{Caller, RootOrAdmin};
use super::super::envelope::{ApiOk, ApiResult};
use super::super::extract::ApiJson;
use super::super::AppState;
use super::{own_account, path_account, registry, run};

/// A three-state sparse PATCH: absent keeps, a value sets, `null` removes; objects merge.
/// `revision` and `content` are accepted and ignored (0.5.2 uses them for `source=file`).
#[derive(Deserialize, ToSchema)]
pub(in crate::http) struct ConfigPatchBody {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(super) settings: Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    pub(super) revision: Option<String>,
    #[serde(default)]
    pub(super) content: Option<String>,
}

/// 0.5.2's answer plus Longship's `effective`: what this instance applies to the account
/// now (the stored settings over the server's defaults; another instance's change arrives
/// within `auth.refresh_interval_ms`).
fn configuration(state: &AppState, account: &str, doc: &StoredConfig, role: Role) -> Value {
    json!({
        "account_id": account,
        "settings": account_config::visible_to(doc, role == Role::Root),
        "effective": state.account_configs.effective(account).to_json(),
    })
}

async fn checked(caller: &Caller<RootOrAdmin>, account: &str) -> ServiceResult<()> {
    own_account(caller, account)?;
    path_account(account)
}

/// GET /api/v1/admin/accounts/{id}/configuration: the account layer's explicit settings.
pub(super) async fn get_configuration(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
) -> ApiResult {
    let account = path.into_inner();
    checked(&caller, &account).await?;
    let doc = run(
        &state,
        ReadAccountConfig {
            account: account.clone(),
        },
    )
    .await?;
    Ok(ApiOk::new(configuration(
        &state,
        &account,
        &doc,
        caller.role(),
    )))
}

/// PATCH /api/v1/admin/accounts/{id}/configuration.
pub(super) async fn patch_configuration(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<ConfigPatchBody>,
) -> ApiResult {
    let account = path.into_inner();
    checked(&caller, &account).await?;
    let mut restricted: Vec<&str> = body
        .settings
        .keys()
        .map(String::as_str)
        .filter(|k| is_root_only_section(k))
        .collect();
    if !restricted.is_empty() && caller.role() != Role::Root {
        restricted.sort_unstable();
        return Err(ServiceError::permission_denied(format!(
            "Only ROOT can modify account configuration fields: {}",
            restricted.join(", ")
        )));
    }
    account_config::validate_patch(&body.settings)?;
    let doc = patch(&state, &account, body.settings).await?;
    Ok(ApiOk::new(configuration(
        &state,
        &account,
        &doc,
        caller.role(),
    )))
}

async fn patch(
    state: &AppState,
    account: &str,
    patch: Map<String, Value>,
) -> ServiceResult<StoredConfig> {
    let job = PatchAccountConfig {
        registry: registry(state),
        account: account.to_string(),
        patch,
    };
    run(state, job).await
}

/// The deprecated view: the effective ACL switch (and 0.5.2's agent evolution, always off in
/// Longship) plus the explicit values of those two sections.
fn legacy_settings(account: &str, doc: &StoredConfig) -> Value {
    let acl_enabled = doc
        .get("acl")
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let overrides: Map<String, Value> = ["agent_evolution", "acl"]
        .iter()
        .filter_map(|k| doc.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    json!({
        "account_id": account,
        "settings": {
            "agent_evolution": {"enabled": false},
            "acl": {"enabled": acl_enabled},
        },
        "overrides": overrides,
    })
}

/// GET /api/v1/admin/accounts/{id}/settings (deprecated in 0.5.2).
pub(super) async fn get_settings(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
) -> ApiResult {
    let account = path.into_inner();
    checked(&caller, &account).await?;
    let doc = run(
        &state,
        ReadAccountConfig {
            account: account.clone(),
        },
    )
    .await?;
    Ok(ApiOk::new(legacy_settings(&account, &doc)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct LegacyEnabled {
    enabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct LegacyAcl {
    #[serde(default)]
    enabled: bool,
}

/// 0.5.2's original body: a present section replaces that switch (`{}` for ACL means off);
/// absent and `null` change nothing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct LegacySettingsBody {
    #[serde(default)]
    agent_evolution: Option<LegacyEnabled>,
    #[serde(default)]
    acl: Option<LegacyAcl>,
}

/// PATCH /api/v1/admin/accounts/{id}/settings (deprecated in 0.5.2).
pub(super) async fn patch_settings(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<LegacySettingsBody>,
) -> ApiResult {
    let account = path.into_inner();
    checked(&caller, &account).await?;
    if body.agent_evolution.as_ref().is_some_and(|a| a.enabled) {
        return Err(ServiceError::unimplemented(
            "agent_evolution cannot be enabled: Longship has no agent evolution",
        ));
    }
    let doc = match body.acl {
        Some(acl) => {
            let mut p = Map::new();
            p.insert("acl".into(), json!({"enabled": acl.enabled}));
            patch(&state, &account, p).await?
        }
        None => {
            run(
                &state,
                ReadAccountConfig {
                    account: account.clone(),
                },
            )
            .await?
        }
    };
    Ok(ApiOk::new(legacy_settings(&account, &doc)))
}

/// 0.5.2's user settings answer: the stored memory policy normalised (all known memory
/// types when it names none).
fn user_settings(account: &str, user: &str, config: &Map<String, Value>) -> ServiceResult<Value> {
    let known = crate::memory::types::known_names();
    let mut policy = policy::memory_from_value(config.get("memory_policy"), &known)?;
    if policy.is_null() {
        policy = policy::memory(Some(&MemoryPolicyInput::default()), &known)?;
    }
    if policy.get("memory_types").is_none() {
        let mut names = crate::memory::types::names();
        names.sort_unstable();
        policy["memory_types"] = json!(names);
    }
    Ok(json!({"account_id": account, "user_id": user, "memory_policy": policy}))
}

/// GET /api/v1/admin/accounts/{id}/users/{uid}/settings.
pub(super) async fn get_user_settings(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    super::path_ids(&account, &user)?;
    let job = crate::jobs::settings::ReadUserConfig {
        account: account.clone(),
        user: user.clone(),
        check_user: true,
    };
    let config = run(&state, job).await?;
    Ok(ApiOk::new(user_settings(&account, &user, &config)?))
}

/// The body of PATCH user settings: `memory_policy` is required; `null` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct UserSettingsBody {
    #[serde(deserialize_with = "opt_object")]
    #[schema(value_type = Option<MemoryPolicyInput>)]
    memory_policy: Option<MemoryPolicyInput>,
}

/// PATCH /api/v1/admin/accounts/{id}/users/{uid}/settings.
pub(super) async fn patch_user_settings(
    state: web::Data<AppState>,
    caller: Caller<RootOrAdmin>,
    path: web::Path<(String, String)>,
    ApiJson(body): ApiJson<UserSettingsBody>,
) -> ApiResult {
    let (account, user) = path.into_inner();
    own_account(&caller, &account)?;
    super::path_ids(&account, &user)?;
    let value = match body.memory_policy {
        None => None,
        Some(p) => {
            // Unknown memory types are refused there (400), as 0.5.2 does.
            let known = crate::memory::types::known_names();
            Some(policy::memory(Some(&p), &known)?)
        }
    };
    let job = crate::jobs::settings::SetUserConfigKey {
        account: account.clone(),
        user: user.clone(),
        check_user: true,
        key: "memory_policy",
        value,
    };
    let config = run(&state, job).await?;
    Ok(ApiOk::new(user_settings(&account, &user, &config)?))
}
