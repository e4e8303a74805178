//! Resource routes (docs/API.md, Resources): `POST /api/v1/resources/temp_upload` (multipart, streamed
//! into shared storage piece by piece), `POST /api/v1/resources` (add a resource from an
//! upload, a URL or an allowed local file) and `POST /api/v1/system/wait`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use utoipa::ToSchema;

use crate::error::{ErrorCode, ServiceError};
use crate::ingest::pipeline::{self, IngestRequest, Source, Target};
use crate::ingest::uploads::{self, UploadMeta, PART_BYTES};
use crate::jobs::resources::{
    AddResource, CommitUpload, CountPendingIngestions, NewWatch, RemoveUpload, WriteUploadPart,
};
use crate::jobs::watches::CheckWatchTarget;
use crate::jobs::PoolError;
use crate::storage::tags::TagMode;
use crate::storage::tasks;
use crate::storage::uri::{self, Access, Scope, VikingUri};
use crate::storage::watches::Watch;

use super::auth::{AnyRole, Caller, DataAccess};
use super::envelope::{ApiOk, ApiResult};
use super::extract::{ApiJson, OptionalJson};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at(uploads::ROUTE).post(temp_upload))
        .add(at("/api/v1/resources").post(add_resource))
        .add(at("/api/v1/system/wait").post(system_wait));
}

/// Small form fields (`telemetry`, `upload_mode`) are read up to this size.
const FORM_FIELD_MAX: usize = 1024;

fn malformed(e: actix_multipart::MultipartError) -> ServiceError {
    // A body the admission middleware cut off (budget, idle, too slow) says so.
    if let actix_multipart::MultipartError::Payload(p) = &e {
        if let Some(refused) = super::admission::refusal(p) {
            return refused;
        }
    }
    ServiceError::invalid_argument(format!("Malformed multipart body: {e}"))
}

/// Decrements the in-flight upload gauge on every exit path.
struct UploadGauge<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for UploadGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// R6 temp_upload: the `file` field is written to storage in pieces of at most 8 MiB as it
/// arrives (never held whole), with its own size limit (`resources.upload_max_bytes` → 413).
async fn temp_upload(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ServiceError::invalid_argument(
            "temp_upload expects a multipart/form-data body with a 'file' field",
        ));
    }
    state
        .ingest
        .uploads_in_flight
        .fetch_add(1, Ordering::Relaxed);
    let _gauge = UploadGauge(&state.ingest.uploads_in_flight);
    let mut form = Multipart::new(req.headers(), payload);
    let account = caller.account().to_string();
    let max = state.settings.resources.upload_max_bytes;
    let mut stored: Option<(String, UploadMeta)> = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(malformed)?;
        let name = field.name().unwrap_or("").to_string();
        if name == "file" && stored.is_none() {
            let filename = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .unwrap_or("")
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or("")
                .to_string();
            let id = uploads::new_id(&filename);
            match store_file(&state, &account, &id, &mut field, max).await {
                Ok((size, parts)) => {
                    let meta = UploadMeta {
                        user: caller.user().to_string(),
                        original_filename: filename,
                        size,
                        parts,
                        created_at: crate::time::epoch_secs_now(),
                    };
                    stored = Some((id, meta));
                }
                Err(e) => {
                    remove_upload(&state, &account, &id).await;
                    return Err(e);
                }
            }
            continue;
        }
        // Other fields (telemetry, upload_mode, or a second file): read a bounded amount.
        let mut value = BytesMut::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(malformed)?;
            if value.len() + chunk.len() > FORM_FIELD_MAX {
                if let Some((id, _)) = &stored {
                    remove_upload(&state, &account, id).await;
                }
                return Err(ServiceError::invalid_argument(format!(
                    "form field '{name}' is too long"
                )));
            }
            value.extend_from_slice(&chunk);
        }
        if name == "upload_mode" {
            let mode = String::from_utf8_lossy(&value);
            if !matches!(mode.trim(), "" | "local" | "shared") {
                if let Some((id, _)) = &stored {
                    remove_upload(&state, &account, id).await;
                }
                return Err(ServiceError::validation(
                    &["body", "upload_mode"],
                    "Input should be 'local' or 'shared'",
                    "literal_error",
                ));
            }
        }
    }
    let Some((id, meta)) = stored else {
        return Err(ServiceError::validation(
            &["body", "file"],
            "Field required",
            "missing",
        ));
    };
    let commit = CommitUpload {
        account: account.clone(),
        id: id.clone(),
        meta,
    };
    if let Err(e) = flatten(state.pools.storage().run(commit).await) {
        remove_upload(&state, &account, &id).await;
        return Err(e);
    }
    Ok(ApiOk::new(json!({ "temp_file_id": id })))
}

