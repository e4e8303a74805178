//! Watches (issue #24): resources added from a URL that are re-fetched on a schedule. One
//! account's watches are the JSON document `<account>/_system/watches.json` (`{"tasks": […]}`,
//! 0.5.2's task fields plus the validators of the last fetch), changed only by
//! compare-and-swap, so every instance sees the same watches and none loses another's change.
//! Running one is `ingest::watch`; scheduling it is `actors::watches`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::{Storage, StorageError, StorePath, Version};

/// 0.5.2 refuses nothing above zero; Longship refuses more than a year (in minutes).
pub const MAX_INTERVAL_MINUTES: f64 = 525_600.0;

/// Compare-and-swap attempts before a change gives up (503).
const CAS_ATTEMPTS: usize = 32;

/// One watch: 0.5.2's `WatchTask` fields (times in epoch seconds here, ISO in answers) and the
/// fetch validators, which never reach clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Watch {
    pub task_id: String,
    /// The watched URL.
    pub path: String,
    pub to_uri: String,
    #[serde(default)]
    pub parent_uri: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub instruction: String,
    /// As requested, in minutes (runs use at least `watch.min_interval_minutes`).
    pub watch_interval: f64,
    #[serde(default = "default_mode")]
    pub processing_mode: String,
    /// The ingestion options re-applied on every run (strict, include, tags, …).
    #[serde(default)]
    pub processor_kwargs: serde_json::Map<String, Value>,
    pub created_at: f64,
    #[serde(default)]
    pub last_execution_time: Option<f64>,
    #[serde(default)]
    pub last_task_id: Option<String>,
    #[serde(default)]
    pub last_status: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_execution_time: Option<f64>,
    pub is_active: bool,
    pub account_id: String,
    pub user_id: String,
    #[serde(default = "default_role")]
    pub original_role: String,
    /// `ETag` of the last fetched content (sent back as `If-None-Match`).
    #[serde(default)]
    pub etag: Option<String>,
    /// `Last-Modified` of the last fetched content (sent back as `If-Modified-Since`).
    #[serde(default)]
    pub last_modified: Option<String>,
    /// SHA-256 of the last ingested content, for servers that send no validators.
    #[serde(default)]
    pub content_hash: Option<String>,
    /// Runs so far (each one fetch), and re-ingestions among them.
    #[serde(default)]
    pub runs: u64,
    #[serde(default)]
    pub ingestions: u64,
}

fn default_mode() -> String {
    "semantic_and_vectors".into()
}

fn default_role() -> String {
    "user".into()
}

impl Watch {
    /// The interval runs use, in seconds: the requested one, raised to the floor.
    pub fn effective_secs(&self, floor_minutes: f64) -> f64 {
        self.watch_interval.max(floor_minutes) * 60.0
    }

    /// When it runs next after a run (or creation) at `base`.
    pub fn schedule_from(&mut self, base: f64, floor_minutes: f64) {
        self.next_execution_time = self
            .is_active
            .then(|| base + self.effective_secs(floor_minutes));
    }

    /// 0.5.2's public shape (`WatchTask.to_dict`).
    pub fn to_public(&self) -> Value {
        let iso = |t: Option<f64>| t.map(crate::time::iso_micros);
        json!({
            "task_id": self.task_id,
            "path": self.path,
            "source_type": "url",
            "to_uri": self.to_uri,
            "parent_uri": self.parent_uri,
            "reason": self.reason,
            "instruction": self.instruction,
            "watch_interval": self.watch_interval,
            "build_index": true,
            "summarize": false,
            "processing_mode": self.processing_mode,
            "processor_kwargs": self.processor_kwargs,
            "created_at": crate::time::iso_micros(self.created_at),
            "last_execution_time": iso(self.last_execution_time),
            "last_task_id": self.last_task_id,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "next_execution_time": iso(self.next_execution_time),
            "is_active": self.is_active,
            "account_id": self.account_id,
            "user_id": self.user_id,
            "original_role": self.original_role,
        })
    }

    /// 0.5.2's rule: ROOT sees every watch (of the account it acts in); everyone else only
    /// their own.
    pub fn visible_to(&self, who: &Identity) -> bool {
        who.role == Role::Root || (self.account_id == who.account && self.user_id == who.user)
    }

