//! Resource ingestion as pool jobs (RETRIEVAL.md R6). Each job's `run` is a call into
//! `crate::ingest` over the storage backend.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::ServiceResult;
use crate::ingest::chat::ChatClient;
use crate::ingest::pipeline::{self, IngestRequest, Published, Source};
use crate::ingest::{active, refine, uploads};
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::tasks::{self, TaskOwner, TaskRecord, TaskStatus};

use super::{BlockingJob, JobContext};

/// Task type of an ingestion (upstream's name; cancellable upstream).
pub const TASK_TYPE: &str = "add_resource";

/// Store one piece of a temp upload.
pub struct WriteUploadPart {
    pub account: String,
    pub id: String,
    pub n: u32,
    pub data: Bytes,
}

impl BlockingJob for WriteUploadPart {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        uploads::write_part(ctx.storage, &self.account, &self.id, self.n, &self.data)
    }
}

/// Make a stored temp upload consumable.
pub struct CommitUpload {
    pub account: String,
    pub id: String,
    pub meta: uploads::UploadMeta,
}

impl BlockingJob for CommitUpload {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        uploads::commit(ctx.storage, &self.account, &self.id, &self.meta)
    }
}

/// Remove a temp upload (aborted or consumed).
pub struct RemoveUpload {
    pub account: String,
    pub id: String,
}

impl BlockingJob for RemoveUpload {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        uploads::remove(ctx.storage, &self.account, &self.id)
    }
}

/// Create the `add_resource` task and mark it active for `system/wait`.
pub struct CreateIngestTask {
    pub owner: TaskOwner,
    pub resource_id: Option<String>,
}

impl BlockingJob for CreateIngestTask {
    type Output = ServiceResult<TaskRecord>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let record = tasks::create(
            ctx.storage,
            &self.owner,
            TASK_TYPE,
            self.resource_id.as_deref(),
        )?;
        active::touch(
            ctx.storage,
            &self.owner.account,
            &self.owner.user,
            &record.task_id,
        )?;
        Ok(record)
    }
}

/// Parse, stage and publish one source (the document tree is visible when this returns).
/// On failure the task is failed with the reason.
pub struct IngestResource {
    pub req: IngestRequest,
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for IngestResource {
    type Output = ServiceResult<Published>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let owner = TaskOwner::user(&self.req.account, &self.req.user);
        tasks::update(ctx.storage, &owner, &self.req.task_id, |t| {
            t.status = TaskStatus::Running;
            t.stage = Some("parse".into());
        })?;
        let stale_after = Duration::from_secs(self.settings.resources.stale_after_secs);
        let mut heartbeat = active::Heartbeat::new(
            ctx.storage,
            &self.req.account,
            &self.req.user,
            &self.req.task_id,
            stale_after,
        );
        let outcome = pipeline::ingest(
            ctx.storage,
            &self.req,
            &self.settings.resources,
            &mut || heartbeat.beat(),
        );
        match &outcome {
            Err(e) => {
                let _ = tasks::fail(ctx.storage, &owner, &self.req.task_id, &e.message);
                let _ = active::clear(ctx.storage, &self.req.account, &self.req.task_id);
            }
            Ok(published) => {
                // The whole tree, sidecars included, becomes findable on every instance.
                record_tree(&self.recorder, ctx, &self.req.account, published);
                if let Source::Upload { id } = &self.req.source {
                    // Consumed: upstream deletes a temp upload once it is used.
                    let _ = uploads::remove(ctx.storage, &self.req.account, id);
                }
            }
        }
        outcome
    }
}

/// Record an ingested tree for the search index (one record for the whole subtree).
fn record_tree(recorder: &Recorder, ctx: &JobContext<'_>, account: &str, published: &Published) {
    let subtree = published.root_uri.segments().join("/");
    recorder.record_paths(ctx.storage, account, &[&subtree], ChangeKind::Ingest);
}

