//! Admission by bytes held in memory for requests: request bodies as they are buffered, and
//! find answers while they are built and sent (`server.max_inflight_body_bytes`).
//!
//! What is charged is what is really held: a body is charged chunk by chunk as the handler
//! reads it (a temp upload at most one storage piece, which is all it ever holds), so a
//! connection that announced a large body and sends nothing holds nothing. A compressed body
//! is charged its decoded limit up front, since that is what it may expand to.
//!
//! Three rules keep one tenant from shutting out the others:
//! - each account holds at most `server.max_inflight_body_bytes_per_account` (429 beyond it);
//!   requests whose key does not resolve share one such bucket;
//! - bytes past the first `server.small_body_bytes` of a body may not use the last
//!   `server.small_body_reserve_bytes` of the budget: a lane that only the heads of bodies
//!   (every ordinary JSON body whole) can use, so finds and writes of ordinary size still fit
//!   when large bodies fill the rest;
//! - a body that stops arriving is cut off (408): no byte for `server.body_idle_timeout_secs`,
//!   or fewer than `server.body_min_bytes_per_sec` on average over such a period. Only time
//!   spent waiting for the client counts, not time the handler spends elsewhere.
//!
//! A request whose declared body cannot fit right now is answered at once from its headers.
//! Charges return when the handler has answered (or the client went away); a find answer's
//! charge when its last byte was handed to the connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, ResponseError};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::ServerSettings;
use crate::error::{ErrorCode, ServiceError};
use crate::identity::{AuthMode, Identity, Role};

use super::AppState;

/// The bounds of [`BodyBudget`] (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub total: usize,
    pub per_account: usize,
    pub small_body: usize,
    pub small_reserve: usize,
}

impl BudgetLimits {
    pub fn from_settings(s: &ServerSettings) -> Self {
        let total = s.max_inflight_body_bytes;
        BudgetLimits {
            total,
            per_account: s
                .max_inflight_body_bytes_per_account
                .max(s.max_body_bytes)
                .min(total),
            small_body: s.small_body_bytes,
            small_reserve: s
                .small_body_reserve_bytes
                .min(total.saturating_sub(s.max_body_bytes)),
        }
    }
}

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The whole server's budget (or the part of it open to large bodies) is used up.
    Server,
    /// The caller's account holds its whole share.
    Account,
}

