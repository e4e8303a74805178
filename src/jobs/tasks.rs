//! Task queries (spec §10).

use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::storage::tasks::query::{self, TaskFilter};
use crate::storage::tasks::TaskRecord;

use super::{BlockingJob, JobContext};

/// T1: one task.
pub struct GetTask {
    pub caller: Identity,
    pub task_id: String,
}

impl BlockingJob for GetTask {
    type Output = ServiceResult<TaskRecord>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        query::find(ctx.storage, &self.caller, &self.task_id)
    }
}

/// T2: tasks visible to the caller, filtered, newest first.
pub struct ListTasks {
    pub caller: Identity,
    pub filter: TaskFilter,
}

impl BlockingJob for ListTasks {
    type Output = ServiceResult<Vec<TaskRecord>>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        query::list(ctx.storage, ctx.abandoned(), &self.caller, &self.filter)
    }
}

/// T3: cancel an own task.
pub struct CancelTask {
    pub caller: Identity,
    pub task_id: String,
}

impl BlockingJob for CancelTask {
    type Output = ServiceResult<TaskRecord>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        query::cancel(ctx.storage, &self.caller, &self.task_id)
    }
}

/// Create a pending task a later job completes (so the id answers at once).
pub struct CreateTask {
    pub owner: crate::storage::tasks::TaskOwner,
    pub task_id: String,
    pub task_type: &'static str,
    pub resource_id: Option<String>,
}

impl BlockingJob for CreateTask {
    type Output = ServiceResult<TaskRecord>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::storage::tasks::create_with_id(
            ctx.storage,
            &self.owner,
            &self.task_id,
            self.task_type,
            self.resource_id.as_deref(),
        )
    }
}
