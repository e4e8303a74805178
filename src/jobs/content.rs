//! Content jobs (spec §7 C1–C5) over `storage::fs::{read, write}`, and large-body decoding.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::QuotaSettings;
use crate::decode::parse_json;
use crate::error::{ServiceError, ServiceResult};
use crate::ingest::overview::OverviewRefresher;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::acl::store as acl_store;
use crate::storage::fs::read::{self, Sidecar};
use crate::storage::fs::write::{self, WriteMode};
use crate::storage::fs::{attrs, batch, reindex};
use crate::storage::tags::{self, TagMode};
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::uri::VikingUri;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};

/// C1: lines `[offset, offset+limit)` of a file, already JSON-encoded as a string.
pub struct ReadFile {
    pub uri: VikingUri,
    pub offset: usize,
    /// `None` = to the end.
    pub limit: Option<usize>,
}

impl BlockingJob for ReadFile {
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::read_lines(ctx.storage, &self.uri, self.offset, self.limit)
    }
}

/// C2/C3: a directory's abstract or overview body.
pub struct ReadSidecar {
    pub uri: VikingUri,
    pub which: Sidecar,
}

impl BlockingJob for ReadSidecar {
    type Output = ServiceResult<String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::read_sidecar(ctx.storage, &self.uri, self.which)
    }
}

/// C4: the raw bytes of a file.
pub struct DownloadFile {
    pub uri: VikingUri,
}

impl BlockingJob for DownloadFile {
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        read::download(ctx.storage, &self.uri)
    }
}

/// C5: write `content` to a file.
pub struct WriteFile {
    pub uri: VikingUri,
    pub content: String,
    pub mode: WriteMode,
    /// The account's content quota (`[quota]`).
    pub quota: QuotaSettings,
    /// Tags to apply after the write (normalised, no reserved keys) and how.
    pub tags: Option<(Vec<String>, TagMode)>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for WriteFile {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = write::write_file(
            ctx.storage,
            &self.uri,
            &self.content,
            self.mode,
            &self.quota,
        );
        // Tags after the content (the file exists then); recorded once, after both, whether
        // or not the tags could be written (the content changed either way).
        let tagged = match (&out, &self.tags) {
            // 0.5.2: replacing with no tags leaves the tags as they are.
            (Ok(_), Some((tags, mode))) if !(*mode == TagMode::Replace && tags.is_empty()) => {
                tags::set_user_tags(ctx.storage, self.uri.store_path(), tags, *mode).map(drop)
            }
            _ => Ok(()),
        };
        let changed = [self.uri.store_path().clone()];
        let kind = ChangeKind::Write;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::OnSuccess,
        );
        tagged?;
        out
    }
}

/// Decode a large JSON request body on a pool thread (serde on a 100 MB body would stall
/// every connection of the HTTP worker running it).
pub struct DecodeJson<T> {
    pub body: Bytes,
    _into: PhantomData<fn() -> T>,
}