fn flatten<T>(r: Result<Result<T, ServiceError>, PoolError>) -> Result<T, ServiceError> {
    r.map_err(ServiceError::from)?
}

async fn remove_upload(state: &AppState, account: &str, id: &str) {
    let job = RemoveUpload {
        account: account.to_string(),
        id: id.to_string(),
    };
    // A leftover is removed by the sweep after its TTL.
    let _ = state.pools.storage().run(job).await;
}

/// Stream one field into storage pieces; returns (size, piece count).
async fn store_file(
    state: &AppState,
    account: &str,
    id: &str,
    field: &mut actix_multipart::Field,
    max: u64,
) -> Result<(u64, u32), ServiceError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut size: u64 = 0;
    let mut parts: u32 = 0;
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(malformed)?;
        size += chunk.len() as u64;
        if size > max {
            return Err(ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!("Upload exceeds size limit of {max} bytes (resources.upload_max_bytes)"),
            ));
        }
        buf.extend_from_slice(&chunk);
        while buf.len() >= PART_BYTES {
            let piece = buf.split_to(PART_BYTES).freeze();
            write_piece(state, account, id, parts, piece).await?;
            parts += 1;
        }
    }
    if !buf.is_empty() || parts == 0 {
        write_piece(state, account, id, parts, buf.freeze()).await?;
        parts += 1;
    }
    Ok((size, parts))
}

async fn write_piece(
    state: &AppState,
    account: &str,
    id: &str,
    n: u32,
    data: Bytes,
) -> Result<(), ServiceError> {
    let job = WriteUploadPart {
        account: account.to_string(),
        id: id.to_string(),
        n,
        data,
        quota: state.settings.quota.clone(),
    };
    flatten(state.pools.storage().run(job).await)
}

fn default_true() -> bool {
    true
}

fn default_processing_mode() -> String {
    "semantic_and_vectors".into()
}

fn default_tag_mode() -> String {
    "replace".into()
}

/// Every field of 0.5.2's `AddResourceRequest` (plus `timeout`, which older clients send);
/// other keys are refused (`extra_forbidden`), as 0.5.2's model does.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddResourceBody {
    path: Option<String>,
    temp_file_id: Option<String>,
    add_type: Option<String>,
    to: Option<String>,
    parent: Option<String>,
    #[serde(default)]
    create_parent: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    instruction: String,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    #[allow(dead_code)]
    internal_task: bool,
    source_name: Option<String>,
    ignore_dirs: Option<String>,
    include: Option<String>,
    exclude: Option<String>,
    #[serde(default = "default_true")]
    #[allow(dead_code)]
    directly_upload_media: bool,
    preserve_structure: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    args: Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    telemetry: Value,
    #[serde(default)]
    watch_interval: f64,
    #[serde(default = "default_true")]
    is_active: bool,
    #[serde(default = "default_processing_mode")]
    processing_mode: String,
    tags: Option<Vec<String>>,
    #[serde(default = "default_tag_mode")]
    tag_mode: String,
    acl: Option<Value>,
    timeout: Option<f64>,
}

fn value_error(message: &str) -> ServiceError {
    ServiceError::validation(&["body"], &format!("Value error, {message}"), "value_error")
}

