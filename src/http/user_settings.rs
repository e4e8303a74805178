//! The caller's own settings (0.5.2 `user_settings.py`): default targets for `add_resource`
//! and `add_skill` (`add-locations`), kept in the user's `settings/user_config.json`.

use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::error::{ServiceError, ServiceResult};
use crate::jobs::settings::{MergeUserConfigKey, ReadUserConfig, SetUserConfigKey};
use crate::storage::uri::{self, Access};

use super::auth::{Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::ApiJson;
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes.add(
        at("/api/v1/user-settings/add-locations")
            .get(get_locations)
            .patch(patch_locations)
            .delete(delete_locations),
    );
}

/// Absent: keep; a URI: set; `null`: remove (0.5.2 distinguishes absent from null).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddLocationsBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    resource_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    skill_uri: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const KEY: &str = "add_targets";

/// A target the caller may write to, of the right kind, canonicalised.
fn check_target(caller: &Caller<DataAccess>, raw: &str, kind: &str) -> ServiceResult<String> {
    let field = format!("{kind}_uri");
    let parsed = uri::parse(raw, &caller.identity)?;
    let segs = parsed.segments();
    let ok = match kind {
        "resource" => {
            segs.first().map(String::as_str) == Some("resources")
                || (segs.first().map(String::as_str) == Some("user")
                    && segs.get(2).map(String::as_str) == Some("resources"))
        }
        _ => {
            (segs.first().map(String::as_str) == Some("user")
                && segs.get(2).map(String::as_str) == Some("skills"))
                || (segs.first().map(String::as_str) == Some("agent")
                    && segs.get(1).map(String::as_str) == Some("skills"))
        }
    };
    if !ok {
        return Err(ServiceError::invalid_uri(
            raw,
            format!("{field} must target {kind} content"),
        ));
    }
    uri::authorize(&parsed, &caller.identity, Access::Write)?;
    Ok(parsed.uri())
}

fn answer(config: &Map<String, Value>) -> Value {
    let stored = config.get(KEY).and_then(Value::as_object);
    let get = |k: &str| {
        stored
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let (resource, skill) = (get("resource_uri"), get("skill_uri"));
    json!({
        "override": {"resource_uri": resource, "skill_uri": skill},
        // Longship has no server-wide default add targets: the override is what applies.
        "effective": {"resource_uri": resource, "skill_uri": skill},
    })
}

async fn read(state: &AppState, caller: &Caller<DataAccess>) -> ServiceResult<Map<String, Value>> {
    let job = ReadUserConfig {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        check_user: false,
    };
    state.pools.storage().run(job).await?
}

async fn store(
    state: &AppState,
    caller: &Caller<DataAccess>,
    value: Option<Value>,
) -> ServiceResult<Map<String, Value>> {
    let job = SetUserConfigKey {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        check_user: false,
        key: KEY,
        value,
    };
    state.pools.storage().run(job).await?
}

/// The caller's stored add location `field` (`resource_uri`, `skill_uri`), which
/// `add_resource` without `to`/`parent` and `skills` without `target_uri` use (0.5.2); the
/// caller checks it again, as it may have lost access since it was stored.
pub(super) async fn stored_add_target(
    state: &AppState,
    caller: &Caller<DataAccess>,
    field: &str,
) -> ServiceResult<Option<String>> {
    let config = read(state, caller).await?;
    Ok(config
        .get(KEY)
        .and_then(|t| t.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string))
}

async fn get_locations(state: web::Data<AppState>, caller: Caller<DataAccess>) -> ApiResult {
    Ok(ApiOk::new(answer(&read(&state, &caller).await?)))
}

async fn patch_locations(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<AddLocationsBody>,
) -> ApiResult {
    let mut changes: Vec<(&str, Option<String>)> = Vec::new();
    if let Some(v) = body.resource_uri {
        changes.push((
            "resource_uri",
            v.map(|u| check_target(&caller, &u, "resource"))
                .transpose()?,
        ));
    }
    if let Some(v) = body.skill_uri {
        changes.push((
            "skill_uri",
            v.map(|u| check_target(&caller, &u, "skill")).transpose()?,
        ));
    }
    let job = MergeUserConfigKey {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        key: KEY,
        changes: changes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(Value::String)))
            .collect(),
    };
    let config = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(answer(&config)))
}

async fn delete_locations(state: web::Data<AppState>, caller: Caller<DataAccess>) -> ApiResult {
    Ok(ApiOk::new(answer(&store(&state, &caller, None).await?)))
}
