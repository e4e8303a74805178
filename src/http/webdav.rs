//! WebDAV over the caller's resources (`/webdav/resources`, issue #24; 0.5.2's methods plus
//! RFC 4918 `Overwrite` on MOVE and byte-exact PUT). Written over actix-web rather than the
//! `dav-server` crate: see docs/ARCHITECTURE.md "WebDAV".
//!
//! Every path is mapped to `viking://resources/…` and goes through the same parse and
//! `uri::authorize` as the JSON API; every storage touch is a job on the storage pool. Errors
//! are the API's error envelope with the WebDAV headers; a 401 carries
//! `WWW-Authenticate: Basic` (clients such as litmus and GVFS send credentials only then).

use std::convert::Infallible;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::{StreamExt, TryStreamExt};
use percent_encoding::percent_decode_str;

use crate::error::{ErrorCode, ServiceError};
use crate::ingest::uploads;
use crate::jobs::resources::{RemoveUpload, WriteUploadPart};
use crate::jobs::webdav::{
    CopyNode, DeleteNode, FetchBody, FetchFile, LockAction, LockNode, MakeCollection, MoveNode,
    PatchProps, Patched, Propfind, PutFile, PutStaged, ReadPiece, UnlockNode, GET_PIECE_BYTES,
};
use crate::storage::fs::write;
use crate::storage::uri::{self, Access, VikingUri};
use crate::storage::webdav::conditions::{self, List, Subject};
use crate::storage::webdav::locks::{LockRequest, WriteCheck};
use crate::storage::webdav::xml::{self, PropChange};
use crate::storage::webdav::{is_hidden, multistatus, Outcome};

use super::admission::owner_of;
use super::auth::{Caller, DataAccess};
use super::envelope::slices;
use super::routes::{at, Endpoint, Routes};
use super::AppState;

/// Where the resources scope is mounted.
pub const PREFIX: &str = super::auth::WEBDAV_PREFIX;
/// The route of everything below it (actix pattern syntax).
pub const TAIL_ROUTE: &str = "/webdav/resources/{path:.*}";
/// Most children one PROPFIND lists (0.5.2's node limit).
pub const CHILD_LIMIT: usize = 10_000;
/// Largest PROPFIND body read (a property request is a few hundred bytes; beyond: 413).
pub const PROPFIND_MAX_BODY: usize = 64 * 1024;
/// The methods served, as `Allow` lists them.
pub const METHODS: &str =
    "OPTIONS, PROPFIND, PROPPATCH, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, LOCK, UNLOCK";
/// The DAV compliance classes (2: locking).
const DAV_CLASSES: &str = "1, 2";
/// Largest PROPPATCH body (dead properties are bounded per resource anyway; beyond: 413).
pub const PROPPATCH_MAX_BODY: usize = 256 * 1024;
/// Largest LOCK body (a lockinfo is a few hundred bytes; beyond: 413).
pub const LOCK_MAX_BODY: usize = 64 * 1024;

pub fn configure(routes: &mut Routes) {
    for path in [PREFIX, TAIL_ROUTE] {
        let ep = at(path)
            .method(Method::OPTIONS, options)
            .get(get)
            .method(Method::HEAD, head)
            .put(put)
            .delete(delete);
        let ep = extension(ep, "PROPFIND", propfind);
        let ep = extension(ep, "MKCOL", mkcol);
        let ep = extension(ep, "COPY", copy);
        let ep = extension(ep, "PROPPATCH", proppatch);
        let ep = extension(ep, "LOCK", lock);
        let ep = extension(ep, "UNLOCK", unlock);
        routes.add(extension(ep, "MOVE", move_));
    }
}

/// Add a handler for an extension method (a valid token, so `from_bytes` cannot fail).
fn extension<F, Args>(ep: Endpoint, name: &str, handler: F) -> Endpoint
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    match Method::from_bytes(name.as_bytes()) {
        Ok(m) => ep.method(m, handler),
        Err(_) => ep,
    }
}

/// A WebDAV error: the API envelope plus the WebDAV headers (and the Basic challenge on 401).
#[derive(Debug)]
pub struct DavError(ServiceError);

impl From<ServiceError> for DavError {
    fn from(e: ServiceError) -> Self {
        DavError(e)
    }
}

impl From<crate::jobs::PoolError> for DavError {
    fn from(e: crate::jobs::PoolError) -> Self {
        DavError(e.into())
    }
}

