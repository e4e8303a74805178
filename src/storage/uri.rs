//! The one mapping from `viking://` URIs to storage paths (spec §5).
//!
//! Every URI-valued input goes through [`parse`]: syntax and normalisation (§5.1), path safety
//! (§5.4) on every raw segment *before* anything else looks at it, alias resolution (§5.3) and
//! the mapping to `/local/{account}/…` (§5.2). The account always comes from the caller's
//! identity, never from the URI, so no URI can name another account's data. [`authorize`]
//! applies the access table of §5.2; [`child_visible`] the listing filters of §5.2/§5.5.
//!
//! Pure and non-blocking: handlers call it before submitting any storage job.

use std::fmt;

use percent_encoding::percent_decode_str;
use serde_json::json;

use super::acl;
use super::path::MAX_SEGMENT_BYTES;
use super::StorePath;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, IdKind, Identity, Role};

pub const SCHEME: &str = "viking://";

/// Longest URI accepted, in bytes (before trimming). Real URIs are far shorter: a local path
/// cannot exceed 4096 bytes and an S3 key 1024. Checked before any other work on the input.
pub const MAX_URI_BYTES: usize = 4096;
/// Most `/`-separated segments a URI may have (README "Limits").
pub const MAX_URI_SEGMENTS: usize = 256;

/// The scopes this server serves, as listed in scope errors (§5.1: "this server lists its own").
const SCOPE_LIST: &str = "agent, resources, session, user";

/// First-level children of a user space; `viking://user/<one of these>` is the uid-less spelling
/// that §5.3 rejects (unless the caller's id is literally that word).
const USER_CHILDREN: [&str; 6] = [
    "memories",
    "resources",
    "skills",
    "peers",
    "privacy",
    "sessions",
];

/// What a session directory holds that only the sessions API may change (spec §9.1).
const SESSION_FILES: [&str; 3] = ["messages.jsonl", ".meta.json", "history"];

/// The scope a URI lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `viking://` itself.
    Root,
    Resources,
    User,
    Agent,
}

/// What a request wants to do with a URI (the columns of §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Delete, and the source side of a move.
    Delete,
}

impl Access {
    /// The ACL level this access needs (0.5.2: delete and move-away need manage).
    pub fn level(self) -> acl::Level {
        match self {
            Access::Read => acl::Level::Read,
            Access::Write => acl::Level::Write,
            Access::Delete => acl::Level::Manage,
        }
    }

    fn permission(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Delete => "manage",
        }
    }
}

/// A parsed, normalised, alias-resolved URI inside the caller's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VikingUri {
    /// Canonical segments after alias resolution (`["user", "bob", "memories"]`).
    segs: Vec<String>,
    /// `/local/{account}/{segs…}`.
    path: StorePath,
}

impl VikingUri {
    /// The account root `viking://` of `account` (an id that already passed §2.2).
    pub fn root(account: &str) -> ServiceResult<Self> {
        let path = StorePath::root()
            .join(account)
            .map_err(|e| ServiceError::internal(format!("account {account:?}: {e}")))?;
        Ok(VikingUri {
            segs: Vec::new(),
            path,
        })
    }

