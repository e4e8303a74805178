//! Storage health probes.

use super::{BlockingJob, JobContext};

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
