//! Routes of the fs API (spec §6): F1 ls, F2 tree, F3 stat, F4 mkdir, F5 rm, F6 mv, and R7 cp
//! (docs/API.md).
//!
//! Handlers parse and authorize every URI (pure, non-blocking) and submit one job to the
//! storage pool; nothing here touches storage.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::ServiceError;
use crate::jobs::fs::{CopyFiles, ListDir, ListTree, MakeDir, MoveEntry, RemoveEntry, StatEntry};
use crate::storage::fs::entry::{Output, Render};
use crate::storage::fs::listing::{PageOpts, SortBy};
use crate::storage::tags::TagQuery;
use crate::storage::uri::{Access, VikingUri};

use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{encoded_ok_with, ApiOk, ApiResult};
use super::extract::{flexible_bool, flexible_bool_opt, int_in_range, ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/fs/ls").get(ls))
        .add(at("/api/v1/fs/tree").get(tree))
        .add(at("/api/v1/fs/stat").get(stat))
        .add(at("/api/v1/fs/mkdir").post(mkdir))
        .add(at("/api/v1/fs/mv").post(mv))
        .add(at("/api/v1/fs/cp").post(cp))
        .add(at("/api/v1/fs").delete(rm));
}

/// Query parameters shared by F1 and F2.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    uri: String,
    #[serde(default, deserialize_with = "flexible_bool")]
    simple: bool,
    #[serde(default, deserialize_with = "flexible_bool")]
    recursive: bool,
    output: Option<String>,
    abs_limit: Option<i64>,
    #[serde(default, deserialize_with = "flexible_bool")]
    show_all_hidden: bool,
    node_limit: Option<i64>,
    limit: Option<i64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    offset: Option<i64>,
    #[serde(default, deserialize_with = "flexible_bool_opt")]
    include_abstract: Option<bool>,
    #[serde(default, deserialize_with = "flexible_bool")]
    include_overview: bool,
    overview_limit: Option<i64>,
    level_limit: Option<i64>,
    #[serde(default, deserialize_with = "flexible_bool")]
    directories_only: bool,
    /// Each entry with its `tags` (`tags`, which may repeat, is read from the raw query: only
    /// entries carrying every `k=v` tag).
    #[serde(default, deserialize_with = "flexible_bool")]
    include_tags: bool,
}

/// `tags` may repeat (`?tags=a=1&tags=b=2`); read them from the raw query and normalise them
/// (strict `k=v`: anything else is 400).
pub(super) fn query_tags(req: &HttpRequest) -> Result<Vec<String>, ServiceError> {
    let raw: Vec<String> = form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k == "tags")
        .map(|(_, v)| v.into_owned())
        .collect();
    if raw.len() > 4 * crate::storage::tags::MAX_TAGS {
        return Err(ServiceError::invalid_argument("too many tags"));
    }
    crate::storage::tags::normalize(&raw)
}

fn literal_error(field: &str, allowed: &str, got: &str) -> ServiceError {
    ServiceError::validation(
        &["query", field],
        &format!("Input should be {allowed}, got {got:?}"),
        "literal_error",
    )
}

/// Query integer `field` (`default` when absent), at least `min`.
fn at_least(
    field: &str,
    value: Option<i64>,
    min: i64,
    default: i64,
) -> Result<usize, ServiceError> {
    int_in_range(&["query", field], value.unwrap_or(default), min, None)
}

/// `extra_fields` may repeat (`?extra_fields=a&extra_fields=b`) or be comma-separated, which
/// the struct deserializer cannot express; read it from the raw query.
fn extra_fields(req: &HttpRequest) -> Vec<String> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k == "extra_fields")
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

impl ListQuery {
    fn page(&self, req: &HttpRequest) -> Result<PageOpts, ServiceError> {
        let output = match self.output.as_deref() {
            None | Some("agent") => Output::Agent,
            Some("original") => Output::Original,
            Some(other) => return Err(literal_error("output", "'original' or 'agent'", other)),
        };
        let mut render = Render::new(output);
        render.abs_limit = at_least("abs_limit", self.abs_limit, 0, 256)?;
        if let Some(a) = self.include_abstract {
            render.include_abstract = a;
        }
        render.include_overview = self.include_overview;
        render.overview_limit = at_least("overview_limit", self.overview_limit, 1, 4000)?;
        render.locked = extra_fields(req).iter().any(|f| f == "locked");
        // `limit` (≥ 1) wins over `node_limit` when given.
        let node_limit = match self.limit {
            Some(l) => at_least("limit", Some(l), 1, 1000)?,
            None => at_least("node_limit", self.node_limit, 1, 1000)?,
        };
        Ok(PageOpts {
            render,
            show_all_hidden: self.show_all_hidden,
            node_limit,
            offset: at_least("offset", self.offset, 0, 0)?,
            simple: self.simple,
            tags: TagQuery {
                required: query_tags(req)?,
                include: self.include_tags,
            },
        })
    }
}

fn page_response(page: crate::storage::fs::listing::Page) -> HttpResponse {
    encoded_ok_with(page.items, &[("has_more", page.has_more.into())])
}