    /// The canonical URI string (`viking://resources/docs`, `viking://` for the root).
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.segs.join("/"))
    }

    /// The storage path (`acme/resources/docs`).
    pub fn store_path(&self) -> &StorePath {
        &self.path
    }

    pub fn segments(&self) -> &[String] {
        &self.segs
    }

    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn scope(&self) -> Scope {
        match self.segs.first().map(String::as_str) {
            None => Scope::Root,
            Some("resources") => Scope::Resources,
            Some("user") => Scope::User,
            // `parse` admits nothing else.
            _ => Scope::Agent,
        }
    }

    /// The last segment (`""` for the root).
    pub fn name(&self) -> &str {
        self.segs.last().map(String::as_str).unwrap_or("")
    }

    /// The parent URI; the root has none.
    pub fn parent(&self) -> Option<VikingUri> {
        let path = self.path.parent()?;
        let mut segs = self.segs.clone();
        segs.pop()?;
        Some(VikingUri { segs, path })
    }

    /// The child named `name` (a name read from storage or built by the server). Names that are
    /// not safe segments are refused, so a hostile name on disk can never widen a path, and so
    /// are internal names, so no `VikingUri` ever addresses one, however it was built.
    pub fn child(&self, name: &str) -> ServiceResult<VikingUri> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(ServiceError::invalid_argument(format!(
                "unsafe child name under {}",
                self.uri()
            )));
        }
        if is_internal_name(name) {
            return Err(reserved_name(&self.uri(), name));
        }
        let path = self
            .path
            .join(name)
            .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        let mut segs = self.segs.clone();
        segs.push(name.to_string());
        Ok(VikingUri { segs, path })
    }

    /// True if `self` equals `other` or lies under it.
    pub fn starts_with(&self, other: &VikingUri) -> bool {
        self.path.starts_with(&other.path)
    }

    /// `self` relative to `base` (`/`-separated, `""` when equal), if it lies under `base`.
    pub fn rel_to(&self, base: &VikingUri) -> Option<String> {
        if !self.starts_with(base) {
            return None;
        }
        Some(self.segs[base.segs.len()..].join("/"))
    }

    /// True for a session's own files and what lies under them
    /// (`viking://user/{uid}/sessions/{sid}/messages.jsonl`, `.meta.json`, `history/…`): fs
    /// mkdir, mv and rm leave them to the sessions API, as content/write does.
    pub fn is_session_file(&self) -> bool {
        matches!(self.segs.as_slice(),
            [user, _, sessions, _, name, ..]
                if user == "user" && sessions == "sessions" && SESSION_FILES.contains(&name.as_str()))
    }

    /// True for a session directory itself (`viking://user/{uid}/sessions/{sid}`), which a move
    /// must not create or replace.
    pub fn is_session_dir(&self) -> bool {
        matches!(self.segs.as_slice(),
            [user, _, sessions, _] if user == "user" && sessions == "sessions")
    }

    /// The user id when the URI is `viking://user/{uid}[/…]`.
    pub fn user_id(&self) -> Option<&str> {
        match self.segs.as_slice() {
            [scope, uid, ..] if scope == "user" => Some(uid),
            _ => None,
        }
    }

    /// Build from segments that already passed [`check_segment`] and alias resolution.
    ///
    /// One pass over the segments into one preallocated string: joining them one by one would
    /// copy the growing path per segment (quadratic in the URI length).
    fn build(account: &str, segs: Vec<String>) -> ServiceResult<VikingUri> {
        let root = StorePath::root()
            .join(account)
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let path = root
            .join_all(segs.iter().map(String::as_str))
            .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        Ok(VikingUri { segs, path })
    }
}

impl fmt::Display for VikingUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Storage-internal names (§5.5): the one predicate lives beside `StorePath`, where the
/// identity checks can use it too.
pub use super::path::is_internal_name;

/// Dot-files are hidden from ls/tree/glob/grep unless `show_all_hidden` (§5.5).
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with('.')
}

/// Parse and normalise a URI-valued input for `who` (spec §5.1–§5.4).
pub fn parse(raw: &str, who: &Identity) -> ServiceResult<VikingUri> {
    let uri = parse_uri(raw, who)?;
    // The audit log names what a request targeted (a no-op outside an audited request).
    crate::telemetry::audit_note::target(|| uri.uri());
    Ok(uri)
}