    /// Whether `uri` is the watch's target or an ancestor of it.
    fn under(&self, uri: &str) -> bool {
        let uri = uri.trim_end_matches('/');
        self.to_uri == uri
            || self
                .to_uri
                .strip_prefix(uri)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WatchFile {
    #[serde(default)]
    tasks: Vec<Watch>,
}

/// `<account>/_system/watches.json`.
pub fn file_path(account: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("watches.json")
}

/// An account's watches and the version they were read at (`None`: no file yet).
pub fn load(storage: &dyn Storage, account: &str) -> ServiceResult<(Vec<Watch>, Option<Version>)> {
    let path = file_path(account)?;
    match storage.read_versioned(&path) {
        Ok((data, version)) => {
            let file: WatchFile = serde_json::from_slice(&data).map_err(|e| {
                tracing::error!(account, error = %e, "the watches file is damaged");
                ServiceError::internal("the account's watches cannot be read")
            })?;
            Ok((file.tasks, Some(version)))
        }
        Err(StorageError::NotFound(_)) => Ok((Vec::new(), None)),
        Err(e) => Err(e.into()),
    }
}

/// Change an account's watches with `change` (compare-and-swap, retried when another writer
/// won). `change` returns `Ok(None)` to write nothing.
pub fn modify<T>(
    storage: &dyn Storage,
    account: &str,
    mut change: impl FnMut(&mut Vec<Watch>) -> ServiceResult<Option<T>>,
) -> ServiceResult<Option<T>> {
    let path = file_path(account)?;
    for _ in 0..CAS_ATTEMPTS {
        let (mut tasks, version) = load(storage, account)?;
        let Some(out) = change(&mut tasks)? else {
            return Ok(None);
        };
        let body = serde_json::to_vec(&WatchFile { tasks }).map_err(ServiceError::internal)?;
        match storage.write_if(&path, &body, version.as_ref()) {
            Ok(_) => return Ok(Some(out)),
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::unavailable(
        "watches",
        "the account's watches changed too often to update; retry",
    ))
}

fn missing(key: &str) -> ServiceError {
    ServiceError::not_found("watch_task", key, format!("watch_task not found: {key}"))
}

/// Store a new watch; its target must not be watched already (409, as 0.5.2).
pub fn create(storage: &dyn Storage, watch: Watch, max_per_account: usize) -> ServiceResult<Watch> {
    let account = watch.account_id.clone();
    let out = modify(storage, &account, |tasks| {
        if tasks.iter().any(|t| t.to_uri == watch.to_uri) {
            return Err(ServiceError::conflict(format!(
                "Target URI '{}' is already being monitored by an incompatible watch. Delete \
                 the conflicting watch or choose another target.",
                watch.to_uri
            ))
            .with_details(json!({"resource": watch.to_uri})));
        }
        if tasks.len() >= max_per_account {
            return Err(ServiceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "This account already holds {max_per_account} watches (watch.max_per_account)"
                ),
            ));
        }
        tasks.push(watch.clone());
        Ok(Some(watch.clone()))
    })?;
    out.ok_or_else(|| ServiceError::internal("watch not stored"))
}

/// The watch named by `task_id` or `to_uri` (both given: they must name the same one, else
/// 400), as the caller may see it; 404 otherwise.
pub fn resolve(
    storage: &dyn Storage,
    who: &Identity,
    task_id: Option<&str>,
    to_uri: Option<&str>,
) -> ServiceResult<Watch> {
    let (tasks, _) = load(storage, &who.account)?;
    pick(&tasks, who, task_id, to_uri).cloned()
}

fn pick<'a>(
    tasks: &'a [Watch],
    who: &Identity,
    task_id: Option<&str>,
    to_uri: Option<&str>,
) -> ServiceResult<&'a Watch> {
    let found = match (task_id, to_uri) {
        (Some(id), _) => tasks.iter().find(|t| t.task_id == id),
        (None, Some(uri)) => tasks.iter().find(|t| t.to_uri == uri),
        (None, None) => {
            return Err(ServiceError::invalid_argument(
                "Either {task_id} or ?to_uri= is required",
            ))
        }
    };
    let Some(task) = found.filter(|t| t.visible_to(who)) else {
        return Err(missing(task_id.or(to_uri).unwrap_or("")));
    };
    if let (Some(id), Some(uri)) = (task_id, to_uri) {
        if task.to_uri != uri {
            return Err(ServiceError::invalid_argument(format!(
                "task_id {id} maps to to_uri='{}', not '{uri}'",
                task.to_uri
            )));
        }
    }
    Ok(task)
}