impl Refusal {
    /// The answer every refusal of this kind gets.
    pub fn error(self) -> ServiceError {
        match self {
            Refusal::Server => ServiceError::unavailable(
                "server",
                "too many request bodies in flight (server.max_inflight_body_bytes); retry shortly",
            )
            .retry_after(1),
            Refusal::Account => ServiceError::new(
                ErrorCode::ResourceExhausted,
                "this account holds too many request bodies and answers in flight \
                 (server.max_inflight_body_bytes_per_account); retry shortly",
            )
            .retry_after(1),
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Bytes past the first `small_body` of their body.
    large: usize,
    per_owner: HashMap<String, usize>,
}

/// The shared budget of one server.
#[derive(Debug)]
pub struct BodyBudget {
    limits: BudgetLimits,
    held: Mutex<Held>,
    /// Largest total seen (for observers and the benchmark).
    peak: AtomicUsize,
    rejected: AtomicUsize,
}

/// The bucket of callers whose key did not resolve.
const ANONYMOUS: &str = "\u{0}anonymous";
/// The bucket of the root key (api_key mode), apart from the tenant named `default`.
const ROOT: &str = "\u{0}root";

/// The budget bucket `identity` is charged to.
pub fn owner_of(identity: &Identity, mode: AuthMode) -> String {
    if identity.role == Role::Root && mode == AuthMode::ApiKey {
        ROOT.to_string()
    } else {
        identity.account.clone()
    }
}

impl BodyBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        BodyBudget {
            limits,
            held: Mutex::new(Held::default()),
            peak: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The critical sections only do arithmetic; a poisoned lock still holds valid counts.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, held: &Held, owner: &str, n: usize, large: usize) -> Result<(), Refusal> {
        let l = &self.limits;
        let mine = held.per_owner.get(owner).copied().unwrap_or(0);
        if mine.saturating_add(n) > l.per_account {
            return Err(Refusal::Account);
        }
        if held.total.saturating_add(n) > l.total
            || (large > 0
                && held.large.saturating_add(large) > l.total.saturating_sub(l.small_reserve))
        {
            return Err(Refusal::Server);
        }
        Ok(())
    }

    /// Whether `n` more bytes of a new body of `owner` would be admitted now (nothing taken).
    pub fn fits(&self, owner: &str, n: usize) -> Result<(), Refusal> {
        let large = n.saturating_sub(self.limits.small_body);
        let held = self.lock();
        let res = self.check(&held, owner, n, large);
        if res.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Take `n` bytes for `owner`, `large` of them past the head of their body.
    fn take(&self, owner: &str, n: usize, large: usize, forced: bool) -> Result<(), Refusal> {
        let mut held = self.lock();
        if !forced {
            if let Err(r) = self.check(&held, owner, n, large) {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(r);
            }
        }
        held.total += n;
        held.large += large;
        *held.per_owner.entry(owner.to_string()).or_insert(0) += n;
        self.peak.fetch_max(held.total, Ordering::Relaxed);
        Ok(())
    }

    fn give_back(&self, owner: &str, n: usize, large: usize) {
        let mut held = self.lock();
        held.total = held.total.saturating_sub(n);
        held.large = held.large.saturating_sub(large);
        if let Some(mine) = held.per_owner.get_mut(owner) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                held.per_owner.remove(owner);
            }
        }
    }

    /// A new, empty charge of `owner`.
    pub fn charge(self: &Arc<Self>, owner: String) -> Charge {
        Charge {
            budget: self.clone(),
            owner,
            bytes: AtomicUsize::new(0),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let held = self.lock();
        serde_json::json!({
            "limit_bytes": self.limits.total,
            "per_account_limit_bytes": self.limits.per_account,
            "small_body_reserve_bytes": self.limits.small_reserve,
            "in_flight_bytes": held.total,
            "accounts_holding": held.per_owner.len(),
            "peak_bytes": self.peak.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
        })
    }
}

/// Bytes one request (or one answer) holds; all of them go back when it is dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<BodyBudget>,
    owner: String,
    bytes: AtomicUsize,
}

impl Charge {
    /// The part of bytes `from..from + n` of a body past its lane-eligible head.
    fn large_part(&self, from: usize, n: usize) -> usize {
        let small = self.budget.limits.small_body;
        from.saturating_add(n).saturating_sub(small) - from.saturating_sub(small)
    }

    /// Take `n` more bytes if they fit.
    pub fn add(&self, n: usize) -> Result<(), Refusal> {
        let from = self.bytes.load(Ordering::Relaxed);
        let large = self.large_part(from, n);
        self.budget.take(&self.owner, n, large, false)?;
        self.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Make the charge exactly `n` bytes, fitting or not: what is already built is held
    /// whatever the budget says, and counting it keeps the budget true.
    pub fn set(&self, n: usize) {
        let cur = self.bytes.load(Ordering::Relaxed);
        if n > cur {
            let large = self.large_part(cur, n - cur);
            let _ = self.budget.take(&self.owner, n - cur, large, true);
        } else if n < cur {
            let large = self.large_part(n, cur - n);
            self.budget.give_back(&self.owner, cur - n, large);
        }
        self.bytes.store(n, Ordering::Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let n = self.bytes.load(Ordering::Relaxed);
        let large = self.large_part(0, n);
        self.budget.give_back(&self.owner, n, large);
    }
}

/// Marker inside the `PayloadError::Io` of a body refused while it arrives.
#[derive(Debug, thiserror::Error)]
pub enum BodyRefused {
    #[error("the in-flight request body budget is exhausted")]
    Budget(Refusal),
    #[error("the request body stopped arriving")]
    Idle,
    #[error("the request body arrives too slowly")]
    TooSlow,
}

impl BodyRefused {
    fn error(&self, timeout: Duration, min_rate: u64) -> ServiceError {
        match self {
            BodyRefused::Budget(r) => r.error(),
            BodyRefused::Idle => ServiceError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "no request body bytes arrived for {} s (server.body_idle_timeout_secs)",
                    timeout.as_secs()
                ),
            ),
            BodyRefused::TooSlow => ServiceError::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body arrived at under {min_rate} bytes/s \
                     (server.body_min_bytes_per_sec)"
                ),
            ),
        }
    }
}

