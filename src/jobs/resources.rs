//! Resource ingestion as pool jobs (docs/API.md, Resources). Each job's `run` is a call into
//! `crate::ingest` over the storage backend.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::config::{QuotaSettings, Settings};
use crate::error::ServiceResult;
use crate::ingest::chat::ChatClient;
use crate::ingest::gate::IngestTicket;
use crate::ingest::pipeline::{self, IngestRequest, Published, Source};
use crate::ingest::{active, refine, uploads};
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::fs::attrs;
use crate::storage::tags::TagMode;
use crate::storage::tasks::{self, TaskOwner, TaskStatus};
use crate::storage::watches::{self, Watch};

use super::{BlockingJob, JobContext};

/// Task type of an ingestion (upstream's name; cancellable upstream).
pub const TASK_TYPE: &str = "add_resource";

/// Store one piece of a temp upload.
pub struct WriteUploadPart {
    pub account: String,
    pub id: String,
    pub n: u32,
    pub data: Bytes,
    /// The account's content quota (`[quota]`).
    pub quota: QuotaSettings,
}

impl BlockingJob for WriteUploadPart {
    type Output = ServiceResult<()>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        uploads::write_part(
            ctx.storage,
            &self.account,
            &self.id,
            self.n,
            &self.data,
            &self.quota,
        )
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

/// One `add_resource`, start to end, on the ingestion pool: create the task (marked active for
/// `system/wait`), fetch/parse/stage/publish the source, write model summaries when a chat
/// model is configured, and finish the task. A failure anywhere fails the task, here and
/// nowhere else. Outputs the wait=true answer (the result without `task_id`, with
/// `queue_status`).
pub struct AddResource {
    pub req: IngestRequest,
    /// Tags for every node of the tree (normalised, no reserved keys), and how.
    pub tags: Option<(Vec<String>, TagMode)>,
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
    pub chat: Option<ChatClient>,
    /// Receives the result (with `task_id`) as soon as the tree is visible, for a wait=false
    /// answer; dropped unsent when the ingestion fails before that.
    pub on_published: Option<oneshot::Sender<Value>>,
    /// The account's place under `resources.max_concurrent_per_account`, released when the
    /// ingestion ends.
    pub ticket: IngestTicket,
    /// A watch to store once the tree is published (`watch_interval > 0`): its `to_uri`,
    /// validators and content hash are filled in from the published tree.
    pub watch: Option<NewWatch>,
}

/// A watch created with its first ingestion.
pub struct NewWatch {
    pub watch: Watch,
    pub max_per_account: usize,
}

impl BlockingJob for AddResource {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let AddResource {
            req,
            tags,
            settings,
            recorder,
            chat,
            on_published,
            ticket,
            watch,
        } = self;
        let _ticket = ticket;
        let owner = TaskOwner::user(&req.account, &req.user);
        tasks::create_with_id(ctx.storage, &owner, &req.task_id, TASK_TYPE, None)?;
        let outcome = active::touch(ctx.storage, &owner.account, &owner.user, &req.task_id)
            .and_then(|()| {
                ingest_and_summarise(
                    ctx,
                    &req,
                    tags.as_ref(),
                    &settings,
                    &recorder,
                    chat.as_ref(),
                    on_published,
                    watch,
                )
            })
            .and_then(|(result, wait_answer)| {
                tasks::complete(ctx.storage, &owner, &req.task_id, result)?;
                Ok(wait_answer)
            });
        if let Err(e) = &outcome {
            let _ = tasks::fail(ctx.storage, &owner, &req.task_id, &e.message);
        }
        // Ended either way: system/wait stops counting it.
        let _ = active::clear(ctx.storage, &req.account, &req.task_id);
        outcome
    }
}

