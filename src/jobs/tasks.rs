//! Task queries (spec §10) as storage-pool jobs.

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::tasks::{self, TaskOwner, TaskRecord, TaskStatus};

use super::{BlockingJob, JobContext};

/// Upper bound on records a ROOT-wide listing reads, so one request cannot walk forever.
const ROOT_SCAN_LIMIT: usize = 20_000;

fn not_found(task_id: &str) -> ServiceError {
    ServiceError::not_found("task", task_id, "Task not found or expired")
}

/// Find a task visible to `caller`: own tasks; ROOT sees system tasks and every task.
fn find(
    ctx: &JobContext<'_>,
    caller: &Identity,
    task_id: &str,
) -> ServiceResult<(TaskOwner, TaskRecord)> {
    if !tasks::is_valid_task_id(task_id) {
        return Err(not_found(task_id));
    }
    let owners = if caller.role == Role::Root {
        tasks::all_owners(ctx.storage)?
    } else {
        vec![TaskOwner::user(&caller.account, &caller.user)]
    };
    for owner in owners {
        if let Some(record) = tasks::get(ctx.storage, &owner, task_id)? {
            return Ok((owner, record));
        }
    }
    Err(not_found(task_id))
}

/// T1: one task.
pub struct GetTask {
    pub caller: Identity,
    pub task_id: String,
}

impl BlockingJob for GetTask {
    type Output = ServiceResult<TaskRecord>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        find(ctx, &self.caller, &self.task_id).map(|(_, r)| r)
    }
}

/// T2: tasks visible to the caller, filtered, newest first.
pub struct ListTasks {
    pub caller: Identity,
    pub task_type: Option<String>,
    pub status: Option<String>,
    pub resource_id: Option<String>,
    pub limit: usize,
}

impl BlockingJob for ListTasks {
    type Output = ServiceResult<Vec<TaskRecord>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let owners = if self.caller.role == Role::Root {
            tasks::all_owners(ctx.storage)?
        } else {
            vec![TaskOwner::user(&self.caller.account, &self.caller.user)]
        };
        let mut out = Vec::new();
        for owner in owners {
            if out.len() >= ROOT_SCAN_LIMIT || ctx.is_abandoned() {
                break;
            }
            out.extend(
                tasks::list_owner(ctx.storage, &owner)?
                    .into_iter()
                    .filter(|t| {
                        self.task_type.as_ref().is_none_or(|x| &t.task_type == x)
                            && self.status.as_ref().is_none_or(|x| t.status.as_str() == x)
                            && self
                                .resource_id
                                .as_ref()
                                .is_none_or(|x| t.resource_id.as_ref() == Some(x))
                    }),
            );
        }
        out.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
        out.truncate(self.limit);
        Ok(out)
    }
}

/// T3: cancel an own task. Work here runs to completion once accepted (commits finish, data
/// deletions finish), so only already-cancelling/cancelled tasks answer idempotently.
pub struct CancelTask {
    pub caller: Identity,
    pub task_id: String,
}

impl BlockingJob for CancelTask {
    type Output = ServiceResult<TaskRecord>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let (_, record) = find(ctx, &self.caller, &self.task_id)?;
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
}
