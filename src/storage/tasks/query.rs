//! Task queries (spec §10): what a caller may see of the task records, and cancellation.

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::Storage;

use super::{all_owners, get, is_valid_task_id, list_owner, TaskOwner, TaskRecord, TaskStatus};

/// Upper bound on records a ROOT-wide listing reads, so one request cannot walk forever.
const ROOT_SCAN_LIMIT: usize = 20_000;

fn not_found(task_id: &str) -> ServiceError {
    ServiceError::not_found("task", task_id, "Task not found or expired")
}

/// The owners whose tasks `caller` sees: its own; ROOT sees system tasks and every task.
fn visible_owners(storage: &dyn Storage, caller: &Identity) -> ServiceResult<Vec<TaskOwner>> {
    if caller.role == Role::Root {
        all_owners(storage)
    } else {
        Ok(vec![TaskOwner::user(&caller.account, &caller.user)])
    }
}

/// T1: a task visible to `caller`.
pub fn find(storage: &dyn Storage, caller: &Identity, task_id: &str) -> ServiceResult<TaskRecord> {
    if !is_valid_task_id(task_id) {
        return Err(not_found(task_id));
    }
    for owner in visible_owners(storage, caller)? {
        if let Some(record) = get(storage, &owner, task_id)? {
            return Ok(record);
        }
    }
    Err(not_found(task_id))
}

/// T2 filters.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub task_type: Option<String>,
    pub status: Option<String>,
    pub resource_id: Option<String>,
    pub limit: usize,
}

impl TaskFilter {
    fn admits(&self, t: &TaskRecord) -> bool {
        self.task_type.as_ref().is_none_or(|x| &t.task_type == x)
            && self.status.as_ref().is_none_or(|x| t.status.as_str() == x)
            && self
                .resource_id
                .as_ref()
                .is_none_or(|x| t.resource_id.as_ref() == Some(x))
    }
}

/// T2: tasks visible to `caller`, filtered, newest first. Stops reading once nobody waits.
pub fn list(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    caller: &Identity,
    filter: &TaskFilter,
) -> ServiceResult<Vec<TaskRecord>> {
    let mut out = Vec::new();
    for owner in visible_owners(storage, caller)? {
        if out.len() >= ROOT_SCAN_LIMIT || abandoned() {
            break;
        }
        out.extend(
            list_owner(storage, &owner)?
                .into_iter()
                .filter(|t| filter.admits(t)),
        );
    }
    out.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    out.truncate(filter.limit);
    Ok(out)
}

/// T3: cancel an own task. Work here runs to completion once accepted (commits finish, data
/// deletions finish), so only already-cancelling/cancelled tasks answer idempotently.
pub fn cancel(
    storage: &dyn Storage,
    caller: &Identity,
    task_id: &str,
) -> ServiceResult<TaskRecord> {
    let record = find(storage, caller, task_id)?;
    match record.status {
        TaskStatus::Cancelling | TaskStatus::Cancelled => Ok(record),
        status => Err(ServiceError::failed_precondition(format!(
            "Task {} cannot be cancelled (type {}, status {}): accepted work runs to completion",
            record.task_id,
            record.task_type,
            status.as_str()
        ))
        .with_details(serde_json::json!({"task_id": record.task_id, "status": status.as_str()}))),
    }
}
