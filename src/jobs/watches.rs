//! Watch jobs (docs/API.md, Watches): the routes' reads and changes of an account's watches,
//! and one run of a watch (`RunWatch`, on the ingest pool) for the scheduler.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::ingest::chat::ChatClient;
use crate::ingest::gate::IngestRuntime;
use crate::ingest::watch::{self, RunOutcome};
use crate::search::changes::Recorder;
use crate::storage::tags::TagMode;
use crate::storage::watches::{self, Patch, Watch};

use super::resources::AddResource;
use super::{BlockingJob, JobContext};

/// Refuse a watch on a target that already has one, before ingesting (409 as 0.5.2).
pub struct CheckWatchTarget {
    pub account: String,
    pub to_uri: String,
}

impl BlockingJob for CheckWatchTarget {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let (tasks, _) = watches::load(ctx.storage, &self.account)?;
        if tasks.iter().any(|t| t.to_uri == self.to_uri) {
            return Err(crate::error::ServiceError::conflict(format!(
                "Target URI '{}' is already being monitored by an incompatible watch. Delete \
                 the conflicting watch or choose another target.",
                self.to_uri
            ))
            .with_details(json!({"resource": self.to_uri})));
        }
        Ok(())
    }
}

/// The caller's watches.
pub struct ListWatches {
    pub who: Identity,
    pub active_only: bool,
}

impl BlockingJob for ListWatches {
    type Output = ServiceResult<Vec<Watch>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        watches::list(ctx.storage, &self.who, self.active_only)
    }
}

/// One watch by `task_id` and/or `to_uri`.
pub struct GetWatch {
    pub who: Identity,
    pub task_id: Option<String>,
    pub to_uri: Option<String>,
}

impl BlockingJob for GetWatch {
    type Output = ServiceResult<Watch>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        watches::resolve(
            ctx.storage,
            &self.who,
            self.task_id.as_deref(),
            self.to_uri.as_deref(),
        )
    }
}

/// PATCH one watch.
pub struct UpdateWatch {
    pub who: Identity,
    pub task_id: Option<String>,
    pub to_uri: Option<String>,
    pub patch: Patch,
    pub floor_minutes: f64,
}

impl BlockingJob for UpdateWatch {
    type Output = ServiceResult<Watch>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let found = watches::resolve(
            ctx.storage,
            &self.who,
            self.task_id.as_deref(),
            self.to_uri.as_deref(),
        )?;
        watches::update(
            ctx.storage,
            &self.who,
            &found.task_id,
            &self.patch,
            self.floor_minutes,
        )
    }
}

/// DELETE one watch.
pub struct DeleteWatch {
    pub who: Identity,
    pub task_id: Option<String>,
    pub to_uri: Option<String>,
}

impl BlockingJob for DeleteWatch {
    type Output = ServiceResult<Watch>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let found = watches::resolve(
            ctx.storage,
            &self.who,
            self.task_id.as_deref(),
            self.to_uri.as_deref(),
        )?;
        watches::delete(ctx.storage, &self.who, &found.task_id)
    }
}

/// Make one watch due now (the scheduler of whichever instance takes its lease runs it).
pub struct TriggerWatch {
    pub who: Identity,
    pub task_id: Option<String>,
    pub to_uri: Option<String>,
}

impl BlockingJob for TriggerWatch {
    type Output = ServiceResult<Watch>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let found = watches::resolve(
            ctx.storage,
            &self.who,
            self.task_id.as_deref(),
            self.to_uri.as_deref(),
        )?;
        watches::make_due(ctx.storage, &self.who.account, &found.task_id)?;
        Ok(found)
    }
}

/// Every watch of every account (or of `only` these), for the scheduler.
pub struct ScanWatches {
    pub only: Option<Vec<String>>,
}

impl BlockingJob for ScanWatches {
    type Output = ServiceResult<Vec<watches::Due>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        watches::scan(ctx.storage, self.only.as_deref())
    }
}

/// One run of a due watch: fetch, and re-ingest through the `AddResource` job's logic (task,
/// active marker, staging, atomic replacement of the target, search record, summaries) when
/// the content changed.
pub struct RunWatch {
    pub account: String,
    pub task_id: String,
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
    pub chat: Option<ChatClient>,
    pub ingest: Arc<IngestRuntime>,
}

impl BlockingJob for RunWatch {
    type Output = ServiceResult<RunOutcome>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let settings = self.settings.clone();
        let (recorder, chat, gate) = (self.recorder, self.chat, self.ingest);
        let mut ingest = |req: crate::ingest::pipeline::IngestRequest| {
            // The account's share of ingestions on this instance, as for add_resource.
            let Ok(ticket) = gate.enter(&req.account) else {
                return Ok(None);
            };
            let task_id = req.task_id.clone();
            let tags = tags_of(ctx, &req.account, &self.task_id);
            let job = AddResource {
                req,
                tags,
                settings: settings.clone(),
                recorder: recorder.clone(),
                chat: chat.clone(),
                on_published: None,
                ticket,
                watch: None,
            };
            let mut answer: Value = job.run(ctx)?;
            answer["task_id"] = json!(task_id);
            Ok(Some(answer))
        };
        watch::run(
            ctx.storage,
            &self.account,
            &self.task_id,
            settings.watch.min_interval_minutes,
            &settings.resources,
            &mut ingest,
        )
    }
}

/// The tags the watch re-applies (stored from add_resource's `tags` / `tag_mode`).
fn tags_of(ctx: &JobContext<'_>, account: &str, task_id: &str) -> Option<(Vec<String>, TagMode)> {
    let (tasks, _) = watches::load(ctx.storage, account).ok()?;
    let task = tasks.into_iter().find(|t| t.task_id == task_id)?;
    let kw = task.processor_kwargs;
    let tags: Vec<String> = kw
        .get("tags")?
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let mode = TagMode::parse_or_refuse(
        kw.get("tag_mode")
            .and_then(Value::as_str)
            .unwrap_or("replace"),
    )
    .ok()?;
    Some((tags, mode))
}