/// The checks of 0.5.2's request validators, then Longship's scope decisions.
fn validate(b: &AddResourceBody) -> Result<(), ServiceError> {
    let present = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    if !present(&b.path) && !present(&b.temp_file_id) {
        return Err(value_error(
            "Either 'path' or 'temp_file_id' must be provided",
        ));
    }
    if let Some(t) = b
        .add_type
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Err(ServiceError::unimplemented(format!(
            "Connector imports (add_type={t:.40}) are not supported by this server; upload \
             the content or give an http(s) URL"
        )));
    }
    let has_target = present(&b.to) || present(&b.parent);
    if !b.is_active && (b.watch_interval <= 0.0 || !has_target) {
        return Err(value_error(
            "is_active=false requires watch_interval > 0 and either 'to' or 'parent'",
        ));
    }
    // 0.5.2 takes any number; zero or less creates no watch.
    super::watches::check_interval(&["body", "watch_interval"], b.watch_interval, false)?;
    if b.watch_interval > 0.0 {
        if present(&b.temp_file_id) {
            return Err(ServiceError::invalid_argument(
                "watch_interval > 0 is not supported for uploaded content: an upload is a \
                 static snapshot. Re-add the resource when the source changes.",
            ));
        }
        let path = b.path.as_deref().unwrap_or("").trim().to_ascii_lowercase();
        if !(path.starts_with("http://") || path.starts_with("https://")) {
            return Err(ServiceError::invalid_argument(
                "watch_interval > 0 needs an http(s) URL as 'path': only URLs are re-fetched",
            ));
        }
    }
    if present(&b.to) && present(&b.parent) {
        return Err(ServiceError::invalid_argument(
            "Cannot specify both 'to' and 'parent' at the same time.",
        ));
    }
    if !matches!(
        b.processing_mode.as_str(),
        "semantic_and_vectors" | "vectors_only"
    ) {
        return Err(ServiceError::validation(
            &["body", "processing_mode"],
            "Input should be 'semantic_and_vectors' or 'vectors_only'",
            "enum",
        ));
    }
    if b.timeout.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(ServiceError::validation(
            &["body", "timeout"],
            "Input should be a non-negative number",
            "greater_than_equal",
        ));
    }
    Ok(())
}

/// Targets must be resource trees: `viking://resources/…` or the caller's
/// `viking://user/{self}/resources/…`.
fn resource_target(
    caller: &Caller<DataAccess>,
    raw: &str,
    field: &str,
) -> Result<VikingUri, ServiceError> {
    let target = uri::parse(raw, &caller.identity)?;
    let ok = match target.scope() {
        Scope::Resources => true,
        Scope::User => target.segments().get(2).is_some_and(|s| s == "resources"),
        _ => false,
    };
    if !ok {
        return Err(ServiceError::invalid_argument(format!(
            "'{field}' must be under viking://resources (got {})",
            target.uri()
        )));
    }
    uri::authorize(&target, &caller.identity, Access::Write)?;
    Ok(target)
}

fn source_of(state: &AppState, b: &AddResourceBody) -> Result<Source, ServiceError> {
    if let Some(id) = b.temp_file_id.as_deref().filter(|s| !s.trim().is_empty()) {
        return Ok(Source::Upload {
            id: id.trim().to_string(),
        });
    }
    let path = b.path.as_deref().unwrap_or("").trim();
    let lower = path.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Source::Url(path.to_string()));
    }
    if lower.contains("://") || lower.starts_with("git@") {
        return Err(ServiceError::unimplemented(format!(
            "Sources of this kind are not supported: {path:.120} (only http(s) URLs, uploads \
             and allowed local files)"
        )));
    }
    let path = std::path::PathBuf::from(path);
    if state.settings.resources.local_path_allowlist.is_empty() {
        return Err(pipeline::refuse_local(&path));
    }
    // Resolved against the allow-list on the blocking side (it touches the file system).
    Ok(Source::LocalPath(path))
}

