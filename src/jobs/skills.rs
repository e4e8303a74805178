//! Skill jobs (docs/API.md, Skills), each one call into `crate::skills`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::search::{record_outcome, RecordWhen};
use super::{BlockingJob, JobContext};
use crate::config::Settings;
use crate::error::ServiceResult;
use crate::identity::Identity;
use crate::ingest::chat::ChatClient;
use crate::ingest::gate::IngestTicket;
use crate::ingest::{active, uploads};
use crate::search::changes::{ChangeKind, Recorder};
use crate::search::embed::Embedder;
use crate::search::index::SearchIndex;
use crate::search::query::IndexState;
use crate::skills::find::{self, SkillQuery};
use crate::skills::store::{self, DetailOpts, InstallRequest, SkillData};
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::uri::VikingUri;

/// Task type of an install (0.5.2's name).
pub const TASK_TYPE: &str = "add_skill";

/// Add or replace one skill on the ingestion pool: a task (`add_skill`) marked active while
/// it works, the package staged and swapped in, recorded for search, its overview rewritten
/// by the chat model when one is configured. A failure fails the task, here only.
pub struct InstallSkill {
    pub req: InstallRequest,
    /// PUT: the skill must exist already.
    pub replace_only: bool,
    /// PUT: who replaces it and the request's `target_uri`: the installed package is located
    /// (own root, then the account's) and its root replaces `req.root`.
    pub update_target: Option<(Identity, Option<String>)>,
    pub settings: Arc<Settings>,
    pub recorder: Arc<Recorder>,
    pub chat: Option<ChatClient>,
    pub ticket: IngestTicket,
}

impl BlockingJob for InstallSkill {
    /// The add result (with `task_id`).
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let _ticket = self.ticket;
        let mut req = self.req;
        if let Some((who, target)) = &self.update_target {
            let expected = req.expected_name.clone().unwrap_or_default();
            let skill = store::locate(ctx.storage, who, &expected, target.as_deref())?;
            crate::storage::uri::authorize(&skill, who, crate::storage::uri::Access::Write)?;
            req.root = skill.parent().ok_or_else(|| {
                crate::error::ServiceError::internal("a skill package has no parent")
            })?;
            if matches!(req.data, SkillData::FromSource) {
                req.data = SkillData::Git(store::recorded_git_source(ctx.storage, &skill)?);
            }
        }
        let req = &req;
        let owner = TaskOwner::user(&req.account, &req.user);
        tasks::create_with_id(ctx.storage, &owner, &req.task_id, TASK_TYPE, None)?;
        let stale_after = Duration::from_secs(self.settings.resources.stale_after_secs);
        let outcome =
            active::touch(ctx.storage, &req.account, &req.user, &req.task_id).and_then(|()| {
                let mut heartbeat = active::Heartbeat::new(
                    ctx.storage,
                    &req.account,
                    &req.user,
                    &req.task_id,
                    stale_after,
                );
                store::install(
                    ctx.storage,
                    req,
                    &self.settings.resources,
                    &self.settings.quota,
                    self.replace_only,
                    &mut || heartbeat.beat(),
                )
            });
        // The packages installed; after a server error part-way (several packages), the root.
        let changed: Vec<_> = match &outcome {
            Ok(installed) => installed
                .iter()
                .map(|i| i.uri.store_path().clone())
                .collect(),
            Err(_) => vec![req.root.store_path().clone()],
        };
        record_outcome(
            &self.recorder,
            ctx,
            &outcome,
            &changed,
            ChangeKind::Ingest,
            RecordWhen::EvenIfPartial,
        );
        let answer = outcome.and_then(|installed| {
            if let SkillData::Upload { id } = &req.data {
                // Consumed, as 0.5.2 deletes a temp upload once used.
                let _ = uploads::remove(ctx.storage, &req.account, id);
            }
            let mut results = Vec::new();
            for one in &installed {
                let mut result = one.to_json();
                if let Some(chat) = &self.chat {
                    let refined = active::keep_alive(ctx.storage, &req.account, &req.user, &req.task_id, stale_after, || {
                        store::refine_overview(ctx.storage, chat, &one.uri)
                    });
                    match refined {
                        Ok(()) => self.recorder.record_store_paths(
                            ctx.storage,
                            &[one.uri.store_path().clone()],
                            ChangeKind::Ingest,
                        ),
                        Err(e) => {
                            tracing::warn!(skill = %one.uri, error = %e, "chat model overview failed");
                            result["warnings"] = json!([format!(
                                "the chat model failed ({e:.200}); the overview is the skill's instructions"
                            )]);
                        }
                    }
                }
                result["task_id"] = req.task_id.clone().into();
                results.push(result);
            }
            let result = match <[Value; 1]>::try_from(results) {
                Ok([one]) => one,
                Err(many) => json!({"installed": many, "total": many.len(), "task_id": req.task_id}),
            };
            tasks::complete(ctx.storage, &owner, &req.task_id, result.clone())?;
            Ok(result)
        });
        if let Err(e) = &answer {
            let _ = tasks::fail(ctx.storage, &owner, &req.task_id, &e.message);
        }
        let _ = active::clear(ctx.storage, &req.account, &req.task_id);
        answer
    }
}

