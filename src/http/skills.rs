//! Skill routes (docs/API.md, Skills; 0.5.2 `routers/skills.py` and `POST /api/v1/skills`):
//! add, list, find, validate, show, replace and delete Agent Skills packages. Handlers
//! validate and submit one job; installs run on the ingestion pool (an archive is unpacked by
//! the parser child), reads on the storage pool.

use std::time::Duration;

use actix_web::web;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ServiceError;
use crate::ingest::git;
use crate::jobs::skills::{
    DescribeSkills, FindSkills, InstallSkill, ListSkills, RemoveSkill, ShowSkill,
};
use crate::skills::find::SkillQuery;
use crate::skills::format;
use crate::skills::store::{self, DetailOpts, InstallRequest, SkillData};
use crate::storage::tasks;
use crate::storage::uri::{self, Access};

use super::auth::{AnyRole, Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{flexible_bool, flexible_bool_opt, int_in_range, ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/skills").get(list).post(add))
        .add(at("/api/v1/skills/find").post(find))
        .add(at("/api/v1/skills/validate").post(validate))
        .add(
            at("/api/v1/skills/{skill_name}")
                .get(show)
                .put(update)
                .delete(remove),
        );
}

/// 0.5.2's default (and, for 0 or less, fallback) number of entries listed per root.
const DEFAULT_LIST_LIMIT: usize = 1000;
/// How long wait=true gives the local index to apply the install.
const INDEX_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for this instance's own recent changes before a find.
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// Prefixes 0.5.2 takes for a Git source.
const GIT_PREFIXES: [&str; 5] = ["https://", "http://", "git@", "ssh://", "git://"];

fn default_true() -> bool {
    true
}

/// 0.5.2 `AddSkillRequest` (unknown keys refused).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddSkillBody {
    /// `SKILL.md` text, a structured skill (`{name, description, content, …}`) or a Git URL.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// An upload (`/api/v1/resources/temp_upload`): a `SKILL.md` or a ZIP of one or more packages.
    temp_file_id: Option<String>,
    /// Which packages of a multi-skill source to install (directory names; `*` = all).
    #[serde(default)]
    skills: Vec<String>,
    /// Only describe the source's skills.
    #[serde(default)]
    list_only: bool,
    #[serde(default)]
    wait: bool,
    #[schema(value_type = Option<Object>)]
    source_metadata: Option<Map<String, Value>>,
    /// `viking://user/{uid}/skills` (default) or `viking://agent/skills`.
    target_uri: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    telemetry: Value,
}

/// 0.5.2 `UpdateSkillRequest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateSkillBody {
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    temp_file_id: Option<String>,
    #[serde(default)]
    from_source: bool,
    #[serde(default)]
    wait: bool,
    #[schema(value_type = Option<Object>)]
    source_metadata: Option<Map<String, Value>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    telemetry: Value,
    target_uri: Option<String>,
}

/// 0.5.2 `FindSkillsRequest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FindSkillsBody {
    query: String,
    #[serde(default = "default_limit")]
    limit: i64,
    score_threshold: Option<f64>,
    level: Option<Vec<i64>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    telemetry: Value,
    target_uri: Option<String>,
}

fn default_limit() -> i64 {
    10
}

