//! Console routes (0.5.2 `console.py`) answered from the audit log: `audit` (0.5.2's
//! parameters plus Longship's user / action / path prefix / time filters), `context-commits`
//! (the heatmap of content-adding requests), `tokens` and `dashboard/summary`. ROOT reads
//! every account, an ADMIN their account, a USER their own entries. When auditing is off for
//! the caller's account: `{"enabled": false, …}` as 0.5.2 answers.

use actix_web::{web, HttpRequest};
use chrono::{DateTime, Utc};
use jiff::tz::TimeZone;
use serde_json::{json, Value};

use crate::decode::{int_in_range, parse_query};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::Role;
use crate::jobs::audit::{ContextCommits, QueryAudit, TokenSeries};
use crate::storage::audit::{Filter, Page, Visibility};

use super::auth::{AnyRole, Caller};
use super::envelope::{ApiOk, ApiResult};
use super::routes::{at, Routes};
use super::AppState;

pub fn configure(routes: &mut Routes) {
    routes
        .add(at("/api/v1/console/audit").get(audit))
        .add(at("/api/v1/console/context-commits").get(context_commits))
        .add(at("/api/v1/console/tokens").get(tokens))
        .add(at("/api/v1/console/dashboard/summary").get(dashboard_summary));
}

fn disabled() -> ApiResult {
    Ok(ApiOk::new(json!({
        "enabled": false,
        "message": "Usage/Audit is disabled or not initialized.",
    })))
}

fn visibility(caller: &Caller<AnyRole>) -> Visibility {
    match caller.role() {
        Role::Root => Visibility::All,
        Role::Admin => Visibility::Account(caller.account().to_string()),
        Role::User => Visibility::User(caller.account().to_string(), caller.user().to_string()),
    }
}

/// The query's pairs (repeated keys kept: `status=200&status=404`).
fn pairs(req: &HttpRequest) -> ServiceResult<Vec<(String, String)>> {
    parse_query(req.query_string())
}

fn one<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every value of a repeatable key, comma-separated values split (as 0.5.2).
fn many(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn int_param(
    pairs: &[(String, String)],
    key: &str,
    default: i64,
    max: Option<i64>,
) -> ServiceResult<usize> {
    let Some(raw) = one(pairs, key) else {
        return Ok(default as usize);
    };
    let n: i64 = raw.trim().parse().map_err(|_| {
        ServiceError::validation(
            &["query", key],
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        )
    })?;
    int_in_range(&["query", key], n, 1, max)
}

fn time_param(pairs: &[(String, String)], key: &str) -> ServiceResult<Option<DateTime<Utc>>> {
    let Some(raw) = one(pairs, key).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| {
            ServiceError::invalid_argument(format!(
                "{key} must be an RFC 3339 time such as 2026-05-01T12:00:00Z"
            ))
        })
}

/// Text parameters are bounded like URIs (they are compared, never stored).
fn text_param(pairs: &[(String, String)], key: &str) -> ServiceResult<Option<String>> {
    match one(pairs, key).map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.len() > 4096 => Err(ServiceError::invalid_argument(format!(
            "{key} is longer than 4096 bytes"
        ))),
        other => Ok(other.map(str::to_string)),
    }
}

/// GET /api/v1/console/audit.
async fn audit(state: web::Data<AppState>, caller: Caller<AnyRole>, req: HttpRequest) -> ApiResult {
    let q = pairs(&req)?;
    let page = Page {
        page: int_param(&q, "page", 1, None)?,
        page_size: int_param(&q, "page_size", 10, Some(100))?,
    };
    let filter = Filter {
        request_id: text_param(&q, "request_id")?,
        statuses: many(&q, "status"),
        api_types: many(&q, "api_type"),
        user: text_param(&q, "user")?.or(text_param(&q, "user_id")?),
        action: text_param(&q, "action")?,
        path_prefix: text_param(&q, "path_prefix")?,
        since: time_param(&q, "since")?,
        until: time_param(&q, "until")?,
    };
    if filter.statuses.len() + filter.api_types.len() > 64 {
        return Err(ServiceError::invalid_argument(
            "too many status or api_type values (at most 64)",
        ));
    }
    crate::storage::audit::range(&filter)?;
    // Checked as on the other console routes; the entries' times are shown in UTC.
    zone(&q)?;
    if !state.account_configs.audit_enabled(caller.account()) {
        return disabled();
    }
    let job = QueryAudit {
        visibility: visibility(&caller),
        filter,
        page,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// `start_date`/`end_date` (`YYYY-MM-DD`, required, at most 31 days apart).
fn date_range(q: &[(String, String)]) -> ServiceResult<(String, String)> {
    let date = |key: &str| -> ServiceResult<String> {
        let raw = one(q, key).ok_or_else(|| {
            ServiceError::validation(&["query", key], "Field required", "missing")
        })?;
        chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map(|d| d.format("%Y-%m-%d").to_string())
            .map_err(|_| ServiceError::invalid_argument("date must be in YYYY-MM-DD format"))
    };
    let (start, end) = (date("start_date")?, date("end_date")?);
    if end < start {
        return Err(ServiceError::invalid_argument(
            "end_date must be greater than or equal to start_date",
        ));
    }
    let span = chrono::NaiveDate::parse_from_str(&end, "%Y-%m-%d")
        .ok()
        .zip(chrono::NaiveDate::parse_from_str(&start, "%Y-%m-%d").ok())
        .map_or(0, |(e, s)| (e - s).num_days());
    if span > 31 {
        return Err(ServiceError::invalid_argument(
            "the date range may span at most 31 days",
        ));
    }
    Ok((start, end))
}

/// `timezone`: the IANA zone (`Asia/Shanghai`) dates and hours are cut in, as 0.5.2; absent:
/// UTC (Longship's servers keep UTC). An unknown name is 400.
fn zone(q: &[(String, String)]) -> ServiceResult<TimeZone> {
    let Some(name) = one(q, "timezone").map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(TimeZone::UTC);
    };
    // Zone names are short and plain; anything else is refused before any lookup.
    let plain = name.len() <= 64
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b));
    let found = if plain {
        TimeZone::get(name).ok()
    } else {
        None
    };
    found.ok_or_else(|| {
        ServiceError::invalid_argument(format!(
            "timezone: unknown IANA time zone name '{name:.64}'"
        ))
        .with_details(serde_json::json!({"field": "timezone"}))
    })
}

