//! One run of a watch (issue #24): under the watch's lease in shared storage (so of several
//! instances exactly one runs it per period, and a dead runner's lease is taken over), re-read
//! the watch, fetch its URL conditionally with the SSRF rules and limits of URL ingestion, and
//! re-ingest only when the content changed (304, or the same SHA-256, means unchanged). The
//! ingestion itself is the caller's (the `AddResource` job's logic, replacing the target).

use std::time::Duration;

use serde_json::Value;

use super::fetch::{self, file_sha256, Fetched, Validators};
use super::pipeline::{IngestRequest, Source, Target};
use super::scratch::Scratch;
use crate::config::ResourceSettings;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::uri::VikingUri;
use crate::storage::watches::{self, Watch};
use crate::storage::{Storage, StorageError};

/// How long a run waits for the watch's lease before leaving it to its holder.
const LEASE_WAIT: Duration = Duration::from_millis(200);

/// What one attempt to run a watch did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Another instance holds its lease (it is running there).
    Busy,
    /// Not due (another instance ran it this period, or it was paused): when it is due next.
    NotDue(Option<f64>),
    /// The watch no longer exists.
    Gone,
    /// Fetched; the content had not changed.
    Unchanged,
    /// Fetched and re-ingested (the ingestion's task id).
    Reingested(String),
    /// The fetch or the ingestion failed (recorded in the watch as `last_error`).
    Failed(String),
    /// The account may not start another ingestion on this instance now; try again shortly.
    Deferred,
}

/// The lease name of one watch.
pub fn lease_name(account: &str, task_id: &str) -> String {
    format!("watch:{account}:{task_id}")
}

/// What running a changed watch needs from the caller: the ingestion (replacing the target),
/// answering its result (with `task_id`) or `Ok(None)` when it could not start now.
pub type Ingest<'a> = dyn FnMut(IngestRequest) -> ServiceResult<Option<Value>> + 'a;

/// Run the watch `task_id` of `account` if it is due.
pub fn run(
    storage: &dyn Storage,
    account: &str,
    task_id: &str,
    floor_minutes: f64,
    settings: &ResourceSettings,
    ingest: &mut Ingest<'_>,
) -> ServiceResult<RunOutcome> {
    let guard = match storage.lock(&lease_name(account, task_id), LEASE_WAIT) {
        Ok(g) => g,
        Err(StorageError::Busy(_)) => return Ok(RunOutcome::Busy),
        Err(e) => return Err(e.into()),
    };
    let (tasks, _) = watches::load(storage, account)?;
    let Some(task) = tasks.into_iter().find(|t| t.task_id == task_id) else {
        return Ok(RunOutcome::Gone);
    };
    let now = crate::time::epoch_secs_now();
    match task.next_execution_time {
        Some(next) if task.is_active && next <= now => {}
        next => return Ok(RunOutcome::NotDue(next.filter(|_| task.is_active))),
    }
    tracing::info!(account, task = task_id, url = %task.path, "watch run: fetching");
    let scratch = Scratch::create(settings, &format!("watch-{task_id}")).map_err(|e| {
        tracing::error!(error = %e, "cannot create the watch's scratch directory");
        ServiceError::unavailable("ingest", "no local scratch space for fetching")
    })?;
    let file = scratch.path().join("content");
    let target = target_of(&task)?;
    let target_there = storage.stat(target.store_path())?.is_some();
    // Ask conditionally only when the content we compare with is the one stored.
    let known = match (&task.content_hash, target_there) {
        (Some(_), true) => Validators {
            etag: task.etag.clone(),
            last_modified: task.last_modified.clone(),
        },
        _ => Validators::default(),
    };
    let fetched = fetch::fetch_if_changed(&task.path, &file, settings, &known);
    let (outcome, version) = match fetched {
        Err(e) => (RunOutcome::Failed(e.message), None),
        Ok(Fetched::NotModified) => (RunOutcome::Unchanged, None),
        Ok(Fetched::Body { name, validators }) => {
            let hash = file_sha256(&file).map_err(ServiceError::internal)?;
            if target_there && task.content_hash.as_deref() == Some(hash.as_str()) {
                (RunOutcome::Unchanged, Some((validators, hash)))
            } else if !guard.held() {
                // The lease lapsed while fetching: another instance may run it now.
                return Ok(RunOutcome::Busy);
            } else {
                let req = request(&task, target, name, file.clone());
                match ingest(req) {
                    Ok(Some(result)) => {
                        let id = result["task_id"].as_str().unwrap_or_default().to_string();
                        (RunOutcome::Reingested(id), Some((validators, hash)))
                    }
                    Ok(None) => return Ok(RunOutcome::Deferred),
                    Err(e) => (RunOutcome::Failed(e.message), None),
                }
            }
        }
    };
    record(storage, account, task_id, &outcome, version, floor_minutes)?;
    drop(guard);
    Ok(outcome)
}

fn target_of(task: &Watch) -> ServiceResult<VikingUri> {
    let who = crate::identity::Identity {
        role: crate::identity::Role::Root,
        account: task.account_id.clone(),
        user: task.user_id.clone(),
    };
    crate::storage::uri::parse(&task.to_uri, &who)
}

/// The ingestion a changed watch runs: its options as stored, the fetched file as source,
/// replacing its target.
fn request(
    task: &Watch,
    target: VikingUri,
    name: String,
    file: std::path::PathBuf,
) -> IngestRequest {
    let kw = &task.processor_kwargs;
    let text = |k: &str| kw.get(k).and_then(Value::as_str).map(str::to_string);
    IngestRequest {
        account: task.account_id.clone(),
        user: task.user_id.clone(),
        task_id: crate::storage::tasks::new_id(),
        source: Source::Fetched {
            url: task.path.clone(),
            file,
            name,
        },
        target: Target::Replace(target),
        source_name: text("source_name"),
        strict: kw.get("strict").and_then(Value::as_bool).unwrap_or(false),
        ignore_dirs: text("ignore_dirs"),
        include: text("include"),
        exclude: text("exclude"),
        preserve_structure: kw
            .get("preserve_structure")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    }
}

/// Store what the run did and when the watch is due next (from now, as 0.5.2).
fn record(
    storage: &dyn Storage,
    account: &str,
    task_id: &str,
    outcome: &RunOutcome,
    version: Option<(Validators, String)>,
    floor_minutes: f64,
) -> ServiceResult<()> {
    let now = crate::time::epoch_secs_now();
    watches::modify(storage, account, |tasks| {
        let Some(task) = tasks.iter_mut().find(|t| t.task_id == task_id) else {
            return Ok(None);
        };
        task.last_execution_time = Some(now);
        task.runs += 1;
        let (status, error, last_task) = match outcome {
            RunOutcome::Unchanged => ("unchanged", None, None),
            RunOutcome::Reingested(id) => ("completed", None, Some(id.clone())),
            RunOutcome::Failed(m) => ("failed", Some(m.clone()), None),
            _ => return Ok(None),
        };
        task.last_status = Some(status.into());
        task.last_error = error;
        if last_task.is_some() {
            task.last_task_id = last_task;
            task.ingestions += 1;
        }
        if let Some((validators, hash)) = &version {
            task.etag = validators.etag.clone();
            task.last_modified = validators.last_modified.clone();
            task.content_hash = Some(hash.clone());
        }
        task.schedule_from(now, floor_minutes);
        Ok(Some(()))
    })?;
    Ok(())
}