/// F1.
async fn ls(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<HttpResponse, ServiceError> {
    let uri = resolve_uri(&caller, &q.uri, Access::Read)?;
    let page = q.page(&req)?;
    let sort_by = match q.sort_by.as_deref() {
        None => None,
        Some("name") => Some(SortBy::Name),
        Some("mtime") => Some(SortBy::Mtime),
        Some(other) => return Err(literal_error("sort_by", "'name' or 'mtime'", other)),
    };
    let descending = match q.sort_order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => return Err(literal_error("sort_order", "'asc' or 'desc'", other)),
    };
    let pool = state.pools.storage();
    let result = if q.recursive {
        let job = ListTree {
            who: caller.identity.clone(),
            uri,
            page,
            level_limit: 3,
            directories_only: false,
        };
        pool.run(job).await??
    } else {
        let job = ListDir {
            who: caller.identity.clone(),
            uri,
            page,
            sort_by,
            descending,
        };
        pool.run(job).await??
    };
    Ok(page_response(result))
}

/// F2.
async fn tree(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<HttpResponse, ServiceError> {
    let uri = resolve_uri(&caller, &q.uri, Access::Read)?;
    let job = ListTree {
        who: caller.identity.clone(),
        uri,
        page: q.page(&req)?,
        level_limit: at_least("level_limit", q.level_limit, 1, 3)?,
        directories_only: q.directories_only,
    };
    Ok(page_response(state.pools.storage().run(job).await??))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UriQuery {
    uri: String,
}

/// F3.
async fn stat(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<UriQuery>,
) -> ApiResult {
    let uri = resolve_uri(&caller, &q.uri, Access::Read)?;
    Ok(ApiOk::new(
        state.pools.storage().run(StatEntry { uri }).await??,
    ))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct MkdirBody {
    uri: String,
    description: Option<String>,
    /// `{"entries": [...], "acl_mode": ...}` (0.5.2): the new directory's own ACL; needs
    /// manage there.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    acl: Option<serde_json::Value>,
}

/// 400 for a change of a session's own files through fs (the sessions API owns them).
fn session_file(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::invalid_argument(format!(
        "session files are managed by the sessions API and cannot be changed through fs: {shown}"
    ))
    .with_details(serde_json::json!({"resource": shown}))
}

/// The URI rules mv and cp share (internal names never get this far: `uri::parse` refuses
/// them): no session files or session directories created through fs, distinct and
/// non-overlapping subtrees.
fn check_transfer(verb: &str, from: &VikingUri, to: &VikingUri) -> Result<(), ServiceError> {
    if to.is_session_file() || to.is_session_dir() {
        return Err(session_file(to));
    }
    if from == to {
        return Err(ServiceError::invalid_argument(format!(
            "{verb} source and target must be different"
        )));
    }
    if from.starts_with(to) || to.starts_with(from) {
        return Err(ServiceError::invalid_argument(format!(
            "{verb} source and target subtrees must not overlap"
        )));
    }
    Ok(())
}

/// F4.
async fn mkdir(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<MkdirBody>,
) -> ApiResult {
    let uri = resolve_uri(&caller, &body.uri, Access::Write)?;
    if uri.is_session_file() {
        return Err(session_file(&uri));
    }
    let acl = super::acl::acl_field(&caller, &uri, body.acl.as_ref())?;
    let staged = acl.is_some();
    super::acl::stage_acl(&state, &uri, acl).await?;
    let job = MakeDir {
        uri: uri.clone(),
        description: body.description,
        recorder: state.search.recorder.clone(),
    };
    let out = state.pools.storage().run(job).await?;
    if out.is_err() && staged {
        super::acl::unstage_acl(&state, &uri).await;
    }
    Ok(ApiOk::new(out?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RmQuery {
    uri: String,
    #[serde(default, deserialize_with = "flexible_bool")]
    recursive: bool,
    /// Accepted: a model-free server has no background work to wait for.
    #[serde(default, deserialize_with = "flexible_bool")]
    #[allow(dead_code)]
    wait: bool,
}

/// F5.
async fn rm(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<RmQuery>,
) -> ApiResult {
    let uri = resolve_uri(&caller, &q.uri, Access::Delete)?;
    if uri.is_session_file() {
        return Err(session_file(&uri));
    }
    let job = RemoveEntry {
        uri,
        recursive: q.recursive,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct MvBody {
    from_uri: String,
    to_uri: String,
}

/// F6.
async fn mv(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<MvBody>,
) -> ApiResult {
    let from = resolve_uri(&caller, &body.from_uri, Access::Delete)?;
    let to = resolve_uri(&caller, &body.to_uri, Access::Write)?;
    // Moving takes the source away: a session's own files stay where the sessions API keeps them.
    if from.is_session_file() {
        return Err(session_file(&from));
    }
    check_transfer("mv", &from, &to)?;
    let job = MoveEntry {
        from,
        to,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

#[derive(Deserialize, ToSchema)]
pub(super) struct CpBody {
    from_uri: String,
    to_uri: String,
    #[serde(default, deserialize_with = "flexible_bool")]
    recursive: bool,
}

/// R7: the mv rules (§13.5) with read rights on the source instead of delete rights.
async fn cp(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<CpBody>,
) -> ApiResult {
    let from = resolve_uri(&caller, &body.from_uri, Access::Read)?;
    let to = resolve_uri(&caller, &body.to_uri, Access::Write)?;
    check_transfer("cp", &from, &to)?;
    let job = CopyFiles {
        from,
        to,
        recursive: body.recursive,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}