fn parse_uri(raw: &str, who: &Identity) -> ServiceResult<VikingUri> {
    check_size(raw)?;
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::invalid_uri(raw, "uri must not be empty"));
    }
    let Some(rest) = trimmed.strip_prefix(SCHEME) else {
        return Err(ServiceError::invalid_uri(
            trimmed,
            "URI must start with 'viking://'",
        ));
    };
    let raw_segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // Safety first: nothing below (aliases, id checks, joins) sees an unsafe segment.
    for seg in &raw_segs {
        check_segment(trimmed, seg)?;
    }
    // No route may name what the backends and the index give meaning to: not write, cp, mv,
    // mkdir or rm (that is how a user could forge a publishing flag or lose a file to the
    // temp sweep), and not read, stat or find either (never shown, so never addressed).
    if let Some(seg) = raw_segs.iter().find(|s| is_internal_name(s)) {
        return Err(reserved_name(trimmed, seg));
    }
    let mut segs: Vec<String> = Vec::with_capacity(raw_segs.len() + 2);
    let mut explicit_user = false;
    match raw_segs.first().copied() {
        None => {}
        Some("~") => {
            segs.extend(["user".to_string(), who.user.clone()]);
        }
        Some("session") => {
            segs.extend(["user".into(), who.user.clone(), "sessions".into()]);
        }
        Some(scope @ ("resources" | "agent")) => segs.push(scope.to_string()),
        Some("user") => {
            explicit_user = true;
            segs.push("user".into());
        }
        Some(other) => {
            return Err(ServiceError::invalid_uri(
                trimmed,
                format!("Invalid scope '{other}'. Must be one of: {SCOPE_LIST}"),
            ))
        }
    }
    segs.extend(raw_segs.iter().skip(1).map(|s| s.to_string()));

    if let [scope, uid, tail @ ..] = segs.as_slice() {
        if scope == "user" {
            // §5.3 applies to USER and ADMIN callers only: for ROOT (every dev-mode request)
            // the segment names a user explicitly, as in 0.5.2 (`viking://user/peers/…`).
            if explicit_user
                && who.role != Role::Root
                && USER_CHILDREN.contains(&uid.as_str())
                && *uid != who.user
            {
                return Err(ServiceError::invalid_uri(
                    trimmed,
                    format!(
                        "'{uid}' is not a user id; use viking://~/{uid}/… for your own user space"
                    ),
                ));
            }
            if validate_id(IdKind::User, uid).is_err() {
                return Err(ServiceError::invalid_uri(trimmed, "invalid user id in URI"));
            }
            if let [peers, pid, ..] = tail {
                if peers == "peers" && validate_id(IdKind::Peer, pid).is_err() {
                    return Err(ServiceError::invalid_uri(trimmed, "invalid peer id in URI"));
                }
            }
        }
    }
    VikingUri::build(&who.account, segs)
}

/// The documented size limits, checked in O(1) plus one bounded scan, before anything else
/// looks at the input (a megabyte URI must cost nothing). The error quotes only a prefix.
pub fn check_size(raw: &str) -> ServiceResult<()> {
    let shown = || {
        let mut end = raw.len().min(64);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &raw[..end])
    };
    if raw.len() > MAX_URI_BYTES {
        return Err(ServiceError::invalid_uri(
            &shown(),
            format!("URI longer than {MAX_URI_BYTES} bytes"),
        ));
    }
    // `viking:` itself is the first non-empty piece.
    if raw.split('/').filter(|s| !s.is_empty()).count() > MAX_URI_SEGMENTS + 1 {
        return Err(ServiceError::invalid_uri(
            &shown(),
            format!("URI has more than {MAX_URI_SEGMENTS} path segments"),
        ));
    }
    Ok(())
}

/// Path safety of one raw segment (spec §5.4), including the encoded and look-alike spellings
/// of traversal that the corpus names: percent-encoded dots and separators and Unicode
/// characters whose compatibility form is a dot, slash, backslash or colon.
fn check_segment(uri: &str, seg: &str) -> ServiceResult<()> {
    if seg.chars().any(char::is_control) {
        return Err(ServiceError::invalid_uri(
            uri,
            "control characters are not allowed in URI segments",
        ));
    }
    if seg.len() > MAX_SEGMENT_BYTES {
        return Err(ServiceError::invalid_uri(
            uri,
            format!("path segment longer than {MAX_SEGMENT_BYTES} bytes"),
        ));
    }
    // The whole URI is trimmed before parsing, so a segment with edge whitespace could not
    // round-trip through its own canonical form (`…/a /` would come back as `…/a`).
    if seg.starts_with(char::is_whitespace) || seg.ends_with(char::is_whitespace) {
        return Err(ServiceError::invalid_uri(
            uri,
            "path segments must not start or end with whitespace",
        ));
    }
    if is_unsafe_plain(seg) {
        return Err(unsafe_segment(uri, seg));
    }
    // Decode repeatedly (bounded) so `%2e%2e`, `%252e%252e`, `%00` are caught however nested.
    let mut decoded = seg.to_string();
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    if decoded.chars().any(char::is_control) {
        return Err(ServiceError::invalid_uri(
            uri,
            "control characters are not allowed in URI segments",
        ));
    }
    let folded = fold_lookalikes(&decoded);
    if folded != seg && (is_unsafe_plain(&folded) || folded.contains('/')) {
        return Err(unsafe_segment(uri, seg));
    }
    Ok(())
}

