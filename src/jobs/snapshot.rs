//! Snapshot jobs (issue #22): one per route, each one call into `crate::snapshot`.

use std::sync::Arc;

use gix_hash::ObjectId;
use serde_json::Value;

use crate::error::{ServiceError, ServiceResult};
use crate::ingest::active;
use crate::ingest::pipeline::staging_dir;
use crate::search::changes::{ChangeKind, Recorder};
use crate::snapshot::commit::{self, CommitRequest};
use crate::snapshot::diff::{self, DiffPathsRequest};
use crate::snapshot::restore::{self, RestoreRequest};
use crate::snapshot::{history, ignore_rules, repo_root};

use super::{BlockingJob, JobContext};

/// Past this many restored paths the whole restored directory is recorded once instead.
const MAX_RECORDED_PATHS: usize = 1000;

pub struct CommitSnapshot(pub CommitRequest);

impl BlockingJob for CommitSnapshot {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        commit::commit(ctx.storage, &self.0, ctx.abandoned())
    }
}

/// A restore writes and deletes content: what it touched is recorded for search (also after a
/// failure part-way, which it has put back — the record then re-reads what is there).
pub struct RestoreSnapshot {
    pub req: RestoreRequest,
    pub recorder: Arc<Recorder>,
    /// `resources.stale_after_secs`: the staging directory's marker must stay younger.
    pub stale_after: std::time::Duration,
}

impl BlockingJob for RestoreSnapshot {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = staged_restore(ctx, &self.req, self.stale_after);
        if !out.touched.is_empty() {
            let scope = self.req.scope.as_str();
            let paths: Vec<&str> = if out.touched.len() > MAX_RECORDED_PATHS {
                if scope.is_empty() {
                    vec!["resources", "user", "agent"]
                } else {
                    vec![scope]
                }
            } else {
                out.touched.iter().map(String::as_str).collect()
            };
            self.recorder.record_paths(
                ctx.storage,
                &self.req.who.account,
                &paths,
                ChangeKind::Write,
            );
        }
        match out.error {
            Some(e) => Err(e),
            None => Ok(out.result),
        }
    }
}

/// Run `req` with a staging directory under `_system/ingest/` kept from the staging sweep by an
/// active marker while this lives (after a crash the sweep settles and removes it).
fn staged_restore(
    ctx: &JobContext<'_>,
    req: &RestoreRequest,
    stale_after: std::time::Duration,
) -> restore::Outcome {
    let failed = |e: ServiceError| restore::Outcome {
        result: Value::Null,
        touched: Vec::new(),
        error: Some(e),
    };
    let (account, user) = (&req.who.account, &req.who.user);
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut id);
    let work_id = format!("restore_{}", hex::encode(id));
    let dir = match staging_dir(account, &work_id) {
        Ok(d) => d,
        Err(e) => return failed(e.into()),
    };
    if let Err(e) = active::touch(ctx.storage, account, user, &work_id) {
        return failed(e);
    }
    let mut heartbeat = active::Heartbeat::new(ctx.storage, account, user, &work_id, stale_after);
    let out = restore::restore(
        ctx.storage,
        req,
        restore::Staging {
            dir,
            beat: &mut || heartbeat.beat(),
        },
        ctx.abandoned(),
    );
    let _ = active::clear(ctx.storage, account, &work_id);
    out
}

pub struct ShowSnapshot {
    pub account: String,
    pub target: String,
}

impl BlockingJob for ShowSnapshot {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        history::show(ctx.storage, &self.account, &self.target)
    }
}

pub struct ShowSnapshotFile {
    pub account: String,
    pub target: String,
    pub path: String,
}

impl BlockingJob for ShowSnapshotFile {
    type Output = ServiceResult<(ObjectId, Vec<u8>)>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        history::show_file(ctx.storage, &self.account, &self.target, &self.path)
    }
}

pub struct SnapshotLog {
    pub account: String,
    pub branch: String,
    pub limit: usize,
    pub paths: Vec<String>,
}

impl BlockingJob for SnapshotLog {
    type Output = ServiceResult<Vec<Value>>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        history::log(
            ctx.storage,
            &self.account,
            &self.branch,
            self.limit,
            &self.paths,
            ctx.abandoned(),
        )
    }
}

pub struct DiffSnapshotFile {
    pub account: String,
    pub path: String,
    pub from: Option<String>,
    pub to: String,
}

impl BlockingJob for DiffSnapshotFile {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        diff::diff(
            ctx.storage,
            &self.account,
            &self.path,
            self.from.as_deref(),
            &self.to,
        )
    }
}

pub struct DiffSnapshotPaths(pub DiffPathsRequest);

impl BlockingJob for DiffSnapshotPaths {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        diff::diff_paths(ctx.storage, &self.0)
    }
}

/// `.ovgitignore`: read (`None`), replace (`Some(content)`), or delete (`Some("")` is a
/// replacement with nothing; deletion is its own variant).
pub enum IgnoreChange {
    Read,
    Set(String),
    Delete,
}

pub struct SnapshotIgnore {
    pub account: String,
    pub change: IgnoreChange,
}

impl BlockingJob for SnapshotIgnore {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let repo = repo_root(&self.account)?;
        match self.change {
            IgnoreChange::Read => Ok(Value::String(ignore_rules::read(ctx.storage, &repo)?)),
            IgnoreChange::Set(content) => {
                ignore_rules::write(ctx.storage, &repo, &content).map(|()| Value::Null)
            }
            IgnoreChange::Delete => ignore_rules::delete(ctx.storage, &repo).map(|()| Value::Null),
        }
    }
}
