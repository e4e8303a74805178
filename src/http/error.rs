//! The one place where service errors become HTTP responses (spec §1.2 table).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::error::{ErrorCode, ServiceError};

use super::envelope::elapsed_secs;

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::InvalidUri | ErrorCode::InvalidFilter => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Locked => StatusCode::LOCKED,
        ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Unavailable | ErrorCode::NoVectorDb => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error envelope body.
pub fn error_body(err: &ServiceError) -> Value {
    let mut error = Map::new();
    error.insert("code".into(), err.code.as_str().into());
    error.insert("message".into(), err.message.clone().into());
    if let Some(d) = &err.details {
        error.insert("details".into(), d.clone());
    }
    json!({"status": "error", "error": error, "time": elapsed_secs()})
}

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        status_of(self.code)
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after {
            builder.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        let mut res = builder.json(error_body(self));
        // For the audit log (the middleware records the outcome's code, not the message).
        res.extensions_mut()
            .insert(ErrorCodeSent(self.code.as_str()));
        res
    }
}

/// The error code a response carries, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeSent(pub &'static str);
