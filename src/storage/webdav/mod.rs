//! WebDAV over the resources scope (issue #24): what the methods need beyond the fs
//! operations — a byte-exact put, a collection create with WebDAV's status rules, an RFC 4918
//! move (`Overwrite`), and the PROPFIND answer ([`multistatus`]).
//!
//! Callers have parsed and authorized the URIs (the one enforcement point, `uri::authorize`);
//! the functions here only ever see paths inside the caller's account.

pub mod conditions;
pub mod locks;
pub mod multistatus;
pub mod props;
pub mod xml;

use serde_json::json;

use super::fs::entry::{ABSTRACT_FILE, OVERVIEW_FILE};
use super::fs::{already_exists, cp, mkdir, rm, stat, StorageFail};
use super::uri::VikingUri;
use super::{acl, remove_if_exists, tags, Storage, StorageError, StorePath};
use crate::config::QuotaSettings;
use crate::error::{ErrorCode, ServiceError, ServiceResult};

/// Names WebDAV never shows or lets a client address (0.5.2 hides the same derived files),
/// besides the storage-internal names every route refuses.
const HIDDEN_FILES: [&str; 3] = [ABSTRACT_FILE, OVERVIEW_FILE, ".relations.json"];

/// True for a name WebDAV hides: derived summaries and storage-internal names.
pub fn is_hidden(name: &str) -> bool {
    HIDDEN_FILES.contains(&name) || crate::reserved::is_internal_name(name)
}

/// What a put or move did to its target (201 or 204).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Replaced,
}

/// 409: the parent collection of `uri` is missing (RFC 4918 §9.7.1, §9.3.1).
fn missing_parent(uri: &VikingUri) -> ServiceError {
    let shown = uri.uri();
    ServiceError::conflict(format!("parent collection does not exist: {shown}"))
        .with_details(json!({"resource": shown}))
}

fn not_allowed(message: String) -> ServiceError {
    ServiceError::new(ErrorCode::MethodNotAllowed, message)
}

/// The parent of `uri` must be an existing directory.
fn check_parent(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<()> {
    let Some(parent) = uri.parent() else {
        return Err(missing_parent(uri));
    };
    match stat(storage, &parent)? {
        Some(m) if m.is_dir() => Ok(()),
        _ => Err(missing_parent(uri)),
    }
}

/// PUT: store `data` byte-exact at `uri` with one atomic write (the backend's crash-safe
/// replace, as `content/write`), within the account's quota. Any bytes, any file name.
pub fn put_file(
    storage: &dyn Storage,
    uri: &VikingUri,
    data: &[u8],
    quota: &QuotaSettings,
) -> ServiceResult<Outcome> {
    put_with(storage, uri, data.len() as u64, quota, &mut |path| {
        storage.write(path, data)
    })
}

/// PUT of a large body staged in pieces: `size` bytes that `next_piece` yields in order,
/// streamed into one atomic write ([`Storage::write_pieces`]); otherwise as [`put_file`].
pub fn put_pieces(
    storage: &dyn Storage,
    uri: &VikingUri,
    size: u64,
    quota: &QuotaSettings,
    next_piece: &mut dyn FnMut() -> ServiceResult<Option<Vec<u8>>>,
) -> ServiceResult<Outcome> {
    // The piece reader's own error (a vanished staging piece) is kept for the caller.
    let mut failure: Option<ServiceError> = None;
    let out = put_with(storage, uri, size, quota, &mut |path| {
        storage.write_pieces(path, &mut || {
            next_piece().map_err(|e| {
                let msg = e.message.clone();
                failure = Some(e);
                StorageError::Unavailable(msg)
            })
        })
    });
    match (out, failure) {
        (Err(_), Some(e)) => Err(e),
        (out, _) => out,
    }
}

fn put_with(
    storage: &dyn Storage,
    uri: &VikingUri,
    size: u64,
    quota: &QuotaSettings,
    write: &mut dyn FnMut(&StorePath) -> Result<super::Version, StorageError>,
) -> ServiceResult<Outcome> {
    check_parent(storage, uri)?;
    let existing = stat(storage, uri)?;
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(not_allowed(format!(
            "PUT is only supported for files; a collection exists at {}",
            uri.uri()
        )));
    }
    let account = uri.store_path().segments().next().unwrap_or_default();
    let (bytes, files) = match &existing {
        Some(m) => (size as i64 - m.size as i64, 0),
        None => (size as i64, 1),
    };
    super::quota::admit(storage, account, bytes.max(0) as u64, files, quota)?;
    write(uri.store_path()).map_err(|e| StorageFail(uri).map(e))?;
    super::quota::charge(storage, account, bytes, files as i64, quota);
    Ok(match existing {
        Some(_) => Outcome::Replaced,
        None => Outcome::Created,
    })
}

