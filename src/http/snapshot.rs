//! Snapshot routes (issue #22, 0.5.2 `/api/v1/snapshot/*`): commit, log, restore, show, diff,
//! diff-paths and the ignore rules. Input is checked here (refs, URIs, limits, roles as 0.5.2:
//! a non-ROOT caller names paths; ignore rules are for admins); the work runs in one job on the
//! storage pool. `versions` and restore's Compile mode (`path`) serve Compile, out of scope: 501.

use actix_web::{web, HttpRequest, HttpResponse, Responder};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::decode::int_in_range;
use crate::error::ServiceError;
use crate::identity::Role;
use crate::jobs::snapshot::{
    CommitSnapshot, DiffSnapshotFile, DiffSnapshotPaths, IgnoreChange, RestoreSnapshot,
    ShowSnapshot, ShowSnapshotFile, SnapshotIgnore, SnapshotLog,
};
use crate::snapshot::commit::CommitRequest;
use crate::snapshot::diff::{DiffPathsRequest, MAX_PAGE};
use crate::snapshot::history::{MAX_LOG_LIMIT, MAX_LOG_PATHS};
use crate::snapshot::restore::RestoreRequest;
use crate::snapshot::{refs, scope, Author, DEFAULT_BRANCH};
use crate::storage::uri::Access;

use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::ApiJson;
use super::routes::{at, Routes};
use super::AppState;

/// Most paths one commit or diff-paths request may name.
const MAX_PATHS: usize = 256;
/// Longest commit message, author name or email accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_AUTHOR_BYTES: usize = 256;
const COMPILE_OUT_OF_SCOPE: &str =
    "Compile output versions are not supported by this server: Compile is out of scope";

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/snapshot/commit").post(commit))
        .add(at("/api/v1/snapshot/log").get(log))
        .add(at("/api/v1/snapshot/versions").get(versions))
        .add(at("/api/v1/snapshot/restore").post(restore))
        .add(at("/api/v1/snapshot/show").get(show))
        .add(at("/api/v1/snapshot/diff").get(diff))
        .add(at("/api/v1/snapshot/diff-paths").get(diff_paths))
        .add(
            at("/api/v1/snapshot/ignore")
                .get(get_ignore)
                .put(set_ignore)
                .delete(delete_ignore),
        );
}

fn default_branch() -> String {
    DEFAULT_BRANCH.into()
}

/// 0.5.2 `CommitRequest` (extra fields forbidden).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CommitBody {
    message: String,
    /// viking:// files or directories to record; required unless the caller is ROOT.
    paths: Option<Vec<String>>,
    #[serde(default = "default_branch")]
    branch: String,
    author_name: Option<String>,
    author_email: Option<String>,
}

fn author(name: Option<String>, email: Option<String>) -> Result<Author, ServiceError> {
    for (field, v) in [("author_name", &name), ("author_email", &email)] {
        if let Some(v) = v {
            if v.len() > MAX_AUTHOR_BYTES || v.contains(['<', '>', '\n', '\r', '\0']) {
                return Err(ServiceError::invalid_argument(format!(
                    "{field} must be at most {MAX_AUTHOR_BYTES} bytes without '<', '>' or line breaks"
                )));
            }
        }
    }
    Ok(Author::or_default(name, email))
}

fn check_message(message: &str) -> Result<(), ServiceError> {
    if message.len() > MAX_MESSAGE_BYTES || message.contains('\0') {
        return Err(ServiceError::invalid_argument(format!(
            "message must be at most {MAX_MESSAGE_BYTES} bytes without NUL"
        )));
    }
    Ok(())
}