/// True if `name` passes the API's rules for one path segment (the checks `parse` applies):
/// names stored by the server itself (archive entries, uploads) must be ones the API can
/// reach again.
pub fn is_api_segment(name: &str) -> bool {
    !name.is_empty() && check_segment(name, name).is_ok() && !is_internal_name(name)
}

/// `.`, `..`, a backslash, or a drive prefix such as `C:`.
fn is_unsafe_plain(seg: &str) -> bool {
    let mut chars = seg.chars();
    let drive =
        matches!((chars.next(), chars.next()), (Some(c), Some(':')) if c.is_ascii_alphabetic());
    seg == "." || seg == ".." || seg.contains('\\') || drive
}

/// Map characters whose Unicode compatibility form (NFKC) or common confusable is `.`, `/`, `\`
/// or `:` onto that ASCII character. A short fixed table: these are the only characters that
/// could turn a segment into traversal on a normalising file system or client.
fn fold_lookalikes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2024}' | '\u{FE52}' | '\u{FF0E}' => out.push('.'),
            '\u{2025}' => out.push_str(".."),
            '\u{2026}' => out.push_str("..."),
            '\u{FF0F}' | '\u{2215}' | '\u{2044}' | '\u{29F8}' => out.push('/'),
            '\u{FF3C}' | '\u{FE68}' | '\u{29F5}' | '\u{29F9}' | '\u{2216}' => out.push('\\'),
            '\u{FF1A}' | '\u{FE55}' => out.push(':'),
            other => out.push(other),
        }
    }
    out
}

/// The one refusal of a storage-internal name in a client-named path.
pub fn reserved_name(uri: &str, seg: &str) -> ServiceError {
    ServiceError::invalid_argument(format!(
        "cannot use storage internal name '{seg}': the name is reserved ({uri})"
    ))
    .with_details(json!({"resource": uri}))
}

fn unsafe_segment(uri: &str, seg: &str) -> ServiceError {
    ServiceError::permission_denied(format!("Unsafe URI traversal segment '{seg}' in {uri}"))
        .with_details(json!({"resource": uri}))
}

fn denied(uri: &VikingUri, access: Access) -> ServiceError {
    let shown = uri.uri();
    ServiceError::permission_denied(format!(
        "Access denied for {shown}: {} permission required",
        access.permission()
    ))
    .with_details(json!({"resource": shown}))
}

fn denied_with(uri: &VikingUri, message: &str) -> ServiceError {
    ServiceError::permission_denied(message).with_details(json!({"resource": uri.uri()}))
}

const NAMESPACE_ROOT: &str =
    "Deleting a namespace root requires root access; use a concrete content path instead.";

/// The one access check of every route: the access table of spec §5.2 for `who` (whose
/// account the URI already belongs to), then, under `viking://resources`, the node's ACL
/// (`storage::acl::enforce`: USER callers in accounts with `acl.enabled`).
pub fn authorize(uri: &VikingUri, who: &Identity, access: Access) -> ServiceResult<()> {
    authorize_scope(uri, who, access)?;
    acl::enforce(uri, who, access.level())
}

impl acl::Node for VikingUri {
    fn resources_rel(&self) -> Option<String> {
        (self.scope() == Scope::Resources).then(|| self.segs[1..].join("/"))
    }

    fn uri_string(&self) -> String {
        self.uri()
    }
}