impl std::fmt::Display for DavError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for DavError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = self.0.error_response();
        dav_headers(res.headers_mut());
        if self.0.code == ErrorCode::Unauthenticated {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Longship WebDAV\", charset=\"UTF-8\""),
            );
        }
        res
    }
}

type DavResult = Result<HttpResponse, DavError>;

fn dav_headers(h: &mut header::HeaderMap) {
    h.insert(header::ALLOW, HeaderValue::from_static(METHODS));
    h.insert(
        header::HeaderName::from_static("dav"),
        HeaderValue::from_static(DAV_CLASSES),
    );
    h.insert(
        header::HeaderName::from_static("ms-author-via"),
        HeaderValue::from_static("DAV"),
    );
}

fn reply(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header((header::ALLOW, METHODS))
        .insert_header(("DAV", DAV_CLASSES))
        .insert_header(("MS-Author-Via", "DAV"));
    b
}

fn not_allowed(message: &str) -> DavError {
    DavError(ServiceError::new(ErrorCode::MethodNotAllowed, message))
}

fn hidden(shown: &str) -> DavError {
    DavError(ServiceError::not_found(
        "resource",
        shown,
        format!("Not found: {shown}"),
    ))
}

/// The decoded segments of a path below [`PREFIX`] (`""` = the resources root). Traversal,
/// separators inside a segment and drive prefixes are 400, as 0.5.2; hidden names 404.
fn segments_of(path: &str) -> Result<Vec<String>, DavError> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Err(DavError(ServiceError::invalid_argument(format!(
            "path must be under {PREFIX}"
        ))));
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(DavError(ServiceError::invalid_argument(format!(
            "path must be under {PREFIX}"
        ))));
    }
    uri::check_size(rest)?;
    let mut out = Vec::new();
    for raw in rest.split('/').filter(|s| !s.is_empty()) {
        let seg = percent_decode_str(raw).decode_utf8().map_err(|_| {
            DavError(ServiceError::invalid_argument(
                "path segments must be UTF-8 after percent-decoding",
            ))
        })?;
        let mut chars = seg.chars();
        let drive =
            matches!((chars.next(), chars.next()), (Some(c), Some(':')) if c.is_ascii_alphabetic());
        if seg == "." || seg == ".." || seg.contains(['/', '\\']) || drive {
            return Err(DavError(ServiceError::invalid_argument(format!(
                "unsafe WebDAV path segment: {raw}"
            ))));
        }
        if is_hidden(&seg) {
            return Err(hidden(&format!("{PREFIX}{rest}")));
        }
        out.push(seg.into_owned());
    }
    Ok(out)
}

/// The `viking://resources/…` URI of `segs` for `caller`, checked for `access` at the one
/// enforcement point the JSON API uses.
fn resource_uri(
    caller: &Caller<DataAccess>,
    segs: &[String],
    access: Access,
) -> Result<VikingUri, DavError> {
    let mut raw = String::from("viking://resources");
    for s in segs {
        raw.push('/');
        raw.push_str(s);
    }
    let uri = uri::parse(&raw, &caller.identity)?;
    uri::authorize(&uri, &caller.identity, access)?;
    Ok(uri)
}

fn target(
    req: &HttpRequest,
    caller: &Caller<DataAccess>,
    access: Access,
) -> Result<(Vec<String>, VikingUri), DavError> {
    let segs = segments_of(req.uri().path())?;
    let uri = resource_uri(caller, &segs, access)?;
    Ok((segs, uri))
}

/// OPTIONS: the methods and DAV class; no key needed (as 0.5.2).
async fn options() -> HttpResponse {
    reply(StatusCode::NO_CONTENT).finish()
}

