//! What the audit log needs to know about the request being served, gathered where it is
//! known: the caller (set by the auth extractor) and the `viking://` targets (noted by
//! `uri::parse`, which every route uses to read a URI). The request middleware opens the scope
//! and reads the note after the handler, so no route has to call the audit log itself.
//!
//! Kept in the request's scope (`telemetry::request`): a no-op outside a request (pool
//! threads, background tasks).

use super::request::with_note;
pub use super::request::Note;

/// Targets kept per request (a batch route names many; the first ones identify it).
pub const MAX_TARGETS: usize = 8;
/// Longest target kept (URIs are at most 4096 bytes; the log keeps their start).
const MAX_TARGET_BYTES: usize = 1024;

/// The authenticated caller of the current request.
pub fn caller(role: &'static str, account: &str, user: &str) {
    with_note(|mut n| {
        if n.wanted {
            n.caller = Some((role, account.to_string(), user.to_string()));
        }
    });
}

/// A `viking://` URI the current request names (parsed successfully); `uri` is called only
/// when the request is audited.
pub fn target(uri: impl FnOnce() -> String) {
    with_note(|mut n| {
        if !n.wanted {
            return;
        }
        if n.targets.len() >= MAX_TARGETS {
            n.more_targets += 1;
            return;
        }
        let uri = uri();
        let mut end = uri.len().min(MAX_TARGET_BYTES);
        while !uri.is_char_boundary(end) {
            end -= 1;
        }
        if !n.targets.iter().any(|t| t == &uri[..end]) {
            n.targets.push(uri[..end].to_string());
        }
    });
}
