//! C5 write (0.5.2 rules, spec §13.14): every mode is an upsert; crash-safe replace through the
//! backend's atomic write, appends through the backend's append (atomic with respect to other
//! writers, so two concurrent appends are both present and whole).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use super::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use super::{is_a_directory, stat, StorageFail};
use crate::config::QuotaSettings;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::okf;
use crate::storage::uri::{Scope, VikingUri, SCHEME};
use crate::storage::{Storage, StorageError};

/// Extensions a write may create (existing files of any name may be rewritten).
const NEW_FILE_EXTENSIONS: [&str; 9] =
    ["md", "txt", "json", "yaml", "yml", "toml", "py", "js", "ts"];

/// How many times a sidecar edit retries a lost compare-and-swap before answering 409.
const SIDECAR_CAS_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Replace,
    Append,
    /// 0.5.2: an alias of replace that echoes `"mode": "create"`.
    Create,
}

impl WriteMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "replace" => Some(WriteMode::Replace),
            "append" => Some(WriteMode::Append),
            "create" => Some(WriteMode::Create),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Replace => "replace",
            WriteMode::Append => "append",
            WriteMode::Create => "create",
        }
    }
}

fn unsafe_uri(message: String) -> ServiceError {
    ServiceError::invalid_argument(format!("invalid uri: {message}"))
}

/// C5's stricter checks on the raw URI, before it is parsed (spec §5.4): no `?` anywhere, and
/// no segment whose percent-decoding is `.`, `..` or contains `/` or `\` — a plain `..` decodes
/// to itself, so it is a 400 here like `%2e%2e`, not the 403 of the other routes.
pub fn preflight(raw: &str) -> ServiceResult<()> {
    crate::storage::uri::check_size(raw)?;
    if raw.contains('?') {
        return Err(unsafe_uri(format!("Unsafe character '?' in {raw}")));
    }
    let rest = raw.trim();
    let rest = rest.strip_prefix(SCHEME).unwrap_or(rest);
    for seg in rest.split('/') {
        let decoded = percent_decode_str(seg).decode_utf8_lossy();
        if decoded == "." || decoded == ".." || decoded.contains(['/', '\\']) {
            return Err(unsafe_uri(format!("Unsafe path segment '{seg}' in {raw}")));
        }
    }
    Ok(())
}

/// 0.5.2 renames segments containing whitespace: characters other than letters, digits, `_`,
/// `-` and `.` become `_`, runs of `_` collapse, `_`/`.` are trimmed at both ends, the result is
/// cut to 50 characters (`unnamed` if nothing is left).
pub fn sanitize_segment(seg: &str) -> Cow<'_, str> {
    if !seg.chars().any(char::is_whitespace) {
        return Cow::Borrowed(seg);
    }
    let mut out = String::with_capacity(seg.len());
    for c in seg.chars() {
        let keep = c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
        let c = if keep { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let trimmed: String = out
        .trim_matches(|c| c == '_' || c == '.')
        .chars()
        .take(50)
        .collect();
    if trimmed.is_empty() {
        Cow::Borrowed("unnamed")
    } else {
        Cow::Owned(trimmed)
    }
}

/// The URI a write actually stores to, after whitespace renaming.
pub fn renamed(uri: &VikingUri, account: &str) -> ServiceResult<VikingUri> {
    if !uri
        .segments()
        .iter()
        .any(|s| s.contains(char::is_whitespace))
    {
        return Ok(uri.clone());
    }
    let mut out = VikingUri::root(account)?;
    for seg in uri.segments() {
        out = out.child(&sanitize_segment(seg))?;
    }
    Ok(out)
}

/// Name and namespace rules of C5 that need no storage access.
pub fn check_target(uri: &VikingUri) -> ServiceResult<()> {
    let shown = uri.uri();
    let bad = |m: &str| Err(ServiceError::invalid_argument(format!("{m}: {shown}")));
    if uri.name() == ".relations.json" {
        return bad("cannot write derived semantic file directly");
    }
    if let [scope, name] = uri.segments() {
        let watch = [
            ".watch_tasks.json",
            ".watch_tasks.json.bak",
            ".watch_tasks.json.tmp",
        ];
        if scope == "resources" && watch.contains(&name.as_str()) {
            return bad("cannot write watch task control file directly");
        }
    }
    if uri.scope() == Scope::User
        && uri.segments().len() >= 2
        && !user_target_ok(&uri.segments()[2..])
    {
        return bad("user-scope writes need a file under memories/, resources/, or directly at the user root");
    }
    Ok(())
}

/// `rest` = the segments after `user/{uid}`.
fn user_target_ok(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    match r.as_slice() {
        // A plain file in the user root, but not one named like a preset directory.
        [file] => !matches!(
            *file,
            "memories" | "resources" | "skills" | "peers" | "privacy" | "sessions"
        ),
        ["peers", _pid, tail @ ..] => shared_target_ok(tail),
        tail => shared_target_ok(tail),
    }
}

/// `memories/<type>/…` or `resources/<x>…`.
fn shared_target_ok(tail: &[&str]) -> bool {
    match tail {
        ["memories", rest @ ..] => rest.len() >= 2,
        ["resources", rest @ ..] => !rest.is_empty(),
        _ => false,
    }
}

/// `context_type` of the result.
fn context_type(uri: &VikingUri) -> &'static str {
    let segs: Vec<&str> = uri.segments().iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["user", _, "memories", ..] | ["user", _, "peers", _, "memories", ..] => "memory",
        ["user", _, "skills", ..] | ["agent", "skills", ..] => "skill",
        _ => "resource",
    }
}

