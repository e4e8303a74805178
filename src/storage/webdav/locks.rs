//! WebDAV write locks (RFC 4918 §6, §9.10–9.11) in shared storage, so every instance honours
//! every lock.
//!
//! One small JSON object per locked node: `<account>/_system/webdav/locks/<hash>.json` (hash
//! of the node's storage path), holding the node's path and its active locks (one exclusive,
//! or several shared). Each change is a compare-and-swap of that object (`read_versioned` +
//! `write_if`, retried). Expiry is by the wall clock stored in the lock (RFC 4918 timeouts are
//! advisory and clients refresh long before; a skew between hosts only shifts an expiry).
//! A write first lists the account's lock directory (one listing; empty in the common case)
//! and reads only the objects of the node, its ancestors and — for a tree change — all locks
//! below it.
//!
//! Accepted races (documented): a LOCK of a collection and a LOCK of a member taken at the
//! same moment on two instances may both succeed (each checks the other's object before its
//! own compare-and-swap); a write that passed its check just before a LOCK lands is not
//! stopped by it; an UNLOCK that empties an object deletes it, and a LOCK of the same node
//! landing in the milliseconds between its compare-and-swap and its delete is lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::conditions::{self, Check, IfHeader, Subject};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::{remove_if_exists, Storage, StorageError, StorePath, Version};

/// Most locks on one node (shared locks pile up; beyond: 423).
const MAX_LOCKS_PER_NODE: usize = 64;
/// Most locked nodes per account (beyond: 507).
pub const MAX_LOCKED_NODES: usize = 10_000;
const CAS_ATTEMPTS: u32 = 50;

/// One lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// `opaquelocktoken:<uuid>`.
    pub token: String,
    /// The user who took it (its token is valid only for them).
    pub user: String,
    pub shared: bool,
    /// Depth infinity (covers every member of a collection).
    pub deep: bool,
    /// The granted timeout, seconds.
    pub timeout_secs: u64,
    /// When it expires, milliseconds since the epoch (wall clock).
    pub expires_ms: u64,
    /// The client's `<owner>` content, as XML to echo back.
    #[serde(default)]
    pub owner: String,
}

impl Lock {
    fn active(&self, now: u64) -> bool {
        self.expires_ms > now
    }

    /// Seconds left, for `lockdiscovery`.
    pub fn seconds_left(&self) -> u64 {
        self.expires_ms.saturating_sub(now_ms()).div_ceil(1000)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LockFile {
    /// The locked node's storage path.
    path: String,
    locks: Vec<Lock>,
}

/// What a LOCK asks for.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub user: String,
    pub shared: bool,
    pub deep: bool,
    pub timeout_secs: u64,
    pub owner: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

fn account_of(path: &StorePath) -> &str {
    path.segments().next().unwrap_or_default()
}

fn locks_dir(account: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("webdav")?
        .join("locks")
}

fn file_name(node: &StorePath) -> String {
    let digest = Sha256::digest(node.as_str().as_bytes());
    format!("{}.json", hex::encode(&digest[..20]))
}

fn locked(message: String) -> ServiceError {
    ServiceError::new(ErrorCode::Locked, message)
}

/// The locks of one account as one request sees them: the names of its lock objects (one
/// listing), objects read on demand and kept for the request.
pub struct LockTable<'a> {
    storage: &'a dyn Storage,
    dir: StorePath,
    names: HashSet<String>,
    read: HashMap<String, Vec<Lock>>,
    now: u64,
}

impl<'a> LockTable<'a> {
    /// The account's lock objects (none when the directory does not exist).
    pub fn load(storage: &'a dyn Storage, account: &str) -> ServiceResult<Self> {
        let dir = locks_dir(account)?;
        let names = match storage.list(&dir) {
            Ok(entries) => entries.into_iter().map(|e| e.name).collect(),
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => HashSet::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(LockTable {
            storage,
            dir,
            names,
            read: HashMap::new(),
            now: now_ms(),
        })
    }

    /// True when the account holds no lock object at all (the common case: one listing).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn parse(&self, bytes: &[u8]) -> LockFile {
        serde_json::from_slice(bytes).unwrap_or_else(|e| {
            tracing::warn!(dir = %self.dir, error = %e, "unreadable lock object ignored");
            LockFile::default()
        })
    }

