//! Jobs of the search area: answering find/search on the storage pool, and the one way a job
//! records the change it made once it succeeded.

use std::sync::Arc;

use super::{BlockingJob, JobContext};
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::identity::Identity;
use crate::search::changes::{ChangeKind, Recorder};
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
        let now = crate::time::epoch_millis_now() as i64;
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
pub fn account_paths(account: &str, rest: &[impl AsRef<str>]) -> Vec<StorePath> {
    rest.iter()
        .filter_map(|r| {
            let r = r.as_ref();
            let full = if r.is_empty() {
                account.to_string()
            } else {
                format!("{account}/{r}")
            };
            StorePath::parse(&full).ok()
        })
        .collect()
}

/// When a job that changes indexed content records its change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWhen {
    /// Only after it succeeded.
    OnSuccess,
    /// Also after a server-side failure part-way (a deletion or copy that may have changed
    /// part of a tree). Refused requests (client errors) changed nothing and record nothing.
    EvenIfPartial,
}

/// Record, on the pool thread that made the change, that `paths` changed so every instance
/// re-indexes them. Every job that changes indexed content carries the process's
/// [`Recorder`] as a field (it cannot be built without one) and calls this at the end of its
/// `run` with its outcome.
pub fn record_outcome<T>(
    recorder: &Recorder,
    ctx: &JobContext<'_>,
    outcome: &ServiceResult<T>,
    paths: &[StorePath],
    kind: ChangeKind,
    when: RecordWhen,
) {
    let changed = match outcome {
        Ok(_) => true,
        Err(e) => {
            when == RecordWhen::EvenIfPartial
                && matches!(
                    e.code,
                    ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
                )
        }
    };
    if changed {
        recorder.record_store_paths(ctx.storage, paths, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn outcomes_record_what_changed_and_refusals_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let never = || false;
        let ctx = JobContext::new(&storage, &never, &|| {});
        let recorder = Recorder::new(Box::new(|| {}));
        let paths = account_paths("acme", &["resources/a"]);
        let kind = ChangeKind::Remove;
        let ok: ServiceResult<()> = Ok(());
        let refused: ServiceResult<()> = Err(ServiceError::invalid_argument("no"));
        let broke: ServiceResult<()> = Err(ServiceError::new(ErrorCode::Internal, "half done"));
        record_outcome(&recorder, &ctx, &ok, &paths, kind, RecordWhen::OnSuccess);
        assert_eq!(recorder.recorded_for("acme"), 1);
        record_outcome(
            &recorder,
            &ctx,
            &refused,
            &paths,
            kind,
            RecordWhen::EvenIfPartial,
        );
        record_outcome(&recorder, &ctx, &broke, &paths, kind, RecordWhen::OnSuccess);
        assert_eq!(recorder.recorded(), 1);
        record_outcome(
            &recorder,
            &ctx,
            &broke,
            &paths,
            kind,
            RecordWhen::EvenIfPartial,
        );
        let queued = recorder.drain_local();
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[1].1.paths, ["resources/a"]);
    }
}