/// The request body when it is small enough to read: at most `limit` bytes (413 beyond).
async fn small_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, DavError> {
    let too_large = || {
        DavError(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes"),
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut payload = payload.into_inner();
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            super::admission::refusal(&e).unwrap_or_else(|| {
                ServiceError::invalid_argument(format!("Could not read the request body: {e}"))
            })
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A PROPFIND body must be well-formed XML (RFC 4918 §9.1: 400 otherwise); its property
/// selection is answered with every live property, as 0.5.2 does.
fn check_xml(body: &[u8]) -> Result<(), DavError> {
    use quick_xml::events::Event;
    use quick_xml::name::ResolveResult;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let invalid = |why: String| {
        DavError(ServiceError::invalid_argument(format!(
            "PROPFIND body is not well-formed XML: {why}"
        )))
    };
    let mut reader = quick_xml::reader::NsReader::from_reader(body);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let (ns, event) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| invalid(e.to_string()))?;
        if let ResolveResult::Unknown(prefix) = ns {
            let prefix = String::from_utf8_lossy(&prefix).into_owned();
            return Err(invalid(format!("undeclared namespace prefix '{prefix}'")));
        }
        let element = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e.clone().into_owned()),
            _ => None,
        };
        if let Some(e) = element {
            // Namespaces in XML 1.0: a prefix may not be bound to the empty name.
            for attr in e.attributes() {
                let attr = attr.map_err(|err| invalid(err.to_string()))?;
                if attr.key.as_ref().starts_with(b"xmlns:") && attr.value.is_empty() {
                    return Err(invalid("a namespace prefix bound to \"\"".into()));
                }
            }
        }
        match event {
            Event::Start(_) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Event::Empty(_) if depth == 0 => roots += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            // Text outside the root element: not one document.
            Event::Text(t) if depth == 0 && !t.iter().all(u8::is_ascii_whitespace) => roots += 2,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if roots != 1 || depth != 0 {
        return Err(invalid("expected one root element".into()));
    }
    Ok(())
}

/// PROPFIND: depth 0 or 1 (anything else is answered as 1, at most [`CHILD_LIMIT`] children).
async fn propfind(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
    payload: web::Payload,
) -> DavResult {
    let caller = caller?;
    let (_, uri) = target(&req, &caller, Access::Read)?;
    let body = small_body(&req, payload, PROPFIND_MAX_BODY).await?;
    check_xml(&body)?;
    let kind = xml::propfind(&body)?;
    let depth = req
        .headers()
        .get("depth")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("1");
    let children = depth != "0";
    // The answer is memory held until sent: reserved before it is built, then its real size.
    let charge = state
        .body_budget
        .charge(owner_of(&caller.identity, state.mode));
    charge
        .add(if children { 64 * 1024 } else { 1024 })
        .map_err(|r| r.error())?;
    let job = Propfind {
        who: caller.identity.clone(),
        uri,
        href_base: PREFIX.to_string(),
        children,
        limit: CHILD_LIMIT,
        kind,
    };
    let Some(xml) = state.pools.storage().run(job).await?? else {
        return Err(hidden(req.uri().path()));
    };
    charge.set(xml.len());
    let bytes = Bytes::from(xml);
    let len = bytes.len() as u64;
    let chunks = futures_util::stream::iter(slices(bytes).map(move |c| {
        let _held = &charge;
        Ok::<_, Infallible>(c)
    }));
    Ok(reply(StatusCode::MULTI_STATUS)
        .content_type("application/xml; charset=utf-8")
        .body(SizedStream::new(len, chunks)))
}

async fn get(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    fetch(state, caller?, req, true).await
}

async fn head(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    fetch(state, caller?, req, false).await
}

/// GET/HEAD of a file (a collection is 405, as 0.5.2).
async fn fetch(
    state: web::Data<AppState>,
    caller: Caller<DataAccess>,
    req: HttpRequest,
    with_body: bool,
) -> DavResult {
    let (segs, uri) = target(&req, &caller, Access::Read)?;
    if segs.is_empty() {
        return Err(not_allowed("GET is only supported for files"));
    }
    let job = FetchFile {
        uri: uri.clone(),
        with_body,
    };
    let Some((meta, body)) = state.pools.storage().run(job).await?? else {
        return Err(hidden(req.uri().path()));
    };
    if meta.is_dir() {
        return Err(not_allowed("GET is only supported for files"));
    }
    let mut b = reply(StatusCode::OK);
    b.content_type(multistatus::content_type(uri.name()))
        .insert_header((header::LAST_MODIFIED, multistatus::http_date(meta.modified)));
    if let Some(tag) = multistatus::etag(&meta) {
        b.insert_header((header::ETAG, tag));
    }
    match body {
        FetchBody::Whole(bytes) => {
            let bytes = Bytes::from(bytes);
            let len = bytes.len() as u64;
            let chunks = futures_util::stream::iter(slices(bytes).map(Ok::<_, Infallible>));
            Ok(b.body(SizedStream::new(len, chunks)))
        }
        FetchBody::Pieces => Ok(b.body(SizedStream::new(
            meta.size,
            file_pieces(state, uri, meta.size, meta.version),
        ))),
        // HEAD: the length of the body a GET would send (actix sends no body for HEAD).
        FetchBody::None => Ok(b.body(SizedStream::new(
            meta.size,
            futures_util::stream::empty::<Result<Bytes, Infallible>>(),
        ))),
    }
}

/// The body of a large GET: one `ReadPiece` job per piece, run only when the client has
/// taken the previous one (the response is polled for more), so memory holds one piece. A
/// piece that fails (the file was replaced or removed meanwhile, or storage failed) ends the
/// body short of its Content-Length: the client sees a cut-off transfer, never mixed bytes.
fn file_pieces(
    state: web::Data<AppState>,
    uri: VikingUri,
    size: u64,
    version: Option<crate::storage::Version>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0u64, move |offset| {
        let (state, uri, version) = (state.clone(), uri.clone(), version.clone());
        async move {
            if offset >= size {
                return None;
            }
            let len = GET_PIECE_BYTES.min(size - offset);
            let job = ReadPiece {
                uri,
                offset,
                len,
                version,
            };
            let failed = |e: String| {
                tracing::warn!(error = %e, offset, "webdav GET ended early");
                Some((Err(std::io::Error::other(e)), size))
            };
            match state.pools.storage().run(job).await {
                Ok(Ok(piece)) if piece.len() as u64 == len => {
                    let piece = Bytes::from(piece);
                    let chunks =
                        futures_util::stream::iter(slices(piece).map(Ok::<_, std::io::Error>));
                    Some((Ok(chunks), offset + len))
                }
                Ok(Ok(piece)) => failed(format!("short read: {} of {len} bytes", piece.len())),
                Ok(Err(e)) => failed(e.to_string()),
                Err(e) => failed(e.to_string()),
            }
        }
    })
    .try_flatten()
}

