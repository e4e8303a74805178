//! The service-level error: what went wrong, in the vocabulary of the API contract (spec §1.2).
//!
//! Domain code (jobs on the storage actors, the AuthActor) returns `ServiceError`; it knows
//! nothing about HTTP. `crate::http::error` is the one place that maps it to a status code and
//! the JSON envelope.

use serde_json::{json, Map, Value};

/// The error codes of spec §1.2 that this server produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidUri,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    ResourceExhausted,
    PayloadTooLarge,
    /// A request body that stopped arriving (HTTP 408).
    RequestTimeout,
    MethodNotAllowed,
    /// A request body of a kind the method does not take (HTTP 415; WebDAV MKCOL).
    UnsupportedMediaType,
    /// A WebDAV write on a locked resource without its lock token (HTTP 423).
    Locked,
    /// More dead properties than a resource may hold (HTTP 507, WebDAV PROPPATCH).
    InsufficientStorage,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    /// The debug vector routes without an embedding model (0.5.2: `NO_VECTOR_DB`, 503).
    NoVectorDb,
    /// A `filter` the debug vector routes cannot read (0.5.2: `INVALID_FILTER`, 400).
    InvalidFilter,
    Internal,
}

impl ErrorCode {
    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::InvalidUri => "INVALID_URI",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            // Body-size rejections share the size/rate-limit code, with HTTP 413.
            ErrorCode::ResourceExhausted | ErrorCode::PayloadTooLarge => "RESOURCE_EXHAUSTED",
            ErrorCode::MethodNotAllowed | ErrorCode::UnsupportedMediaType => "INVALID_ARGUMENT",
            ErrorCode::Locked => "CONFLICT",
            ErrorCode::InsufficientStorage => "RESOURCE_EXHAUSTED",
            ErrorCode::DeadlineExceeded | ErrorCode::RequestTimeout => "DEADLINE_EXCEEDED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::NoVectorDb => "NO_VECTOR_DB",
            ErrorCode::InvalidFilter => "INVALID_FILTER",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A failure reported to the client: code, human message, optional `details` object.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds the client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u32>,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Attach a `details` object.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Add one key to the `details` object, creating it if needed.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        let mut map = match self.details.take() {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        map.insert(key.to_string(), value.into());
        self.details = Some(Value::Object(map));
        self
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// A validation failure in the pydantic-like shape clients expect (spec §1.3).
    pub fn validation(loc: &[&str], message: &str, kind: &str) -> Self {
        let loc_joined = loc.join(".");
        Self::invalid_argument(format!(
            "Invalid request parameters: {loc_joined}: {message}"
        ))
        .with_details(json!({
            "validation_errors": [{"loc": loc, "message": message, "type": kind}]
        }))
    }

    pub fn invalid_uri(uri: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            ErrorCode::InvalidUri,
            format!("Invalid URI: {uri} ({reason})"),
        )
        .with_details(json!({"uri": uri, "reason": reason}))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// 404 with the `{type, resource}` details the SDKs read.
    pub fn not_found(kind: &str, resource: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
            .with_details(json!({"type": kind, "resource": resource}))
    }

    pub fn already_exists(kind: &str, resource: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
            .with_details(json!({"resource": resource, "type": kind}))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }

    /// 503 naming the failing service; clients may retry after `retry_after` seconds.
    pub fn unavailable(service: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(
            ErrorCode::Unavailable,
            format!("Service unavailable: {service}: {reason}"),
        )
        .with_details(json!({"service": service, "reason": reason}))
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unimplemented, message)
    }

    /// 500 with the fixed public message; the cause goes to the log, not the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(ErrorCode::Internal, "Internal server error")
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

/// What a client is told about a storage failure: the service and the kind of failure, never
/// the backend's own message (it names paths, object keys, endpoints, buckets and retry
/// settings). The detail goes to the log here, once.
pub fn storage_failure(err: &crate::storage::StorageError) -> ServiceError {
    let retry = match err {
        crate::storage::StorageError::ReadOnly(_) => 5,
        _ => 1,
    };
    ServiceError::unavailable("storage", storage_failure_kind(err)).retry_after(retry)
}

/// The kind of a storage failure in words safe to show anyone (`/ready`, observers), with the
/// backend's detail logged.
pub fn storage_failure_kind(err: &crate::storage::StorageError) -> &'static str {
    use crate::storage::StorageError as E;
    match err {
        E::Unavailable(detail) => {
            tracing::warn!(%detail, "storage unavailable");
            "the storage backend is unavailable"
        }
        E::ReadOnly(detail) => {
            tracing::warn!(%detail, "storage refuses writes");
            "the storage backend is read-only or full"
        }
        other => {
            tracing::error!(detail = %other, "storage failure");
            "the storage backend failed"
        }
    }
}

impl From<crate::storage::StorageError> for ServiceError {
    /// A fallback for storage failures a domain rule did not translate itself.
    fn from(err: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as E;
        match err {
            // Storage paths name the disk layout; they go to the log, never to the client.
            E::NotFound(path) => {
                tracing::debug!(%path, "storage: not found");
                ServiceError::not_found("resource", "", "Resource not found")
            }
            E::AlreadyExists(path) => {
                tracing::debug!(%path, "storage: already exists");
                ServiceError::conflict("Resource already exists")
            }
            E::Conflict(_) | E::Busy(_) => {
                ServiceError::conflict("The resource was changed concurrently. Please retry.")
                    .detail("retryable", true)
            }
            // Stored data of the wrong shape (a directory where a file belongs, or the reverse)
            // is a state the client can see and fix, not a server fault.
            E::IsADirectory(path) | E::NotADirectory(path) => {
                tracing::warn!(%path, "storage: unexpected entry kind");
                ServiceError::conflict(
                    "Stored data is damaged: a directory is where a file belongs, or the reverse",
                )
                .detail("conflict_type", "damaged")
            }
            E::NotEmpty(path) => {
                tracing::debug!(%path, "storage: directory not empty");
                ServiceError::invalid_argument("directory not empty")
            }
            E::InvalidPath(reason) => {
                tracing::debug!(%reason, "storage: invalid path");
                ServiceError::invalid_argument(
                    "Invalid path: the storage backend cannot hold this name (too long or not \
                     allowed)",
                )
            }
            E::Unavailable(_) | E::ReadOnly(_) => storage_failure(&err),
            E::Io(e) => ServiceError::internal(e),
            E::TooLarge(reason) => ServiceError::new(ErrorCode::PayloadTooLarge, reason),
        }
    }
}
