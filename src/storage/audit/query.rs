//! Reading the audit log for the console: the hours of a time range, filtered by who may see
//! what and by the caller's filters, newest first, one page.

use chrono::{DateTime, Duration as Span, Timelike, Utc};
use serde_json::{json, Value};

use super::{read_range, Entry, AUDIT_DIR};
use crate::error::{ServiceError, ServiceResult};
use crate::storage::Storage;

/// Most log bytes one query reads; a range holding more must be narrowed.
pub const MAX_SCAN_BYTES: usize = 64 << 20;
/// Longest range one query may span.
pub const MAX_RANGE_DAYS: i64 = 31;

/// Whose entries the caller may read (0.5.2: ROOT and ADMIN their account's, USER their own;
/// Longship's ROOT reads every account's).
#[derive(Debug, Clone)]
pub enum Visibility {
    All,
    Account(String),
    User(String, String),
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub request_id: Option<String>,
    /// 0.5.2's status filters: `success`/`ok`, `error`/`failed`, `2xx`…, or a code.
    pub statuses: Vec<String>,
    pub api_types: Vec<String>,
    /// Longship's: the acting user, the action (`METHOD route`, or the route alone), a
    /// target prefix, and the time range (default: the last 24 hours).
    pub user: Option<String>,
    pub action: Option<String>,
    pub path_prefix: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: usize,
    pub page_size: usize,
}

fn status_matches(code: u16, wanted: &[String]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    wanted.iter().any(|w| {
        let w = w.trim().to_ascii_lowercase();
        match w.as_str() {
            "success" | "ok" => (200..400).contains(&code),
            "error" | "failed" => code >= 400,
            _ if w.len() == 3 && w.ends_with("xx") => w
                .chars()
                .next()
                .and_then(|c| c.to_digit(10))
                .is_some_and(|d| code / 100 == d as u16),
            _ => w.parse::<u16>().is_ok_and(|n| n == code),
        }
    })
}

pub fn visible_to(account: &str, user: Option<&str>, v: &Visibility) -> bool {
    match v {
        Visibility::All => true,
        Visibility::Account(a) => account == a,
        Visibility::User(a, u) => account == a && user == Some(u.as_str()),
    }
}

fn visible(e: &Entry, v: &Visibility) -> bool {
    match v {
        Visibility::All => true,
        Visibility::Account(a) => &e.account_id == a,
        Visibility::User(a, u) => &e.account_id == a && e.user_id.as_deref() == Some(u.as_str()),
    }
}

fn matches(e: &Entry, f: &Filter, since: &str, until: &str) -> bool {
    e.created_at.as_str() >= since
        && e.created_at.as_str() < until
        && f.request_id.as_ref().is_none_or(|r| &e.request_id == r)
        && status_matches(e.status_code, &f.statuses)
        && (f.api_types.is_empty() || f.api_types.contains(&e.api_type))
        && f.user
            .as_ref()
            .is_none_or(|u| e.user_id.as_ref() == Some(u))
        && f.action
            .as_ref()
            .is_none_or(|a| *a == e.route || *a == format!("{} {}", e.method, e.route))
        && f.path_prefix
            .as_ref()
            .is_none_or(|p| e.targets.iter().any(|t| t.starts_with(p.as_str())))
}

/// The time range of a filter, checked: `since < until`, at most [`MAX_RANGE_DAYS`].
pub fn range(f: &Filter) -> ServiceResult<(DateTime<Utc>, DateTime<Utc>)> {
    let until = f.until.unwrap_or_else(Utc::now);
    let since = f.since.unwrap_or(until - Span::hours(24));
    if since >= until {
        return Err(ServiceError::invalid_argument("since must be before until"));
    }
    if until - since > Span::days(MAX_RANGE_DAYS) {
        return Err(ServiceError::invalid_argument(format!(
            "the time range may span at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((since, until))
}

pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// One page of the entries the caller may see, in 0.5.2's shape (`total`, `success_rate`,
/// `page`, `page_size`, `items`), newest first.
pub fn query(
    storage: &dyn Storage,
    visibility: &Visibility,
    filter: &Filter,
    page: Page,
    keep_going: &dyn Fn() -> bool,
) -> ServiceResult<Value> {
    let (since, until) = range(filter)?;
    let (since_s, until_s) = (iso(since), iso(until));
    let mut found: Vec<Entry> = Vec::new();
    read_range(
        storage,
        AUDIT_DIR,
        &since_s,
        &until_s,
        keep_going,
        |e: Entry| {
            if visible(&e, visibility) && matches(&e, filter, &since_s, &until_s) {
                found.push(e);
            }
        },
    )?;
    found.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.request_id.cmp(&a.request_id))
    });
    let total = found.len();
    let success = found
        .iter()
        .filter(|e| (200..400).contains(&e.status_code))
        .count();
    let items: Vec<Value> = found
        .into_iter()
        .skip((page.page - 1).saturating_mul(page.page_size))
        .take(page.page_size)
        .map(|e| {
            json!({
                "request_id": e.request_id,
                "account_id": e.account_id,
                "user_id": e.user_id,
                "role": e.role,
                "method": e.method,
                "route": e.route,
                "api_type": e.api_type,
                "status_code": e.status_code,
                "duration_ms": e.duration_ms,
                "error_code": e.error_code,
                "error_message": Value::Null,
                "error_details": Value::Null,
                "targets": e.targets,
                "created_at": e.created_at,
            })
        })
        .collect();
    Ok(json!({
        "total": total,
        "success_rate": if total > 0 { success as f64 / total as f64 } else { 0.0 },
        "page": page.page,
        "page_size": page.page_size,
        "items": items,
    }))
}

/// The UTC day and hour of a time.
pub fn day_hour(t: DateTime<Utc>) -> (String, u32) {
    (t.format("%Y-%m-%d").to_string(), t.hour())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(status_matches(204, &s(&["success"])));
        assert!(!status_matches(404, &s(&["ok"])));
        assert!(status_matches(404, &s(&["error"])));
        assert!(status_matches(404, &s(&["4xx"])));
        assert!(status_matches(404, &s(&["200", "404"])));
        assert!(!status_matches(500, &s(&["4xx"])));
    }
}