/// How slow a body may arrive.
#[derive(Debug, Clone, Copy)]
struct Pace {
    idle: Duration,
    min_rate: u64,
}

/// The answer for a payload error [`Metered`] raised, if it is one.
pub fn refusal(err: &PayloadError) -> Option<ServiceError> {
    let PayloadError::Io(e) = err else {
        return None;
    };
    let r = e.get_ref()?.downcast_ref::<RefusedBody>()?;
    Some(r.reason.error(r.pace.idle, r.pace.min_rate))
}

/// What travels inside the `PayloadError`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
struct RefusedBody {
    reason: BodyRefused,
    pace: Pace,
}

/// A request body, charged as it arrives and timed while the handler waits for it.
struct Metered {
    inner: Payload,
    charge: Arc<Charge>,
    /// Most bytes charged (a temp upload holds one piece at a time); `0`: charged up front.
    cap: usize,
    pace: Pace,
    timer: Pin<Box<Sleep>>,
    started: bool,
    last_byte: Instant,
    window_start: Instant,
    window_bytes: u64,
    /// When the last chunk was handed to the handler: time until the next poll is the
    /// handler's, not the client's.
    handed_at: Option<Instant>,
    failed: bool,
}

impl Metered {
    fn new(inner: Payload, charge: Arc<Charge>, cap: usize, pace: Pace) -> Self {
        let now = Instant::now();
        Metered {
            inner,
            charge,
            cap,
            pace,
            timer: Box::pin(tokio::time::sleep_until(now + pace.idle)),
            started: false,
            last_byte: now,
            window_start: now,
            window_bytes: 0,
            handed_at: None,
            failed: false,
        }
    }

