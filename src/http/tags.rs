//! Tag routes (issue #21, 0.5.2): `POST /content/set_tags`, `POST /fs/attrs/set_tags` (the
//! same operation) and `GET /fs/attrs`. Tags are validated here (strict `k=v`, reserved keys
//! refused); the job reads and writes them on the storage pool.

use actix_web::web;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::ServiceError;
use crate::jobs::tags::{ReadAttrs, SetTags};
use crate::storage::tags::{self, TagMode};
use crate::storage::uri::Access;

use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{flexible_bool, ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/content/set_tags").post(set_tags))
        .add(at("/api/v1/fs/attrs/set_tags").post(set_tags))
        .add(at("/api/v1/fs/attrs").get(attrs));
}

fn default_mode() -> String {
    "replace".into()
}

/// 0.5.2 `SetTagsRequest` (extra fields forbidden).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetTagsBody {
    uri: String,
    /// `k=v` tags (strict); keys such as `memory_type` are reserved to the server.
    tags: Option<Vec<String>>,
    /// `replace` (default), `append` (merged by key) or `clear`.
    #[serde(default = "default_mode")]
    mode: String,
    /// Tag every node below a directory too.
    #[serde(default, deserialize_with = "flexible_bool")]
    recursive: bool,
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    telemetry: Option<Value>,
}

/// Tags a client sent, normalised: strict `k=v`, at most [`tags::MAX_TAGS`], no reserved key.
pub(super) fn client_tags(raw: Option<&[String]>) -> Result<Vec<String>, ServiceError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 4 * tags::MAX_TAGS {
        return Err(ServiceError::invalid_argument(format!(
            "too many tags: {} (at most {} per node)",
            raw.len(),
            tags::MAX_TAGS
        )));
    }
    tags::normalize_user(raw)
}

async fn set_tags(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<SetTagsBody>,
) -> ApiResult {
    let mode = TagMode::parse_or_refuse(&body.mode)?;
    let tags = client_tags(body.tags.as_deref())?;
    let uri = resolve_uri(&caller, &body.uri, Access::Write)?;
    let job = SetTags {
        uri,
        tags,
        mode,
        recursive: body.recursive,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AttrsQuery {
    uri: String,
}

async fn attrs(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<AttrsQuery>,
) -> ApiResult {
    let uri = resolve_uri(&caller, &q.uri, Access::Read)?;
    Ok(ApiOk::new(
        state.pools.storage().run(ReadAttrs { uri }).await??,
    ))
}