/// The tree paths of `raw` URIs, each checked for `access`.
fn scope_paths(
    caller: &Caller<DataAccess>,
    raw: &[String],
    access: Access,
    field: &str,
) -> Result<Vec<String>, ServiceError> {
    if raw.len() > MAX_PATHS {
        return Err(ServiceError::invalid_argument(format!(
            "{field}: at most {MAX_PATHS} paths"
        )));
    }
    let mut out = Vec::with_capacity(raw.len());
    for p in raw {
        let uri = resolve_uri(caller, p, access)?;
        let path = scope::tree_path(&uri)?;
        if !out.contains(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

async fn commit(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<CommitBody>,
) -> ApiResult {
    refs::validate_name(&body.branch)?;
    check_message(&body.message)?;
    let author = author(body.author_name, body.author_email)?;
    let scopes = match &body.paths {
        None if caller.role() != Role::Root => {
            return Err(
                ServiceError::permission_denied("Snapshot commit requires explicit paths")
                    .with_details(serde_json::json!({"resource": "viking://"})),
            )
        }
        None => None,
        Some(paths) => Some(scope_paths(&caller, paths, Access::Write, "paths")?),
    };
    let job = CommitSnapshot(CommitRequest {
        account: caller.account().to_string(),
        scopes,
        branch: body.branch,
        author,
        message: body.message,
    });
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// The raw query: repeated keys (`paths`) are kept in order; the last value of others wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn of(req: &HttpRequest) -> Self {
        Query(
            form_urlencoded::parse(req.query_string().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    fn one(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn required(&self, key: &str) -> Result<&str, ServiceError> {
        self.one(key)
            .ok_or_else(|| ServiceError::validation(&["query", key], "Field required", "missing"))
    }
    fn int(&self, key: &str, default: i64, min: i64, max: i64) -> Result<usize, ServiceError> {
        let value = match self.one(key) {
            None => default,
            Some(v) => v.trim().parse::<i64>().map_err(|_| {
                ServiceError::validation(
                    &["query", key],
                    "Input should be a valid integer, unable to parse string as an integer",
                    "int_parsing",
                )
            })?,
        };
        int_in_range(&["query", key], value, min, Some(max))
    }
    fn non_empty(&self, key: &str) -> Result<Option<&str>, ServiceError> {
        match self.one(key) {
            Some(v) if v.trim().is_empty() => Err(ServiceError::validation(
                &["query", key],
                "String should have at least 1 character",
                "string_too_short",
            )),
            other => Ok(other),
        }
    }
}

/// Documentation of `GET /snapshot/log` (decoded from the raw query: `paths` repeats).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct LogQuery {
    /// Branch (default `main`).
    branch: Option<String>,
    /// 1..=500, default 20.
    limit: Option<i64>,
    /// viking:// paths (repeat, at most 32): only commits that changed one of them; required
    /// unless the caller is ROOT.
    paths: Option<Vec<String>>,
}

async fn log(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
) -> ApiResult {
    let q = Query::of(&req);
    let branch = q.one("branch").unwrap_or(DEFAULT_BRANCH).to_string();
    refs::validate_name(&branch)?;
    let limit = q.int("limit", 20, 1, MAX_LOG_LIMIT as i64)?;
    let raw_paths = q.all("paths");
    if raw_paths.len() > MAX_LOG_PATHS {
        return Err(ServiceError::validation(
            &["query", "paths"],
            &format!("List should have at most {MAX_LOG_PATHS} items after validation"),
            "too_long",
        ));
    }
    if raw_paths.is_empty() && caller.role() != Role::Root {
        return Err(
            ServiceError::permission_denied("Snapshot log requires explicit paths")
                .with_details(serde_json::json!({"resource": "viking://"})),
        );
    }
    let paths = scope_paths(&caller, &raw_paths, Access::Read, "paths")?;
    let job = SnapshotLog {
        account: caller.account().to_string(),
        branch,
        limit,
        paths,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

async fn versions(_caller: Caller<DataAccess>) -> ApiResult {
    Err(ServiceError::unimplemented(COMPILE_OUT_OF_SCOPE))
}

/// 0.5.2 `RestoreRequest` (extra fields forbidden). The Compile mode (`path`,
/// `restore_version`, `current_version`) answers 501.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SnapshotRestoreBody)]
pub(super) struct RestoreBody {
    /// viking:// directory to restore; required unless the caller is ROOT (then the account).
    project_dir: Option<String>,
    /// Commit id, branch or tag supplying the content.
    source_commit: Option<String>,
    path: Option<String>,
    restore_version: Option<String>,
    current_version: Option<String>,
    #[serde(default = "default_branch")]
    branch: String,
    #[serde(default)]
    dry_run: bool,
    message: Option<String>,
    author_name: Option<String>,
    author_email: Option<String>,
}

async fn restore(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> ApiResult {
    if body.path.is_some() || body.restore_version.is_some() || body.current_version.is_some() {
        if body.path.is_some() && (body.project_dir.is_some() || body.source_commit.is_some()) {
            return Err(ServiceError::invalid_argument(
                "path cannot be combined with project_dir or source_commit",
            ));
        }
        return Err(ServiceError::unimplemented(COMPILE_OUT_OF_SCOPE));
    }
    let source = match body.source_commit.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => return Err(ServiceError::invalid_argument("source_commit is required")),
    };
    refs::validate_name(&body.branch)?;
    if let Some(m) = &body.message {
        check_message(m)?;
    }
    let author = author(body.author_name, body.author_email)?;
    let scope = match &body.project_dir {
        None if caller.role() != Role::Root => {
            return Err(ServiceError::permission_denied(
                "Snapshot restore requires an explicit project_dir",
            )
            .with_details(serde_json::json!({"resource": "viking://"})))
        }
        None => String::new(),
        Some(dir) => {
            let uri = resolve_uri(&caller, dir, Access::Write)?;
            let path = scope::tree_path(&uri)?;
            if path.is_empty() {
                return Err(ServiceError::invalid_argument(
                    "project_dir must not be the account root; omit it (ROOT) to restore everything",
                ));
            }
            path
        }
    };
    let job = RestoreSnapshot {
        req: RestoreRequest {
            who: caller.identity.clone(),
            scope,
            source,
            branch: body.branch,
            dry_run: body.dry_run,
            message: body.message,
            author,
        },
        recorder: state.search.recorder.clone(),
        stale_after: std::time::Duration::from_secs(state.settings.resources.stale_after_secs),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// Documentation of `GET /snapshot/show`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct ShowQuery {
    /// Commit id, branch or tag.
    target_ref: String,
    /// viking:// file: its raw bytes (with `X-Snapshot-Oid`, `X-Snapshot-Size`); without it the
    /// commit's metadata (ROOT only).
    path: Option<String>,
    /// Accepted for 0.5.2 compatibility; content is always returned as stored.
    raw: Option<bool>,
}

async fn show(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
) -> Result<HttpResponse, ServiceError> {
    let q = Query::of(&req);
    let target = q.required("target_ref")?.to_string();
    let account = caller.account().to_string();
    let Some(raw_path) = q.one("path") else {
        if caller.role() != Role::Root {
            return Err(
                ServiceError::permission_denied("Snapshot show requires an explicit path")
                    .with_details(serde_json::json!({"resource": "viking://"})),
            );
        }
        let meta = state
            .pools
            .storage()
            .run(ShowSnapshot { account, target })
            .await??;
        return Ok(ApiOk::new(meta).respond_to(&req));
    };
    let uri = resolve_uri(&caller, raw_path, Access::Read)?;
    let path = scope::tree_path(&uri)?;
    let (oid, bytes) = state
        .pools
        .storage()
        .run(ShowSnapshotFile {
            account,
            target,
            path,
        })
        .await??;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-Snapshot-Oid", oid.to_string()))
        .insert_header(("X-Snapshot-Size", bytes.len().to_string()))
        .body(bytes))
}

/// Documentation of `GET /snapshot/diff`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct DiffQuery {
    /// viking:// file to compare.
    path: String,
    /// Older commit id, branch or tag; absent: an empty file.
    from: Option<String>,
    /// Newer commit id, branch or tag.
    to: String,
    /// Accepted for 0.5.2 compatibility; content is compared as stored.
    raw: Option<bool>,
}

async fn diff(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
) -> ApiResult {
    let q = Query::of(&req);
    let uri = resolve_uri(&caller, q.required("path")?, Access::Read)?;
    let path = scope::tree_path(&uri)?;
    let to = q.required("to")?.to_string();
    let from = q.non_empty("from")?.map(str::to_string);
    let job = DiffSnapshotFile {
        account: caller.account().to_string(),
        path,
        from,
        to,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// Documentation of `GET /snapshot/diff-paths` (`paths` repeats).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct DiffPathsQuery {
    /// viking:// directories (repeat; at least one).
    paths: Vec<String>,
    /// Older commit id, branch or tag; absent: an empty tree.
    from: Option<String>,
    to: String,
    /// Default 0.
    offset: Option<i64>,
    /// 1..=1000, default 100.
    limit: Option<i64>,
}

async fn diff_paths(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
) -> ApiResult {
    let q = Query::of(&req);
    let raw_paths = q.all("paths");
    if raw_paths.is_empty() {
        return Err(ServiceError::validation(
            &["query", "paths"],
            "Field required",
            "missing",
        ));
    }
    let dirs = scope_paths(&caller, &raw_paths, Access::Read, "paths")?;
    let to = q
        .non_empty("to")?
        .ok_or_else(|| ServiceError::validation(&["query", "to"], "Field required", "missing"))?
        .to_string();
    let from = q.non_empty("from")?.map(str::to_string);
    let offset = q.int("offset", 0, 0, i64::MAX)?;
    let limit = q.int("limit", 100, 1, MAX_PAGE as i64)?;
    let job = DiffSnapshotPaths(DiffPathsRequest {
        who: caller.identity.clone(),
        dirs,
        from,
        to,
        offset,
        limit,
    });
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

fn ensure_admin(caller: &Caller<DataAccess>) -> Result<(), ServiceError> {
    match caller.role() {
        Role::Root | Role::Admin => Ok(()),
        Role::User => Err(ServiceError::permission_denied(
            "Managing snapshot ignore rules requires an administrator",
        )
        .with_details(serde_json::json!({"resource": ".ovgitignore"}))),
    }
}

async fn run_ignore(
    state: &AppState,
    caller: &Caller<DataAccess>,
    change: IgnoreChange,
) -> Result<Value, ServiceError> {
    ensure_admin(caller)?;
    let job = SnapshotIgnore {
        account: caller.account().to_string(),
        change,
    };
    state.pools.storage().run(job).await?
}

async fn get_ignore(state: web::Data<AppState>, caller: Caller<DataAccess>) -> ApiResult {
    Ok(ApiOk::new(
        run_ignore(&state, &caller, IgnoreChange::Read).await?,
    ))
}

/// 0.5.2 `SetIgnoreRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetIgnoreBody {
    /// gitignore-style rules over tree paths (`resources/…`), at most 64 KiB.
    content: String,
}

async fn set_ignore(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<SetIgnoreBody>,
) -> ApiResult {
    // Checked before the job: a too-large or unreadable rule set is 400 with nothing stored.
    crate::snapshot::ignore_rules::compile(&body.content)?;
    Ok(ApiOk::new(
        run_ignore(&state, &caller, IgnoreChange::Set(body.content)).await?,
    ))
}

async fn delete_ignore(state: web::Data<AppState>, caller: Caller<DataAccess>) -> ApiResult {
    Ok(ApiOk::new(
        run_ignore(&state, &caller, IgnoreChange::Delete).await?,
    ))
}