/// MKCOL: create one collection (with its abstract sidecar, as `fs/mkdir`); an existing node
/// is 405 and a missing parent 409 (RFC 4918 §9.3.1).
pub fn make_collection(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<()> {
    if stat(storage, uri)?.is_some() {
        return Err(not_allowed(format!("already exists: {}", uri.uri())));
    }
    check_parent(storage, uri)?;
    match mkdir::make_dir(storage, uri, None) {
        Ok(_) => Ok(()),
        // Created concurrently: it exists now, as the client sees on its next look.
        Err(e) if e.code == ErrorCode::Conflict => {
            Err(not_allowed(format!("already exists: {}", uri.uri())))
        }
        Err(e) => Err(e),
    }
}

/// 412 for `Overwrite: F` onto an existing target.
fn target_exists(to: &VikingUri) -> ServiceError {
    let shown = to.uri();
    ServiceError::new(
        ErrorCode::FailedPrecondition,
        format!("destination exists and Overwrite is F: {shown}"),
    )
    .with_details(json!({"resource": shown}))
}

/// MOVE `from` to `to` (RFC 4918 §9.9). Without an existing target: one no-replace rename, so
/// a target created meanwhile is never overwritten (412 with `Overwrite: F`). With one and
/// `overwrite`: a file onto a file is one atomic write of the target (readers see the old or
/// the new bytes, never neither), then the source is removed; otherwise the target is
/// removed, then the source renamed. The caller has checked rights and that the two differ
/// and do not contain each other. A tree that moves in many steps (S3) calls `between_steps`
/// between them.
pub fn move_to(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    overwrite: bool,
    between_steps: &dyn Fn(),
) -> ServiceResult<Outcome> {
    let Some(src) = stat(storage, from)? else {
        let shown = from.uri();
        return Err(ServiceError::not_found(
            "resource",
            &shown,
            format!("Resource not found: {shown}"),
        ));
    };
    check_parent(storage, to)?;
    let outcome = match stat(storage, to)? {
        None => Outcome::Created,
        Some(_) if !overwrite => return Err(target_exists(to)),
        Some(dst) if !dst.is_dir() && !src.is_dir() => {
            replace_file(storage, from, to)?;
            return Ok(Outcome::Replaced);
        }
        Some(dst) => {
            // Its ACL rows go with it (`rm`), and the source's arrive below.
            rm::remove(storage, &|| false, to, dst.is_dir())?;
            Outcome::Replaced
        }
    };
    // ACL rows follow the node as with `fs mv` (0.5.2: a moved node keeps its own ACL and
    // inherits from its new parent): copied before the rename, the source's dropped after.
    acl::store::before_move(storage, from, to)?;
    let renamed = storage.rename_in_steps(from.store_path(), to.store_path(), between_steps);
    if let Err(e) = acl::store::after_move(storage, from, to, renamed.is_ok()) {
        tracing::error!(from = %from.uri(), to = %to.uri(), error = %e.message, "ACL rows not settled after a WebDAV move");
    }
    match renamed {
        Ok(()) => {
            move_tags(storage, from, to, outcome == Outcome::Replaced);
            Ok(outcome)
        }
        // Created between the look and the rename: never replaced.
        Err(StorageError::AlreadyExists(_)) if !overwrite => Err(target_exists(to)),
        Err(StorageError::AlreadyExists(_)) => Err(already_exists(to)),
        Err(e) => Err(StorageFail(from).map(e)),
    }
}

/// A file onto an existing file: one atomic write of the target, then the source goes. The
/// target is sealed (ADMIN only) from before the write until it carries the source's ACL
/// rows, so no reader the final rows refuse sees either content meanwhile.
fn replace_file(storage: &dyn Storage, from: &VikingUri, to: &VikingUri) -> ServiceResult<()> {
    let data = storage
        .read(from.store_path())
        .map_err(|e| StorageFail(from).map(e))?;
    let sealed = acl::store::seal_node(storage, from, to)?;
    if let Err(e) = storage.write(to.store_path(), &data) {
        if let Err(undo) = acl::store::put_back(storage, sealed) {
            tracing::error!(to = %to.uri(), error = %undo.message, "ACL rows of a target not put back after a failed WebDAV move");
        }
        return Err(StorageFail(to).map(e));
    }
    acl::store::before_move(storage, from, to)?;
    move_tags(storage, from, to, true);
    remove_if_exists(storage, from.store_path(), false).map_err(|e| StorageFail(from).map(e))?;
    acl::store::after_remove(storage, from)
}

/// COPY `from` to `to` (RFC 4918 §9.8): a file, a whole collection (`deep`), or with Depth 0
/// a collection without its members. An existing target is 412 without `overwrite`, else
/// removed first; the copy itself is create-only per file (`fs/cp`). The caller has checked
/// rights and that the two differ and do not contain each other.
pub fn copy_to(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    overwrite: bool,
    deep: bool,
    between_steps: &dyn Fn(),
) -> ServiceResult<Outcome> {
    let Some(src) = stat(storage, from)? else {
        let shown = from.uri();
        return Err(ServiceError::not_found(
            "resource",
            &shown,
            format!("Resource not found: {shown}"),
        ));
    };
    check_parent(storage, to)?;
    // 0.5.2 keeps an overwritten copy target's ACL: the target's rows are saved, dropped
    // with it, sealed while the copy writes, and come back on the nodes written again.
    let mut target_rows = None;
    let outcome = match stat(storage, to)? {
        None => Outcome::Created,
        Some(_) if !overwrite => return Err(target_exists(to)),
        Some(dst) => {
            let saved = acl::store::rows_of(storage, to)?;
            rm::remove(storage, &|| false, to, dst.is_dir())?;
            acl::store::seal_for_rewrite(storage, &saved)?;
            target_rows = Some(saved);
            Outcome::Replaced
        }
    };
    let copied = copy_node(storage, from, to, src.is_dir() && !deep, between_steps);
    // Even after a partial copy: what was written keeps the target's rows. Should that
    // fail, the seal stays (ADMIN only), never the parent's permissions.
    if let Some(saved) = target_rows {
        let kept = acl::store::keep_where_rewritten(storage, to, saved);
        match (&copied, kept) {
            (Ok(()), Err(e)) => return Err(e),
            (Err(_), Err(e)) => {
                tracing::error!(to = %to.uri(), error = %e.message, "ACL rows of a WebDAV copy target not put back after a failed copy");
            }
            (_, Ok(())) => {}
        }
    }
    match copied {
        Ok(()) => Ok(outcome),
        // Created between the look and the copy: never merged into.
        Err(e) if e.code == ErrorCode::Conflict && !overwrite => Err(target_exists(to)),
        Err(e) => Err(e),
    }
}

/// The copy itself: a collection alone (`shallow`, Depth 0) or the whole node (`fs/cp`).
fn copy_node(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    shallow: bool,
    between_steps: &dyn Fn(),
) -> ServiceResult<()> {
    if shallow {
        mkdir::make_dir(storage, to, None).and_then(|_| {
            props::copy_node(storage, from.store_path(), to.store_path())
                .map_err(|e| StorageFail(to).map(e))
        })
    } else {
        cp::copy_entry(storage, from, to, true, between_steps).map(drop)
    }
}

/// The node's own tags follow it (a directory's subtree carried its children's).
fn move_tags(storage: &dyn Storage, from: &VikingUri, to: &VikingUri, replaced: bool) {
    if replaced {
        if let Err(e) = tags::forget_node(storage, to.store_path()) {
            tracing::error!(to = %to.uri(), error = %e, "tags of a replaced node not dropped");
        }
    }
    if let Err(e) = tags::move_node(storage, from.store_path(), to.store_path()) {
        tracing::error!(from = %from.uri(), to = %to.uri(), error = %e.message, "tags not moved with their node");
    }
    if let Err(e) = props::move_node(storage, from.store_path(), to.store_path(), replaced) {
        tracing::error!(from = %from.uri(), to = %to.uri(), error = %e, "dead properties not moved with their node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::uri::parse;

    fn setup() -> (tempfile::TempDir, LocalStorage, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let who = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "alice".into(),
        };
        (dir, storage, who)
    }

    #[test]
    fn put_is_byte_exact_and_needs_a_parent() {
        let (_d, s, who) = setup();
        let q = QuotaSettings::default();
        let root = parse("viking://resources", &who).unwrap();
        s.mkdir(root.store_path()).unwrap();
        let f = parse("viking://resources/img.png", &who).unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        assert_eq!(put_file(&s, &f, &bytes, &q).unwrap(), Outcome::Created);
        assert_eq!(s.read(f.store_path()).unwrap(), bytes);
        assert_eq!(put_file(&s, &f, b"x", &q).unwrap(), Outcome::Replaced);
        let orphan = parse("viking://resources/nope/a.bin", &who).unwrap();
        assert_eq!(
            put_file(&s, &orphan, b"x", &q).unwrap_err().code,
            ErrorCode::Conflict
        );
        assert_eq!(
            put_file(&s, &root, b"x", &q).unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
    }

    #[test]
    fn move_honours_overwrite() {
        let (_d, s, who) = setup();
        let q = QuotaSettings::default();
        let u = |p: &str| parse(&format!("viking://resources/{p}"), &who).unwrap();
        s.mkdir(u("").store_path()).unwrap();
        put_file(&s, &u("a.txt"), b"A", &q).unwrap();
        put_file(&s, &u("b.txt"), b"B", &q).unwrap();
        let e = move_to(&s, &u("a.txt"), &u("b.txt"), false, &|| {}).unwrap_err();
        assert_eq!(e.code, ErrorCode::FailedPrecondition);
        assert_eq!(s.read(u("b.txt").store_path()).unwrap(), b"B");
        assert_eq!(
            move_to(&s, &u("a.txt"), &u("b.txt"), true, &|| {}).unwrap(),
            Outcome::Replaced
        );
        assert_eq!(s.read(u("b.txt").store_path()).unwrap(), b"A");
        assert!(s.stat(u("a.txt").store_path()).unwrap().is_none());
        assert_eq!(
            move_to(&s, &u("b.txt"), &u("c.txt"), false, &|| {}).unwrap(),
            Outcome::Created
        );
        make_collection(&s, &u("d")).unwrap();
        assert_eq!(
            make_collection(&s, &u("d")).unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            make_collection(&s, &u("x/y")).unwrap_err().code,
            ErrorCode::Conflict
        );
        // A file over a directory (overwrite): the directory goes.
        assert_eq!(
            move_to(&s, &u("c.txt"), &u("d"), true, &|| {}).unwrap(),
            Outcome::Replaced
        );
        assert!(!s.stat(u("d").store_path()).unwrap().unwrap().is_dir());
        assert!(is_hidden(".overview.md") && is_hidden(".longship-x") && !is_hidden(".x"));
        // COPY: a deep copy of a collection, 412 onto it without overwrite, shallow copies.
        put_file(&s, &u("e/f.txt"), b"F", &q).unwrap_err();
        make_collection(&s, &u("e")).unwrap();
        put_file(&s, &u("e/f.txt"), b"F", &q).unwrap();
        let none = || {};
        assert_eq!(
            copy_to(&s, &u("e"), &u("g"), false, true, &none).unwrap(),
            Outcome::Created
        );
        assert_eq!(s.read(u("g/f.txt").store_path()).unwrap(), b"F");
        let e = copy_to(&s, &u("e"), &u("g"), false, true, &none).unwrap_err();
        assert_eq!(e.code, ErrorCode::FailedPrecondition);
        assert_eq!(
            copy_to(&s, &u("e"), &u("g"), true, false, &none).unwrap(),
            Outcome::Replaced
        );
        assert!(s.stat(u("g/f.txt").store_path()).unwrap().is_none());
        assert!(s.stat(u("e/f.txt").store_path()).unwrap().is_some());
    }
}
