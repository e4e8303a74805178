//! Per-request plumbing: the request's scope (id, start time for the envelope's `time`, lane,
//! audit note: `telemetry::request`), the access log line, metrics, and envelopes for framework answers (405) that would otherwise have an empty body.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::HttpResponse;

use crate::error::{ErrorCode, ServiceError};
use crate::telemetry::access;
use crate::telemetry::request::{self, RequestId, RequestScope};

use super::error::error_body;
use super::route_label::RouteLabel;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PROCESS_TIME: HeaderName = HeaderName::from_static("x-process-time");

/// Echo a well-formed, single `X-Request-ID`, else mint a UUID4 (spec §1.1) from the thread's
/// userspace RNG (a system call per request for OS randomness costs more than the request).
fn pick_request_id(req: &ServiceRequest) -> RequestId {
    let mut values = req.headers().get_all(&REQUEST_ID);
    if let (Some(v), None) = (values.next(), values.next()) {
        if let Ok(s) = v.to_str() {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:/-".contains(c);
            if (1..=128).contains(&s.len()) && s.chars().all(ok_char) {
                return RequestId::from(s);
            }
        }
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    RequestId::from(&*id)
}

pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let start = Instant::now();
    let request_id = pick_request_id(&req);
    let scope = RequestScope::new(request_id.clone(), start, super::audit::is_mutation(&req));
    // Jobs submitted while serving run in the caller's lane and log with its request id.
    let (outcome, scope) = request::run(scope, async {
        let res = next.call(req).await?;
        Ok::<_, actix_web::Error>(envelope_framework_errors(res.map_into_boxed_body()))
    })
    .await;
    let mut res = outcome?;
    let elapsed = start.elapsed();
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, v);
    }
    let mut seconds = [0u8; 32];
    if let Ok(v) = HeaderValue::from_bytes(access::seconds_with_micros_into(&mut seconds, elapsed))
    {
        headers.insert(PROCESS_TIME, v);
    }
    if let Some(scope) = scope {
        super::audit::finish(&scope.into_note(), &res, &request_id, elapsed);
    }
    let status = res.status().as_u16();
    // Method and path are read from the request the response carries (no copies kept).
    let req = res.request();
    if let Some(state) = req.app_data::<actix_web::web::Data<super::AppState>>() {
        let method = req.method().as_str();
        let seconds = elapsed.as_secs_f64();
        match req.app_data::<RouteLabel>() {
            Some(label) => state.metrics.observe_route(label, method, status, seconds),
            None => {
                let route = req.match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                state.metrics.observe(method, route, status, seconds);
            }
        }
    }
    let line = access::AccessLine {
        request_id: &request_id,
        method: req.method().as_str(),
        path: req.path(),
        status,
        elapsed,
    };
    if !access::log(&line) {
        tracing::info!(
            target: "longship::access",
            request_id = %request_id,
            method = %req.method(),
            path = %req.path(),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    Ok(res)
}

/// Give a routing-level 405 the error envelope.
fn envelope_framework_errors(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let err = ServiceError::new(ErrorCode::MethodNotAllowed, "Method Not Allowed");
    res.map_body(|_, _| BoxBody::new(()))
        .into_response(HttpResponse::MethodNotAllowed().json(error_body(&err)))
}