    /// The active locks on `node` itself.
    pub fn on(&mut self, node: &StorePath) -> ServiceResult<Vec<Lock>> {
        let name = file_name(node);
        if !self.names.contains(&name) {
            return Ok(Vec::new());
        }
        if let Some(l) = self.read.get(&name) {
            return Ok(l.clone());
        }
        let locks = match self.storage.read(&self.dir.join(&name)?) {
            Ok(bytes) => {
                let file = self.parse(&bytes);
                // A hash collision is astronomically unlikely; still, only this node's.
                if file.path == node.as_str() {
                    file.locks
                } else {
                    Vec::new()
                }
            }
            Err(StorageError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let now = self.now;
        let locks: Vec<Lock> = locks.into_iter().filter(|l| l.active(now)).collect();
        self.read.insert(name, locks.clone());
        Ok(locks)
    }

    /// The active locks covering `node`: its own and its ancestors' depth-infinity ones, each
    /// with the node it is on (the lock root).
    pub fn covering(&mut self, node: &StorePath) -> ServiceResult<Vec<(StorePath, Lock)>> {
        let mut out = Vec::new();
        if self.is_empty() {
            return Ok(out);
        }
        let mut at = Some(node.clone());
        let mut own = true;
        while let Some(p) = at {
            if p.segments().count() < 2 {
                break;
            }
            for l in self.on(&p)? {
                if own || l.deep {
                    out.push((p.clone(), l));
                }
            }
            own = false;
            at = p.parent();
        }
        Ok(out)
    }

    /// The active locks on nodes strictly below `node` (reads every lock object of the
    /// account; only for tree changes and depth-infinity LOCKs, and only when locks exist).
    pub fn below(&mut self, node: &StorePath) -> ServiceResult<Vec<(StorePath, Lock)>> {
        let mut out = Vec::new();
        if self.is_empty() {
            return Ok(out);
        }
        let names: Vec<String> = self.names.iter().cloned().collect();
        let paths = names
            .iter()
            .map(|n| self.dir.join(n))
            .collect::<Result<Vec<_>, _>>()?;
        for read in self.storage.read_many(&paths, &|| true) {
            let file = match read {
                Ok(bytes) => self.parse(&bytes),
                Err(StorageError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(path) = StorePath::parse(&file.path) else {
                continue;
            };
            if path != *node && path.starts_with(node) {
                for l in file.locks.into_iter().filter(|l| l.active(self.now)) {
                    out.push((path.clone(), l));
                }
            }
        }
        Ok(out)
    }
}

/// One node a write touches.
pub struct Touched<'a> {
    pub node: &'a StorePath,
    /// The change reaches below the node (DELETE/MOVE of a collection, COPY over one).
    pub subtree: bool,
    /// The change adds or removes the node itself, so it changes its parent's membership
    /// (a depth-0 lock on the parent collection covers that too).
    pub membership: bool,
}

/// The lock and `If` checks of one write request, run on the pool before the change.
#[derive(Debug, Clone)]
pub struct WriteCheck {
    /// The caller (a lock token is valid only for the user who took the lock).
    pub user: String,
    /// The request URI's node.
    pub request: StorePath,
    /// The parsed `If` header, tags resolved (`None`: no header).
    pub header: Option<IfHeader>,
}

impl WriteCheck {
    /// The account of the request's node.
    pub fn account(&self) -> &str {
        account_of(&self.request)
    }

    /// 412 when the `If` header is false; 423 when a touched node is locked by a lock whose
    /// token the caller did not submit.
    pub fn enforce(&self, storage: &dyn Storage, touched: &[Touched<'_>]) -> ServiceResult<()> {
        let mut table = LockTable::load(storage, account_of(&self.request))?;
        self.evaluate(storage, &mut table)?;
        if table.is_empty() {
            return Ok(());
        }
        let submitted: Vec<&str> = self
            .header
            .as_ref()
            .map(conditions::submitted_tokens)
            .unwrap_or_default();
        let mut held: Vec<(StorePath, Lock)> = Vec::new();
        for t in touched {
            held.extend(table.covering(t.node)?);
            if t.subtree {
                held.extend(table.below(t.node)?);
            }
            if t.membership {
                if let Some(parent) = t.node.parent() {
                    for l in table.on(&parent)? {
                        held.push((parent.clone(), l));
                    }
                }
            }
        }
        // Per locked node: satisfied when the caller submitted the token of one of its locks.
        let mut nodes: Vec<&StorePath> = held.iter().map(|(p, _)| p).collect();
        nodes.sort();
        nodes.dedup();
        for node in nodes {
            let ok = held.iter().any(|(p, l)| {
                p == node && l.user == self.user && submitted.contains(&l.token.as_str())
            });
            if !ok {
                return Err(locked(format!(
                    "{} is locked; send its lock token in an If header",
                    shown(node)
                )));
            }
        }
        Ok(())
    }

    /// RFC 4918 §10.4: true when any list holds; no header holds trivially.
    fn evaluate(&self, storage: &dyn Storage, table: &mut LockTable<'_>) -> ServiceResult<()> {
        let Some(header) = &self.header else {
            return Ok(());
        };
        for list in header {
            let node = match &list.subject {
                Subject::Request => Some(&self.request),
                Subject::Tagged(t) => t.as_ref(),
            };
            let Some(node) = node else { continue };
            let mut holds = true;
            for c in &list.conditions {
                let hit = match &c.check {
                    Check::Token(t) => table.covering(node)?.iter().any(|(_, l)| &l.token == t),
                    Check::ETag(e) => {
                        let meta = storage.stat(node)?;
                        meta.as_ref()
                            .and_then(conditions::etag_of)
                            .is_some_and(|cur| conditions::etag_matches(e, &cur))
                    }
                };
                if hit == c.not {
                    holds = false;
                    break;
                }
            }
            if holds {
                return Ok(());
            }
        }
        Err(ServiceError::new(
            ErrorCode::FailedPrecondition,
            "no list of the If header holds",
        ))
    }
}

/// A node's URI as clients may be told (never a storage path).
fn shown(node: &StorePath) -> String {
    let rest: Vec<&str> = node.segments().skip(1).collect();
    format!("viking://{}", rest.join("/"))
}

fn load_file(
    storage: &dyn Storage,
    path: &StorePath,
) -> ServiceResult<(LockFile, Option<Version>)> {
    match storage.read_versioned(path) {
        Ok((bytes, v)) => Ok((serde_json::from_slice(&bytes).unwrap_or_default(), Some(v))),
        Err(StorageError::NotFound(_)) => Ok((LockFile::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Compare-and-swap `node`'s lock object: `change` edits its active locks and returns a value
/// (or refuses). An emptied object is deleted.
fn update<T>(
    storage: &dyn Storage,
    node: &StorePath,
    change: &mut dyn FnMut(&mut Vec<Lock>) -> ServiceResult<T>,
) -> ServiceResult<T> {
    let path = locks_dir(account_of(node))?.join(&file_name(node))?;
    for attempt in 0..CAS_ATTEMPTS {
        let (mut file, version) = load_file(storage, &path)?;
        let now = now_ms();
        if file.path != node.as_str() {
            file = LockFile {
                path: node.as_str().to_string(),
                locks: Vec::new(),
            };
        }
        file.locks.retain(|l| l.active(now));
        let out = change(&mut file.locks)?;
        let written = if file.locks.is_empty() {
            match version {
                None => return Ok(out),
                Some(v) => storage
                    .write_if(&path, b"{\"path\":\"\",\"locks\":[]}", Some(&v))
                    .map(|_| true),
            }
        } else {
            let body = serde_json::to_vec(&file)
                .map_err(|e| ServiceError::internal(format!("lock object: {e}")))?;
            storage
                .write_if(&path, &body, version.as_ref())
                .map(|_| false)
        };
        match written {
            Ok(emptied) => {
                if emptied {
                    remove_if_exists(storage, &path, false)?;
                }
                return Ok(out);
            }
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
                std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) + 1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::new(
        ErrorCode::Unavailable,
        "lock object: too many concurrent writers",
    ))
}

fn conflicts(new: &LockRequest, existing: &Lock) -> bool {
    !(new.shared && existing.shared)
}

/// LOCK: a new lock on `uri` (which exists). 423 when an active lock on the node, an
/// ancestor's depth-infinity lock or (for a depth-infinity request) a lock below conflicts.
pub fn take(storage: &dyn Storage, uri: &VikingUri, req: &LockRequest) -> ServiceResult<Lock> {
    let node = uri.store_path();
    let mut table = LockTable::load(storage, account_of(node))?;
    if table.names.len() >= MAX_LOCKED_NODES && table.on(node)?.is_empty() {
        return Err(ServiceError::new(
            ErrorCode::InsufficientStorage,
            format!("at most {MAX_LOCKED_NODES} locked resources per account"),
        ));
    }
    let mut others = table.covering(node)?;
    if req.deep {
        others.extend(table.below(node)?);
    }
    if let Some((p, _)) = others.iter().find(|(p, l)| p != node && conflicts(req, l)) {
        return Err(locked(format!("{} is locked", shown(p))));
    }
    let lock = Lock {
        token: format!("opaquelocktoken:{}", uuid::Uuid::new_v4()),
        user: req.user.clone(),
        shared: req.shared,
        deep: req.deep,
        timeout_secs: req.timeout_secs,
        expires_ms: now_ms() + req.timeout_secs * 1000,
        owner: req.owner.clone(),
    };
    update(storage, node, &mut |locks| {
        if locks.iter().any(|l| conflicts(req, l)) {
            return Err(locked(format!("{} is locked", uri.uri())));
        }
        if locks.len() >= MAX_LOCKS_PER_NODE {
            return Err(locked(format!(
                "{} holds {MAX_LOCKS_PER_NODE} shared locks already",
                uri.uri()
            )));
        }
        locks.push(lock.clone());
        Ok(())
    })?;
    Ok(lock)
}

fn no_such_lock(uri: &VikingUri) -> ServiceError {
    ServiceError::new(
        ErrorCode::FailedPrecondition,
        format!("no lock with that token covers {}", uri.uri()),
    )
}

/// The lock named `token` among those covering `uri`, with its root; only the caller's.
fn find(
    storage: &dyn Storage,
    uri: &VikingUri,
    token: &str,
    user: &str,
) -> ServiceResult<Option<(StorePath, Lock)>> {
    let mut table = LockTable::load(storage, account_of(uri.store_path()))?;
    let found = table
        .covering(uri.store_path())?
        .into_iter()
        .find(|(_, l)| l.token == token);
    match found {
        Some((_, l)) if l.user != user => Err(ServiceError::permission_denied(
            "the lock belongs to another user",
        )),
        other => Ok(other),
    }
}

/// LOCK refresh (no body, the token in `If`): a new timeout for the caller's lock covering
/// `uri`; 412 when none of the tokens names one.
pub fn refresh(
    storage: &dyn Storage,
    uri: &VikingUri,
    tokens: &[String],
    user: &str,
    timeout_secs: u64,
) -> ServiceResult<(StorePath, Lock)> {
    for token in tokens {
        let Some((root, _)) = find(storage, uri, token, user)? else {
            continue;
        };
        let refreshed = update(storage, &root, &mut |locks| {
            let Some(l) = locks.iter_mut().find(|l| &l.token == token) else {
                return Ok(None);
            };
            l.timeout_secs = timeout_secs;
            l.expires_ms = now_ms() + timeout_secs * 1000;
            Ok(Some(l.clone()))
        })?;
        if let Some(l) = refreshed {
            return Ok((root, l));
        }
    }
    Err(no_such_lock(uri))
}

/// UNLOCK: remove the caller's lock `token` covering `uri` (409 when there is none, RFC 4918
/// §9.11.1; 403 when it is another user's).
pub fn release(
    storage: &dyn Storage,
    uri: &VikingUri,
    token: &str,
    user: &str,
) -> ServiceResult<()> {
    let Some((root, _)) = find(storage, uri, token, user)? else {
        return Err(ServiceError::conflict(format!(
            "no lock with that token covers {}",
            uri.uri()
        )));
    };
    update(storage, &root, &mut |locks| {
        locks.retain(|l| l.token != token);
        Ok(())
    })
}

/// After `node` was deleted or moved away: its locks and those below it go (RFC 4918 §7.7 /
/// §9.9.4: a lock does not move with its resource).
pub fn forget(storage: &dyn Storage, node: &StorePath) -> ServiceResult<()> {
    let mut table = LockTable::load(storage, account_of(node))?;
    if table.is_empty() {
        return Ok(());
    }
    let mut nodes: Vec<StorePath> = table.below(node)?.into_iter().map(|(p, _)| p).collect();
    if !table.on(node)?.is_empty() {
        nodes.push(node.clone());
    }
    nodes.sort();
    nodes.dedup();
    let dir = locks_dir(account_of(node))?;
    let paths = nodes
        .iter()
        .map(|n| dir.join(&file_name(n)))
        .collect::<Result<Vec<_>, _>>()?;
    storage.remove_files(&paths)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::uri::parse;

    fn req(user: &str, shared: bool, deep: bool) -> LockRequest {
        LockRequest {
            user: user.into(),
            shared,
            deep,
            timeout_secs: 60,
            owner: String::new(),
        }
    }

    #[test]
    fn locks_conflict_cover_members_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let who = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "alice".into(),
        };
        let u = |p: &str| parse(&format!("viking://resources/{p}"), &who).unwrap();
        let coll = u("docs");
        let member = u("docs/a.md");
        let lock = take(&s, &coll, &req("alice", false, true)).unwrap();
        assert!(lock.token.starts_with("opaquelocktoken:"));
        // Exclusive: a second lock on it or (shared) on a member conflicts.
        let e = take(&s, &member, &req("bob", true, false)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        // A write to a member without the token: 423; with it (as alice): allowed.
        let mut check = WriteCheck {
            user: "alice".into(),
            request: member.store_path().clone(),
            header: None,
        };
        let touched = [Touched {
            node: member.store_path(),
            subtree: false,
            membership: true,
        }];
        assert_eq!(
            check.enforce(&s, &touched).unwrap_err().code,
            ErrorCode::Locked
        );
        let h = conditions::parse(&format!("(<{}>)", lock.token)).unwrap();
        let resolve = |h: IfHeader<String>| -> IfHeader {
            h.into_iter()
                .map(|l| conditions::List {
                    subject: Subject::Request,
                    conditions: l.conditions,
                })
                .collect()
        };
        check.header = Some(resolve(h.clone()));
        check.enforce(&s, &touched).unwrap();
        // Another user presenting the token: still locked.
        let bob = WriteCheck {
            user: "bob".into(),
            ..check.clone()
        };
        assert_eq!(
            bob.enforce(&s, &touched).unwrap_err().code,
            ErrorCode::Locked
        );
        // A false If: 412.
        check.header = Some(resolve(
            conditions::parse("(<opaquelocktoken:nope>)").unwrap(),
        ));
        assert_eq!(
            check.enforce(&s, &touched).unwrap_err().code,
            ErrorCode::FailedPrecondition
        );
        // Refresh through a member, release, and the write is free again.
        let (root, l) =
            refresh(&s, &member, std::slice::from_ref(&lock.token), "alice", 120).unwrap();
        assert_eq!(&root, coll.store_path());
        assert_eq!(l.timeout_secs, 120);
        assert_eq!(
            release(&s, &member, &lock.token, "bob").unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        release(&s, &coll, &lock.token, "alice").unwrap();
        check.header = None;
        check.enforce(&s, &touched).unwrap();
        assert!(LockTable::load(&s, "acme").unwrap().is_empty());
        // Shared locks coexist; an exclusive one then conflicts.
        take(&s, &member, &req("alice", true, false)).unwrap();
        take(&s, &member, &req("bob", true, false)).unwrap();
        assert_eq!(
            take(&s, &coll, &req("carol", false, true))
                .unwrap_err()
                .code,
            ErrorCode::Locked
        );
    }
}
