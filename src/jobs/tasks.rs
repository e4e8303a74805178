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