/// R6 add_resource.
async fn add_resource(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    ApiJson(body): ApiJson<AddResourceBody>,
) -> ApiResult {
    validate(&body)?;
    // 0.5.2: tags (strict k=v here) on every node of the ingested tree, under tag_mode.
    let tag_mode = TagMode::parse_or_refuse(&body.tag_mode)?;
    let tags = match (&body.tags, tag_mode) {
        (None, TagMode::Replace | TagMode::Append) => None,
        (Some(t), TagMode::Replace) if t.is_empty() => None,
        (tags, mode) => Some((super::tags::client_tags(tags.as_deref())?, mode)),
    };
    let source = source_of(&state, &body)?;
    // Neither `to` nor `parent`: the caller's stored add location, created if missing (0.5.2).
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    let stored_parent = if given(&body.to) || given(&body.parent) {
        None
    } else {
        super::user_settings::stored_add_target(&state, &caller, "resource_uri").await?
    };
    let target = match (body.to.as_deref(), body.parent.as_deref()) {
        (Some(to), _) if !to.trim().is_empty() => {
            let uri = resource_target(&caller, to, "to")?;
            if uri.segments().len() == 1 {
                // The resources root itself means "under it".
                Target::Under {
                    parent: uri,
                    create: true,
                }
            } else {
                Target::Exact(uri)
            }
        }
        (_, Some(parent)) if !parent.trim().is_empty() => {
            let uri = resource_target(&caller, parent, "parent")?;
            let create = body.create_parent || uri.segments().len() == 1;
            Target::Under {
                parent: uri,
                create,
            }
        }
        _ => Target::Under {
            parent: match &stored_parent {
                Some(stored) => resource_target(&caller, stored, "resource_uri")?,
                None => uri::parse("viking://resources", &caller.identity)?,
            },
            create: true,
        },
    };
    // An `acl` binds to the exact target, stored before the tree appears there; with only a
    // parent the final name is chosen while publishing, after which a row would come late.
    let acl = match &target {
        Target::Exact(uri) | Target::Replace(uri) => {
            super::acl::acl_field(&caller, uri, body.acl.as_ref())?
        }
        Target::Under { .. } if body.acl.as_ref().is_some_and(|a| !a.is_null()) => {
            return Err(ServiceError::invalid_argument(
                "acl needs the exact target: give 'to' (a viking://resources/… URI below the root)",
            ))
        }
        Target::Under { .. } => None,
    };
    let acl_target = match (&target, &acl) {
        (Target::Exact(uri), Some(_)) => Some(uri.clone()),
        _ => None,
    };
    let ticket = state.ingest.enter(caller.account())?;
    if let Some(uri) = &acl_target {
        super::acl::stage_acl(&state, uri, acl).await?;
    }
    let watch = match body.watch_interval > 0.0 {
        true => {
            let normalized = tags.as_ref().map(|(t, _)| t.clone());
            Some(new_watch(&state, &caller, &body, &target, normalized).await?)
        }
        false => None,
    };
    let task_id = tasks::new_id();
    let req = IngestRequest {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        task_id: task_id.clone(),
        source,
        target,
        source_name: body.source_name.clone().filter(|s| !s.trim().is_empty()),
        strict: body.strict,
        ignore_dirs: body.ignore_dirs.clone(),
        include: body.include.clone(),
        exclude: body.exclude.clone(),
        preserve_structure: body.preserve_structure.unwrap_or(true),
    };
    let (published_tx, published) = oneshot::channel();
    let job = AddResource {
        req,
        tags,
        settings: state.settings.clone(),
        recorder: state.search.recorder.clone(),
        chat: state.ingest.chat.clone(),
        on_published: (!body.wait).then_some(published_tx),
        ticket,
        watch,
    };
    let done = state.pools.ingest().submit(job)?;
    if !body.wait {
        // Answered once the tree is visible; summaries and the task's end follow on the pool.
        return match published.await {
            Ok(result) => {
                if result.get("watch_id").is_some() {
                    // The new watch is scheduled here at once (other instances: next scan).
                    state.watches.changed(caller.account());
                }
                Ok(ApiOk::new(result))
            }
            // Failed before publishing: the job's error (the task is failed already).
            Err(_) => {
                if let Some(uri) = &acl_target {
                    super::acl::unstage_acl(&state, uri).await;
                }
                match done.await {
                    Ok(outcome) => Err(failure_of(outcome)),
                    Err(_) => Err(ServiceError::internal("the ingestion job was lost")),
                }
            }
        };
    }
    let deadline = body
        .timeout
        .filter(|t| *t > 0.0)
        .map(Duration::from_secs_f64);
    let outcome = match deadline {
        Some(d) => match tokio::time::timeout(d, done).await {
            Ok(r) => r,
            Err(_) => {
                // The work goes on; the task tells when it ends.
                return Err(ServiceError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("Resource processing did not finish within {d:?}; poll the task"),
                )
                .with_details(json!({"operation": "resources.add_resource",
                                     "timeout": d.as_secs_f64(), "task_id": task_id})));
            }
        },
        None => done.await,
    };
    let answer = match outcome {
        Ok(r) => flatten(r),
        Err(_) => Err(ServiceError::internal("the ingestion job was lost")),
    };
    if let (Err(_), Some(uri)) = (&answer, &acl_target) {
        super::acl::unstage_acl(&state, uri).await;
    }
    let answer = answer?;
    if body.watch_interval > 0.0 {
        state.watches.changed(caller.account());
    }
    // wait=true also waits until find here sees the tree (read-your-writes of the index).
    let _ = state.search.wait_fresh(caller.account(), INDEX_WAIT).await;
    Ok(ApiOk::new(answer))
}