/// The caller's watches (ROOT: the account's).
pub fn list(storage: &dyn Storage, who: &Identity, active_only: bool) -> ServiceResult<Vec<Watch>> {
    let (tasks, _) = load(storage, &who.account)?;
    Ok(tasks
        .into_iter()
        .filter(|t| t.visible_to(who) && (!active_only || t.is_active))
        .collect())
}

/// A PATCH: each given field replaces the stored one (0.5.2's `update_task`).
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub watch_interval: Option<f64>,
    pub is_active: Option<bool>,
    pub reason: Option<String>,
    pub instruction: Option<String>,
}

/// Apply `patch` to the watch `task_id` of the caller.
pub fn update(
    storage: &dyn Storage,
    who: &Identity,
    task_id: &str,
    patch: &Patch,
    floor_minutes: f64,
) -> ServiceResult<Watch> {
    let now = crate::time::epoch_secs_now();
    let out = modify(storage, &who.account, |tasks| {
        let Some(task) = tasks
            .iter_mut()
            .find(|t| t.task_id == task_id && t.visible_to(who))
        else {
            return Err(missing(task_id));
        };
        if let Some(r) = &patch.reason {
            task.reason = r.clone();
        }
        if let Some(i) = &patch.instruction {
            task.instruction = i.clone();
        }
        let was_active = task.is_active;
        if let Some(active) = patch.is_active {
            task.is_active = active;
        }
        if let Some(interval) = patch.watch_interval {
            task.watch_interval = interval;
        }
        if !task.is_active {
            task.next_execution_time = None;
        } else if patch.watch_interval.is_some() || !was_active {
            // A new cadence (or a resumed watch) counts from the last run, as 0.5.2.
            let base = task.last_execution_time.unwrap_or(task.created_at);
            task.schedule_from(base, floor_minutes);
            if task.next_execution_time.is_some_and(|t| t < now) {
                task.next_execution_time = Some(now);
            }
        }
        Ok(Some(task.clone()))
    })?;
    out.ok_or_else(|| missing(task_id))
}

/// Delete the watch `task_id` of the caller.
pub fn delete(storage: &dyn Storage, who: &Identity, task_id: &str) -> ServiceResult<Watch> {
    let out = modify(storage, &who.account, |tasks| {
        let Some(at) = tasks
            .iter()
            .position(|t| t.task_id == task_id && t.visible_to(who))
        else {
            return Err(missing(task_id));
        };
        Ok(Some(tasks.remove(at)))
    })?;
    out.ok_or_else(|| missing(task_id))
}

/// Make the watch due now (trigger): whichever instance takes its lease first runs it.
pub fn make_due(storage: &dyn Storage, account: &str, task_id: &str) -> ServiceResult<()> {
    let now = crate::time::epoch_secs_now();
    modify(storage, account, |tasks| {
        let Some(task) = tasks.iter_mut().find(|t| t.task_id == task_id) else {
            return Err(missing(task_id));
        };
        task.next_execution_time = Some(now);
        Ok(Some(()))
    })?;
    Ok(())
}

/// Remove the watches whose target is `uri` or below it (the resource was removed).
pub fn forget_under(storage: &dyn Storage, account: &str, uri: &str) -> ServiceResult<usize> {
    let n = modify(storage, account, |tasks| {
        let before = tasks.len();
        tasks.retain(|t| !t.under(uri));
        Ok((tasks.len() != before).then_some(before - tasks.len()))
    })?;
    Ok(n.unwrap_or(0))
}

/// Point watches at the moved target (0.5.2 rewrites their `to_uri` prefix on a move).
pub fn after_move(storage: &dyn Storage, account: &str, from: &str, to: &str) -> ServiceResult<()> {
    let (from, to) = (from.trim_end_matches('/'), to.trim_end_matches('/'));
    modify(storage, account, |tasks| {
        let mut moved = false;
        for t in tasks.iter_mut().filter(|t| t.under(from)) {
            t.to_uri = format!("{to}{}", &t.to_uri[from.len()..]);
            moved = true;
        }
        Ok(moved.then_some(()))
    })?;
    Ok(())
}

