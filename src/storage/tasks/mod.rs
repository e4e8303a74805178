//! Persisted task records (spec §4.5, §10): one compact JSON file per task under its owner,
//! so a task created on one instance is visible from every other and survives restarts.
//! Every update is a compare-and-swap read-modify-write of the stored record.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub mod query;

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};
use crate::time::{epoch_secs_now, iso_micros};

/// Who owns a task: a user of an account, or the system (`_system`/`root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOwner {
    pub account: String,
    pub user: String,
}

impl TaskOwner {
    pub fn system() -> Self {
        TaskOwner {
            account: "_system".into(),
            user: "root".into(),
        }
    }

    pub fn user(account: &str, user: &str) -> Self {
        TaskOwner {
            account: account.into(),
            user: user.into(),
        }
    }

    pub fn is_system(&self) -> bool {
        self.account == "_system"
    }

    /// The directory holding this owner's task records.
    pub fn dir(&self) -> Result<StorePath, StorageError> {
        if self.is_system() {
            StorePath::parse("_system/tasks/root")
        } else {
            StorePath::root()
                .join(&self.account)?
                .join("_system")?
                .join("tasks")?
                .join(&self.user)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Cancelling => "cancelling",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// The persisted task record; unknown keys found on disk are kept on rewrite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub task_type: String,
    pub status: TaskStatus,
    pub created_at: f64,
    pub updated_at: f64,
    #[serde(default)]
    pub processing_seconds: Option<f64>,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub meta: Value,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// When the task started running (for `processing_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    #[serde(default)]
    pub execution_events: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TaskRecord {
    fn push_event(&mut self, kind: &str) {
        if !self.execution_events.is_object() {
            self.execution_events = json!({"items": []});
        }
        if let Some(items) = self.execution_events["items"].as_array_mut() {
            let seq = items.len() + 1;
            items.push(json!({
                "seq": seq, "recorded_at": iso_micros(self.updated_at), "kind": kind,
                "status": self.status.as_str(), "stage": self.stage, "operation": null, "error": self.error,
            }));
        }
    }

    /// The task object of the API (spec §10): owner and internal bookkeeping removed,
    /// credentials stripped at any depth.
    pub fn to_api(&self) -> Value {
        let mut v = json!({
            "task_id": self.task_id,
            "task_type": self.task_type,
            "status": self.status.as_str(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "processing_seconds": self.processing_seconds,
            "created_at_iso": iso_micros(self.created_at),
            "updated_at_iso": iso_micros(self.updated_at),
            "resource_id": self.resource_id,
            "meta": if self.meta.is_null() { json!({}) } else { self.meta.clone() },
            "stage": self.stage,
            "result": self.result,
            "error": self.error,
        });
        strip_credentials(&mut v);
        v
    }
}

/// Remove `api_key` / `user_key` at any depth.
fn strip_credentials(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("api_key");
            m.remove("user_key");
            m.values_mut().for_each(strip_credentials);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_credentials),
        _ => {}
    }
}

fn record_path(owner: &TaskOwner, task_id: &str) -> ServiceResult<StorePath> {
    Ok(owner.dir()?.join(&format!("{task_id}.json"))?)
}

/// Task ids are UUIDs; anything else cannot name a task (and never reaches storage).
pub fn is_valid_task_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

/// A fresh task id (a caller may name a task before it is stored, see [`create_with_id`]).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Create a `pending` task owned by `owner`.
pub fn create(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_type: &str,
    resource_id: Option<&str>,
) -> ServiceResult<TaskRecord> {
    create_with_id(storage, owner, &new_id(), task_type, resource_id)
}

/// Create a `pending` task named `task_id` (from [`new_id`]; create-only, so an id is used
/// once).
pub fn create_with_id(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
    task_type: &str,
    resource_id: Option<&str>,
) -> ServiceResult<TaskRecord> {
    let t = epoch_secs_now();
    let mut record = TaskRecord {
        task_id: task_id.to_string(),
        task_type: task_type.to_string(),
        status: TaskStatus::Pending,
        created_at: t,
        updated_at: t,
        processing_seconds: None,
        resource_id: resource_id.map(str::to_string),
        account_id: owner.account.clone(),
        user_id: owner.user.clone(),
        meta: json!({}),
        stage: None,
        result: None,
        error: None,
        started_at: None,
        execution_events: json!({"items": []}),
        extra: Map::new(),
    };
    record.push_event("created");
    let data = serde_json::to_vec(&record).map_err(ServiceError::internal)?;
    storage.write_if(&record_path(owner, &record.task_id)?, &data, None)?;
    Ok(record)
}

/// The task, if `owner` has one with this id.
pub fn get(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
) -> ServiceResult<Option<TaskRecord>> {
    if !is_valid_task_id(task_id) {
        return Ok(None);
    }
    match storage.read(&record_path(owner, task_id)?) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| ServiceError::internal(format!("corrupt task record {task_id}: {e}"))),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Apply `change` to the stored record with compare-and-swap, retrying on conflicts.
pub fn update(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
    mut change: impl FnMut(&mut TaskRecord),
) -> ServiceResult<TaskRecord> {
    let path = record_path(owner, task_id)?;
    for _ in 0..64 {
        let (data, version) = storage.read_versioned(&path)?;
        let mut record: TaskRecord = serde_json::from_slice(&data)
            .map_err(|e| ServiceError::internal(format!("corrupt task record {task_id}: {e}")))?;
        let before = record.status;
        change(&mut record);
        record.updated_at = epoch_secs_now();
        if record.status != before {
            if record.status == TaskStatus::Running && record.started_at.is_none() {
                record.started_at = Some(record.updated_at);
            }
            if record.status.is_terminal() {
                let started = record.started_at.unwrap_or(record.created_at);
                record.processing_seconds = Some((record.updated_at - started).max(0.0));
                record.stage = Some(record.status.as_str().to_string());
            }
            record.push_event("status_changed");
        }
        let out = serde_json::to_vec(&record).map_err(ServiceError::internal)?;
        match storage.write_if(&path, &out, Some(&version)) {
            Ok(_) => return Ok(record),
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(
        ServiceError::conflict("task record is being updated concurrently")
            .detail("retryable", true),
    )
}

pub fn mark_running(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
) -> ServiceResult<TaskRecord> {
    update(storage, owner, task_id, |t| {
        if !t.status.is_terminal() {
            t.status = TaskStatus::Running;
        }
    })
}

pub fn complete(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
    result: Value,
) -> ServiceResult<TaskRecord> {
    update(storage, owner, task_id, |t| {
        t.status = TaskStatus::Completed;
        t.result = Some(result.clone());
        t.error = None;
    })
}

pub fn fail(
    storage: &dyn Storage,
    owner: &TaskOwner,
    task_id: &str,
    error: &str,
) -> ServiceResult<TaskRecord> {
    update(storage, owner, task_id, |t| {
        t.status = TaskStatus::Failed;
        t.error = Some(error.to_string());
    })
}

/// Every record of one owner (unreadable files are skipped and logged).
pub fn list_owner(storage: &dyn Storage, owner: &TaskOwner) -> ServiceResult<Vec<TaskRecord>> {
    let dir = owner.dir()?;
    let entries = match storage.list(&dir) {
        Ok(e) => e,
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some(id) = entry.name.strip_suffix(".json") else {
            continue;
        };
        if let Some(record) = get(storage, owner, id)? {
            out.push(record);
        }
    }
    Ok(out)
}

/// Every task owner with records: the system and each user of each account.
pub fn all_owners(storage: &dyn Storage) -> ServiceResult<Vec<TaskOwner>> {
    let mut owners = vec![TaskOwner::system()];
    for account in crate::storage::account_names(storage)? {
        let dir = StorePath::root()
            .join(&account)?
            .join("_system")?
            .join("tasks")?;
        owners.extend(
            crate::storage::subdir_names(storage, &dir)?
                .iter()
                .map(|user| TaskOwner::user(&account, user)),
        );
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let owner = TaskOwner::user("acme", "bob");
        let t = create(&s, &owner, "session_commit", Some("s1")).unwrap();
        assert_eq!(t.status, TaskStatus::Pending);
        mark_running(&s, &owner, &t.task_id).unwrap();
        let done = complete(&s, &owner, &t.task_id, json!({"user_key": "x", "ok": 1})).unwrap();
        assert_eq!(done.status, TaskStatus::Completed);
        assert!(done.processing_seconds.is_some());
        let api = get(&s, &owner, &t.task_id).unwrap().unwrap().to_api();
        assert_eq!(api["status"], "completed");
        assert_eq!(api["stage"], "completed");
        assert!(api["result"].get("user_key").is_none());
        assert!(api.get("account_id").is_none());
        assert!(get(&s, &TaskOwner::user("acme", "eve"), &t.task_id)
            .unwrap()
            .is_none());
        assert!(get(&s, &owner, "../../x").unwrap().is_none());
        let sys = create(&s, &TaskOwner::system(), "account_delete", Some("old")).unwrap();
        assert_eq!(
            list_owner(&s, &TaskOwner::system()).unwrap()[0].task_id,
            sys.task_id
        );
        let owners = all_owners(&s).unwrap();
        assert!(owners.contains(&owner));
    }
}
