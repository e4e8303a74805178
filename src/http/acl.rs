//! The ACL routes (issue #23, 0.5.2's `/api/v1/acl`): get, set (PUT), delete, grant, revoke.
//! Every one needs manage on the node (implicit for ADMIN and ROOT; a USER needs ACLs on in the
//! account and a manage grant), targets only `viking://resources/…`, and validates principals
//! and levels before anything is stored. The job stores the change and announces it, so it
//! holds here at once and on other instances within `auth.refresh_interval_ms`.

use actix_web::web;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::jobs::acl::{ChangeAcl, DropAclIfMissing, GetAcl};
use crate::storage::acl::ensure_manage;
use crate::storage::acl::model::{normalize_principal, Entry, Level, Mode};
use crate::storage::acl::store::{parse_entries, AclSpec, Change};
use crate::storage::uri::{self, VikingUri};

use super::admin::registry;
use super::auth::{Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;
use crate::error::ServiceError;

pub fn configure(routes: &mut Routes) {
    routes
        .add(
            at("/api/v1/acl")
                .get(get_acl)
                .put(set_acl)
                .delete(delete_acl),
        )
        .add(at("/api/v1/acl/grant").post(grant))
        .add(at("/api/v1/acl/revoke").post(revoke));
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AclQuery {
    /// A `viking://resources/…` URI.
    uri: String,
}

/// 0.5.2 `SetAclRequest`: `entries` and/or `acl_mode`, nothing else.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetAclBody {
    uri: String,
    /// `[{"principal": "user:<id>" | "user:*" | "group:<id>", "level": "read" | "write" | "manage"}]`
    #[schema(value_type = Option<Vec<Object>>)]
    entries: Option<Vec<Value>>,
    /// `inherit` or `restricted`.
    acl_mode: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantBody {
    uri: String,
    principal: String,
    /// `read`, `write` or `manage`.
    level: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    uri: String,
    principal: String,
}

/// Parse `raw` for the caller and check that they may manage its ACL.
fn managed_uri(caller: &Caller<DataAccess>, raw: &str) -> Result<VikingUri, ServiceError> {
    let uri = uri::parse(raw, &caller.identity)?;
    ensure_manage(&uri, &caller.identity)?;
    Ok(uri)
}

async fn get_acl(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<AclQuery>,
) -> ApiResult {
    let uri = managed_uri(&caller, &q.uri)?;
    Ok(ApiOk::new(
        state.pools.storage().run(GetAcl { uri }).await??,
    ))
}

async fn change(state: &AppState, uri: VikingUri, change: Change) -> ApiResult {
    let job = ChangeAcl {
        registry: registry(state),
        uri,
        change,
        must_exist: true,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

async fn set_acl(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<SetAclBody>,
) -> ApiResult {
    let entries = body.entries.as_deref().map(parse_entries).transpose()?;
    let mode = body
        .acl_mode
        .as_deref()
        .map(Mode::parse_settable)
        .transpose()?;
    let spec = AclSpec { entries, mode };
    spec.check()?;
    let uri = managed_uri(&caller, &body.uri)?;
    change(&state, uri, Change::Set(spec)).await
}

async fn delete_acl(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<AclQuery>,
) -> ApiResult {
    let uri = managed_uri(&caller, &q.uri)?;
    change(&state, uri, Change::Clear).await
}

async fn grant(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<GrantBody>,
) -> ApiResult {
    let entry = Entry {
        principal: normalize_principal(&body.principal)?,
        level: Level::parse(&body.level)?,
    };
    let uri = managed_uri(&caller, &body.uri)?;
    change(&state, uri, Change::Grant(entry)).await
}

async fn revoke(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> ApiResult {
    let principal = normalize_principal(&body.principal)?;
    let uri = managed_uri(&caller, &body.uri)?;
    change(&state, uri, Change::Revoke(principal)).await
}

/// An `acl` field of add_resource, mkdir or write (0.5.2): validated, and the caller must be
/// able to manage the target's ACL; `None` when absent or null.
pub(super) fn acl_field(
    caller: &Caller<DataAccess>,
    target: &VikingUri,
    raw: Option<&Value>,
) -> Result<Option<AclSpec>, ServiceError> {
    let Some(v) = raw.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let spec = AclSpec::from_json(v)?;
    if target.segments().len() < 2 {
        return Err(ServiceError::invalid_argument(
            "ACL cannot be set on viking://resources",
        ));
    }
    ensure_manage(target, &caller.identity)?;
    Ok(Some(spec))
}

/// Store the `acl` of a write before the write runs (so the node never exists without it).
pub(super) async fn stage_acl(
    state: &AppState,
    target: &VikingUri,
    spec: Option<AclSpec>,
) -> Result<(), ServiceError> {
    let Some(spec) = spec else {
        return Ok(());
    };
    let job = ChangeAcl {
        registry: registry(state),
        uri: target.clone(),
        change: Change::Set(spec),
        must_exist: false,
    };
    state.pools.storage().run(job).await??;
    Ok(())
}

/// After the write of a staged `acl` failed: its row goes unless the node exists.
pub(super) async fn unstage_acl(state: &AppState, target: &VikingUri) {
    let job = DropAclIfMissing {
        registry: registry(state),
        uri: target.clone(),
    };
    match state.pools.storage().run(job).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(uri = %target, error = %e.message, "ACL row of a failed write not dropped")
        }
        Err(e) => {
            tracing::warn!(uri = %target, error = %e, "ACL row of a failed write not dropped")
        }
    }
}
