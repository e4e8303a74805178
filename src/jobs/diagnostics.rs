//! Jobs of the diagnostics routes: `system/consistency` and `debug/vector/*`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::search::consistency::{self, Check};
use crate::search::embed::Embedder;
use crate::search::index::SearchIndex;
use crate::search::records::{Filter, Selection};
use crate::storage::uri::VikingUri;

/// Compare the index, stored vectors and summaries with storage under `root`.
pub struct CheckConsistency {
    pub index: Arc<SearchIndex>,
    pub embedder: Option<Arc<Embedder>>,
    pub root: VikingUri,
    /// The caller's user id when other users' spaces are hidden from it (all but root).
    pub own_user: Option<String>,
    pub max_entries: usize,
}

impl BlockingJob for CheckConsistency {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let uri = self.root.uri();
        consistency::check(&Check {
            storage: ctx.storage,
            index: &self.index,
            embedder: self.embedder.as_deref(),
            root: self.root.store_path(),
            root_uri: &uri,
            own_user: self.own_user.as_deref(),
            max_entries: self.max_entries,
            stop: ctx.abandoned(),
        })
    }
}

/// What a debug vector request wants.
pub enum VectorQuery {
    Scroll {
        limit: usize,
        cursor: Option<String>,
    },
    Count,
}

/// Page through or count the index's records of one account subtree.
pub struct VectorRecords {
    pub index: Arc<SearchIndex>,
    pub embedder: Arc<Embedder>,
    /// A full storage path (the account root, or a subtree of it).
    pub root: String,
    pub filter: Option<Filter>,
    pub own_user: Option<String>,
    pub query: VectorQuery,
}

impl BlockingJob for VectorRecords {
    type Output = ServiceResult<Value>;

    fn run(self, _ctx: &JobContext<'_>) -> Self::Output {
        let sel = Selection {
            index: &self.index,
            embedder: &self.embedder,
            root: &self.root,
            filter: self.filter.as_ref(),
            own_user: self.own_user.as_deref(),
        };
        match self.query {
            VectorQuery::Scroll { limit, cursor } => sel.scroll(limit, cursor.as_deref()),
            VectorQuery::Count => Ok(json!({"count": sel.count()?})),
        }
    }
}