/// PUT: any bytes, stored byte-exact by one atomic write. A body within
/// `server.max_body_bytes` is read whole (charged to the in-flight body budget as it
/// arrives); a larger one (up to `webdav.max_put_bytes`) or one without a length is streamed
/// into temp-upload pieces of 8 MiB, each written as it fills, then into the target by one
/// streamed atomic write (`PutStaged`), so memory holds one piece per request.
async fn put(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
    payload: web::Payload,
) -> DavResult {
    let caller = caller?;
    let (segs, uri) = target(&req, &caller, Access::Write)?;
    if segs.is_empty() {
        return Err(not_allowed("PUT requires a file path"));
    }
    write::check_target(&uri)?;
    let check = write_check(&req, &caller, &uri)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let compressed = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"));
    let max_body = state.settings.server.max_body_bytes;
    if super::admission::streams_put(
        req.method(),
        req.uri().path(),
        declared,
        max_body,
        compressed,
    ) {
        return put_streamed(&state, &caller, &req, uri, check, declared, payload).await;
    }
    let data = super::content::collect_body(&state, &req, payload).await?;
    let job = PutFile {
        uri,
        data,
        check,
        quota: state.settings.quota.clone(),
        recorder: state.search.recorder.clone(),
    };
    Ok(created_or_replaced(
        &req,
        state.pools.storage().run(job).await??,
    ))
}

fn created_or_replaced(req: &HttpRequest, outcome: Outcome) -> HttpResponse {
    match outcome {
        Outcome::Replaced => reply(StatusCode::NO_CONTENT).finish(),
        Outcome::Created => reply(StatusCode::CREATED)
            .insert_header((header::LOCATION, req.uri().path().to_string()))
            .finish(),
    }
}

/// The streamed PUT (see [`put`]).
async fn put_streamed(
    state: &AppState,
    caller: &Caller<DataAccess>,
    req: &HttpRequest,
    uri: VikingUri,
    check: WriteCheck,
    declared: Option<usize>,
    payload: web::Payload,
) -> DavResult {
    let max = state.settings.webdav.max_put_bytes;
    let too_large = || {
        DavError(ServiceError::new(
            ErrorCode::PayloadTooLarge,
            format!("PUT body larger than webdav.max_put_bytes ({max} bytes)"),
        ))
    };
    if declared.is_some_and(|n| n as u64 > max) {
        return Err(too_large());
    }
    let account = caller.account().to_string();
    let id = uploads::new_id("");
    let mut payload = payload.into_inner();
    let mut buf = web::BytesMut::new();
    let mut size = 0u64;
    let mut parts = 0u32;
    let streamed: Result<(), DavError> = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                super::admission::refusal(&e).unwrap_or_else(|| {
                    ServiceError::invalid_argument(format!("Could not read the request body: {e}"))
                })
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
            while buf.len() >= uploads::PART_BYTES {
                let piece = buf.split_to(uploads::PART_BYTES).freeze();
                write_piece(state, &account, &id, parts, piece).await?;
                parts += 1;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        remove_staged(state, &account, &id, parts).await;
        return Err(e);
    }
    if parts == 0 {
        // It fitted in one piece after all: one write, no staging.
        let job = PutFile {
            uri,
            data: buf.freeze(),
            check,
            quota: state.settings.quota.clone(),
            recorder: state.search.recorder.clone(),
        };
        return Ok(created_or_replaced(
            req,
            state.pools.storage().run(job).await??,
        ));
    }
    if !buf.is_empty() {
        if let Err(e) = write_piece(state, &account, &id, parts, buf.freeze()).await {
            remove_staged(state, &account, &id, parts).await;
            return Err(e);
        }
        parts += 1;
    }
    let job = PutStaged {
        uri,
        upload_id: id,
        parts,
        size,
        check,
        quota: state.settings.quota.clone(),
        recorder: state.search.recorder.clone(),
    };
    Ok(created_or_replaced(
        req,
        state.pools.storage().run(job).await??,
    ))
}

