//! Jobs of directory summaries (`ingest::overview`): refresh one directory's L0/L1, and scan
//! for refreshes a dead instance left.

use std::sync::Arc;

use crate::error::ServiceResult;
use crate::ingest::chat::ChatClient;
use crate::ingest::overview::refresh::{self, Refreshed};
use crate::ingest::overview::{refreshable, OverviewRefresher};
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::StorePath;

use super::{BlockingJob, JobContext};

/// Refresh one directory handed out by [`OverviewRefresher::take_due`], record the sidecars
/// it wrote for search, mark the parent when the abstract changed, and hand the directory
/// back (to be retried when it lost a race or storage failed).
pub struct RefreshOverview {
    pub dir: StorePath,
    pub refresher: Arc<OverviewRefresher>,
    pub recorder: Arc<Recorder>,
    pub chat: Option<ChatClient>,
}

impl BlockingJob for RefreshOverview {
    type Output = ServiceResult<Refreshed>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = refresh::refresh(ctx.storage, &self.dir, self.chat.as_ref());
        let (retry, preset) = match &out {
            Ok(Refreshed::Conflict) | Err(_) => (true, false),
            Ok(Refreshed::Preset) => (false, true),
            Ok(_) => (false, false),
        };
        if let Ok(Refreshed::Written {
            written,
            abstract_changed,
        }) = &out
        {
            if !written.is_empty() {
                self.recorder
                    .record_store_paths(ctx.storage, written, ChangeKind::Write);
            }
            if let Some(parent) = self.dir.parent().filter(|_| *abstract_changed) {
                if refreshable(&parent) {
                    self.refresher.mark_dirty(ctx.storage, &parent);
                }
            }
        }
        self.refresher.finished(&self.dir, retry, preset);
        Ok(out?)
    }
}

/// Schedule the marked directories no instance refreshed (see
/// [`OverviewRefresher::adopt_orphans`]).
pub struct AdoptOrphanOverviews {
    pub refresher: Arc<OverviewRefresher>,
}

impl BlockingJob for AdoptOrphanOverviews {
    type Output = ServiceResult<usize>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        Ok(self.refresher.adopt_orphans(ctx.storage)?)
    }
}