/// `list_only`: the skills an upload holds, nothing stored.
pub struct DescribeSkills {
    pub req: InstallRequest,
    pub settings: Arc<Settings>,
    pub ticket: IngestTicket,
}

impl BlockingJob for DescribeSkills {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let _ticket = self.ticket;
        store::describe(ctx.storage, &self.req, &self.settings.resources)
    }
}

/// `GET /skills`: the skills of some roots.
pub struct ListSkills {
    pub roots: Vec<VikingUri>,
    pub limit: usize,
}

impl BlockingJob for ListSkills {
    type Output = ServiceResult<Vec<Value>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let mut out = Vec::new();
        for root in &self.roots {
            out.extend(store::list_root(ctx.storage, root, self.limit)?);
        }
        Ok(out)
    }
}

/// `GET /skills/{name}`.
pub struct ShowSkill {
    pub who: Identity,
    pub name: String,
    pub target_uri: Option<String>,
    pub opts: DetailOpts,
}

impl BlockingJob for ShowSkill {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let skill = store::locate(
            ctx.storage,
            &self.who,
            &self.name,
            self.target_uri.as_deref(),
        )?;
        store::detail(ctx.storage, &skill, self.opts)
    }
}

/// `DELETE /skills/{name}`.
pub struct RemoveSkill {
    pub who: Identity,
    pub name: String,
    pub target_uri: Option<String>,
    pub recorder: Arc<Recorder>,
}

impl BlockingJob for RemoveSkill {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let skill = store::locate(
            ctx.storage,
            &self.who,
            &self.name,
            self.target_uri.as_deref(),
        )?;
        crate::storage::uri::authorize(&skill, &self.who, crate::storage::uri::Access::Delete)?;
        let out = store::remove(ctx.storage, &skill);
        let changed = [skill.store_path().clone()];
        record_outcome(
            &self.recorder,
            ctx,
            &out,
            &changed,
            ChangeKind::Remove,
            RecordWhen::EvenIfPartial,
        );
        out?;
        let shown = skill.uri();
        Ok(json!({"name": skill.name(), "uri": shown, "root_uri": shown, "privacy_deleted": false}))
    }
}

/// `POST /skills/find`.
pub struct FindSkills {
    pub index: Arc<SearchIndex>,
    pub who: Identity,
    pub query: SkillQuery,
    pub catching_up: bool,
    pub embedder: Option<Arc<Embedder>>,
}

impl BlockingJob for FindSkills {
    type Output = ServiceResult<Vec<Value>>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let state = IndexState {
            catching_up: self.catching_up,
        };
        find::find(
            ctx.storage,
            &self.index,
            &self.who,
            &self.query,
            state,
            self.embedder.as_deref(),
        )
    }
}
