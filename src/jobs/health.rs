//! Storage health probes.

use super::{BlockingJob, JobContext};

/// Write-read-delete a probe object through the backend.
pub struct ProbeStorage;

impl BlockingJob for ProbeStorage {
    type Output = Result<(), String>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        ctx.storage.probe().map_err(|e| e.to_string())
    }
}
