//! Routes of the sessions API (spec §9, SE1–SE9). Handlers validate input (no I/O) and hand
//! one job to a pool: reads and message writes to the storage pool, commits to the commit pool
//! (full → 503 + Retry-After at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::decode::{opt_object, opt_string};
use crate::error::ServiceError;
use crate::jobs::sessions::{
    AddMessages, CommitSession, CreateSession, DeleteSession, GetArchive, GetContext, GetSession,
    ListSessions, UpdateSessionConfig,
};
use crate::jobs::BlockingJob;
use crate::storage::sessions::commit::{self, CommitSessionBody};
use crate::storage::sessions::config::ConfigUpdate;
use crate::storage::sessions::message::{MessageBatchBody, MessageInput};
use crate::storage::sessions::ops::CreateOptions;
use crate::storage::sessions::policy::{
    self, AutoCommitInput, ExtractionConfigInput, MemoryPolicyInput,
};
use crate::storage::sessions::{id, is_busy, SessionRef, LOCK_TIMEOUT};

use super::auth::{Caller, SessionAccess};
use super::envelope::{encoded_ok, ApiOk, ApiResult};
use super::extract::{ApiJson, ApiQuery, OptionalJson};
use super::routes::{at, Routes};
use super::AppState;

const BASE: &str = "/api/v1/sessions";

pub fn configure(routes: &mut Routes) {
    routes
        .add(at(BASE).post(create).get(list))
        .add(at(format!("{BASE}/{{sid}}")).get(get).delete(delete))
        .add(at(format!("{BASE}/{{sid}}/messages")).post(add_message))
        .add(at(format!("{BASE}/{{sid}}/messages/batch")).post(add_batch))
        .add(at(format!("{BASE}/{{sid}}/commit")).post(commit_session))
        .add(at(format!("{BASE}/{{sid}}/archives/{{archive_id}}")).get(get_archive))
        .add(at(format!("{BASE}/{{sid}}/context")).get(get_context))
        .add(at(format!("{BASE}/{{sid}}/config")).patch(update_config))
        .add(at(format!("{BASE}/{{sid}}/tool-results")).get(tool_results))
        .add(at(format!("{BASE}/{{sid}}/tool-results/{{tool_result_id}}")).get(tool_results))
        .add(
            at(format!(
                "{BASE}/{{sid}}/tool-results/{{tool_result_id}}/search"
            ))
            .get(tool_results),
        );
}

/// `PATCH /sessions/{id}/config` body (0.5.2 `UpdateSessionConfigRequest`: unknown keys
/// refused). Absent fields leave a setting as it is.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateConfigBody {
    /// Event tags; an empty list (or no `events`) clears them.
    #[serde(default, deserialize_with = "opt_object")]
    memory_extraction_config: Option<ExtractionConfigInput>,
    /// `null` switches automatic commits off.
    #[serde(default, deserialize_with = "present_object")]
    #[schema(value_type = Option<AutoCommitInput>)]
    auto_commit_policy: Option<Option<AutoCommitInput>>,
    /// Accepted (0.5.2's telemetry switch); Longship answers without telemetry.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    telemetry: Value,
}

/// A field whose presence matters: absent → `None`, `null` → `Some(None)`.
fn present_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    opt_object(d).map(Some)
}

/// `PATCH /sessions/{id}/config` (0.5.2): only the event tags and `auto_commit_policy` change.
async fn update_config(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    OptionalJson(body): OptionalJson<UpdateConfigBody>,
) -> ApiResult {
    let session = session_of(&caller, &path)?;
    let job = UpdateSessionConfig {
        session,
        update: ConfigUpdate {
            event_tags: body.memory_extraction_config.map(|c| c.event_tags()),
            auto_commit_policy: body
                .auto_commit_policy
                .map(|p| policy::auto_commit(p.as_ref())),
        },
    };
    Ok(ApiOk::new(run_session_job(&state, job).await?))
}

/// The tool-results routes read tool outputs that 0.5.2 moves out of messages; Longship keeps
/// tool outputs inside the messages, so there is nothing to list or read here.
async fn tool_results(_caller: Caller<SessionAccess>) -> ApiResult {
    Err(ServiceError::unimplemented(
        "session tool-results are not available: Longship keeps tool outputs inline in the \
         session messages (tool-output externalisation is not implemented)",
    ))
}