impl<T> DecodeJson<T> {
    pub fn new(body: Bytes) -> Self {
        DecodeJson {
            body,
            _into: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> BlockingJob for DecodeJson<T> {
    type Output = Result<T, ServiceError>;

    fn run(self, _ctx: &JobContext<'_>) -> Self::Output {
        parse_json(&self.body)
    }
}

/// One operation of a batch as the handler validated it (content still as sent).
pub struct PlannedOp {
    pub uri: VikingUri,
    pub content: batch::RawContent,
    pub mode: batch::BatchMode,
    pub expected_sha256: Option<String>,
    pub tags: Option<(Vec<String>, TagMode)>,
    /// The operation's `acl` (validated, manage checked).
    pub acl: Option<crate::storage::acl::store::AclSpec>,
}

/// `content/batch-write`: decode, check, write in URI order; everything written is recorded
/// for search, also when a later operation stopped the batch. The operations' ACLs are
/// stored in one change before the writes; nodes the batch did not write get their rows back.
pub struct BatchWrite {
    pub root: VikingUri,
    /// Sorted by URI.
    pub ops: Vec<PlannedOp>,
    pub skip_conflicts: bool,
    pub quota: QuotaSettings,
    pub recorder: Arc<Recorder>,
    pub registry: super::admin::Registry,
}

impl BlockingJob for BatchWrite {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        match crate::storage::fs::stat(ctx.storage, &self.root)? {
            Some(m) if m.is_dir() => {}
            _ => {
                return Err(ServiceError::invalid_argument(format!(
                    "batch-write root must be an existing directory: {}",
                    self.root.uri()
                )))
            }
        }
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut acls = Vec::new();
        for p in self.ops {
            let (content, text) = p.content.decode(&p.uri)?;
            if let Some(spec) = p.acl.clone() {
                acls.push((p.uri.clone(), spec));
            }
            ops.push(batch::BatchOp {
                uri: p.uri,
                content,
                text,
                mode: p.mode,
                expected_sha256: p.expected_sha256,
                tags: p.tags,
                acl: p.acl.is_some(),
            });
        }
        let cx = crate::storage::registry::OpCtx {
            storage: ctx.storage,
            sink: self.registry.sink.as_ref(),
            hashing: self.registry.hashing,
        };
        let account = self.root.store_path().segments().next().unwrap_or_default();
        let staged = acl_store::stage_many(&cx, account, &acls)?;
        let out = batch::batch_write(
            ctx.storage,
            &self.root,
            &ops,
            self.skip_conflicts,
            &self.quota,
        );
        if let Err(e) = staged.settle(&cx, &out.written) {
            tracing::error!(root = %self.root, error = %e.message, "ACL rows of unwritten batch targets not put back");
        }
        if !out.written.is_empty() {
            self.recorder
                .record_store_paths(ctx.storage, &out.written, ChangeKind::Write);
        }
        out.result
    }
}

/// `content/reindex`: optionally retag, count the subtree, and record it so the index writer
/// rebuilds its entries (with their tags and vectors) from storage. With a task (wait=false)
/// the task carries the outcome.
pub struct Reindex {
    pub uri: VikingUri,
    pub object_type: &'static str,
    pub mode: String,
    pub recursive: bool,
    pub tags: Option<(Vec<String>, TagMode)>,
    /// wait=false: the task to complete (created by this job).
    pub task: Option<(TaskOwner, String)>,
    /// `semantic_and_vectors`: every directory of the subtree is marked for a summary refresh.
    pub overviews: Option<Arc<OverviewRefresher>>,
    pub recorder: Arc<Recorder>,
}

impl Reindex {
    fn rebuild(&self, ctx: &JobContext<'_>) -> ServiceResult<Value> {
        let started = std::time::Instant::now();
        if let Some((tags, mode)) = &self.tags {
            attrs::set_tags(
                ctx.storage,
                &|| false,
                &self.uri,
                tags,
                *mode,
                self.recursive,
            )?;
        }
        let mut dirs = 0usize;
        let mut mark = |dir: &VikingUri| {
            if let Some(r) = &self.overviews {
                r.mark_dirty(ctx.storage, dir.store_path());
                dirs += 1;
            }
        };
        let docs = reindex::scan(
            ctx.storage,
            &self.uri,
            self.recursive,
            &mut mark,
            ctx.yielder(),
        )?;
        let changed = if self.recursive {
            vec![self.uri.store_path().clone()]
        } else {
            reindex::direct_files(ctx.storage, &self.uri)?
        };
        self.recorder
            .record_store_paths(ctx.storage, &changed, ChangeKind::Write);
        let mut result = reindex::result(
            &self.uri,
            self.object_type,
            &self.mode,
            docs,
            started.elapsed().as_millis() as u64,
        );
        if dirs > 0 {
            result["warnings"] = serde_json::json!([format!(
                "{dirs} directory summaries are being regenerated in the background"
            )]);
        }
        Ok(result)
    }
}

impl BlockingJob for Reindex {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let Some((owner, id)) = &self.task else {
            return self.rebuild(ctx);
        };
        tasks::mark_running(ctx.storage, owner, id)?;
        let out = self.rebuild(ctx);
        match &out {
            Ok(result) => {
                tasks::complete(ctx.storage, owner, id, result.clone())?;
            }
            Err(e) => {
                let _ = tasks::fail(ctx.storage, owner, id, &e.message);
            }
        }
        out
    }
}
