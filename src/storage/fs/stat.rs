//! F3 stat.

use serde_json::{json, Value};

use super::entry::{mod_time, mode_of, Output};
use super::{file_not_found, stat};
use crate::actors::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::storage::uri::VikingUri;

/// Metadata of one file or directory.
pub struct StatJob {
    pub uri: VikingUri,
}

impl BlockingJob for StatJob {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        if self.uri.has_internal_segment() {
            return Err(file_not_found(&self.uri));
        }
        let meta = stat(ctx.storage, &self.uri)?.ok_or_else(|| file_not_found(&self.uri))?;
        Ok(json!({
            "name": self.uri.name(),
            "size": meta.size,
            "mode": mode_of(&meta),
            "modTime": mod_time(meta.modified, Output::Original),
            "isDir": meta.is_dir(),
            "uri": self.uri.uri(),
            // No path lock outlives a request on this server (see C5 note in the spec).
            "isLocked": false,
        }))
    }
}