async fn write_piece(
    state: &AppState,
    account: &str,
    id: &str,
    n: u32,
    data: Bytes,
) -> Result<(), DavError> {
    let job = WriteUploadPart {
        account: account.to_string(),
        id: id.to_string(),
        n,
        data,
        quota: state.settings.quota.clone(),
    };
    Ok(state.pools.storage().run(job).await??)
}

/// Drop the staging of a PUT that failed (a leftover is removed by the upload sweep).
async fn remove_staged(state: &AppState, account: &str, id: &str, parts: u32) {
    if parts == 0 {
        return;
    }
    let job = RemoveUpload {
        account: account.to_string(),
        id: id.to_string(),
    };
    let _ = state.pools.storage().run(job).await;
}

/// DELETE of a file or a whole collection (the resources root: 405).
async fn delete(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    let caller = caller?;
    let segs = segments_of(req.uri().path())?;
    if segs.is_empty() {
        return Err(not_allowed("Deleting the resources root is not supported"));
    }
    let uri = resource_uri(&caller, &segs, Access::Delete)?;
    let job = DeleteNode {
        check: write_check(&req, &caller, &uri)?,
        uri,
        recorder: state.search.recorder.clone(),
    };
    match state.pools.storage().run(job).await?? {
        Some(()) => Ok(reply(StatusCode::NO_CONTENT).finish()),
        None => Err(hidden(req.uri().path())),
    }
}

/// True when the request carries a body.
fn has_body(req: &HttpRequest) -> bool {
    let h = req.headers();
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    declared.is_some_and(|n| n > 0)
        || (declared.is_none()
            && h.get(header::TRANSFER_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked")))
}

/// MKCOL: one new collection; a body is 415 (RFC 4918 §9.3: none is defined).
async fn mkcol(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    let caller = caller?;
    let segs = segments_of(req.uri().path())?;
    if segs.is_empty() {
        return Err(not_allowed("MKCOL requires a collection path"));
    }
    if has_body(&req) {
        return Err(DavError(ServiceError::new(
            ErrorCode::UnsupportedMediaType,
            "MKCOL takes no request body",
        )));
    }
    let uri = resource_uri(&caller, &segs, Access::Write)?;
    let job = MakeCollection {
        check: write_check(&req, &caller, &uri)?,
        uri,
        recorder: state.search.recorder.clone(),
    };
    state.pools.storage().run(job).await??;
    Ok(reply(StatusCode::CREATED).finish())
}

/// The request's own authority (`Host`), lower-cased.
fn own_host(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| h.trim().to_ascii_lowercase())
}

/// The path of a `Destination` header: an absolute URL must name this server; the path must
/// stay under [`PREFIX`] (403 otherwise; `..` is resolved first, so it cannot climb out).
fn destination_path(req: &HttpRequest) -> Result<String, DavError> {
    let bad = |m: &str| DavError(ServiceError::invalid_argument(m.to_string()));
    let raw = req
        .headers()
        .get("destination")
        .ok_or_else(|| bad("Destination header is required"))?
        .to_str()
        .map_err(|_| bad("Destination header must be ASCII (percent-encode the path)"))?
        .trim();
    uri::check_size(raw)?;
    let base = url::Url::parse("http://destination.invalid/").map_err(|e| bad(&e.to_string()))?;
    let parsed = match url::Url::parse(raw) {
        Ok(u) => {
            let authority = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => String::new(),
            };
            if !matches!(u.scheme(), "http" | "https")
                || own_host(req).as_deref() != Some(authority.to_ascii_lowercase().as_str())
            {
                return Err(DavError(ServiceError::permission_denied(
                    "Destination must be on this server",
                )));
            }
            u
        }
        Err(url::ParseError::RelativeUrlWithoutBase) if raw.starts_with('/') => base
            .join(raw)
            .map_err(|_| bad("Destination is not a valid URL"))?,
        Err(_) => return Err(bad("Destination is not a valid URL")),
    };
    let path = parsed.path().to_string();
    if !(path == PREFIX || path.starts_with(&format!("{PREFIX}/"))) {
        return Err(DavError(ServiceError::permission_denied(format!(
            "Destination must stay under {PREFIX}"
        ))));
    }
    Ok(path)
}

