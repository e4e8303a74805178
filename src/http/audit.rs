//! Recording mutations in the audit log, in the one place every request passes: the request
//! middleware opens a note before the handler (caller and targets are noted where they are
//! known, see `telemetry::audit_note`) and, after it, queues one entry per audited request —
//! so a route added later is audited without calling anything.

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;

use crate::storage::audit::{api_type, Entry};
use crate::telemetry::audit_note::Note;

use super::error::ErrorCodeSent;
use super::AppState;

/// POST routes that change nothing (reads with a body, waits). find and search are kept, as
/// 0.5.2's audit shows them (and the dashboard counts them).
const READ_ONLY_POSTS: &[&str] = &[
    "/api/v1/search/grep",
    "/api/v1/search/glob",
    "/api/v1/search/recall",
    "/api/v1/system/wait",
    "/api/v1/skills/find",
    "/api/v1/skills/validate",
    "/api/v1/admin/configuration/test-model",
];

/// Whether `req` is a mutation the audit log records.
pub fn is_mutation(req: &ServiceRequest) -> bool {
    let m = req.method();
    if *m == Method::POST {
        let path = req.path();
        return !READ_ONLY_POSTS.iter().any(|p| path.starts_with(p));
    }
    *m == Method::PUT
        || *m == Method::PATCH
        || *m == Method::DELETE
        // WebDAV's changing methods.
        || matches!(m.as_str(), "MKCOL" | "MOVE" | "COPY")
}

/// Queue the entry of an audited request whose caller is known and whose account is audited.
pub fn finish(note: &Note, res: &ServiceResponse<BoxBody>, request_id: &str, elapsed: Duration) {
    if !note.wanted {
        return;
    }
    let Some((role, caller_account, user)) = note.caller.as_ref() else {
        return;
    };
    let req = res.request();
    let Some(state) = req.app_data::<actix_web::web::Data<AppState>>() else {
        return;
    };
    // Admin routes act on the account in their path.
    let account = req
        .match_info()
        .get("account_id")
        .unwrap_or(caller_account)
        .to_string();
    if !state.account_configs.audit_enabled(&account) {
        return;
    }
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let mut targets: Vec<String> = req
        .match_info()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    targets.extend(note.targets.iter().cloned());
    if note.more_targets > 0 {
        targets.push(format!("(+{} more)", note.more_targets));
    }
    state.audit.record(Entry {
        created_at: crate::time::iso_micros_now(),
        request_id: request_id.to_string(),
        account_id: account,
        user_id: Some(user.clone()),
        role: role.to_string(),
        method: req.method().as_str().to_string(),
        api_type: api_type(&route),
        route,
        status_code: res.status().as_u16(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        error_code: res
            .response()
            .extensions()
            .get::<ErrorCodeSent>()
            .map(|c| c.0.to_string()),
        targets,
    });
}
