//! Admission by request-body bytes in flight (`server.max_inflight_body_bytes`).
//!
//! Every body a handler buffers is memory held until the request is answered; `max_body_bytes`
//! bounds one body, this bounds all of them together. A request whose declared body does not
//! fit the remaining budget is answered 503 + `Retry-After` at once, before a byte of it is
//! read. A body without a declared length (chunked) is charged chunk by chunk as it arrives and
//! fails with the same 503 when the budget runs out; a compressed body is charged the decoded
//! limit up front, since that is what it may expand to. The charge is returned when the
//! handler has answered (or the client went away), so the budget tracks what is really held.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;

use crate::error::ServiceError;

use super::AppState;

/// The shared budget of one server.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    in_flight: AtomicUsize,
    /// Largest `in_flight` seen (for observers and the benchmark).
    peak: AtomicUsize,
    rejected: AtomicUsize,
}

/// Marker inside the `PayloadError::Io` of a chunked body that ran out of budget.
#[derive(Debug, thiserror::Error)]
#[error("the server's in-flight request body budget is exhausted")]
pub struct BudgetExhausted;

/// The 503 every refusal answers.
pub fn exhausted() -> ServiceError {
    ServiceError::unavailable(
        "server",
        "too many request bodies in flight (server.max_inflight_body_bytes); retry shortly",
    )
    .retry_after(1)
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        BodyBudget {
            limit,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        }
    }

    /// Take `n` bytes of the budget if they fit.
    pub fn try_reserve(&self, n: usize) -> bool {
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|next| *next <= self.limit) else {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.in_flight.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn release(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "limit_bytes": self.limit,
            "in_flight_bytes": self.in_flight.load(Ordering::Relaxed),
            "peak_bytes": self.peak.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
        })
    }
}

/// Bytes one request holds; all of them go back when it is dropped.
struct Charge {
    budget: Arc<BodyBudget>,
    bytes: AtomicUsize,
}

impl Charge {
    fn add(&self, n: usize) -> bool {
        if !self.budget.try_reserve(n) {
            return false;
        }
        self.bytes.fetch_add(n, Ordering::Relaxed);
        true
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes.load(Ordering::Relaxed));
    }
}

/// A chunked body, charged as it arrives.
struct Metered {
    inner: Payload,
    charge: Arc<Charge>,
    failed: bool,
}

impl Stream for Metered {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if this.charge.add(chunk.len()) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    this.failed = true;
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(
                        BudgetExhausted,
                    )))))
                }
            }
            other => other,
        }
    }
}

/// True for the payload error [`Metered`] raises.
pub fn is_exhausted(err: &PayloadError) -> bool {
    match err {
        PayloadError::Io(e) => e
            .get_ref()
            .is_some_and(|inner| inner.is::<BudgetExhausted>()),
        _ => false,
    }
}

fn declared_length(req: &ServiceRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

fn is_compressed(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
}

fn is_chunked(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The middleware.
pub async fn admit_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let max_body = state.settings.server.max_body_bytes;
    let declared = declared_length(&req);
    let charge = Arc::new(Charge {
        budget: state.body_budget.clone(),
        bytes: AtomicUsize::new(0),
    });
    if req.path() == crate::ingest::uploads::ROUTE {
        // Temp uploads stream into storage and hold at most one piece in memory, whatever
        // their length: that piece is what they are charged.
        let piece = crate::ingest::uploads::PART_BYTES;
        if !charge.add(declared.unwrap_or(piece).min(piece)) {
            return Ok(req.into_response(exhausted().error_response()));
        }
        let res = next.call(req).await;
        drop(charge);
        return res.map(ServiceResponse::map_into_boxed_body);
    }
    let up_front = match declared {
        // Over the per-body limit: the handler refuses it (413) without reading it.
        Some(n) if n > max_body => 0,
        Some(n) if is_compressed(&req) && n > 0 => max_body,
        Some(n) => n,
        None if is_chunked(&req) && is_compressed(&req) => max_body,
        None => 0,
    };
    if up_front > 0 && !charge.add(up_front) {
        let err = exhausted();
        tracing::debug!(bytes = up_front, "request body refused: budget exhausted");
        return Ok(req.into_response(err.error_response()));
    }
    if declared.is_none() && up_front == 0 && is_chunked(&req) {
        let inner = req.take_payload();
        let metered = Metered {
            inner,
            charge: charge.clone(),
            failed: false,
        };
        req.set_payload(Payload::Stream {
            payload: Box::pin(metered),
        });
    }
    let res = next.call(req).await;
    drop(charge);
    res.map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_within_the_limit_and_releases() {
        let b = Arc::new(BodyBudget::new(100));
        let c = Charge {
            budget: b.clone(),
            bytes: AtomicUsize::new(0),
        };
        assert!(c.add(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        b.release(40);
        drop(c);
        assert_eq!(b.in_flight.load(Ordering::Relaxed), 0);
        assert!(b.try_reserve(100));
        assert_eq!(b.status()["peak_bytes"], 100);
    }

    #[test]
    fn recognises_its_own_payload_error() {
        let e = PayloadError::Io(std::io::Error::other(BudgetExhausted));
        assert!(is_exhausted(&e));
        assert!(!is_exhausted(&PayloadError::Overflow));
    }
}