/// 0.5.2 `ValidateSkillRequest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidateSkillBody {
    #[schema(value_type = Object)]
    data: Value,
    #[serde(default)]
    strict: bool,
    source_path: Option<String>,
    skill_dir_name: Option<String>,
    #[allow(dead_code)]
    target_uri: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListSkillsQuery {
    node_limit: Option<i64>,
    target_uri: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ShowSkillQuery {
    target_uri: Option<String>,
    #[serde(default, deserialize_with = "flexible_bool_opt")]
    include_content: Option<bool>,
    #[serde(default = "default_true", deserialize_with = "flexible_bool")]
    include_files: bool,
    #[serde(default, deserialize_with = "flexible_bool")]
    include_integrity: bool,
    #[serde(default, deserialize_with = "flexible_bool")]
    include_source: bool,
    level: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TargetQuery {
    target_uri: Option<String>,
}

fn value_error(message: &str) -> ServiceError {
    ServiceError::validation(&["body"], &format!("Value error, {message}"), "value_error")
}

fn present(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// What the request's `data` / `temp_file_id` name (an upload wins, as in 0.5.2).
fn skill_data(
    data: Option<&Value>,
    temp_file_id: &Option<String>,
) -> Result<SkillData, ServiceError> {
    if let Some(id) = present(temp_file_id) {
        return Ok(SkillData::Upload { id });
    }
    match data {
        Some(Value::String(s)) => {
            if !s.contains('\n') && GIT_PREFIXES.iter().any(|p| s.starts_with(p)) {
                return Ok(SkillData::Git(git::parse_source(s)?));
            }
            if s.len() > format::MAX_DEFINITION_BYTES {
                return Err(format::too_large(s.len()));
            }
            Ok(SkillData::Text(s.clone()))
        }
        Some(Value::Object(m)) => Ok(SkillData::Structured(m.clone())),
        Some(other) => Err(ServiceError::invalid_argument(format!(
            "Unsupported skill data: expected SKILL.md text or an object, got {}",
            match other {
                Value::Array(_) => "an array",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "null",
            }
        ))),
        None => Err(value_error(
            "Either 'data' or 'temp_file_id' must be provided",
        )),
    }
}

/// The source record 0.5.2 derives when the request gives none.
fn default_source(data: &SkillData, operation: &str) -> Map<String, Value> {
    let source = match data {
        SkillData::Upload { .. } => "temp_upload",
        SkillData::Git(_) | SkillData::FromSource => "git",
        _ => "inline_content",
    };
    let v = json!({"type": "api", "source": source, "operation": operation});
    v.as_object().cloned().unwrap_or_default()
}

/// `POST /api/v1/skills`.
async fn add(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<AddSkillBody>,
) -> ApiResult {
    if body.data.is_none() && present(&body.temp_file_id).is_none() {
        return Err(value_error(
            "Either 'data' or 'temp_file_id' must be provided",
        ));
    }
    let data = skill_data(body.data.as_ref(), &body.temp_file_id)?;
    // Without `target_uri`: the caller's stored add location for skills (0.5.2).
    let target = match present(&body.target_uri) {
        Some(t) => Some(t),
        None => super::user_settings::stored_add_target(&state, &caller, "skill_uri").await?,
    };
    let root = store::root_for_target(&caller.identity, target.as_deref(), Access::Write)?;
    let source = body
        .source_metadata
        .clone()
        .unwrap_or_else(|| default_source(&data, "add"));
    let req = InstallRequest {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        task_id: tasks::new_id(),
        root,
        data,
        expected_name: None,
        source,
        names: body.skills.clone(),
    };
    let ticket = state.ingest.enter(caller.account())?;
    if body.list_only {
        let job = DescribeSkills {
            req,
            settings: state.settings.clone(),
            ticket,
        };
        return Ok(ApiOk::new(state.pools.ingest().run(job).await??));
    }
    let job = InstallSkill {
        req,
        replace_only: false,
        update_target: None,
        settings: state.settings.clone(),
        recorder: state.search.recorder.clone(),
        chat: state.ingest.chat.clone(),
        ticket,
    };
    let result = state.pools.ingest().run(job).await??;
    if body.wait {
        let _ = state.search.wait_fresh(caller.account(), INDEX_WAIT).await;
    }
    Ok(ApiOk::new(result))
}

/// `PUT /api/v1/skills/{skill_name}`: replace an installed skill (same name required).
async fn update(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<UpdateSkillBody>,
) -> ApiResult {
    let name = format::check_path_name(&path.into_inner())?;
    let upload = present(&body.temp_file_id);
    if body.from_source {
        if body.data.is_some() || upload.is_some() {
            return Err(value_error(
                "from_source cannot be combined with data or temp_file_id",
            ));
        }
    } else if body.data.is_none() && upload.is_none() {
        return Err(value_error(
            "Either data, temp_file_id, or from_source must be provided",
        ));
    }
    let data = if body.from_source {
        // Resolved on the pool from the installed package's record.
        SkillData::FromSource
    } else {
        skill_data(body.data.as_ref(), &body.temp_file_id)?
    };
    let source = body
        .source_metadata
        .clone()
        .unwrap_or_else(|| default_source(&data, "update"));
    let req = InstallRequest {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        task_id: tasks::new_id(),
        // Replaced by the located package's root on the pool.
        root: store::root_for_target(&caller.identity, None, Access::Read)?,
        data,
        expected_name: Some(name),
        source,
        names: Vec::new(),
    };
    let ticket = state.ingest.enter(caller.account())?;
    let job = InstallSkill {
        req,
        replace_only: true,
        update_target: Some((caller.identity.clone(), body.target_uri.clone())),
        settings: state.settings.clone(),
        recorder: state.search.recorder.clone(),
        chat: state.ingest.chat.clone(),
        ticket,
    };
    let mut result = state.pools.ingest().run(job).await??;
    result["action"] = "update".into();
    if body.wait {
        let _ = state.search.wait_fresh(caller.account(), INDEX_WAIT).await;
    }
    Ok(ApiOk::new(result))
}

/// `GET /api/v1/skills`.
async fn list(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<ListSkillsQuery>,
) -> ApiResult {
    let limit = match q.node_limit {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => DEFAULT_LIST_LIMIT,
    };
    if let Some(raw) = present(&q.target_uri) {
        let root = uri::parse(&raw, &caller.identity)?;
        uri::authorize(&root, &caller.identity, Access::Read)?;
        let shown = root.uri();
        let skills = state
            .pools
            .storage()
            .run(ListSkills {
                roots: vec![root],
                limit,
            })
            .await??;
        return Ok(ApiOk::new(
            json!({"root_uri": shown, "total": skills.len(), "skills": skills}),
        ));
    }
    let roots = store::roots(&caller.identity)?;
    let shown: Vec<String> = roots.iter().map(|r| r.uri()).collect();
    let skills = state
        .pools
        .storage()
        .run(ListSkills {
            roots: roots.to_vec(),
            limit,
        })
        .await??;
    Ok(ApiOk::new(
        json!({"root_uris": shown, "total": skills.len(), "skills": skills}),
    ))
}

/// `POST /api/v1/skills/find`.
async fn find(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<FindSkillsBody>,
) -> ApiResult {
    let limit = int_in_range(&["body", "limit"], body.limit, 1, Some(1000))?;
    if body.query.len() > 4096 {
        return Err(ServiceError::validation(
            &["body", "query"],
            "String should have at most 4096 bytes",
            "string_too_long",
        ));
    }
    let level = match &body.level {
        None => None,
        Some(levels) => {
            let mut out = Vec::new();
            for l in levels {
                out.push(int_in_range(&["body", "level"], *l, 0, Some(2))? as u8);
            }
            Some(out)
        }
    };
    if body.score_threshold.is_some_and(|t| !t.is_finite()) {
        return Err(ServiceError::validation(
            &["body", "score_threshold"],
            "Input should be a finite number",
            "finite_number",
        ));
    }
    let (roots, shown) = match present(&body.target_uri) {
        Some(raw) => {
            let root = uri::parse(&raw, &caller.identity)?;
            uri::authorize(&root, &caller.identity, Access::Read)?;
            let shown = json!({"root_uri": root.uri()});
            (vec![root], shown)
        }
        None => {
            let roots = store::roots(&caller.identity)?;
            let shown = json!({"root_uris": roots.iter().map(|r| r.uri()).collect::<Vec<_>>()});
            (roots.to_vec(), shown)
        }
    };
    let fresh = state
        .search
        .wait_fresh(caller.account(), FRESHNESS_WAIT)
        .await;
    let job = FindSkills {
        index: state.search.index.clone(),
        who: caller.identity.clone(),
        query: SkillQuery {
            query: body.query.clone(),
            limit,
            score_threshold: body.score_threshold,
            level,
            roots,
        },
        catching_up: !fresh || state.search.catching_up(),
        embedder: state.search.embedder.clone(),
    };
    let skills = state.pools.storage().run(job).await??;
    let mut result = shown;
    result["total"] = skills.len().into();
    result["skills"] = Value::Array(skills);
    Ok(ApiOk::new(result))
}

/// `POST /api/v1/skills/validate`: always a verdict (200), never a refusal of the skill.
async fn validate(
    _caller: Caller<AnyRole>,
    ApiJson(body): ApiJson<ValidateSkillBody>,
) -> ApiResult {
    Ok(ApiOk::new(format::verdict(
        &body.data,
        body.strict,
        body.skill_dir_name.as_deref(),
        body.source_path.as_deref(),
    )))
}

/// `GET /api/v1/skills/{skill_name}`.
async fn show(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<ShowSkillQuery>,
) -> ApiResult {
    let level = match q.level {
        None => None,
        Some(l @ 0..=2) => Some(l as u8),
        Some(_) => {
            return Err(
                ServiceError::invalid_argument("Skill show level must be 0, 1, or 2")
                    .with_details(json!({"field": "level", "allowed": [0, 1, 2]})),
            )
        }
    };
    let name = format::check_path_name(&path.into_inner())?;
    let job = ShowSkill {
        who: caller.identity.clone(),
        name,
        target_uri: present(&q.target_uri),
        opts: DetailOpts {
            include_content: q.include_content,
            include_files: q.include_files,
            include_integrity: q.include_integrity,
            include_source: q.include_source,
            level,
        },
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// `DELETE /api/v1/skills/{skill_name}`.
async fn remove(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<TargetQuery>,
) -> ApiResult {
    let name = format::check_path_name(&path.into_inner())?;
    let job = RemoveSkill {
        who: caller.identity.clone(),
        name,
        target_uri: present(&q.target_uri),
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}