    fn fail(&mut self, reason: BodyRefused) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.failed = true;
        let err = RefusedBody {
            reason,
            pace: self.pace,
        };
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(err)))))
    }

    /// The pace rules at `now`; rolls the rate window when it is over.
    fn check_pace(&mut self, now: Instant) -> Result<(), BodyRefused> {
        if now >= self.last_byte + self.pace.idle {
            return Err(BodyRefused::Idle);
        }
        if now >= self.window_start + self.pace.idle {
            let secs = now.duration_since(self.window_start).as_secs_f64();
            if (self.window_bytes as f64) < self.pace.min_rate as f64 * secs {
                return Err(BodyRefused::TooSlow);
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        (self.last_byte + self.pace.idle).min(self.window_start + self.pace.idle)
    }

    fn charge_chunk(&self, len: usize) -> Result<(), Refusal> {
        let held = self.charge.bytes.load(Ordering::Relaxed);
        let n = len.min(self.cap.saturating_sub(held));
        if n == 0 {
            return Ok(());
        }
        self.charge.add(n)
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        if !this.started {
            this.started = true;
            this.last_byte = now;
            this.window_start = now;
        } else if let Some(handed) = this.handed_at.take() {
            let away = now.saturating_duration_since(handed);
            this.last_byte += away;
            this.window_start += away;
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Err(r) = this.charge_chunk(chunk.len()) {
                        return this.fail(BodyRefused::Budget(r));
                    }
                    this.last_byte = now;
                    this.window_bytes += chunk.len() as u64;
                    if let Err(reason) = this.check_pace(now) {
                        return this.fail(reason);
                    }
                    this.handed_at = Some(now);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(other) => return Poll::Ready(other),
                Poll::Pending => {}
            }
            let now = Instant::now();
            if let Err(reason) = this.check_pace(now) {
                return this.fail(reason);
            }
            let deadline = this.next_deadline();
            this.timer.as_mut().reset(deadline);
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
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
    let declared = declared_length(&req);
    let has_body = declared.is_some_and(|n| n > 0) || (declared.is_none() && is_chunked(&req));
    if !has_body {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let settings = &state.settings.server;
    let max_body = settings.max_body_bytes;
    // Whose share the body is: resolved once here, handed to the `Caller` extractor.
    let resolution = super::auth::resolve(&state, req.request()).await;
    let owner = match &resolution {
        Ok(identity) => owner_of(identity, state.mode),
        Err(_) => ANONYMOUS.to_string(),
    };
    let known = resolution.is_ok();
    req.extensions_mut()
        .insert(super::auth::Resolution(resolution));
    let charge = Arc::new(state.body_budget.charge(owner));
    let compressed = is_compressed(&req);
    // Temp uploads and large WebDAV PUTs stream into storage pieces.
    let is_upload = req.path() == crate::ingest::uploads::ROUTE
        || streams_put(req.method(), req.path(), declared, max_body, compressed);
    // Over the per-body limit the handler refuses it (413) without reading it.
    let oversize = !is_upload && declared.is_some_and(|n| n > max_body);
    let (up_front, cap) = if is_upload {
        // Streams into storage and holds at most one piece in memory, whatever its length.
        (0, crate::ingest::uploads::PART_BYTES)
    } else if compressed && known && !oversize {
        (max_body, 0)
    } else {
        (0, usize::MAX)
    };
    // What the body will hold if it arrives whole.
    let expected = match declared {
        _ if oversize => 0,
        Some(n) => n.min(cap).max(up_front),
        None => up_front,
    };
    // A caller whose key does not resolve gets its 401/403 from the extractor, not a 503.
    if known && expected > 0 {
        if let Err(r) = state.body_budget.fits(&charge.owner, expected) {
            tracing::debug!(
                bytes = expected,
                ?r,
                "request body refused from its headers"
            );
            return Ok(req.into_response(r.error().error_response()));
        }
    }
    if up_front > 0 {
        if let Err(r) = charge.add(up_front) {
            return Ok(req.into_response(r.error().error_response()));
        }
    }
    let pace = Pace {
        idle: Duration::from_secs(settings.body_idle_timeout_secs),
        min_rate: settings.body_min_bytes_per_sec,
    };
    let inner = req.take_payload();
    let metered = Metered::new(inner, charge.clone(), cap, pace);
    req.set_payload(Payload::Stream {
        payload: Box::pin(metered),
    });
    let res = next.call(req).await;
    drop(charge);
    res.map(ServiceResponse::map_into_boxed_body)
}

/// Whether a request is a WebDAV PUT whose body is streamed into storage pieces rather than
/// read whole: announced larger than `server.max_body_bytes`, or sent without a length
/// (chunked). The admission middleware charges such a body at most one piece.
pub fn streams_put(
    method: &actix_web::http::Method,
    path: &str,
    declared: Option<usize>,
    max_body: usize,
    compressed: bool,
) -> bool {
    method == actix_web::http::Method::PUT
        && path.starts_with(super::auth::WEBDAV_PREFIX)
        && !compressed
        && declared.is_none_or(|n| n > max_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize, per_account: usize, small: usize, reserve: usize) -> Arc<BodyBudget> {
        Arc::new(BodyBudget::new(BudgetLimits {
            total,
            per_account,
            small_body: small,
            small_reserve: reserve,
        }))
    }

    #[test]
    fn reserves_within_the_limit_and_releases() {
        let b = budget(100, 100, 0, 0);
        let c = b.charge("a".into());
        assert!(c.add(60).is_ok());
        assert_eq!(b.fits("b", 41), Err(Refusal::Server));
        let d = b.charge("b".into());
        assert!(d.add(40).is_ok());
        drop(d);
        drop(c);
        assert_eq!(b.lock().total, 0);
        assert!(b.lock().per_owner.is_empty());
        assert!(b.charge("a".into()).add(100).is_ok());
        assert_eq!(b.status()["peak_bytes"], 100);
    }

    #[test]
    fn an_account_holds_at_most_its_share() {
        let b = budget(100, 50, 0, 0);
        let a = b.charge("a".into());
        assert!(a.add(50).is_ok());
        assert_eq!(a.add(1), Err(Refusal::Account));
        assert!(b.charge("b".into()).add(50).is_ok());
    }

    #[test]
    fn the_reserve_is_left_to_heads_of_bodies() {
        // 100 in all, 30 kept for the first 10 bytes of each body.
        let b = budget(100, 100, 10, 30);
        let big = b.charge("a".into());
        assert!(big.add(80).is_ok()); // 10 head + 70 large: all the large room
        let more = b.charge("a".into());
        assert!(more.add(10).is_ok()); // a head still fits
        assert_eq!(more.add(1), Err(Refusal::Server)); // its tail does not
        let other = b.charge("c".into());
        assert!(other.add(10).is_ok());
        drop(big);
        assert!(more.add(1).is_ok());
        let held = b.lock();
        assert_eq!((held.total, held.large), (21, 1));
    }

    #[test]
    fn set_counts_what_is_built() {
        let b = budget(100, 100, 0, 0);
        let c = b.charge("a".into());
        c.set(150);
        assert_eq!(b.lock().total, 150);
        c.set(20);
        assert_eq!(b.lock().total, 20);
        drop(c);
        assert_eq!(b.lock().total, 0);
    }

    #[actix_rt::test]
    async fn pace_cuts_off_idle_and_slow_bodies_only() {
        let b = budget(100, 100, 0, 0);
        let pace = Pace {
            idle: Duration::from_secs(10),
            min_rate: 100,
        };
        let mut m = Metered::new(Payload::None, Arc::new(b.charge("a".into())), 0, pace);
        let t0 = m.window_start;
        // 2,000 bytes in the first 10 s: fast enough; the window rolls.
        m.window_bytes = 2000;
        m.last_byte = t0 + Duration::from_secs(9);
        assert!(m.check_pace(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(m.window_bytes, 0);
        // 500 bytes in the next 10 s: under 100 bytes/s.
        m.window_bytes = 500;
        m.last_byte = t0 + Duration::from_secs(19);
        assert!(matches!(
            m.check_pace(t0 + Duration::from_secs(20)),
            Err(BodyRefused::TooSlow)
        ));
        // Nothing for 10 s after the last byte: idle.
        let mut m = Metered::new(Payload::None, Arc::new(b.charge("a".into())), 0, pace);
        let t0 = m.last_byte;
        assert!(m.check_pace(t0 + Duration::from_secs(9)).is_ok());
        assert!(matches!(
            m.check_pace(t0 + Duration::from_secs(10)),
            Err(BodyRefused::Idle)
        ));
    }

    #[test]
    fn recognises_its_own_payload_errors() {
        let pace = Pace {
            idle: Duration::from_secs(5),
            min_rate: 10,
        };
        let e = |reason| PayloadError::Io(std::io::Error::other(RefusedBody { reason, pace }));
        let busy = refusal(&e(BodyRefused::Budget(Refusal::Server))).unwrap();
        assert_eq!(busy.code, ErrorCode::Unavailable);
        let share = refusal(&e(BodyRefused::Budget(Refusal::Account))).unwrap();
        assert_eq!(share.code, ErrorCode::ResourceExhausted);
        let idle = refusal(&e(BodyRefused::Idle)).unwrap();
        assert_eq!(idle.code, ErrorCode::RequestTimeout);
        assert!(refusal(&PayloadError::Overflow).is_none());
    }
}