/// Run a session job on the storage pool. A job that finds the session locked (a commit or
/// another write holds it) gives its thread back at once; the wait happens here, without a
/// thread, until the lock frees or the session lock timeout passes.
async fn run_session_job<J>(state: &AppState, job: J) -> Result<Value, ServiceError>
where
    J: BlockingJob<Output = Result<Value, ServiceError>> + Clone,
{
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match state.pools.storage().run(job.clone()).await? {
            Err(e) if is_busy(&e) && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The session addressed by the (percent-decoded) `{sid}` segment, validated (spec §13.8).
fn session_of(caller: &Caller<SessionAccess>, sid: &str) -> Result<SessionRef, ServiceError> {
    id::validate(sid)?;
    Ok(SessionRef::new(caller.account(), caller.user(), sid))
}

/// SE1 body (0.5.2 `CreateSessionRequest`: unknown keys ignored).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub(super) struct CreateSessionBody {
    /// Generated when absent or empty.
    #[serde(default, deserialize_with = "opt_string")]
    session_id: Option<String>,
    #[serde(default, deserialize_with = "opt_object")]
    memory_policy: Option<MemoryPolicyInput>,
    /// `null` or absent: no automatic commits.
    #[serde(default, deserialize_with = "opt_object")]
    auto_commit_policy: Option<AutoCommitInput>,
    #[serde(default, deserialize_with = "opt_object")]
    memory_extraction_config: Option<ExtractionConfigInput>,
}

/// SE1.
async fn create(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    OptionalJson(body): OptionalJson<CreateSessionBody>,
) -> ApiResult {
    let sid = match body.session_id {
        Some(s) if !s.is_empty() => s,
        _ => id::generate(),
    };
    let session = session_of(&caller, &sid)?;
    let options = CreateOptions {
        memory_policy: policy::memory(
            body.memory_policy.as_ref(),
            &crate::memory::types::known_names(),
        )?,
        auto_commit_policy: policy::auto_commit(body.auto_commit_policy.as_ref()),
        event_tags: body.memory_extraction_config.map(|c| c.event_tags()),
    };
    let out = run_session_job(&state, CreateSession { session, options }).await?;
    Ok(ApiOk::new(out))
}

/// SE2.
async fn list(state: web::Data<AppState>, caller: Caller<SessionAccess>) -> ApiResult {
    let job = ListSessions {
        account: caller.account().to_string(),
        user: caller.user().to_string(),
    };
    Ok(ApiOk::new(state.pools.storage().run(job).await??))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct GetQuery {
    #[serde(default, deserialize_with = "super::extract::flexible_bool")]
    auto_create: bool,
}

/// SE3.
async fn get(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> ApiResult {
    let session = session_of(&caller, &path)?;
    let job = GetSession {
        session,
        auto_create: q.auto_create,
    };
    Ok(ApiOk::new(run_session_job(&state, job).await?))
}

/// SE4.
async fn delete(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
) -> ApiResult {
    let session = session_of(&caller, &path)?;
    let job = DeleteSession {
        session,
        recorder: state.search.recorder.clone(),
    };
    Ok(ApiOk::new(run_session_job(&state, job).await?))
}

/// SE5 (a body over 256 KiB is decoded on the storage pool, see `extract::decode_json`).
async fn add_message(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    ApiJson(message): ApiJson<MessageInput>,
) -> ApiResult {
    add_messages(&state, &caller, &path, vec![message], false).await
}

/// SE6.
async fn add_batch(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    ApiJson(body): ApiJson<MessageBatchBody>,
) -> ApiResult {
    add_messages(&state, &caller, &path, body.messages, true).await
}

async fn add_messages(
    state: &AppState,
    caller: &Caller<SessionAccess>,
    sid: &str,
    messages: Vec<MessageInput>,
    batch: bool,
) -> ApiResult {
    let session = session_of(caller, sid)?;
    let job = AddMessages {
        session,
        messages: Arc::new(messages),
        batch,
    };
    Ok(ApiOk::new(run_session_job(state, job).await?))
}

/// SE7: on the commit pool; accepted work finishes even if the client goes away.
async fn commit_session(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    OptionalJson(body): OptionalJson<CommitSessionBody>,
) -> ApiResult {
    let session = session_of(&caller, &path)?;
    let account = session.account.clone();
    let mut options = body.options()?;
    if state.ingest.chat.is_some() {
        options.memory = commit::MemoryMode::Deferred {
            backlog_limit: state
                .account_configs
                .effective(caller.account())
                .memory
                .backlog_limit,
        };
    }
    let job = CommitSession {
        session,
        options,
        recorder: state.search.recorder.clone(),
    };
    let out = state.pools.commit().run(job).await??;
    if out["archived"] == true {
        state.memory.wake_account(&account);
    }
    Ok(ApiOk::new(out))
}

/// SE8.
async fn get_archive(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (sid, archive_id) = path.into_inner();
    let session = session_of(&caller, &sid)?;
    let job = GetArchive {
        session,
        archive_id,
    };
    Ok(encoded_ok(state.pools.storage().run(job).await??))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ContextQuery {
    token_budget: Option<i64>,
}

/// SE9.
async fn get_context(
    state: web::Data<AppState>,
    caller: Caller<SessionAccess>,
    path: web::Path<String>,
    ApiQuery(q): ApiQuery<ContextQuery>,
) -> Result<HttpResponse, ServiceError> {
    let session = session_of(&caller, &path)?;
    let budget = q.token_budget.unwrap_or(128_000);
    if budget < 0 {
        return Err(ServiceError::invalid_argument(
            "token_budget must be greater than or equal to 0",
        )
        .with_details(serde_json::json!({"field": "token_budget", "value": budget})));
    }
    let job = GetContext {
        session,
        token_budget: budget as u64,
    };
    Ok(encoded_ok(state.pools.storage().run(job).await??))
}