/// GET /api/v1/console/context-commits: content-adding requests per hour (or 4 hours).
async fn context_commits(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    req: HttpRequest,
) -> ApiResult {
    let q = pairs(&req)?;
    let (start, end) = date_range(&q)?;
    let zone = zone(&q)?;
    let bucket = match one(&q, "bucket").unwrap_or("hour") {
        "hour" => 1,
        "4h" => 4,
        _ => {
            return Err(ServiceError::validation(
                &["query", "bucket"],
                "String should match pattern '^(hour|4h)$'",
                "string_pattern_mismatch",
            ))
        }
    };
    if !state.account_configs.audit_enabled(caller.account()) {
        return disabled();
    }
    let job = ContextCommits {
        visibility: visibility(&caller),
        start,
        end,
        bucket_hours: bucket,
        zone,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// GET /api/v1/console/tokens: chat and embedding tokens per day (by account, user, model).
async fn tokens(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    req: HttpRequest,
) -> ApiResult {
    let q = pairs(&req)?;
    let (start, end) = date_range(&q)?;
    let zone = zone(&q)?;
    if one(&q, "bucket").is_some_and(|b| b != "day") {
        return Err(ServiceError::validation(
            &["query", "bucket"],
            "String should match pattern '^(day)$'",
            "string_pattern_mismatch",
        ));
    }
    if !state.account_configs.audit_enabled(caller.account()) {
        return disabled();
    }
    let job = TokenSeries {
        visibility: visibility(&caller),
        start,
        end,
        zone,
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

/// GET /api/v1/console/dashboard/summary: today's (UTC) tokens and retrievals and the
/// caller's content counts.
async fn dashboard_summary(
    state: web::Data<AppState>,
    caller: Caller<AnyRole>,
    req: HttpRequest,
) -> ApiResult {
    let q = pairs(&req)?;
    let zone = zone(&q)?;
    if !state.account_configs.audit_enabled(caller.account()) {
        return disabled();
    }
    let job = crate::jobs::audit::DashboardSummary {
        visibility: visibility(&caller),
        account: caller.account().to_string(),
        user: caller.user().to_string(),
        zone,
    };
    let v: Value = state.pools.storage().run(job).await??;
    Ok(ApiOk::new(v))
}

/// The parameters of `console/audit` (decoded by hand: `status` and `api_type` repeat).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct AuditParams {
    /// Page number, from 1.
    page: Option<i64>,
    /// 1 to 100 (default 10).
    page_size: Option<i64>,
    request_id: Option<String>,
    /// `success`/`ok`, `error`/`failed`, `2xx`…, or a code; repeatable or comma-separated.
    status: Option<String>,
    /// `filesystem`, `content`, `admin`, `sessions`, …; repeatable or comma-separated.
    api_type: Option<String>,
    /// An IANA zone name, checked (unknown: 400); the entries' times are shown in UTC.
    timezone: Option<String>,
    /// Longship: the acting user.
    user: Option<String>,
    /// Longship: `METHOD route` (`DELETE /api/v1/fs`) or the route template.
    action: Option<String>,
    /// Longship: a target prefix (`viking://resources/docs`).
    path_prefix: Option<String>,
    /// Longship: RFC 3339 bounds; default the last 24 hours, at most 31 days.
    since: Option<String>,
    until: Option<String>,
}

/// The parameters of `console/tokens` and `console/context-commits`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(super) struct DateRangeParams {
    /// `YYYY-MM-DD` (in `timezone`), required.
    start_date: String,
    /// `YYYY-MM-DD` (in `timezone`), required; at most 31 days after start_date.
    end_date: String,
    /// tokens: `day`; context-commits: `hour` or `4h`.
    bucket: Option<String>,
    /// IANA zone the dates and hours are cut in (`Asia/Shanghai`); absent: UTC.
    timezone: Option<String>,
}
