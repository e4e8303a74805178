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
use crate::jobs::content::{DownloadFile, ReadFile, ReadSidecar, WriteFile};
use crate::storage::fs::attrs;
use crate::storage::fs::read::Sidecar;
use crate::storage::fs::write::{self, WriteMode};
use crate::storage::tags::TagMode;
use crate::storage::uri::{self, Access};

use super::auth::{resolve_uri, Caller, DataAccess};
use super::envelope::{encoded_ok, slices, ApiOk, ApiResult};
use super::extract::{decode_required_json, flexible_bool, int_in_range, ApiQuery};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/content/read").get(read))
        .add(at("/api/v1/content/abstract").get(abstract_))
        .add(at("/api/v1/content/overview").get(overview))
        .add(at("/api/v1/content/download").get(download))
        .add(at("/api/v1/content/write").post(write));
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
async fn collect_body(
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
    let job = WriteFile {
        uri: target,
        content: body.content,
        mode,
        quota: state.settings.quota.clone(),
        tags,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}
