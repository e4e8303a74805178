//! Session jobs (spec §9 SE1–SE9) over `storage::sessions`. Reads and message writes run on the
//! storage pool, commits and the startup repair sweep on the commit pool.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ServiceResult;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::sessions::commit::{self, CommitOptions};
use crate::storage::sessions::context;
use crate::storage::sessions::message::MessageInput;
use crate::storage::sessions::ops::{self, CreateOptions};
use crate::storage::sessions::SessionRef;

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};

/// SE1: create a session; an existing id → 409.
#[derive(Clone)]
pub struct CreateSession {
    pub session: SessionRef,
    pub options: CreateOptions,
}

impl BlockingJob for CreateSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ops::create(ctx.storage, &self.session, &self.options)
    }
}

/// SE2: the caller's sessions, newest first.
pub struct ListSessions {
    pub account: String,
    pub user: String,
}

impl BlockingJob for ListSessions {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ops::list(ctx.storage, &self.account, &self.user)
    }
}

/// SE3: session meta with live counters; `auto_create` creates a missing session.
#[derive(Clone)]
pub struct GetSession {
    pub session: SessionRef,
    pub auto_create: bool,
}

impl BlockingJob for GetSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ops::get(ctx.storage, &self.session, self.auto_create)
    }
}

/// SE4: delete the session and its history.
#[derive(Clone)]
pub struct DeleteSession {
    pub session: SessionRef,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for DeleteSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = ops::delete(ctx.storage, &self.session);
        let changed: Vec<_> = self.session.dir().into_iter().collect();
        let kind = ChangeKind::Session;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::EvenIfPartial,
        );
        out
    }
}

/// SE5/SE6: decode, validate and append the messages of a request body (decoded on the pool).
#[derive(Clone)]
pub struct AddMessages {
    pub session: SessionRef,
    /// Decoded and validated by the handler's extractor; shared, as a busy session retries
    /// the job.
    pub messages: Arc<Vec<MessageInput>>,
    /// SE6 (answers with `added` too) or SE5 (one message).
    pub batch: bool,
}

impl BlockingJob for AddMessages {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ops::add_inputs(ctx.storage, &self.session, &self.messages, self.batch)
    }
}

/// SE7, on the commit pool.
pub struct CommitSession {
    pub session: SessionRef,
    pub options: CommitOptions,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for CommitSession {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = commit::commit(ctx.storage, &self.session, &self.options);
        let changed: Vec<_> = self.session.dir().into_iter().collect();
        let kind = ChangeKind::Session;
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            kind,
            RecordWhen::OnSuccess,
        );
        out
    }
}

/// SE8: one completed archive, JSON-encoded.
pub struct GetArchive {
    pub session: SessionRef,
    pub archive_id: String,
}

impl BlockingJob for GetArchive {
    type Output = ServiceResult<Vec<u8>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        context::get_archive(ctx.storage, &self.session, &self.archive_id)
    }
}

/// SE9: the session context within a token budget, JSON-encoded.
pub struct GetContext {
    pub session: SessionRef,
    pub token_budget: u64,
}

impl BlockingJob for GetContext {
    type Output = ServiceResult<Vec<u8>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        context::context(ctx.storage, &self.session, self.token_budget)
    }
}

/// Startup, on the commit pool: repair every session commit a crash interrupted.
pub struct RepairInterruptedCommits;

impl BlockingJob for RepairInterruptedCommits {
    type Output = ServiceResult<usize>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ops::sweep_interrupted(ctx.storage)
    }
}

/// `PATCH /sessions/{id}/config`.
#[derive(Clone)]
pub struct UpdateSessionConfig {
    pub session: SessionRef,
    pub update: crate::storage::sessions::config::ConfigUpdate,
}

impl BlockingJob for UpdateSessionConfig {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::storage::sessions::config::update(ctx.storage, &self.session, &self.update)
    }
}

/// `GET /api/v1/stats/sessions/{id}`.
#[derive(Clone)]
pub struct SessionExtractionStats {
    pub session: SessionRef,
}

impl BlockingJob for SessionExtractionStats {
    type Output = ServiceResult<Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::storage::sessions::config::extraction_stats(ctx.storage, &self.session)
    }
}
