//! Routes of the content API (spec §7): C1 read, C2 abstract, C3 overview, C4 download,
//! C5 write.

use std::convert::Infallible;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ErrorCode, ServiceError};
use crate::jobs::content::{
    BatchWrite, DownloadFile, PlannedOp, ReadFile, ReadSidecar, Reindex, WriteFile,
};
use crate::jobs::tasks::CreateTask;
use crate::storage::fs::read::Sidecar;
use crate::storage::fs::write::{self, WriteMode};
use crate::storage::fs::{attrs, batch, reindex};
use crate::storage::tags::TagMode;
use crate::storage::tasks::TaskOwner;
use crate::storage::uri::{self, Access};

use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{encoded_ok, slices, ApiOk, ApiResult};
use super::extract::{decode_required_json, flexible_bool, int_in_range, ApiJson, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/content/read").get(read))
        .add(at("/api/v1/content/abstract").get(abstract_))
        .add(at("/api/v1/content/overview").get(overview))
        .add(at("/api/v1/content/download").get(download))
        .add(at("/api/v1/content/write").post(write))
        .add(at("/api/v1/content/batch-write").post(batch_write))
        .add(at("/api/v1/content/reindex").post(reindex_route));
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadQuery {
    uri: String,
    offset: Option<i64>,
    limit: Option<i64>,
    /// Memory files carry no reserved trailer on this server, so raw and cooked reads agree.
    #[serde(default, deserialize_with = "flexible_bool")]
    #[allow(dead_code)]
    raw: bool,
}

/// C1. The result is already JSON-encoded by the job; the envelope is sent around it as three
/// chunks so a large file is never copied again here.
async fn read(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> Result<HttpResponse, ServiceError> {
    let uri = resolve_uri(&caller, &q.uri, Access::Read)?;
    let offset = int_in_range(&["query", "offset"], q.offset.unwrap_or(0), 0, None)?;
    let limit = match q.limit.unwrap_or(-1) {
        l if l < 0 => None,
        l => Some(usize::try_from(l).unwrap_or(usize::MAX)),
    };
    let job = ReadFile { uri, offset, limit };
    Ok(encoded_ok(state.pools.storage().run(job).await??))
}

async fn sidecar(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    raw: &str,
    which: Sidecar,
) -> ApiResult {
    let uri = resolve_uri(&caller, raw, Access::Read)?;
    Ok(ApiOk::new(
        state
            .pools
            .storage()
            .run(ReadSidecar { uri, which })
            .await??,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UriQuery {
    uri: Option<String>,
}

/// C2.
async fn abstract_(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<UriQuery>,
) -> ApiResult {
    sidecar(state, caller, &required_uri(q.uri)?, Sidecar::Abstract).await
}

/// C3.
async fn overview(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<UriQuery>,
) -> ApiResult {
    sidecar(state, caller, &required_uri(q.uri)?, Sidecar::Overview).await
}

fn required_uri(uri: Option<String>) -> Result<String, ServiceError> {
    uri.ok_or_else(|| ServiceError::invalid_argument("uri is required"))
}

/// RFC 5987 `attr-char`s stay literal in `filename*`.
const FILENAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'^')
    .remove(b'`')
    .remove(b'|');

/// C4: the raw bytes; the job's one buffer is sent in zero-copy slices.
async fn download(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiQuery(q): ApiQuery<UriQuery>,
) -> Result<HttpResponse, ServiceError> {
    let uri = resolve_uri(&caller, &required_uri(q.uri)?, Access::Read)?;
    let name = utf8_percent_encode(uri.name(), FILENAME).to_string();
    let bytes = Bytes::from(state.pools.storage().run(DownloadFile { uri }).await??);
    let len = bytes.len() as u64;
    let chunks = futures_util::stream::iter(slices(bytes).map(Ok::<_, Infallible>));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename*=UTF-8''{name}"),
        ))
        .body(SizedStream::new(len, chunks)))
}

fn default_mode() -> String {
    "replace".into()
}

/// The C5 body; unknown fields are rejected (`extra_forbidden`, spec §1.3).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // accepted-and-ignored fields are kept to document the contract
pub(super) struct WriteBody {
    uri: String,
    content: String,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default, deserialize_with = "flexible_bool")]
    wait: bool,
    /// Gone in 0.5.2 but still sent by older clients; ignored (§13.14).
    timeout: Option<Value>,
    telemetry: Option<Value>,
    processing_mode: Option<String>,
    tags: Option<Vec<String>>,
    tag_mode: Option<String>,
    acl: Option<Value>,
    edit_source: Option<String>,
}

fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ServiceError> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            let list: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            Err(ServiceError::validation(
                &["body", field],
                &format!("Input should be {}", list.join(" or ")),
                "literal_error",
            ))
        }
        _ => Ok(()),
    }
}

/// Collect a request body into one buffer sized from `Content-Length`, so a 100 MB body is
/// never re-allocated (and transiently doubled) while it arrives. A `Content-Encoding` body is
/// decompressed as the framework's own extractors do, and the limit applies to the decoded
/// bytes (a gzip bomb is a 413, not an allocation).
pub(super) async fn collect_body(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Bytes, ServiceError> {
    let mut payload = actix_web::dev::Decompress::from_headers(payload.into_inner(), req.headers());
    let limit = state.settings.server.max_body_bytes;
    let too_large = || {
        ServiceError::new(
            ErrorCode::PayloadTooLarge,
            "Request body exceeds server.max_body_bytes",
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // Capacity grows with what arrived (doubling, up to the declared length), so a body that
    // was announced but never sent holds no memory.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(8192).min(64 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if let Some(refused) = super::admission::refusal(&e) {
                return refused;
            }
            ServiceError::invalid_argument(format!("Could not read the request body: {e}"))
        })?;
        let needed = buf.len() + chunk.len();
        if needed > limit {
            return Err(too_large());
        }
        if needed > buf.capacity() {
            let target = needed
                .max(buf.capacity() * 2)
                .min(declared.unwrap_or(usize::MAX).max(needed));
            buf.reserve(target - buf.len());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// C5.
async fn write(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult {
    let raw = collect_body(&state, &req, payload).await?;
    let body: WriteBody = decode_required_json(Some(&state), raw).await?;
    let mode = WriteMode::parse(&body.mode).ok_or_else(|| {
        ServiceError::invalid_argument(format!("unsupported write mode: {}", body.mode))
    })?;
    one_of(
        "processing_mode",
        body.processing_mode.as_deref(),
        &["semantic_and_vectors", "vectors_only"],
    )?;
    one_of(
        "tag_mode",
        body.tag_mode.as_deref(),
        &["replace", "append", "clear"],
    )?;
    let tag_mode = TagMode::parse_or_refuse(body.tag_mode.as_deref().unwrap_or("replace"))?;
    let tags = match (&body.tags, tag_mode) {
        (None, TagMode::Replace | TagMode::Append) => None,
        (tags, mode) => Some((super::tags::client_tags(tags.as_deref())?, mode)),
    };
    one_of(
        "edit_source",
        body.edit_source.as_deref(),
        &["manual", "agent", "compile"],
    )?;
    match &body.telemetry {
        None | Some(Value::Bool(_)) => {}
        Some(Value::Object(m)) if m.iter().all(|(k, v)| k == "summary" && v.is_boolean()) => {}
        Some(_) => {
            return Err(ServiceError::validation(
                &["body", "telemetry"],
                "Input should be a valid boolean or {\"summary\": bool}",
                "type_error",
            ))
        }
    }
    write::preflight(&body.uri)?;
    let parsed = uri::parse(&body.uri, &caller.identity)?;
    let target = write::renamed(&parsed, caller.account())?;
    uri::authorize(&target, &caller.identity, Access::Write)?;
    write::check_target(&target)?;
    if tags.is_some() && !attrs::supports_tags(&target) {
        return Err(ServiceError::invalid_argument(format!(
            "tags are not supported for namespace: {}",
            target.uri()
        )));
    }
    let acl = super::acl::acl_field(&caller, &target, body.acl.as_ref())?;
    let staged = acl.is_some();
    super::acl::stage_acl(&state, &target, acl).await?;
    let job = WriteFile {
        uri: target.clone(),
        content: body.content,
        mode,
        quota: state.settings.quota.clone(),
        tags,
        recorder: state.search.recorder.clone(),
    };
    let out = state.pools.storage().run(job).await?;
    if out.is_err() && staged {
        super::acl::unstage_acl(&state, &target).await;
    }
    Ok(ApiOk::new(out?))
}

fn default_true() -> bool {
    true
}

/// One operation of `BatchWriteBody` (0.5.2 `BatchWriteOperation`, extra fields forbidden).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchOpBody {
    uri: String,
    /// Exactly one of `content` and `content_base64`.
    content: Option<String>,
    content_base64: Option<String>,
    /// `replace` (default), `append`, `create` or `upsert`.
    #[serde(default = "default_mode")]
    mode: String,
    /// Lower-case hex sha256 the current file must have (else a conflict).
    expected_sha256: Option<String>,
    tags: Option<Vec<String>>,
    tag_mode: Option<String>,
    #[schema(value_type = Option<Object>)]
    acl: Option<Value>,
}

/// 0.5.2 `BatchWriteRequest` (extra fields forbidden).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // accepted fields with nothing to do on this server
pub(super) struct BatchWriteBody {
    root_uri: String,
    operations: Vec<BatchOpBody>,
    /// Accepted: indexing is done when the answer is sent.
    #[serde(default = "default_true", deserialize_with = "flexible_bool")]
    wait: bool,
    #[schema(value_type = Option<Object>)]
    telemetry: Option<Value>,
    /// Leave conflicting targets untouched and report them instead of failing.
    #[serde(default, deserialize_with = "flexible_bool")]
    skip_conflicts: bool,
    #[serde(default, deserialize_with = "flexible_bool")]
    defer_processing: bool,
    processing_mode: Option<String>,
    edit_source: Option<String>,
}

/// A batch's root: inside a resource directory, or inside a memory type directory.
fn batch_root_ok(root: &uri::VikingUri) -> bool {
    let segs: Vec<&str> = root.segments().iter().map(String::as_str).collect();
    matches!(
        segs.as_slice(),
        ["resources", _, ..]
            | ["user", _, "resources", _, ..]
            | ["user", _, "memories", _, ..]
            | ["user", _, "peers", _, "memories", _, ..]
    )
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `POST /content/batch-write` (0.5.2).
async fn batch_write(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<BatchWriteBody>,
) -> ApiResult {
    let limits = &state.settings.content;
    one_of(
        "processing_mode",
        body.processing_mode.as_deref(),
        &["semantic_and_vectors", "vectors_only"],
    )?;
    one_of(
        "edit_source",
        body.edit_source.as_deref(),
        &["manual", "agent", "compile"],
    )?;
    if body.operations.is_empty() {
        return Err(ServiceError::invalid_argument(
            "batch-write operations must not be empty",
        ));
    }
    if body.operations.len() > limits.batch_write_max_operations {
        return Err(ServiceError::invalid_argument(format!(
            "batch-write carries {} operations; at most {} (content.batch_write_max_operations)",
            body.operations.len(),
            limits.batch_write_max_operations
        )));
    }
    let root = resolve_uri(&caller, &body.root_uri, Access::Write)?;
    if !batch_root_ok(&root) {
        return Err(ServiceError::invalid_argument(format!(
            "batch-write root must be inside a resource directory or a memory type directory: {}",
            root.uri()
        )));
    }
    let root_type = attrs::context_type(&root);
    let mut total: u64 = 0;
    let mut seen = std::collections::HashSet::new();
    let mut ops = Vec::with_capacity(body.operations.len());
    for (i, op) in body.operations.into_iter().enumerate() {
        let at = |field: &str| ["body", "operations", &i.to_string(), field].map(String::from);
        write::preflight(&op.uri)?;
        let target = resolve_uri(&caller, &op.uri, Access::Write)?;
        let shown = target.uri();
        if !seen.insert(shown.clone()) {
            return Err(ServiceError::invalid_argument(format!(
                "duplicate batch-write target: {shown}"
            )));
        }
        if target == root || !target.starts_with(&root) {
            return Err(ServiceError::invalid_argument(format!(
                "batch-write target is outside root_uri: {shown}"
            )));
        }
        if attrs::context_type(&target) != root_type {
            return Err(ServiceError::invalid_argument(format!(
                "batch-write target has a different context type: {shown}"
            )));
        }
        write::check_target(&target)?;
        let content = match (op.content, op.content_base64) {
            (Some(t), None) => batch::RawContent::Text(t),
            (None, Some(b)) => batch::RawContent::Base64(b),
            _ => {
                return Err(ServiceError::invalid_argument(format!(
                    "batch-write requires exactly one of content or content_base64: {shown}"
                )))
            }
        };
        let mode = batch::BatchMode::parse(&op.mode).ok_or_else(|| {
            let loc = at("mode");
            let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
            ServiceError::validation(
                &refs,
                "Input should be 'replace', 'append', 'create' or 'upsert'",
                "literal_error",
            )
        })?;
        if matches!(content, batch::RawContent::Base64(_)) && mode == batch::BatchMode::Append {
            return Err(ServiceError::invalid_argument(format!(
                "batch-write append does not support binary content: {shown}"
            )));
        }
        if root_type == "memory" {
            if mode == batch::BatchMode::Append {
                return Err(ServiceError::invalid_argument(
                    "batch-write append is not supported for memories",
                ));
            }
            if matches!(content, batch::RawContent::Base64(_)) {
                return Err(ServiceError::invalid_argument(format!(
                    "batch-write binary content is not supported for memories: {shown}"
                )));
            }
        }
        if let Some(sha) = &op.expected_sha256 {
            if !is_sha256_hex(sha) {
                let loc = at("expected_sha256");
                let refs: Vec<&str> = loc.iter().map(String::as_str).collect();
                return Err(ServiceError::validation(
                    &refs,
                    "String should match pattern '^[a-f0-9]{64}$'",
                    "string_pattern_mismatch",
                ));
            }
        }
        // 0.5.2: an explicit ACL needs manage on the target, checked before anything is
        // written.
        let acl = super::acl::acl_field(&caller, &target, op.acl.as_ref())?;
        let tag_mode = TagMode::parse_or_refuse(op.tag_mode.as_deref().unwrap_or("replace"))?;
        let tags = match (&op.tags, tag_mode) {
            (None, TagMode::Replace | TagMode::Append) => None,
            (tags, mode) => Some((super::tags::client_tags(tags.as_deref())?, mode)),
        };
        if (tags.is_some() || acl.is_some()) && body.defer_processing {
            return Err(ServiceError::invalid_argument(
                "defer_processing does not support tags or ACL updates",
            ));
        }
        total = total.saturating_add(content.decoded_len());
        ops.push(PlannedOp {
            uri: target,
            content,
            mode,
            expected_sha256: op.expected_sha256,
            tags,
            acl,
        });
    }
    if total > limits.batch_write_max_bytes {
        return Err(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "batch-write content is {total} bytes; at most {} (content.batch_write_max_bytes)",
                limits.batch_write_max_bytes
            ),
        ));
    }
    ops.sort_by_key(|o| o.uri.uri());
    let job = BatchWrite {
        root,
        ops,
        skip_conflicts: body.skip_conflicts,
        quota: state.settings.quota.clone(),
        recorder: state.search.recorder.clone(),
        registry: super::admin::registry(&state),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

fn default_reindex_mode() -> String {
    "vectors_only".into()
}

/// 0.5.2 `ReindexRequest`.
#[derive(Deserialize, ToSchema)]
pub(super) struct ReindexBody {
    uri: String,
    /// `vectors_only` (default) or `semantic_and_vectors`.
    #[serde(default = "default_reindex_mode")]
    mode: String,
    /// Accepted (stored vectors are keyed by content; the index re-reads every document).
    #[serde(default, deserialize_with = "flexible_bool")]
    #[allow(dead_code)]
    force: bool,
    /// true (default): answer when the rebuild is done; false: a task.
    #[serde(default = "default_true", deserialize_with = "flexible_bool")]
    wait: bool,
    #[serde(default = "default_true", deserialize_with = "flexible_bool")]
    recursive: bool,
    tags: Option<Vec<String>>,
    tag_mode: Option<String>,
}

/// How long a wait=true reindex waits for this instance's index to apply the rebuild.
const REINDEX_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `POST /content/reindex` (0.5.2): rebuild a subtree's derived state (index entries with
/// their tags, vectors) from storage; a USER only in their own namespace.
async fn reindex_route(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<ReindexBody>,
) -> ApiResult {
    let target = uri::parse(&body.uri, &caller.identity)?;
    reindex::authorize(&target, &caller.identity)?;
    // A rebuild changes no content; retagging does.
    let access = if body.tags.is_some() || body.tag_mode.as_deref() == Some("clear") {
        Access::Write
    } else {
        Access::Read
    };
    uri::authorize(&target, &caller.identity, access)?;
    let object_type = reindex::object_type(&target)?;
    reindex::check_mode(&body.mode, object_type)?;
    if !body.recursive
        && matches!(
            object_type,
            "global_namespace" | "user_namespace" | "skill_namespace"
        )
    {
        return Err(ServiceError::invalid_argument(format!(
            "recursive=false is not supported for namespace reindex target {}",
            target.uri()
        )));
    }
    let tag_mode = TagMode::parse_or_refuse(body.tag_mode.as_deref().unwrap_or("replace"))?;
    let tags = match (&body.tags, tag_mode) {
        (None, TagMode::Replace | TagMode::Append) => None,
        (tags, mode) => Some((super::tags::client_tags(tags.as_deref())?, mode)),
    };
    let mut job = Reindex {
        uri: target.clone(),
        object_type,
        mode: body.mode.clone(),
        recursive: body.recursive,
        tags,
        task: None,
        overviews: (body.mode == "semantic_and_vectors").then(|| state.overviews.clone()),
        recorder: state.search.recorder.clone(),
    };
    if !body.wait {
        let owner = TaskOwner::user(caller.account(), &caller.identity.user);
        let task_id = crate::storage::tasks::new_id();
        state
            .pools
            .storage()
            .run(CreateTask {
                owner: owner.clone(),
                task_id: task_id.clone(),
                task_type: "reindex",
                resource_id: Some(target.uri()),
            })
            .await??;
        job.task = Some((owner, task_id.clone()));
        // Runs on; the task reports its end.
        drop(state.pools.commit().submit(job)?);
        return Ok(ApiOk::new(serde_json::json!({
            "task_id": task_id,
            "status": "accepted",
            "uri": target.uri(),
            "object_type": object_type,
            "mode": body.mode,
        })));
    }
    let mut result = state.pools.commit().run(job).await??;
    // Done means this instance's index has applied the rebuild (others follow within
    // search.refresh_interval_ms).
    if !state
        .search
        .wait_fresh(caller.account(), REINDEX_APPLY_WAIT)
        .await
    {
        if let Some(w) = result["warnings"].as_array_mut() {
            w.push("the search index is still applying the rebuild".into());
        }
    }
    Ok(ApiOk::new(result))
}