/// Write `content` to a file (C5).
pub fn write_file(
    storage: &dyn Storage,
    uri: &VikingUri,
    content: &str,
    mode: WriteMode,
    quota: &QuotaSettings,
) -> ServiceResult<Value> {
    let shown = uri.uri();
    let existing = stat(storage, uri)?;
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(is_a_directory(
            uri,
            format!("write only supports existing files, got directory: {shown}"),
        ));
    }
    let name = uri.name();
    let sidecar = name == ABSTRACT_FILE || name == OVERVIEW_FILE;
    if existing.is_none() {
        if sidecar {
            return Err(ServiceError::invalid_argument(format!(
                "cannot create generated abstract overview directly: {shown}"
            )));
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        if !NEW_FILE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            let shown_ext = if ext.is_empty() {
                String::new()
            } else {
                format!(".{ext}")
            };
            return Err(ServiceError::invalid_argument(format!(
                "creating a new file does not allow extension '{shown_ext}': {shown}"
            )));
        }
    }
    let fail = |e: StorageError| StorageFail(uri).map(e);
    // Content (not sidecar edits) counts against the account's quota.
    let account = uri.store_path().segments().next().unwrap_or_default();
    let (added_bytes, added_files) = match (mode, &existing) {
        (WriteMode::Append, _) => (content.len() as i64, 0),
        (_, Some(m)) => (content.len() as i64 - m.size as i64, 0),
        (_, None) => (content.len() as i64, 1),
    };
    if !sidecar {
        crate::storage::quota::admit(
            storage,
            account,
            added_bytes.max(0) as u64,
            added_files,
            quota,
        )?;
    }
    let written = if sidecar {
        edit_sidecar(storage, uri, content, mode)?
    } else {
        match mode {
            WriteMode::Replace | WriteMode::Create => {
                storage
                    .write(uri.store_path(), content.as_bytes())
                    .map_err(fail)?;
                content.len() as u64
            }
            WriteMode::Append => {
                storage
                    .append(uri.store_path(), content.as_bytes())
                    .map_err(fail)?;
                stat(storage, uri)?.map(|m| m.size).unwrap_or(0)
            }
        }
    };
    if !sidecar {
        crate::storage::quota::charge(storage, account, added_bytes, added_files as i64, quota);
    }
    let root_uri = uri.parent().map(|p| p.uri()).unwrap_or_default();
    Ok(json!({
        "uri": shown,
        "root_uri": root_uri,
        "context_type": context_type(uri),
        "mode": mode.as_str(),
        "written_bytes": written,
        "content_updated": true,
        "semantic_status": "skipped",
        "vector_status": "skipped",
        "queue_status": null,
    }))
}

