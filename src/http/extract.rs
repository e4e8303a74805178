//! Body and query extractors whose failures use the API envelope (spec §1.3).

use std::future::Future;
use std::pin::Pin;

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, ServiceError};

pub use crate::decode::{
    flexible_bool, flexible_bool_opt, int_in_range, parse_json, parse_query, validation_details,
};
use crate::jobs::content::DecodeJson;

use super::AppState;

/// A JSON body that must be present.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be absent or empty (then `T::default()`).
pub struct OptionalJson<T>(pub T);

/// The raw body, within the configured size limit.
pub struct RawBody(pub Bytes);

/// Query parameters.
pub struct ApiQuery<T>(pub T);

type LocalFuture<T> = Pin<Box<dyn Future<Output = Result<T, ServiceError>>>>;

fn body_bytes(req: &HttpRequest, payload: &mut Payload) -> LocalFuture<Bytes> {
    let fut = Bytes::from_request(req, payload);
    Box::pin(async move { fut.await.map_err(payload_error) })
}

fn payload_error(err: actix_web::Error) -> ServiceError {
    let payload = err.as_error::<PayloadError>();
    if let Some(refused) = payload.and_then(super::admission::refusal) {
        return refused;
    }
    match payload {
        Some(PayloadError::Overflow) => ServiceError::new(
            ErrorCode::PayloadTooLarge,
            "Request body exceeds server.max_body_bytes",
        ),
        Some(PayloadError::Incomplete(Some(e))) => {
            ServiceError::invalid_argument(format!("Could not decode the request body: {e}"))
        }
        Some(PayloadError::Incomplete(None)) => ServiceError::invalid_argument(
            "The request body ended before its declared length (Content-Length or chunked \
             encoding) was complete",
        ),
        _ => ServiceError::invalid_argument(format!("Could not read the request body: {err}")),
    }
}

impl<T: DeserializeOwned + Send + 'static> FromRequest for ApiJson<T> {
    type Error = ServiceError;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = body_bytes(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            decode_required_json(state.as_ref().map(|s| s.get_ref()), bytes.await?)
                .await
                .map(ApiJson)
        })
    }
}

impl<T: DeserializeOwned + Default + Send + 'static> FromRequest for OptionalJson<T> {
    type Error = ServiceError;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = body_bytes(req, payload);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let bytes = bytes.await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(T::default()));
            }
            // `null` is an empty body too.
            if bytes.trim_ascii() == b"null" {
                return Ok(OptionalJson(T::default()));
            }
            decode_json(state.as_ref().map(|s| s.get_ref()), bytes)
                .await
                .map(OptionalJson)
        })
    }
}

/// Bodies above this size are decoded on the storage pool: serde on a 32 MiB JSON body takes
/// long enough to stall every connection of the HTTP worker that would run it.
pub const INLINE_DECODE_LIMIT: usize = 256 * 1024;

/// Decode a JSON body: inline when small, on the storage pool when large (or inline when no
/// server state is at hand, as in unit tests).
pub async fn decode_json<T: DeserializeOwned + Send + 'static>(
    state: Option<&AppState>,
    body: Bytes,
) -> Result<T, ServiceError> {
    match state {
        Some(state) if body.len() > INLINE_DECODE_LIMIT => {
            state.pools.storage().run(DecodeJson::new(body)).await?
        }
        _ => parse_json(&body),
    }
}

/// [`decode_json`] of a body that must be present: empty or whitespace-only is `Field required`.
pub async fn decode_required_json<T: DeserializeOwned + Send + 'static>(
    state: Option<&AppState>,
    body: Bytes,
) -> Result<T, ServiceError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::validation(
            &["body"],
            "Field required",
            "missing",
        ));
    }
    decode_json(state, body).await
}

impl FromRequest for RawBody {
    type Error = ServiceError;
    type Future = LocalFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = body_bytes(req, payload);
        Box::pin(async move { bytes.await.map(RawBody) })
    }
}

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ServiceError;
    type Future = std::future::Ready<Result<Self, ServiceError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(ApiQuery))
    }
}
