//! Jobs of the search area: answering find/search on the storage pool, and recording the
//! change a write job made once it succeeded.

use std::sync::Arc;

use super::{BlockingJob, JobContext};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::search::changes::{self, ChangeKind};
use crate::search::embed::Embedder;
use crate::search::index::SearchIndex;
use crate::search::query::{self, ContentBounds, IndexState};
use crate::search::request::{self, Route, SearchBody, Unsupported};
use crate::storage::StorePath;

/// Validate and answer one find or search request (list mode).
pub struct FindContext {
    pub index: Arc<SearchIndex>,
    pub who: Identity,
    /// The decoded body (a find body converted with `SearchBody::from`).
    pub body: SearchBody,
    pub route: Route,
    pub catching_up: bool,
    /// The dense model, when one is configured.
    pub embedder: Option<Arc<Embedder>>,
    pub content: ContentBounds,
}

impl BlockingJob for FindContext {
    /// The answer, JSON-encoded here so a large one never occupies an HTTP worker.
    type Output = ServiceResult<Vec<u8>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let now = changes::now_ms() as i64;
        let req = match request::validate(self.body, self.route, now)? {
            Ok(r) => r,
            Err(Unsupported::ContextMode) => {
                return Err(ServiceError::unimplemented(
                    "search mode='context' (server-side context assembly) is not implemented; use mode='list'",
                ))
            }
        };
        let state = IndexState {
            catching_up: self.catching_up,
        };
        let answer = query::run(
            &self.index,
            ctx.storage,
            &self.who,
            &req,
            state,
            self.embedder.as_deref(),
            self.content,
        )?;
        serde_json::to_vec(&answer)
            .map_err(|e| ServiceError::internal(format!("could not encode a find answer: {e}")))
    }
}

/// Storage paths inside `account` (`rest` = paths relative to the account root; `""` = the
/// whole account), skipping any that are not valid paths.
pub fn account_paths(account: &str, rest: &[&str]) -> Vec<StorePath> {
    rest.iter()
        .filter_map(|r| {
            let full = if r.is_empty() {
                account.to_string()
            } else {
                format!("{account}/{r}")
            };
            StorePath::parse(&full).ok()
        })
        .collect()
}

/// Runs `job`, then records that `paths` changed so every instance re-indexes them: on
/// success only, or (`always`) also when it failed part-way (a server-side error of a
/// deletion that may have removed part of a tree). Refused requests record nothing.
#[derive(Clone)]
pub struct Recorded<J> {
    pub job: J,
    pub paths: Vec<StorePath>,
    pub kind: ChangeKind,
    pub always: bool,
}

impl<J> Recorded<J> {
    /// Record `paths` after `job` succeeds.
    pub fn on_success(job: J, paths: Vec<StorePath>, kind: ChangeKind) -> Self {
        Recorded {
            job,
            paths,
            kind,
            always: false,
        }
    }

    /// Record `paths` after `job`, whatever it returned.
    pub fn always(job: J, paths: Vec<StorePath>, kind: ChangeKind) -> Self {
        Recorded {
            job,
            paths,
            kind,
            always: true,
        }
    }
}

impl<T: Send + 'static, J: BlockingJob<Output = ServiceResult<T>>> BlockingJob for Recorded<J> {
    type Output = ServiceResult<T>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let out = self.job.run(ctx);
        let partial = |e: &ServiceError| {
            matches!(
                e.code,
                ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
            )
        };
        let changed = match &out {
            Ok(_) => true,
            Err(e) => self.always && partial(e),
        };
        if changed {
            let refs: Vec<&StorePath> = self.paths.iter().collect();
            changes::record_store_paths(ctx.storage, &refs, self.kind);
        }
        out
    }
}
