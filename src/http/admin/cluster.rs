//! Cluster configuration and migration (0.5.2 `admin.py`), ROOT only. Longship's cluster
//! settings come from each instance's configuration (file, environment, flags): the API shows
//! them, model secrets masked, and refuses changes that would make instances disagree.

use actix_web::{web, HttpRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::decode::parse_query;
use crate::error::{ServiceError, ServiceResult};

use super::super::auth::{Caller, RootOnly};
use super::super::envelope::{ApiOk, ApiResult};
use super::super::extract::OptionalJson;
use super::super::AppState;
use super::settings::ConfigPatchBody;

const MASK: &str = "********";

fn masked(key: &Option<String>) -> Value {
    match key {
        Some(k) if !k.is_empty() => json!(MASK),
        _ => Value::Null,
    }
}

/// The cluster's settings as the API shows them (model keys masked).
fn cluster_settings(state: &AppState) -> Value {
    let s = &state.settings;
    let dense = &s.embedding.dense;
    json!({
        "vlm": {
            "provider": s.vlm.provider,
            "api_base": s.vlm.api_base,
            "model": s.vlm.model,
            "api_key": masked(&s.vlm.api_key),
            "max_concurrent": s.vlm.max_concurrent,
            "timeout": s.vlm.timeout,
            "max_retries": s.vlm.max_retries,
            "max_tokens": s.vlm.max_tokens,
            "temperature": s.vlm.temperature,
        },
        "embedding": {
            "dense": {
                "provider": dense.provider,
                "api_base": dense.api_base,
                "model": dense.model,
                "api_key": masked(&dense.api_key),
                "dimension": dense.dimension,
            },
        },
        "acl": {"enabled": false},
        "audit": {"enabled": s.audit.enabled, "retention_days": s.audit.retention_days},
        "memory": {
            "max_input_tokens": s.memory.max_input_tokens,
            "candidates": s.memory.candidates,
            "repair_attempts": s.memory.repair_attempts,
            "backlog_limit": s.memory.backlog_limit,
        },
    })
}

const FILE_SOURCE: &str = "source=file edits the server's own configuration file; Longship \
    instances each read their configuration at start (file, environment, flags), so editing \
    one instance's file over the API would leave the cluster split until every instance is \
    restarted by its operator";

/// `source` (`runtime` or `file`), checked as 0.5.2's pattern; `file` answers 501.
fn check_source(req: &HttpRequest) -> ServiceResult<()> {
    let q: Vec<(String, String)> = parse_query(req.query_string())?;
    for (k, v) in &q {
        match (k.as_str(), v.as_str()) {
            ("source", "runtime") => {}
            ("source", "file") => return Err(ServiceError::unimplemented(FILE_SOURCE)),
            ("source", _) => {
                return Err(ServiceError::validation(
                    &["query", "source"],
                    "String should match pattern '^(runtime|file)$'",
                    "string_pattern_mismatch",
                ))
            }
            ("dry_run", v) if v == "true" || v == "1" => {
                return Err(ServiceError::invalid_argument(
                    "dry_run requires source=file and full file content",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// GET /api/v1/admin/configuration.
pub(super) async fn get_configuration(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    req: HttpRequest,
) -> ApiResult {
    check_source(&req)?;
    Ok(ApiOk::new(json!({ "settings": cluster_settings(&state) })))
}

/// PATCH /api/v1/admin/configuration: nothing here may change at runtime (see the reasons).
pub(super) async fn patch_configuration(
    state: web::Data<AppState>,
    _caller: Caller<RootOnly>,
    req: HttpRequest,
    OptionalJson(body): OptionalJson<Option<ConfigPatchBody>>,
) -> ApiResult {
    check_source(&req)?;
    let Some(body) = body else {
        return Ok(ApiOk::new(json!({ "settings": cluster_settings(&state) })));
    };
    if body.content.is_some() {
        return Err(ServiceError::invalid_argument(
            "Full file content requires source=file",
        ));
    }
    if let Some(section) = body.settings.keys().next() {
        let why = match section.as_str() {
            "embedding" | "vectordb" => {
                "the embedding model defines the one vector space every instance's index \
                 shares; changing it on one instance at runtime would put two vector spaces \
                 in one index. Change [embedding] in every instance's configuration and restart"
            }
            "vlm" | "query_planner" | "rerank" => {
                "model settings are read by every instance from its own configuration; a \
                 runtime change here would reach only this instance. Change [vlm] in every \
                 instance's configuration and restart"
            }
            "acl" | "audit" | "memory" => {
                "cluster defaults come from every instance's configuration; set them per \
                 account with PATCH /api/v1/admin/accounts/{id}/configuration, which reaches \
                 every instance"
            }
            other => {
                return Err(ServiceError::invalid_argument(format!(
                    "field is not modifiable by the config API (at '{other}')"
                )))
            }
        };
        return Err(ServiceError::unimplemented(format!("{section}: {why}")));
    }
    Ok(ApiOk::new(json!({ "settings": cluster_settings(&state) })))
}

/// The migrate body (0.5.2 `MigrateLegacyDataRequest`: unknown keys ignored).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(in crate::http) struct MigrateBody {
    /// `migrate` (default) or `cleanup`, any case.
    #[serde(default, deserialize_with = "crate::decode::opt_string")]
    action: Option<String>,
}

/// POST /api/v1/admin/migrate: 0.5.2 moves session data of its legacy layouts; Longship's
/// storage has only the current layout, so there is nothing to migrate.
pub(super) async fn migrate(
    _caller: Caller<RootOnly>,
    OptionalJson(body): OptionalJson<MigrateBody>,
) -> ApiResult {
    let action = body
        .action
        .as_deref()
        .unwrap_or("migrate")
        .trim()
        .to_ascii_lowercase();
    if action != "migrate" && action != "cleanup" {
        return Err(ServiceError::invalid_argument(
            "Migration action must be 'migrate' or 'cleanup'.",
        ));
    }
    Err(ServiceError::unimplemented(
        "legacy data migration applies to OpenViking's pre-0.5 session layouts; Longship \
         stores only the current layout (registry files are upgraded at startup), so there is \
         nothing to migrate or clean up",
    ))
}