/// The `Overwrite` header: T (default) or F.
fn overwrite_of(req: &HttpRequest) -> Result<bool, DavError> {
    match req
        .headers()
        .get("overwrite")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_uppercase())
        .as_deref()
    {
        None | Some("T") => Ok(true),
        Some("F") => Ok(false),
        Some(_) => Err(DavError(ServiceError::invalid_argument(
            "Overwrite must be T or F",
        ))),
    }
}

/// Source and target of a MOVE or COPY, checked (`source_access` on the source, write on the
/// target; they must differ and not contain each other: 403).
fn transfer_ends(
    req: &HttpRequest,
    caller: &Caller<DataAccess>,
    verb: &str,
    source_access: Access,
) -> Result<(VikingUri, VikingUri), DavError> {
    let from_segs = segments_of(req.uri().path())?;
    if from_segs.is_empty() {
        return Err(not_allowed(&format!(
            "{verb} of the resources root is not supported"
        )));
    }
    let to_segs = segments_of(&destination_path(req)?)?;
    if to_segs.is_empty() {
        return Err(DavError(ServiceError::permission_denied(
            "cannot replace the resources root",
        )));
    }
    let from = resource_uri(caller, &from_segs, source_access)?;
    let to = resource_uri(caller, &to_segs, Access::Write)?;
    if from == to || to.starts_with(&from) || from.starts_with(&to) {
        return Err(DavError(ServiceError::permission_denied(format!(
            "{verb} source and destination must differ and not contain each other"
        ))));
    }
    Ok((from, to))
}

fn transferred(outcome: Outcome) -> HttpResponse {
    match outcome {
        Outcome::Created => reply(StatusCode::CREATED).finish(),
        Outcome::Replaced => reply(StatusCode::NO_CONTENT).finish(),
    }
}

/// MOVE (RFC 4918 §9.9): `Overwrite: T` (default) replaces an existing target, `F` answers
/// 412; 201 for a new target, 204 for a replaced one.
async fn move_(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    let caller = caller?;
    let overwrite = overwrite_of(&req)?;
    let (from, to) = transfer_ends(&req, &caller, "MOVE", Access::Delete)?;
    let job = MoveNode {
        check: write_check(&req, &caller, &from)?,
        from,
        to,
        overwrite,
        recorder: state.search.recorder.clone(),
    };
    Ok(transferred(state.pools.storage().run(job).await??))
}

/// COPY (RFC 4918 §9.8): `Overwrite` as MOVE; `Depth: 0` copies a collection without its
/// members, anything else (infinity) the whole tree.
async fn copy(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    let caller = caller?;
    let overwrite = overwrite_of(&req)?;
    let deep = req
        .headers()
        .get("depth")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("0");
    let (from, to) = transfer_ends(&req, &caller, "COPY", Access::Read)?;
    let job = CopyNode {
        check: write_check(&req, &caller, &from)?,
        from,
        to,
        overwrite,
        deep,
        recorder: state.search.recorder.clone(),
    };
    Ok(transferred(state.pools.storage().run(job).await??))
}

/// The `If` header's resource tag as a node of the caller's view (`None`: elsewhere, or not
/// readable — its lists are then false).
fn tagged_node(
    req: &HttpRequest,
    caller: &Caller<DataAccess>,
    tag: &str,
) -> Option<crate::storage::StorePath> {
    let path = match url::Url::parse(tag) {
        Ok(u) => {
            let authority = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return None,
            };
            if own_host(req).as_deref() != Some(authority.to_ascii_lowercase().as_str()) {
                return None;
            }
            u.path().to_string()
        }
        Err(_) if tag.starts_with('/') => tag.to_string(),
        Err(_) => return None,
    };
    let segs = segments_of(path.trim_end_matches('/')).ok()?;
    resource_uri(caller, &segs, Access::Read)
        .ok()
        .map(|u| u.store_path().clone())
}