/// After publication: model summaries when configured, then the task's result. Returns
/// `{"queue_status": …, "warnings": […]}` for a wait=true answer.
pub struct FinishIngest {
    pub owner: TaskOwner,
    pub task_id: String,
    pub published: Published,
    pub base_result: Value,
    pub chat: Option<ChatClient>,
    pub stale_after: Duration,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for FinishIngest {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let FinishIngest {
            owner,
            task_id,
            published,
            mut base_result,
            chat,
            stale_after,
            recorder,
        } = self;
        let root_uri = published.root_uri.uri();
        let _ = tasks::update(ctx.storage, &owner, &task_id, |t| {
            t.stage = Some("semantic".into());
            t.resource_id = Some(root_uri.clone());
        });
        let mut warnings: Vec<String> = published.warnings.clone();
        let dirs = published.dirs.len();
        let mut semantic_errors = Vec::new();
        if let Some(chat) = &chat {
            let refined = active::keep_alive(
                ctx.storage,
                &owner.account,
                &owner.user,
                &task_id,
                stale_after,
                || refine::refine(ctx.storage, chat, &published.dirs),
            );
            if !refined.errors.is_empty() {
                warnings.push(format!(
                    "the chat model failed for {} of {dirs} directories; their summaries are \
                     extractive",
                    refined.errors.len()
                ));
            }
            semantic_errors = refined.errors;
            if refined.processed > 0 {
                // The model rewrote sidecars: index them again.
                record_tree(&recorder, ctx, &owner.account, &published);
            }
        }
        let queue_status = json!({
            "Semantic": {
                "processed": dirs,
                "requeue_count": 0,
                "error_count": semantic_errors.len(),
                "errors": semantic_errors.iter().take(20).map(|m| json!({"message": m})).collect::<Vec<_>>(),
            },
            "Embedding": {"processed": 0, "requeue_count": 0, "error_count": 0, "errors": []},
        });
        if let Some(obj) = base_result.as_object_mut() {
            obj.insert("queue_status".into(), queue_status.clone());
            obj.insert("context_count".into(), json!(published.files + dirs * 2));
            obj.insert(
                "summary_mode".into(),
                json!(if chat.is_some() {
                    "model"
                } else {
                    "extractive"
                }),
            );
            if !warnings.is_empty() {
                obj.insert("warnings".into(), json!(warnings));
            }
            obj.remove("task_id");
        }
        let outcome = tasks::complete(ctx.storage, &owner, &task_id, base_result);
        let _ = active::clear(ctx.storage, &owner.account, &task_id);
        outcome?;
        Ok(json!({"queue_status": queue_status, "warnings": warnings}))
    }
}

/// Mark a task failed (used when finishing could not even start).
pub struct FailIngestTask {
    pub owner: TaskOwner,
    pub task_id: String,
    pub message: String,
}

impl BlockingJob for FailIngestTask {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let _ = tasks::fail(ctx.storage, &self.owner, &self.task_id, &self.message);
        active::clear(ctx.storage, &self.owner.account, &self.task_id)
    }
}

/// How many ingestions of `account` are still working on any instance.
pub struct CountPendingIngestions {
    pub account: String,
    pub stale_after: Duration,
}

impl BlockingJob for CountPendingIngestions {
    type Output = ServiceResult<usize>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        Ok(active::list(ctx.storage, &self.account, self.stale_after)?
            .iter()
            .filter(|m| !m.stale)
            .count())
    }
}

/// The periodic sweep: expired uploads, staging trees a crash left, and tasks of instances
/// that died mid-ingestion (failed, so pollers get an answer).
pub struct SweepIngestion {
    pub upload_ttl_secs: u64,
    pub stale_after: Duration,
}

impl BlockingJob for SweepIngestion {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let uploads = uploads::sweep(ctx.storage, self.upload_ttl_secs)?;
        let staging = pipeline::sweep_staging(ctx.storage, self.stale_after)?;
        let mut interrupted = 0;
        let accounts = ctx
            .storage
            .list(&crate::storage::StorePath::root())
            .unwrap_or_default();
        for account in accounts
            .iter()
            .filter(|a| a.meta.is_dir() && !a.name.starts_with('_'))
        {
            for m in active::list(ctx.storage, &account.name, self.stale_after)?
                .into_iter()
                .filter(|m| m.stale)
            {
                let owner = TaskOwner::user(&account.name, &m.user);
                if let Ok(Some(t)) = tasks::get(ctx.storage, &owner, &m.task_id) {
                    if !t.status.is_terminal() {
                        let _ = tasks::fail(
                            ctx.storage,
                            &owner,
                            &m.task_id,
                            "ingestion interrupted: the instance running it stopped",
                        );
                    }
                }
                active::clear(ctx.storage, &account.name, &m.task_id)?;
                interrupted += 1;
            }
        }
        Ok(json!({"uploads": uploads, "staging": staging, "interrupted": interrupted}))
    }
}
