//! Memory-extraction jobs: scanning the shared backlog (storage pool) and extracting one
//! archive (memory pool, where chat-model calls may take long).

use std::sync::Arc;

use crate::config::MemorySettings;
use crate::error::ServiceResult;
use crate::ingest::chat::ChatClient;
use crate::memory::extract::{Extractor, RunOutcome};
use crate::memory::stats::MemoryStats;
use crate::search::changes::Recorder;
use crate::search::index::SearchIndex;
use crate::storage::sessions::backlog;
use crate::time::epoch_secs_now;

use super::{BlockingJob, JobContext};

/// One waiting extraction found by a scan.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub account: String,
    pub user: String,
    pub task_id: String,
    pub due: bool,
    /// Not before this time (epoch seconds).
    pub not_before: f64,
    pub enqueued_at: f64,
}

/// The backlog entries of some accounts (`None` = every account), oldest first.
pub struct ScanMemoryBacklog {
    pub accounts: Option<Vec<String>>,
}

impl BlockingJob for ScanMemoryBacklog {
    type Output = ServiceResult<Vec<Waiting>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let now = epoch_secs_now();
        let mut out = Vec::new();
        let accounts = match self.accounts {
            Some(a) => a,
            None => crate::storage::account_names(ctx.storage)?,
        };
        for account in accounts {
            for e in backlog::list_account(ctx.storage, &account)? {
                out.push(Waiting {
                    due: e.is_due(now),
                    not_before: e.not_before,
                    account: e.account,
                    user: e.user,
                    task_id: e.task_id,
                    enqueued_at: e.enqueued_at,
                });
            }
        }
        out.sort_by(|a, b| a.enqueued_at.total_cmp(&b.enqueued_at));
        Ok(out)
    }
}

/// Extract the memories of one backlog entry (see `memory::extract`).
pub struct ExtractMemories {
    pub account: String,
    pub task_id: String,
    pub chat: Option<ChatClient>,
    pub index: Arc<SearchIndex>,
    pub recorder: Arc<Recorder>,
    pub stats: Arc<MemoryStats>,
    pub settings: MemorySettings,
}

impl BlockingJob for ExtractMemories {
    type Output = ServiceResult<RunOutcome>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let x = Extractor {
            storage: ctx.storage,
            chat: self.chat.as_ref(),
            index: Some(&self.index),
            recorder: Some(&self.recorder),
            stats: &self.stats,
            settings: &self.settings,
        };
        x.run(&self.account, &self.task_id)
    }
}

/// `GET /api/v1/stats/memories` for one user.
pub struct MemoryHealth {
    pub account: String,
    pub user: String,
    pub category: Option<String>,
}

impl BlockingJob for MemoryHealth {
    type Output = ServiceResult<serde_json::Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        crate::memory::health::memory_stats(
            ctx.storage,
            &self.account,
            &self.user,
            self.category.as_deref(),
        )
    }
}

/// What a memory-template request does.
pub enum TemplateOp {
    List,
    Get(String),
    /// `None` = back to the default (DELETE).
    Put(String, Option<serde_json::Value>),
}

/// The account memory-template routes (the account must exist).
pub struct MemoryTemplates {
    pub account: String,
    pub op: TemplateOp,
}

impl BlockingJob for MemoryTemplates {
    type Output = ServiceResult<serde_json::Value>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        use crate::memory::templates;
        crate::storage::registry::accounts::get(ctx.storage, &self.account)?;
        match self.op {
            TemplateOp::List => templates::list(ctx.storage, &self.account),
            TemplateOp::Get(t) => templates::get(ctx.storage, &self.account, &t),
            TemplateOp::Put(t, body) => {
                templates::put(ctx.storage, &self.account, &t, body.as_ref())
            }
        }
    }
}