/// The lock and `If` checks of a write to `uri` (a malformed `If` header: 400 here, before
/// any work).
fn write_check(
    req: &HttpRequest,
    caller: &Caller<DataAccess>,
    uri: &VikingUri,
) -> Result<WriteCheck, DavError> {
    let header = match req.headers().get("if") {
        None => None,
        Some(v) => {
            let raw = v.to_str().map_err(|_| {
                DavError(ServiceError::invalid_argument(
                    "malformed If header: not ASCII",
                ))
            })?;
            let lists = conditions::parse(raw)?;
            Some(
                lists
                    .into_iter()
                    .map(|l| List {
                        subject: match l.subject {
                            Subject::Request => Subject::Request,
                            Subject::Tagged(t) => Subject::Tagged(tagged_node(req, caller, &t)),
                        },
                        conditions: l.conditions,
                    })
                    .collect(),
            )
        }
    };
    Ok(WriteCheck {
        user: caller.identity.user.clone(),
        request: uri.store_path().clone(),
        header,
    })
}

/// The granted timeout: the first `Timeout` value understood (`Second-N` or `Infinite`),
/// capped by `webdav.max_lock_timeout_secs`, which is also the default.
fn timeout_of(req: &HttpRequest, max: u64) -> u64 {
    let Some(raw) = req.headers().get("timeout").and_then(|v| v.to_str().ok()) else {
        return max;
    };
    for part in raw.split(',').map(str::trim) {
        if part.eq_ignore_ascii_case("infinite") {
            return max;
        }
        let secs = part
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("second-"))
            .and_then(|_| part[7..].parse::<u64>().ok());
        if let Some(n) = secs {
            return n.clamp(1, max);
        }
    }
    max
}

/// LOCK (RFC 4918 §9.10): a new exclusive or shared write lock (depth 0 or infinity; an
/// unmapped URL gets an empty resource, 201), or with no body a refresh of the lock named in
/// `If`. Needs write access.
async fn lock(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
    payload: web::Payload,
) -> DavResult {
    let caller = caller?;
    let (segs, uri) = target(&req, &caller, Access::Write)?;
    if segs.is_empty() {
        return Err(not_allowed("the resources root cannot be locked"));
    }
    let check = write_check(&req, &caller, &uri)?;
    let body = small_body(&req, payload, LOCK_MAX_BODY).await?;
    let info = xml::lockinfo(&body)?;
    let timeout_secs = timeout_of(&req, state.settings.webdav.max_lock_timeout_secs);
    let action = match info {
        Some(info) => {
            let deep = match req
                .headers()
                .get("depth")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("infinity") => true,
                Some("0") => false,
                Some(_) => {
                    return Err(DavError(ServiceError::invalid_argument(
                        "LOCK Depth must be 0 or infinity",
                    )))
                }
            };
            LockAction::Take(LockRequest {
                user: caller.identity.user.clone(),
                shared: info.shared,
                deep,
                timeout_secs,
                owner: info.owner,
            })
        }
        None => {
            let tokens: Vec<String> = check
                .header
                .as_ref()
                .map(|h| {
                    conditions::submitted_tokens(h)
                        .into_iter()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if tokens.is_empty() {
                return Err(DavError(ServiceError::invalid_argument(
                    "a LOCK without a body refreshes a lock: name its token in an If header",
                )));
            }
            LockAction::Refresh {
                tokens,
                timeout_secs,
            }
        }
    };
    let fresh = matches!(action, LockAction::Take(_));
    let job = LockNode {
        uri,
        action,
        check,
        quota: state.settings.quota.clone(),
        recorder: state.search.recorder.clone(),
    };
    let (created, root, granted) = state.pools.storage().run(job).await??;
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:prop xmlns:D=\"DAV:\"><D:lockdiscovery>",
    );
    multistatus::activelock(&mut xml, PREFIX, &root, &granted);
    xml.push_str("</D:lockdiscovery></D:prop>\n");
    let mut b = reply(if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    });
    if fresh {
        b.insert_header(("Lock-Token", format!("<{}>", granted.token)));
    }
    Ok(b.content_type("application/xml; charset=utf-8").body(xml))
}