/// The access table of spec §5.2 alone, without ACLs: for find/search targets, whose ACLs
/// are applied inside the index query instead (a denied target finds nothing, as 0.5.2).
pub fn authorize_scope(uri: &VikingUri, who: &Identity, access: Access) -> ServiceResult<()> {
    let root = who.role == Role::Root;
    let segs = uri.segments();
    match (uri.scope(), segs.len(), access) {
        (Scope::Root, _, Access::Read) => Ok(()),
        (Scope::Root, _, Access::Write) if who.role == Role::User => Err(denied_with(
            uri,
            "Writing the account root requires an administrator",
        )),
        (Scope::Root, _, Access::Write) => Ok(()),
        (Scope::Root, _, Access::Delete) => Err(denied(uri, access)),

        (Scope::Resources, 1, Access::Delete) if !root => Err(denied_with(uri, NAMESPACE_ROOT)),
        (Scope::Resources, _, _) => Ok(()),

        (Scope::Agent, 1, Access::Delete) => Err(denied_with(
            uri,
            "Deleting viking://agent root is not supported; use a concrete content path instead.",
        )),
        (Scope::Agent, _, _) => Ok(()),

        (Scope::User, 1, Access::Read) => Ok(()),
        (Scope::User, 1, Access::Write) => Err(denied_with(
            uri,
            "Writing viking://user is not supported; use viking://~/… or viking://user/{user_id}/…",
        )),
        (Scope::User, 1, Access::Delete) => Err(denied(uri, access)),
        (Scope::User, n, _) => {
            let owner = uri.user_id() == Some(who.user.as_str());
            if !owner && !root {
                Err(denied(uri, access))
            } else if n == 2 && access == Access::Delete && !root {
                Err(denied_with(uri, NAMESPACE_ROOT))
            } else {
                Ok(())
            }
        }
    }
}