/// Remove a removed user's watches.
pub fn forget_user(storage: &dyn Storage, account: &str, user: &str) -> ServiceResult<()> {
    modify(storage, account, |tasks| {
        let before = tasks.len();
        tasks.retain(|t| t.user_id != user);
        Ok((tasks.len() != before).then_some(()))
    })?;
    Ok(())
}

/// One watch as the scheduler tracks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub account: String,
    pub task_id: String,
    /// Epoch seconds; `None`: paused.
    pub next: Option<f64>,
}

/// Every watch of every account (the scheduler's scan), or of `only` those accounts.
pub fn scan(storage: &dyn Storage, only: Option<&[String]>) -> ServiceResult<Vec<Due>> {
    let accounts = match only {
        Some(a) => a.to_vec(),
        None => crate::storage::account_names(storage)?,
    };
    let mut out = Vec::new();
    for account in accounts {
        let tasks = match load(storage, &account) {
            Ok((tasks, _)) => tasks,
            // One damaged file does not stop the others' watches.
            Err(e) => {
                tracing::warn!(account, error = %e.message, "watches not read");
                continue;
            }
        };
        out.extend(tasks.into_iter().map(|t| Due {
            account: account.clone(),
            task_id: t.task_id,
            next: t.next_execution_time.filter(|_| t.is_active),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn watch(id: &str, to: &str, user: &str) -> Watch {
        Watch {
            task_id: id.into(),
            path: "https://example.com/a".into(),
            to_uri: to.into(),
            parent_uri: None,
            reason: String::new(),
            instruction: String::new(),
            watch_interval: 5.0,
            processing_mode: default_mode(),
            processor_kwargs: Default::default(),
            created_at: 1000.0,
            last_execution_time: None,
            last_task_id: None,
            last_status: None,
            last_error: None,
            next_execution_time: Some(1300.0),
            is_active: true,
            account_id: "acme".into(),
            user_id: user.into(),
            original_role: "user".into(),
            etag: None,
            last_modified: None,
            content_hash: None,
            runs: 0,
            ingestions: 0,
        }
    }

    fn who(user: &str) -> Identity {
        Identity {
            role: Role::User,
            account: "acme".into(),
            user: user.into(),
        }
    }

    #[test]
    fn create_resolve_patch_delete_and_removal_rules() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        create(&st, watch("w1", "viking://resources/a", "alice"), 10).unwrap();
        let dup = create(&st, watch("w2", "viking://resources/a", "alice"), 10).unwrap_err();
        assert_eq!(dup.code, ErrorCode::Conflict);
        create(&st, watch("w2", "viking://resources/b/c", "bob"), 10).unwrap();
        // Owners only; both keys must agree.
        assert!(resolve(&st, &who("bob"), Some("w1"), None).is_err());
        let w = resolve(&st, &who("alice"), None, Some("viking://resources/a")).unwrap();
        assert_eq!(w.task_id, "w1");
        let e = resolve(&st, &who("alice"), Some("w1"), Some("viking://resources/b")).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let paused = Patch {
            is_active: Some(false),
            ..Patch::default()
        };
        let w = update(&st, &who("alice"), "w1", &paused, 1.0).unwrap();
        assert!(!w.is_active && w.next_execution_time.is_none());
        // A removed ancestor removes the watch below it; a sibling prefix does not.
        assert_eq!(
            forget_under(&st, "acme", "viking://resources/b/c2").unwrap(),
            0
        );
        assert_eq!(
            forget_under(&st, "acme", "viking://resources/b").unwrap(),
            1
        );
        after_move(&st, "acme", "viking://resources/a", "viking://resources/z").unwrap();
        assert_eq!(
            list(&st, &who("alice"), false).unwrap()[0].to_uri,
            "viking://resources/z"
        );
        forget_user(&st, "acme", "alice").unwrap();
        assert!(list(&st, &who("alice"), false).unwrap().is_empty());
    }
}