/// Edit an existing `.abstract.md`/`.overview.md`: a body-only payload keeps the stored front
/// matter; a payload with front matter must carry the same metadata. Compare-and-swap, so a
/// concurrent edit is never lost.
fn edit_sidecar(
    storage: &dyn Storage,
    uri: &VikingUri,
    content: &str,
    mode: WriteMode,
) -> ServiceResult<u64> {
    let fail = |e: StorageError| StorageFail(uri).map(e);
    let (new_front, new_body) = okf::split(content);
    for _ in 0..SIDECAR_CAS_ATTEMPTS {
        let (old, version) = storage.read_versioned(uri.store_path()).map_err(fail)?;
        let old = super::lossy_string(old);
        let (old_front, old_body) = okf::split(&old);
        if new_front.is_some() && new_front != old_front {
            return Err(ServiceError::invalid_argument(format!(
                "front matter of {} must match the stored metadata",
                uri.uri()
            )));
        }
        let body = match mode {
            WriteMode::Append => format!("{old_body}{new_body}"),
            _ => new_body.to_string(),
        };
        let text = match old_front {
            Some(front) => format!(
                "---\n{front}---\n\n{}\n",
                body.trim_start_matches('\n').trim_end_matches('\n')
            ),
            None => body,
        };
        match storage.write_if(uri.store_path(), text.as_bytes(), Some(&version)) {
            Ok(_) => return Ok(text.len() as u64),
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(StorageError::Conflict(String::new())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::storage::uri::parse;

    fn u(raw: &str) -> VikingUri {
        let id = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "alice".into(),
        };
        parse(raw, &id).unwrap()
    }

    #[test]
    fn whitespace_segments_are_renamed() {
        assert_eq!(sanitize_segment("my notes.md"), "my_notes.md");
        assert_eq!(sanitize_segment("plain.md"), "plain.md");
        assert_eq!(sanitize_segment(" a  b!c "), "a_b_c");
        assert_eq!(sanitize_segment(" . "), "unnamed");
        assert_eq!(sanitize_segment("日本 語.md"), "日本_語.md");
        assert_eq!(sanitize_segment(&format!("{} x", "a".repeat(60))).len(), 50);
        let r = renamed(&u("viking://resources/my dir/my notes.md"), "acme").unwrap();
        assert_eq!(r.uri(), "viking://resources/my_dir/my_notes.md");
        assert_eq!(r.store_path().as_str(), "acme/resources/my_dir/my_notes.md");
    }

    #[test]
    fn preflight_rules() {
        assert!(preflight("viking://resources/a.md").is_ok());
        assert!(preflight("viking://resources/100%.md").is_ok());
        for bad in [
            "viking://resources/a.md?x=1",
            "viking://resources/%2e%2e/a.md",
            "viking://resources/%2E/a.md",
            "viking://resources/a%2Fb.md",
            "viking://resources/a%5cb.md",
        ] {
            let e = preflight(bad).unwrap_err();
            assert!(e.message.starts_with("invalid uri: Unsafe"), "{bad}");
        }
    }

    #[test]
    fn target_rules() {
        for ok in [
            "viking://resources/a.md",
            "viking://~/note.md",
            "viking://~/memories/facts/a.md",
            "viking://~/resources/x.md",
            "viking://~/peers/p1/memories/t/a.md",
            "viking://~/peers/p1/resources/a.md",
            "viking://agent/skills/s.md",
        ] {
            assert!(check_target(&u(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "viking://~/skills/a.md",
            "viking://~/privacy/a.md",
            "viking://~/sessions/s/a.md",
            "viking://~/peers/p1/a.md",
            "viking://~/memories/a.md",
            "viking://~/resources",
            "viking://resources/.relations.json",
            "viking://resources/.watch_tasks.json",
        ] {
            assert!(check_target(&u(bad)).is_err(), "{bad}");
        }
        // Storage-internal names are refused earlier, by the URI parser, on every route.
        let id = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "alice".into(),
        };
        let e = parse("viking://resources/x/.path.ovlock", &id).unwrap_err();
        assert!(e.message.contains("reserved"), "{}", e.message);
        assert_eq!(context_type(&u("viking://~/memories/t/a.md")), "memory");
        assert_eq!(context_type(&u("viking://agent/skills/a.md")), "skill");
        assert_eq!(context_type(&u("viking://resources/a.md")), "resource");
    }
}