/// Whether child `name` of directory `dir` may appear in any listing for `who` (spec §5.2,
/// §5.5). Dot-file hiding is separate ([`is_hidden_name`]): it depends on `show_all_hidden`.
pub fn child_visible(dir: &VikingUri, name: &str, who: &Identity) -> bool {
    if is_internal_name(name) {
        return false;
    }
    match dir.segments() {
        [] => matches!(name, "resources" | "user" | "agent"),
        [scope] if scope == "user" => who.role == Role::Root || name == who.user,
        [scope, uid] if scope == "user" => who.role == Role::Root || *uid == who.user,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use proptest::prelude::*;

    fn who(role: Role, user: &str) -> Identity {
        Identity {
            role,
            account: "acme".into(),
            user: user.into(),
        }
    }

    fn alice() -> Identity {
        who(Role::User, "alice")
    }

    fn ok(raw: &str, id: &Identity) -> VikingUri {
        parse(raw, id).unwrap_or_else(|e| panic!("{raw:?}: {e:?}"))
    }

    fn code(raw: &str, id: &Identity) -> ErrorCode {
        parse(raw, id).expect_err(raw).code
    }

    #[test]
    fn syntax_and_normalisation() {
        let a = alice();
        let u = ok("  viking://resources/docs/  ", &a);
        assert_eq!(u.uri(), "viking://resources/docs");
        assert_eq!(u.store_path().as_str(), "acme/resources/docs");
        assert_eq!(ok("viking://", &a).uri(), "viking://");
        assert_eq!(ok("viking://", &a).store_path().as_str(), "acme");
        assert_eq!(
            ok("viking:///resources//a", &a).uri(),
            "viking://resources/a"
        );
        let e = parse("", &a).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidUri);
        assert_eq!(e.details.unwrap()["reason"], "uri must not be empty");
        let e = parse("/resources", &a).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid URI: /resources (URI must start with 'viking://')"
        );
        for bad in [
            "viking://temp",
            "viking://queue/x",
            "viking://upload",
            "viking://_system",
        ] {
            let e = parse(bad, &a).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidUri, "{bad}");
            assert!(e
                .message
                .contains("Must be one of: agent, resources, session, user"));
        }
        assert_eq!(code("viking://system", &a), ErrorCode::InvalidUri);
        assert_eq!(code("viking://nope", &a), ErrorCode::InvalidUri);
    }

    // §5.3, one test per row.
    #[test]
    fn alias_home() {
        let a = alice();
        assert_eq!(ok("viking://~", &a).uri(), "viking://user/alice");
        let u = ok("viking://~/x/y", &a);
        assert_eq!(u.uri(), "viking://user/alice/x/y");
        assert_eq!(u.store_path().as_str(), "acme/user/alice/x/y");
        // `~` only counts as the first segment.
        assert_eq!(
            ok("viking://resources/~/x", &a).uri(),
            "viking://resources/~/x"
        );
        // ROOT expands too (§13.6), with the request's user.
        assert_eq!(
            ok("viking://~", &who(Role::Root, "bob")).uri(),
            "viking://user/bob"
        );
    }

    #[test]
    fn alias_session() {
        let a = alice();
        assert_eq!(
            ok("viking://session", &a).uri(),
            "viking://user/alice/sessions"
        );
        assert_eq!(
            ok("viking://session/s1/messages.jsonl", &a).uri(),
            "viking://user/alice/sessions/s1/messages.jsonl"
        );
        assert_eq!(
            ok("viking://session/s1", &who(Role::Root, "default")).uri(),
            "viking://user/default/sessions/s1"
        );
    }

    #[test]
    fn alias_uidless_reserved_spelling() {
        let a = alice();
        for child in USER_CHILDREN {
            let e = parse(&format!("viking://user/{child}/x"), &a).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidUri, "{child}");
            assert!(e.message.contains("viking://~/"), "{}", e.message);
        }
        // …unless the caller's id literally is that word.
        let m = who(Role::User, "memories");
        assert_eq!(
            ok("viking://user/memories/x", &m).uri(),
            "viking://user/memories/x"
        );
        // ADMIN is held to it too; ROOT names a user explicitly (0.5.2, issue #19).
        let admin = who(Role::Admin, "alice");
        assert_eq!(code("viking://user/peers/x", &admin), ErrorCode::InvalidUri);
        for child in USER_CHILDREN {
            let raw = format!("viking://user/{child}/x");
            assert_eq!(ok(&raw, &who(Role::Root, "default")).uri(), raw);
        }
    }

    #[test]
    fn alias_user_and_peer_ids_validated() {
        let a = alice();
        assert_eq!(code("viking://user/bad@id@x", &a), ErrorCode::InvalidUri);
        assert_eq!(code("viking://user/a b", &a), ErrorCode::InvalidUri);
        assert_eq!(ok("viking://user/bob", &a).uri(), "viking://user/bob");
        assert_eq!(code("viking://~/peers/p q", &a), ErrorCode::InvalidUri);
        assert_eq!(
            ok("viking://~/peers/p1/memories", &a).uri(),
            "viking://user/alice/peers/p1/memories"
        );
    }

    #[test]
    fn path_safety() {
        let a = alice();
        for bad in [
            "viking://resources/..",
            "viking://resources/a/../b",
            "viking://resources/.",
            "viking://resources/a\\b",
            "viking://resources/C:",
            "viking://resources/c:x",
            "viking://resources/%2e%2e",
            "viking://resources/%2E%2E/x",
            "viking://resources/%252e%252e",
            "viking://resources/a%2fb",
            "viking://resources/a%5cb",
            "viking://resources/\u{2024}\u{2024}",
            "viking://resources/\u{FF0E}\u{FF0E}",
            "viking://resources/\u{2025}",
            "viking://resources/a\u{FF0F}b",
            "viking://resources/a\u{FF3C}b",
            "viking://~/..",
            "viking://../acme",
        ] {
            let e = parse(bad, &a).unwrap_err();
            assert_eq!(e.code, ErrorCode::PermissionDenied, "{bad:?}: {e:?}");
            assert!(
                e.message.starts_with("Unsafe URI traversal segment"),
                "{bad}"
            );
        }
        for bad in [
            "viking://resources/a\0b".to_string(),
            "viking://resources/a\nb".to_string(),
            "viking://resources/a%00b".to_string(),
            "viking://resources/a\u{7f}".to_string(),
            format!("viking://resources/{}", "x".repeat(256)),
        ] {
            assert_eq!(code(&bad, &a), ErrorCode::InvalidUri, "{bad:?}");
        }
        // Ordinary names that merely contain dots or percent signs are fine.
        for fine in [
            "viking://resources/a..b",
            "viking://resources/.hidden",
            "viking://resources/100%",
        ] {
            ok(fine, &a);
        }
        ok(&format!("viking://resources/{}", "x".repeat(255)), &a);
    }

    // Issue #26: every name a backend or the index gives meaning to is reserved in every
    // client-named path, and no VikingUri can be built onto one from storage either.
    #[test]
    fn internal_names_are_reserved() {
        use crate::storage::backend::s3::keys::{DIR_MARKER, FLAG_PREFIX, LOCKS_DIR, MOVES_DIR};
        let a = alice();
        let names = [
            ".longship-tmp-notes.md".to_string(),
            format!("{FLAG_PREFIX}docs"),
            DIR_MARKER.to_string(),
            LOCKS_DIR.to_string(),
            MOVES_DIR.to_string(),
            crate::storage::seglog::LOG_DIR.to_string(),
            ".longship-probe-1".to_string(),
            ".path.ovlock".to_string(),
            ".exact.ovlock.x".to_string(),
            ".redirect.json".to_string(),
            ".sync_log.json".to_string(),
        ];
        for name in &names {
            for raw in [
                format!("viking://resources/{name}"),
                format!("viking://resources/a/{name}/b.md"),
                format!("viking://~/{name}"),
                format!("viking://agent/{name}"),
            ] {
                let e = parse(&raw, &a).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidArgument, "{raw}");
                assert!(e.message.contains("reserved"), "{}", e.message);
            }
            let dir = ok("viking://resources/a", &a);
            assert!(dir.child(name).is_err(), "{name}");
            assert!(!child_visible(&dir, name, &a), "{name}");
            assert!(!is_api_segment(name), "{name}");
        }
        // Look-alikes that are not the server's are ordinary names.
        for fine in [
            ".longship",
            "longship-tmp-x",
            ".Longship-x",
            "x.longship-dir",
        ] {
            ok(&format!("viking://resources/{fine}"), &a);
        }
    }

    fn allowed(raw: &str, id: &Identity, access: Access) -> bool {
        authorize(&ok(raw, id), id, access).is_ok()
    }

    // §5.2, one test per row.
    #[test]
    fn access_account_root() {
        for role in [Role::User, Role::Admin, Role::Root] {
            let id = who(role, "alice");
            assert!(allowed("viking://", &id, Access::Read));
            assert!(!allowed("viking://", &id, Access::Delete));
        }
        assert!(!allowed("viking://", &alice(), Access::Write));
        assert!(allowed(
            "viking://",
            &who(Role::Admin, "alice"),
            Access::Write
        ));
    }

    #[test]
    fn access_resources() {
        for role in [Role::User, Role::Admin, Role::Root] {
            let id = who(role, "alice");
            for access in [Access::Read, Access::Write, Access::Delete] {
                assert!(allowed("viking://resources/x", &id, access));
            }
            assert!(allowed("viking://resources", &id, Access::Read));
            assert!(allowed("viking://resources", &id, Access::Write));
        }
        let e = authorize(
            &ok("viking://resources", &alice()),
            &alice(),
            Access::Delete,
        )
        .unwrap_err();
        assert_eq!(e.message, NAMESPACE_ROOT);
        assert!(!allowed(
            "viking://resources",
            &who(Role::Admin, "a"),
            Access::Delete
        ));
        assert!(allowed(
            "viking://resources",
            &who(Role::Root, "a"),
            Access::Delete
        ));
    }

    #[test]
    fn access_user_namespace() {
        for role in [Role::User, Role::Admin, Role::Root] {
            let id = who(role, "alice");
            assert!(allowed("viking://user", &id, Access::Read));
            let e = authorize(&ok("viking://user", &id), &id, Access::Write).unwrap_err();
            assert!(e
                .message
                .starts_with("Writing viking://user is not supported"));
            assert!(!allowed("viking://user", &id, Access::Delete));
        }
        let dir = ok("viking://user", &alice());
        assert!(child_visible(&dir, "alice", &alice()));
        assert!(!child_visible(&dir, "bob", &alice()));
        assert!(!child_visible(&dir, "bob", &who(Role::Admin, "alice")));
        assert!(child_visible(&dir, "bob", &who(Role::Root, "alice")));
    }

    #[test]
    fn access_user_space() {
        let a = alice();
        for access in [Access::Read, Access::Write, Access::Delete] {
            assert!(allowed("viking://user/alice/memories/x", &a, access));
            assert!(allowed("viking://~/x", &a, access));
            let e = authorize(&ok("viking://user/bob/x", &a), &a, access).unwrap_err();
            assert_eq!(e.code, ErrorCode::PermissionDenied);
            assert_eq!(
                e.message,
                format!(
                    "Access denied for viking://user/bob/x: {} permission required",
                    access.permission()
                )
            );
            // ADMIN has no extra data privileges.
            assert!(!allowed(
                "viking://user/bob/x",
                &who(Role::Admin, "alice"),
                access
            ));
            assert!(allowed(
                "viking://user/bob/x",
                &who(Role::Root, "alice"),
                access
            ));
        }
        assert!(allowed("viking://user/alice", &a, Access::Read));
        assert!(allowed("viking://user/alice", &a, Access::Write));
        let e = authorize(&ok("viking://~", &a), &a, Access::Delete).unwrap_err();
        assert_eq!(e.message, NAMESPACE_ROOT);
        assert!(allowed(
            "viking://user/alice",
            &who(Role::Root, "x"),
            Access::Delete
        ));
    }

    #[test]
    fn access_agent() {
        for role in [Role::User, Role::Admin, Role::Root] {
            let id = who(role, "alice");
            for access in [Access::Read, Access::Write, Access::Delete] {
                assert!(allowed("viking://agent/skills/x", &id, access));
                assert!(allowed("viking://agent/other", &id, access));
            }
            assert!(allowed("viking://agent", &id, Access::Read));
            assert!(allowed("viking://agent", &id, Access::Write));
            let e = authorize(&ok("viking://agent", &id), &id, Access::Delete).unwrap_err();
            assert!(e
                .message
                .starts_with("Deleting viking://agent root is not supported"));
        }
    }

    #[test]
    fn access_aliases_equal_own_space() {
        let a = alice();
        for access in [Access::Read, Access::Write, Access::Delete] {
            assert!(allowed("viking://~/memories/x", &a, access));
            assert!(allowed("viking://session/s1", &a, access));
        }
    }

    #[test]
    fn listing_filters() {
        let a = alice();
        let root = ok("viking://", &a);
        for name in ["resources", "user", "agent"] {
            assert!(child_visible(&root, name, &a));
        }
        for name in ["_system", "system", "other", ".abstract.md"] {
            assert!(!child_visible(&root, name, &a), "{name}");
        }
        let res = ok("viking://resources", &a);
        assert!(child_visible(&res, "_system", &a));
        assert!(child_visible(&res, ".abstract.md", &a));
        for internal in [
            ".path.ovlock",
            ".exact.ovlock.1",
            ".redirect.json",
            ".sync_log.json",
        ] {
            assert!(!child_visible(&res, internal, &a));
        }
    }

    #[test]
    fn helpers() {
        let a = alice();
        let u = ok("viking://resources/a/b", &a);
        let base = ok("viking://resources", &a);
        assert_eq!(u.rel_to(&base).as_deref(), Some("a/b"));
        assert_eq!(u.parent().unwrap().uri(), "viking://resources/a");
        assert_eq!(u.child("c").unwrap().uri(), "viking://resources/a/b/c");
        assert!(u.child("..").is_err());
        assert!(u.child("x/y").is_err());
        assert_eq!(ok("viking://", &a).parent(), None);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("~".to_string()),
            Just("session".to_string()),
            Just("user".to_string()),
            Just("resources".to_string()),
            Just("agent".to_string()),
            Just("..".to_string()),
            Just(".".to_string()),
            Just("%2e%2e".to_string()),
            Just("\u{FF0E}\u{FF0E}".to_string()),
            Just("alice".to_string()),
            Just("memories".to_string()),
            "[a-z.~%\\\\:@_ -]{0,6}",
            "\\PC{0,4}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn normalising_is_idempotent_and_confined(
            segs in proptest::collection::vec(segment(), 0..6),
            lead in prop_oneof![Just(""), Just(" "), Just("/")],
            trail in prop_oneof![Just(""), Just("/"), Just("  ")],
            role in prop_oneof![Just(Role::User), Just(Role::Admin), Just(Role::Root)],
        ) {
            let id = who(role, "alice");
            let raw = format!("{lead}viking://{}{trail}", segs.join("/"));
            if let Ok(once) = parse(&raw, &id) {
                let twice = parse(&once.uri(), &id).expect("canonical form re-parses");
                prop_assert_eq!(&twice, &once);
                let p = once.store_path();
                prop_assert!(p.starts_with(&StorePath::parse("acme").unwrap()));
                prop_assert_eq!(p.segments().next(), Some("acme"));
                prop_assert!(p.segments().all(|s| s != ".." && s != "." && !s.contains('\\')));
                prop_assert_eq!(p.segments().count(), once.segments().len() + 1);
            }
        }
    }
}