/// The watch an add_resource with `watch_interval > 0` creates once its tree is published
/// (refused at once when its exact target is watched already).
async fn new_watch(
    state: &AppState,
    caller: &Caller<DataAccess>,
    b: &AddResourceBody,
    target: &Target,
    tags: Option<Vec<String>>,
) -> Result<NewWatch, ServiceError> {
    if let Target::Exact(uri) = target {
        let check = CheckWatchTarget {
            account: caller.account().to_string(),
            to_uri: uri.uri(),
        };
        flatten(state.pools.storage().run(check).await)?;
    }
    let now = crate::time::epoch_secs_now();
    let mut kwargs = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            kwargs.insert(k.to_string(), v);
        }
    };
    put("strict", json!(b.strict));
    put("ignore_dirs", json!(b.ignore_dirs));
    put("include", json!(b.include));
    put("exclude", json!(b.exclude));
    put("preserve_structure", json!(b.preserve_structure));
    put("source_name", json!(b.source_name));
    put("tags", json!(tags));
    put("tag_mode", json!(b.tag_mode));
    let mut watch = Watch {
        task_id: tasks::new_id(),
        path: b.path.as_deref().unwrap_or("").trim().to_string(),
        to_uri: String::new(),
        parent_uri: match target {
            Target::Under { parent, .. } if present_str(&b.parent) => Some(parent.uri()),
            _ => None,
        },
        reason: b.reason.clone(),
        instruction: b.instruction.clone(),
        watch_interval: b.watch_interval,
        processing_mode: b.processing_mode.clone(),
        processor_kwargs: kwargs,
        created_at: now,
        last_execution_time: None,
        last_task_id: None,
        last_status: None,
        last_error: None,
        next_execution_time: None,
        is_active: b.is_active,
        account_id: caller.account().to_string(),
        user_id: caller.user().to_string(),
        original_role: caller.role().as_str().to_string(),
        etag: None,
        last_modified: None,
        content_hash: None,
        runs: 0,
        ingestions: 0,
    };
    watch.schedule_from(now, state.settings.watch.min_interval_minutes);
    Ok(NewWatch {
        watch,
        max_per_account: state.settings.watch.max_per_account,
    })
}

fn present_str(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

/// The error of an ingestion that ended without publishing.
fn failure_of<T>(outcome: Result<Result<T, ServiceError>, PoolError>) -> ServiceError {
    match flatten(outcome) {
        Err(e) => e,
        Ok(_) => ServiceError::internal("the ingestion ended without publishing its tree"),
    }
}

/// How long wait=true and system/wait give the local index to apply recorded changes.
const INDEX_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Deserialize, ToSchema)]
pub(super) struct WaitBody {
    timeout: Option<f64>,
}

/// With no `timeout`, `system/wait` gives up after this long (504).
const WAIT_DEFAULT: Duration = Duration::from_secs(1800);

/// `POST /api/v1/system/wait`: returns when no ingestion of the caller's account is working on
/// any instance (parsing, summaries) and this instance's search index has applied every change
/// recorded here (other instances' changes reach it within `search.refresh_interval_ms`).
/// A timeout answers 504 `DEADLINE_EXCEEDED`.
async fn system_wait(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    OptionalJson(body): OptionalJson<WaitBody>,
) -> ApiResult {
    if body.timeout.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(ServiceError::validation(
            &["body", "timeout"],
            "Input should be a non-negative number",
            "greater_than_equal",
        ));
    }
    let limit = body
        .timeout
        .map(|t| Duration::from_secs_f64(t.min(86_400.0)))
        .unwrap_or(WAIT_DEFAULT);
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        let job = CountPendingIngestions {
            account: caller.account().to_string(),
            stale_after: Duration::from_secs(state.settings.resources.stale_after_secs),
        };
        let pending = flatten(state.pools.storage().run(job).await)?;
        seen = seen.max(pending);
        if pending == 0 {
            let left = limit.saturating_sub(started.elapsed());
            if !state
                .search
                .wait_fresh(caller.account(), left.min(INDEX_WAIT))
                .await
                && left <= INDEX_WAIT
            {
                return Err(ServiceError::new(
                    ErrorCode::DeadlineExceeded,
                    format!("the search index did not catch up within {limit:?}"),
                )
                .with_details(
                    json!({"operation": "system.wait", "timeout": limit.as_secs_f64(),
                                     "pending": 0}),
                ));
            }
            let status = |processed: usize| json!({"processed": processed, "requeue_count": 0, "error_count": 0, "errors": []});
            return Ok(ApiOk::new(json!({
                "Semantic": status(seen),
                "Embedding": status(0),
            })));
        }
        if started.elapsed() >= limit {
            return Err(ServiceError::new(
                ErrorCode::DeadlineExceeded,
                format!("{pending} ingestion(s) still running after {limit:?}"),
            )
            .with_details(
                json!({"operation": "system.wait", "timeout": limit.as_secs_f64(),
                                 "pending": pending}),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
