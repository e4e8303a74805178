//! Tag jobs (issue #21): `fs/attrs` and `content/set_tags` over `storage::fs::attrs`.

use std::sync::Arc;

use serde_json::Value;

use crate::error::ServiceResult;
use crate::search::changes::{ChangeKind, Recorder};
use crate::storage::fs::attrs;
use crate::storage::tags::TagMode;
use crate::storage::uri::VikingUri;

use super::{BlockingJob, JobContext};

/// `GET /fs/attrs`.
pub struct ReadAttrs {
    pub uri: VikingUri,
}

impl BlockingJob for ReadAttrs {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        attrs::attrs(ctx.storage, &self.uri)
    }
}

/// `content/set_tags` (and `fs/attrs/set_tags`); the tagged documents are recorded so every
/// instance's index picks the tags up.
pub struct SetTags {
    pub uri: VikingUri,
    /// Normalised, without reserved keys.
    pub tags: Vec<String>,
    pub mode: TagMode,
    pub recursive: bool,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for SetTags {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = attrs::set_tags(
            ctx.storage,
            ctx.abandoned(),
            &self.uri,
            &self.tags,
            self.mode,
            self.recursive,
        );
        let changed = match &out {
            Ok(done) => done.changed.clone(),
            // A recursive write that failed part-way may have tagged part of the subtree.
            Err(_) if self.recursive => vec![self.uri.store_path().clone()],
            Err(_) => Vec::new(),
        };
        if !changed.is_empty() {
            self.recorder
                .record_store_paths(ctx.storage, &changed, ChangeKind::Write);
        }
        out.map(|done| done.result)
    }
}