/// UNLOCK (RFC 4918 §9.11): the `Lock-Token` header names the caller's lock.
async fn unlock(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
) -> DavResult {
    let caller = caller?;
    let (_, uri) = target(&req, &caller, Access::Write)?;
    let token = req
        .headers()
        .get("lock-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|v| v.strip_prefix('<'))
        .and_then(|v| v.strip_suffix('>'))
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            DavError(ServiceError::invalid_argument(
                "UNLOCK needs a Lock-Token header: <opaquelocktoken:…>",
            ))
        })?;
    let job = UnlockNode {
        uri,
        token: token.to_string(),
        user: caller.identity.user.clone(),
    };
    state.pools.storage().run(job).await??;
    Ok(reply(StatusCode::NO_CONTENT).finish())
}

/// PROPPATCH (RFC 4918 §9.2): dead properties set and removed in document order, all or
/// nothing; a live property in it is 403 (the others 424) and nothing changes.
async fn proppatch(
    state: web::Data<AppState>,
    caller: Result<Caller<DataAccess>, ServiceError>,
    req: HttpRequest,
    payload: web::Payload,
) -> DavResult {
    let caller = caller?;
    let (segs, uri) = target(&req, &caller, Access::Write)?;
    let check = write_check(&req, &caller, &uri)?;
    let body = small_body(&req, payload, PROPPATCH_MAX_BODY).await?;
    let changes = xml::proppatch(&body)?;
    if segs.is_empty() {
        return Err(DavError(ServiceError::permission_denied(
            "the resources root carries no properties",
        )));
    }
    let names: Vec<xml::PropName> = changes
        .iter()
        .map(|c| match c {
            PropChange::Set(n, _) | PropChange::Remove(n) => n.clone(),
        })
        .collect();
    let job = PatchProps {
        uri,
        changes,
        check,
    };
    let outcome = state.pools.storage().run(job).await??;
    let Some(outcome) = outcome else {
        return Err(hidden(req.uri().path()));
    };
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>",
    );
    out.push_str(&quick_xml::escape::escape(req.uri().path()));
    out.push_str("</D:href>");
    let mut group = |names: &[&xml::PropName], status: &str| {
        if names.is_empty() {
            return;
        }
        out.push_str("<D:propstat><D:prop>");
        for (ns, name) in names {
            multistatus::prop_element(&mut out, ns, name, None);
        }
        out.push_str("</D:prop><D:status>HTTP/1.1 ");
        out.push_str(status);
        out.push_str("</D:status></D:propstat>");
    };
    match outcome {
        Patched::Applied => group(&names.iter().collect::<Vec<_>>(), "200 OK"),
        Patched::Protected(bad) => {
            let (refused, rest): (Vec<&xml::PropName>, Vec<&xml::PropName>) =
                names.iter().partition(|n| bad.contains(n));
            group(&refused, "403 Forbidden");
            group(&rest, "424 Failed Dependency");
        }
    }
    out.push_str("</D:response></D:multistatus>\n");
    Ok(reply(StatusCode::MULTI_STATUS)
        .content_type("application/xml; charset=utf-8")
        .body(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_refuse_traversal_and_hidden_names() {
        assert!(segments_of("/webdav/resources").unwrap().is_empty());
        assert!(segments_of("/webdav/resources/").unwrap().is_empty());
        assert_eq!(
            segments_of("/webdav/resources/a%20b/c%C3%A9.md").unwrap(),
            vec!["a b".to_string(), "cé.md".to_string()]
        );
        for bad in [
            "/webdav/resources/..",
            "/webdav/resources/a/%2e%2e/b",
            "/webdav/resources/a%2Fb",
            "/webdav/resources/a%5Cb",
            "/webdav/resources/C:",
            "/webdav/resources/%FF",
            "/webdav/resourcesx",
        ] {
            assert_eq!(
                segments_of(bad).unwrap_err().0.code,
                ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
        for gone in [
            "/webdav/resources/d/.overview.md",
            "/webdav/resources/.longship-tags",
        ] {
            assert_eq!(segments_of(gone).unwrap_err().0.code, ErrorCode::NotFound);
        }
    }

    #[test]
    fn propfind_bodies_must_be_one_well_formed_element() {
        assert!(check_xml(b"").is_ok());
        assert!(check_xml(
            br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>"#
        )
        .is_ok());
        for bad in [
            &b"<a>"[..],
            b"<a></b>",
            b"<a/><b/>",
            b"junk",
            b"<D:propfind/>",
            br#"<propfind xmlns="DAV:"><prop><bar:foo xmlns:bar=""/></prop></propfind>"#,
        ] {
            assert!(check_xml(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