/// Publish the tree, then compute summaries; returns (the task's result, the wait=true answer).
#[allow(clippy::too_many_arguments)]
fn ingest_and_summarise(
    ctx: &JobContext<'_>,
    req: &IngestRequest,
    tags: Option<&(Vec<String>, TagMode)>,
    settings: &Settings,
    recorder: &Recorder,
    chat: Option<&ChatClient>,
    on_published: Option<oneshot::Sender<Value>>,
    watch: Option<NewWatch>,
) -> ServiceResult<(Value, Value)> {
    let owner = TaskOwner::user(&req.account, &req.user);
    tasks::update(ctx.storage, &owner, &req.task_id, |t| {
        t.status = TaskStatus::Running;
        t.stage = Some("parse".into());
    })?;
    let stale_after = Duration::from_secs(settings.resources.stale_after_secs);
    let mut heartbeat = active::Heartbeat::new(
        ctx.storage,
        &req.account,
        &req.user,
        &req.task_id,
        stale_after,
    );
    let published = pipeline::ingest(
        ctx.storage,
        req,
        &settings.resources,
        &settings.quota,
        &mut || heartbeat.beat(),
    )?;
    if let Some((tags, mode)) = tags {
        // Before the record, so the index sees the tree with its tags.
        let tagged = attrs::set_tags(
            ctx.storage,
            &|| false,
            &published.root_uri,
            tags,
            *mode,
            true,
        );
        if let Err(e) = tagged {
            record_tree(recorder, ctx, &req.account, &published);
            return Err(e);
        }
    }
    // The whole tree, sidecars included, becomes findable on every instance.
    record_tree(recorder, ctx, &req.account, &published);
    if let Source::Upload { id } = &req.source {
        // Consumed: upstream deletes a temp upload once it is used.
        let _ = uploads::remove(ctx.storage, &req.account, id);
    }
    let mut result = json!({
        "status": "success",
        "root_uri": published.root_uri.uri(),
        "source_path": published.source_path,
        "meta": {"source_format": published.source_format, "files": published.files,
                 "bytes": published.bytes},
        "errors": [],
        "task_id": req.task_id,
    });
    let mut published = published;
    if let Some(new) = watch {
        if let Some(w) = raised_warning(&new.watch, settings.watch.min_interval_minutes) {
            published.warnings.push(w);
        }
        match start_watch(ctx, new, &published) {
            Ok(id) => result["watch_id"] = json!(id),
            Err(e) => {
                tracing::warn!(root = %published.root_uri, error = %e.message, "watch not created");
                published
                    .warnings
                    .push(format!("the watch was not created: {}", e.message));
            }
        }
    }
    if !published.warnings.is_empty() {
        result["warnings"] = json!(published.warnings);
    }
    if let Some(tx) = on_published {
        // The caller may be gone (wait=false answered or disconnected); the work goes on.
        let _ = tx.send(result.clone());
    }
    let root_uri = published.root_uri.uri();
    let _ = tasks::update(ctx.storage, &owner, &req.task_id, |t| {
        t.stage = Some("semantic".into());
        t.resource_id = Some(root_uri.clone());
    });
    let mut warnings: Vec<String> = published.warnings.clone();
    let dirs = published.dirs.len();
    let mut semantic_errors = Vec::new();
    if let Some(chat) = chat {
        let refined = active::keep_alive(
            ctx.storage,
            &owner.account,
            &owner.user,
            &req.task_id,
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
            record_tree(recorder, ctx, &owner.account, &published);
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
    if let Some(obj) = result.as_object_mut() {
        obj.remove("task_id");
        obj.insert("queue_status".into(), queue_status);
        if !warnings.is_empty() {
            obj.insert("warnings".into(), json!(warnings));
        }
    }
    let wait_answer = result.clone();
    if let Some(obj) = result.as_object_mut() {
        obj.insert("context_count".into(), json!(published.files + dirs * 2));
        obj.insert(
            "summary_mode".into(),
            json!(if chat.is_some() {
                "model"
            } else {
                "extractive"
            }),
        );
    }
    Ok((result, wait_answer))
}

/// Store the watch of a just-published URL resource, knowing the content it was published from.
fn start_watch(
    ctx: &JobContext<'_>,
    new: NewWatch,
    published: &Published,
) -> ServiceResult<String> {
    let mut w = new.watch;
    w.to_uri = published.root_uri.uri();
    if let Some((validators, hash)) = &published.source_version {
        w.etag = validators.etag.clone();
        w.last_modified = validators.last_modified.clone();
        w.content_hash = Some(hash.clone());
    }
    let stored = watches::create(ctx.storage, w, new.max_per_account)?;
    Ok(stored.task_id)
}

/// Says when the server's floor raises a watch's interval.
fn raised_warning(w: &Watch, floor_minutes: f64) -> Option<String> {
    (w.watch_interval < floor_minutes).then(|| {
        format!(
            "watch_interval {} is below this server's minimum; the watch runs every {} \
             minute(s) (watch.min_interval_minutes)",
            w.watch_interval, floor_minutes
        )
    })
}

/// Record an ingested tree for the search index (one record for the whole subtree).
fn record_tree(recorder: &Recorder, ctx: &JobContext<'_>, account: &str, published: &Published) {
    let subtree = published.root_uri.segments().join("/");
    recorder.record_paths(ctx.storage, account, &[&subtree], ChangeKind::Ingest);
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
