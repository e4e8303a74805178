//! Storage health probes.

use std::time::Duration;

use super::{BlockingJob, JobContext};

/// Remove temporary files older than `older_than` that killed writers left behind.
pub struct SweepTempFiles {
    pub older_than: Duration,
}

impl BlockingJob for SweepTempFiles {
    type Output = Result<usize, String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ctx.storage
            .sweep_temp_files(self.older_than)
            .map_err(|e| crate::error::storage_failure_kind(&e).to_string())
    }
}

/// Remove local ingestion scratch space whose owner died (and its orphaned parser children).
pub struct SweepIngestScratch {
    pub settings: crate::config::ResourceSettings,
    /// Age after which a scratch directory nobody ever locked is removed.
    pub grace: Duration,
}

impl BlockingJob for SweepIngestScratch {
    type Output = crate::ingest::scratch::SweepReport;

    fn run(self, _ctx: &JobContext<'_>) -> Self::Output {
        crate::ingest::scratch::sweep(&self.settings, self.grace)
    }
}

/// Settle directory moves whose mover died mid-way (S3; nothing to do on local disk).
pub struct RecoverMoves;

impl BlockingJob for RecoverMoves {
    type Output = Result<usize, String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ctx.storage
            .recover_moves()
            .map_err(|e| crate::error::storage_failure_kind(&e).to_string())
    }
}

/// Write-read-delete a probe object through the backend.
pub struct ProbeStorage;

impl BlockingJob for ProbeStorage {
    type Output = Result<(), String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        // Readiness answers anyone: the kind of failure only, the detail goes to the log.
        ctx.storage
            .probe()
            .map_err(|e| crate::error::storage_failure_kind(&e).to_string())
    }
}
