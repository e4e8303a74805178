//! Phase 2 of a commit, run by the background extractor: one backlog entry → memory files,
//! `memory_diff.json`, the task completed — exactly once.
//!
//! Exactly once, whichever instance runs it and across kill -9:
//! * one extraction at a time per user (the named storage lock `memory:<account>/<user>`,
//!   tried without waiting: a busy user is left for the holder), so updates apply in order;
//! * the model's operations become a *plan* stored create-only under
//!   `<account>/_system/memory/plans/<task>.json` before any memory file is touched: each write
//!   names the version it replaces (create-only for a new file) and the full new text, so
//!   applying is a series of compare-and-swap writes that a resumed run repeats harmlessly
//!   (a file already holding the planned text is done; one changed by someone else makes the
//!   plan be recomputed from the stored operations, without asking the model again);
//! * `memory_diff.json` in the archive is the done marker, written after the plan is applied;
//!   the task is completed after it, then the plan and the backlog entry are removed. A run
//!   finding the marker only finishes those last steps.
//!
//! A provider that fails or times out (after the chat client's own retries) puts the entry
//! back with a growing delay; nothing is written and nothing is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::ingest::chat::ChatClient;
use crate::search::changes::{ChangeKind, Recorder};
use crate::search::index::SearchIndex;
use crate::search::tokenizer;
use crate::storage::sessions::archive::{self, State};
use crate::storage::sessions::backlog::{self, Entry};
use crate::storage::sessions::config::LlmUsage;
use crate::storage::sessions::meta::SessionMeta;
use crate::storage::sessions::tokens;
use crate::storage::tasks::{self, TaskOwner};
use crate::storage::{Storage, StorageError, StorePath, Version};

use super::file::{self, MemoryFile};
use super::model::{self, Candidate, Operation, OutcomeKind};
use super::scope::{self, Owner, Scope, Speaker};
use super::stats::MemoryStats;
use super::types::{self, MemoryType, Mode};
use super::MemorySettings;

/// The name of the done marker in an archive.
pub const MEMORY_DIFF: &str = "memory_diff.json";

/// What one run did with its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The task is completed (or was already); the entry is gone.
    Finished,
    /// Another extraction of the same user holds the lock; try later.
    Busy,
    /// The model was unavailable; the entry waits `delay` before the next try.
    Deferred { delay_secs: u64 },
    /// The entry no longer exists.
    Gone,
}

/// What the extractor needs besides storage.
pub struct Extractor<'a> {
    pub storage: &'a dyn Storage,
    pub chat: Option<&'a ChatClient>,
    pub index: Option<&'a SearchIndex>,
    pub recorder: Option<&'a Recorder>,
    pub stats: &'a MemoryStats,
    pub settings: &'a MemorySettings,
}

/// One planned file change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PlannedWrite {
    /// Path inside the account.
    rel: String,
    uri: String,
    memory_type: String,
    /// `None` = the file must not exist yet.
    expected: Option<String>,
    before: Option<String>,
    /// Full new text; `None` = delete.
    after: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Plan {
    operations: Vec<Operation>,
    /// Calls made, by kind (kept so a resumed run reports them).
    calls: Vec<String>,
    last_error: Option<String>,
    tokens: u64,
    /// The prompt and completion parts of `tokens` (as the provider reported them).
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    writes: Vec<PlannedWrite>,
    skipped: Vec<Value>,
    /// Operations that could not become a file (no usable name), from the last resolution.
    #[serde(default)]
    unresolved: Vec<Value>,
    /// Archive message dates (YYYY-MM-DD) by index, for event paths.
    dates: Vec<String>,
    /// Who wrote each archived message (whose memory an operation is).
    #[serde(default)]
    speakers: Vec<Speaker>,
    /// Whose memories this extraction may write.
    #[serde(default)]
    scope: Scope,
}

fn plan_path(account: &str, task_id: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("memory")?
        .join("plans")?
        .join(&format!("{task_id}.json"))?)
}

fn user_lock_name(e: &Entry) -> String {
    format!("memory:{}/{}", e.account, e.user)
}

/// An owner's memory directory inside the account (`user/<user>[/peers/<peer>]/memories`).
fn memories_rel(user: &str, owner: &Owner) -> String {
    format!("{}/memories", scope::owner_root(user, owner))
}

fn account_path(account: &str, rel: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root().join(account)?.join_path(rel)?)
}

fn read_opt(storage: &dyn Storage, p: &StorePath) -> ServiceResult<Option<(String, Version)>> {
    match storage.read_versioned(p) {
        Ok((d, v)) => Ok(Some((String::from_utf8_lossy(&d).into_owned(), v))),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Extractor<'_> {
    /// Run the extraction of one backlog entry.
    pub fn run(&self, account: &str, task_id: &str) -> ServiceResult<RunOutcome> {
        let Some((entry, _)) = backlog::load(self.storage, account, task_id)? else {
            return Ok(RunOutcome::Gone);
        };
        let _lock = match self.storage.lock(&user_lock_name(&entry), Duration::ZERO) {
            Ok(l) => l,
            Err(StorageError::Busy(_)) => return Ok(RunOutcome::Busy),
            Err(e) => return Err(e.into()),
        };
        // Re-read under the lock: another instance may have finished it meanwhile.
        let Some((entry, version)) = backlog::load(self.storage, account, task_id)? else {
            return Ok(RunOutcome::Gone);
        };
        let s = entry.session();
        let owner = TaskOwner::user(&entry.account, &entry.user);
        let dir = s.archive(&entry.archive)?;
        if SessionMeta::load(self.storage, &s)?.is_none() {
            // The session (or its user) was deleted: nothing left to extract from.
            let _ = tasks::update(self.storage, &owner, &entry.task_id, |t| {
                if !t.status.is_terminal() {
                    t.status = tasks::TaskStatus::Failed;
                    t.error =
                        Some("the session was deleted before its memories were extracted".into());
                }
            });
            self.finish(&entry, None)?;
            return Ok(RunOutcome::Finished);
        }
        let archive_uri = s.archive_uri(&entry.archive);
        match archive::state(self.storage, &dir)? {
            State::Done(_) => {}
            State::Failed(_) => {
                // The commit was rolled back; its task already failed.
                self.finish(&entry, None)?;
                return Ok(RunOutcome::Finished);
            }
            State::Pending => {
                // The commit is still writing (or waits for repair); come back shortly.
                backlog::reschedule(self.storage, &entry, &version, 2.0, "archive not ready")?;
                return Ok(RunOutcome::Deferred { delay_secs: 2 });
            }
        }
        if let Some(diff) = archive::read_json(self.storage, &dir.join(MEMORY_DIFF)?)? {
            // Done before a crash: only the bookkeeping is left.
            let effective = effective_type_names(&session_policy(self.storage, &entry)?);
            let result = task_result(&entry, &archive_uri, &diff, &effective);
            self.complete_task(&owner, &entry, result)?;
            self.finish(&entry, None)?;
            return Ok(RunOutcome::Finished);
        }
        let Some(chat) = self.chat else {
            let diff = diff_doc(
                &archive_uri,
                &Plan::default(),
                &[],
                outcome_of(&Plan::default(), true),
            );
            return self.conclude(&entry, &owner, &dir, &archive_uri, diff);
        };
        if let Some(t) = tasks::get(self.storage, &owner, &entry.task_id)? {
            if !t.status.is_terminal() {
                tasks::update(self.storage, &owner, &entry.task_id, |t| {
                    if !t.status.is_terminal() {
                        t.status = tasks::TaskStatus::Running;
                        t.stage = Some("memory_extraction".into());
                    }
                })?;
            }
        }
        // Single-file types with start values (soul, identity) exist before the model may
        // update them, as 0.5.2 lays them out (create-only: a rerun writes nothing).
        self.init_single_files(&entry)?;
        let plan_at = plan_path(&entry.account, &entry.task_id)?;
        let stored_plan = archive::read_json(self.storage, &plan_at)?;
        if stored_plan.is_none() {
            if let Some(delay) = self.wait_for_budget(&entry, &version, &owner)? {
                return Ok(RunOutcome::Deferred { delay_secs: delay });
            }
        }
        let mut plan = match stored_plan {
            Some(v) => serde_json::from_value::<Plan>(v).map_err(ServiceError::internal)?,
            None => match self.ask_model(&entry, chat)? {
                Ok(p) => {
                    let data = serde_json::to_vec(&p).map_err(ServiceError::internal)?;
                    match self.storage.write_if(&plan_at, &data, None) {
                        Ok(_) => {
                            // Charged once, by the run whose plan was stored.
                            if let Err(e) = super::budget::charge(
                                self.storage,
                                &entry.account,
                                &super::budget::today(),
                                p.tokens,
                            ) {
                                tracing::warn!(account = %entry.account, error = %e.message, "memory token usage not charged");
                            }
                            p
                        }
                        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
                            let v =
                                archive::read_json(self.storage, &plan_at)?.unwrap_or(Value::Null);
                            serde_json::from_value(v).map_err(ServiceError::internal)?
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(failure) => {
                    let delay = backoff(entry.attempts, self.settings.retry_max_secs);
                    tracing::warn!(account = %entry.account, task = %entry.task_id, error = %failure, delay, "memory extraction waits for the model");
                    backlog::reschedule(self.storage, &entry, &version, delay as f64, &failure)?;
                    let _ = tasks::update(self.storage, &owner, &entry.task_id, |t| {
                        if !t.status.is_terminal() {
                            t.stage = Some(format!(
                                "memory_extraction: waiting for the model ({failure})"
                            ));
                        }
                    });
                    self.stats
                        .deferred
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(RunOutcome::Deferred { delay_secs: delay });
                }
            },
        };
        // Apply; a file changed by someone else since planning → plan again from the stored
        // operations (bounded), never overwrite it.
        let mut applied = None;
        for round in 0..4 {
            if round > 0 {
                self.resolve(&entry, &mut plan)?;
            }
            if self.apply(&entry, &plan)? {
                applied = Some(plan.writes.clone());
                break;
            }
        }
        let Some(writes) = applied else {
            return Err(ServiceError::conflict(
                "memory files kept changing during extraction; retrying later",
            )
            .detail("retryable", true));
        };
        if !writes.is_empty() {
            if let Some(r) = self.recorder {
                // Each file, so the directory summaries of their parents are refreshed too
                // (the overview refresher marks the parents of recorded paths).
                let rels: Vec<&str> = writes.iter().map(|w| w.rel.as_str()).collect();
                r.record_paths(self.storage, &entry.account, &rels, ChangeKind::Write);
            }
            self.stats
                .written
                .fetch_add(writes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let outcome = outcome_of(&plan, false);
        let diff = diff_doc(&archive_uri, &plan, &writes, outcome);
        self.conclude(&entry, &owner, &dir, &archive_uri, diff)
    }

    /// `Some(delay)` when the account's daily token budget is spent: the entry is put back
    /// until the next UTC day, the task says why, nothing is lost.
    fn wait_for_budget(
        &self,
        entry: &Entry,
        version: &Version,
        owner: &TaskOwner,
    ) -> ServiceResult<Option<u64>> {
        let budget = self.settings.daily_token_budget;
        let Some(used) = super::budget::exhausted(self.storage, &entry.account, budget)? else {
            return Ok(None);
        };
        let delay = super::budget::secs_to_next_day();
        let why = format!(
            "daily token budget spent ({used} of {budget} tokens today); resumes after 00:00 UTC"
        );
        tracing::info!(account = %entry.account, task = %entry.task_id, used, budget, delay, "memory extraction waits for the daily token budget");
        backlog::defer_for_budget(self.storage, entry, version, delay as f64, &why)?;
        let _ = tasks::update(self.storage, owner, &entry.task_id, |t| {
            if !t.status.is_terminal() {
                t.stage = Some(format!("memory_extraction: waiting ({why})"));
            }
        });
        self.stats
            .budget_deferred
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(delay))
    }

    /// Write the done marker, complete the task, drop the plan and the entry.
    fn conclude(
        &self,
        entry: &Entry,
        owner: &TaskOwner,
        dir: &StorePath,
        archive_uri: &str,
        mut diff: Value,
    ) -> ServiceResult<RunOutcome> {
        if entry.budget_waits > 0 {
            // How often it waited for the account's daily token budget before it ran.
            diff["extraction_outcome"]["budget_waits"] = json!(entry.budget_waits);
        }
        let data = serde_json::to_vec_pretty(&diff).map_err(ServiceError::internal)?;
        match self.storage.write_if(&dir.join(MEMORY_DIFF)?, &data, None) {
            Ok(_) | Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let effective = effective_type_names(&session_policy(self.storage, entry)?);
        let result = task_result(entry, archive_uri, &diff, &effective);
        let counts: BTreeMap<String, u64> = result["memories_extracted"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| *k != "total")
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect();
        // Counted before the task completes, so a client seeing it completed sees the counts;
        // the count remembers the task, so a run resumed after a crash here adds nothing.
        let pending = tasks::get(self.storage, owner, &entry.task_id)?
            .is_some_and(|t| !t.status.is_terminal());
        if pending {
            crate::storage::sessions::config::add_memories_extracted(
                self.storage,
                &entry.session(),
                &entry.task_id,
                &counts,
                &llm_usage(&diff),
            )?;
        }
        self.complete_task(owner, entry, result)?;
        self.finish(entry, Some(()))?;
        self.stats
            .completed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RunOutcome::Finished)
    }

    /// Complete the task; true when this call completed it.
    fn complete_task(
        &self,
        owner: &TaskOwner,
        entry: &Entry,
        result: Value,
    ) -> ServiceResult<bool> {
        match tasks::get(self.storage, owner, &entry.task_id)? {
            Some(t) if t.status.is_terminal() => Ok(false),
            Some(_) => tasks::complete(self.storage, owner, &entry.task_id, result).map(|_| true),
            None => Ok(false),
        }
    }

    fn finish(&self, entry: &Entry, _done: Option<()>) -> ServiceResult<()> {
        crate::storage::remove_if_exists(
            self.storage,
            &plan_path(&entry.account, &entry.task_id)?,
            false,
        )?;
        backlog::remove(self.storage, &entry.account, &entry.task_id)
    }

    /// Ask the model about every piece of the archive. `Err` = the provider was unavailable.
    fn ask_model(&self, entry: &Entry, chat: &ChatClient) -> ServiceResult<Result<Plan, String>> {
        let s = entry.session();
        let dir = s.archive(&entry.archive)?;
        let text =
            archive::read_text(self.storage, &dir.join(archive::MESSAGES)?)?.unwrap_or_default();
        let messages: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        let enabled = enabled_types(self.storage, entry)?;
        let speakers = scope::speakers(&messages);
        let scope = Scope::new(&session_policy(self.storage, entry)?, &speakers);
        let mut plan = Plan {
            dates: messages
                .iter()
                .map(|m| {
                    m["created_at"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(10)
                        .collect()
                })
                .collect(),
            speakers,
            scope,
            ..Plan::default()
        };
        if enabled.is_empty() || messages.is_empty() || plan.scope.is_empty() {
            return Ok(Ok(plan));
        }
        let session = match chat.session() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let today = crate::time::millis_z_now()
            .chars()
            .take(10)
            .collect::<String>();
        for piece in pieces(&messages, self.settings.max_input_tokens) {
            let candidates = self.candidates(entry, &piece.text, &enabled, &plan.scope)?;
            let asked = model::ask(
                &session,
                &enabled,
                &plan.scope.peers,
                &piece.text,
                &candidates,
                &today,
                self.settings.repair_attempts,
            );
            for k in &asked.calls {
                self.stats.count(*k);
                plan.calls.push(k.as_str().to_string());
            }
            self.stats.add_tokens(&entry.account, asked.tokens);
            crate::telemetry::usage::record(crate::telemetry::usage::Usage {
                account: entry.account.clone(),
                user: Some(entry.user.clone()),
                source: "vlm",
                model: session.model().to_string(),
                input_tokens: asked.input_tokens,
                output_tokens: asked.output_tokens,
                at: crate::time::iso_micros_now(),
            });
            plan.tokens += asked.tokens;
            plan.prompt_tokens += asked.input_tokens;
            plan.completion_tokens += asked.output_tokens;
            if let Some(f) = asked.unavailable {
                return Ok(Err(f.message().to_string()));
            }
            if asked.last_error.is_some() {
                plan.last_error = asked.last_error.clone();
            }
            if asked.operations.is_empty()
                && asked.last_error.is_some()
                && !asked
                    .calls
                    .iter()
                    .any(|k| matches!(k, OutcomeKind::Ok | OutcomeKind::Empty))
            {
                plan.skipped.push(json!({
                    "reason": asked.last_error, "messages": piece.range,
                }));
            }
            plan.operations.extend(asked.operations);
        }
        self.resolve(entry, &mut plan)?;
        Ok(Ok(plan))
    }

    /// Memories related to a piece: the user's deterministic files (profile) and the best
    /// keyword matches in the user's memory directories, read from storage (never the index's
    /// copy).
    fn candidates(
        &self,
        entry: &Entry,
        text: &str,
        enabled: &[MemoryType],
        scope: &Scope,
    ) -> ServiceResult<Vec<Candidate>> {
        let mut rels: Vec<String> = Vec::new();
        let owners = scope.owners();
        for owner in &owners {
            // Single-file memories (profile, soul, identity) are always candidates.
            for t in enabled.iter().filter(|t| t.single_file()) {
                rels.push(format!(
                    "{}/{}/{}",
                    scope::owner_root(&entry.user, owner),
                    t.directory,
                    t.filename_template
                ));
            }
        }
        if let Some(index) = self.index {
            let terms = tokenizer::query_terms(text, 64);
            let scopes: Vec<String> = owners
                .iter()
                .map(|o| format!("{}/{}", entry.account, memories_rel(&entry.user, o)))
                .collect();
            match index.keyword_search(&entry.account, &terms, &scopes, self.settings.candidates) {
                Ok(hits) => {
                    for h in hits {
                        if let Some(rel) = h.path.strip_prefix(&format!("{}/", entry.account)) {
                            if !rels.iter().any(|r| r == rel) {
                                rels.push(rel.to_string());
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "memory candidates: keyword search failed"),
            }
        }
        let mut out = Vec::new();
        for rel in rels {
            let Some(t) = type_of(enabled, &entry.user, &rel) else {
                continue;
            };
            if let Some((text, _)) = read_opt(self.storage, &account_path(&entry.account, &rel)?)? {
                let f = file::parse(&text);
                out.push(Candidate {
                    uri: format!("viking://{rel}"),
                    memory_type: t.name.to_string(),
                    body: f.body.chars().take(2000).collect(),
                });
            }
        }
        Ok(out)
    }

    /// Turn the operations into planned writes against what storage holds now.
    fn resolve(&self, entry: &Entry, plan: &mut Plan) -> ServiceResult<()> {
        let all = super::templates::effective_types(self.storage, &entry.account)?;
        // Path → (stored version, stored text, planned text) as operations accumulate.
        let mut state: BTreeMap<String, Slot> = BTreeMap::new();
        let mut skipped = Vec::new();
        let owners = plan.scope.owners();
        for op in plan.operations.clone() {
            let Some(t) = all.iter().find(|t| t.name == op.memory_type) else {
                continue;
            };
            if op.op == "noop" {
                continue;
            }
            let mut skip = |why: String| {
                skipped.push(json!({"memory_type": t.name, "op": op.op, "reason": why}));
            };
            // An existing memory named by its URI: only in a space this extraction may write.
            let by_uri = op
                .uri
                .as_deref()
                .and_then(|u| u.strip_prefix("viking://"))
                .filter(|rel| !rel.contains(".."))
                .and_then(|rel| {
                    let (owner, below) = scope::split_owner(&entry.user, rel)?;
                    (owners.contains(&owner) && below.starts_with("memories/"))
                        .then(|| (rel.to_string(), owner))
                });
            let targets: Vec<(String, Owner)> =
                if op.op == "delete" || (op.op == "update" && by_uri.is_some()) {
                    match by_uri {
                        Some(r) => vec![r],
                        None => continue,
                    }
                } else {
                    let owners = match plan.scope.targets(t, &op, &plan.speakers) {
                        Ok(o) => o,
                        Err(why) => {
                            skip(why);
                            continue;
                        }
                    };
                    let extra = event_date(&op.fields, &plan.dates);
                    // Identity fields name the file: a block edit there has no name yet.
                    let named = match types::relative_path(t, &op.fields, &extra) {
                        Ok(p) => p,
                        Err(why) => {
                            skip(why);
                            continue;
                        }
                    };
                    owners
                        .into_iter()
                        .map(|o| {
                            let root = scope::owner_root(&entry.user, &o);
                            (format!("{root}/{}/{named}", t.directory), o)
                        })
                        .collect()
                };
            for (rel, owner) in targets {
                if let Err(why) = self.plan_one(entry, t, &op, &rel, &owner, &mut state)? {
                    skip(why);
                }
            }
        }
        plan.writes = state
            .into_iter()
            .filter(|(_, (_, before, after, _))| before != after)
            .map(|(rel, (v, before, after, ty))| PlannedWrite {
                uri: format!("viking://{rel}"),
                rel,
                memory_type: ty,
                expected: v.map(|v| v.0),
                before,
                after,
            })
            .collect();
        plan.unresolved = skipped;
        Ok(())
    }

    /// Apply one operation to the planned text of `rel`. `Ok(Err(why))` = skipped.
    fn plan_one(
        &self,
        entry: &Entry,
        t: &MemoryType,
        op: &Operation,
        rel: &str,
        owner: &Owner,
        state: &mut BTreeMap<String, Slot>,
    ) -> ServiceResult<Result<(), String>> {
        if !state.contains_key(rel) {
            let stored = read_opt(self.storage, &account_path(&entry.account, rel)?)?;
            let (v, text) = match stored {
                Some((t, v)) => (Some(v), Some(t)),
                None => (None, None),
            };
            state.insert(rel.to_string(), (v, text.clone(), text, t.name.to_string()));
        }
        let Some(slot) = state.get_mut(rel) else {
            return Ok(Ok(()));
        };
        if op.op == "delete" {
            slot.2 = None;
            return Ok(Ok(()));
        }
        let current = slot.2.as_deref().map(file::parse);
        let next = match current {
            Some(cur) => {
                if t.mode == Mode::AddOnly {
                    return Ok(Ok(()));
                }
                let mut old_fields = cur.fields.clone();
                if t.content_template.is_none() {
                    old_fields.insert("content".into(), Value::String(cur.body.clone()));
                }
                let mut fields = match file::merge_fields(t, &old_fields, &op.fields) {
                    Ok(f) => f,
                    Err(why) => return Ok(Err(why)),
                };
                let body = types::body(t, &fields).map_err(ServiceError::internal)?;
                if t.content_template.is_none() {
                    fields.remove("content");
                }
                if body == cur.body && strip_meta(&fields) == strip_meta(&cur.fields) {
                    return Ok(Ok(())); // nothing new: the conversation repeated the memory
                }
                let version = cur
                    .fields
                    .get("version")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    + 1;
                fields.insert("version".into(), json!(version));
                fields.insert("memory_type".into(), json!(t.name));
                MemoryFile { body, fields }
            }
            None => {
                let mut fields = match file::merge_fields(t, &t.init_fields(), &op.fields) {
                    Ok(f) => f,
                    Err(why) => return Ok(Err(why)),
                };
                let body = types::body(t, &fields).map_err(ServiceError::internal)?;
                if body.trim().is_empty() || self.echoes_existing(entry, owner, &body)? {
                    return Ok(Ok(()));
                }
                if t.content_template.is_none() {
                    fields.remove("content");
                }
                if let Some(p) = owner {
                    fields.insert("peer_id".into(), json!(p));
                }
                fields.insert("version".into(), json!(1));
                fields.insert("memory_type".into(), json!(t.name));
                MemoryFile { body, fields }
            }
        };
        slot.2 = Some(file::render(&next));
        Ok(Ok(()))
    }

    /// Write the start file of each enabled single-file type with start values (soul,
    /// identity) in the user's space when it does not exist yet; recorded and tagged like
    /// extracted memories, but not counted as extracted.
    fn init_single_files(&self, entry: &Entry) -> ServiceResult<()> {
        let policy = session_policy(self.storage, entry)?;
        if policy["self"]["enabled"].as_bool() == Some(false) {
            return Ok(());
        }
        let mut written = Vec::new();
        for t in enabled_types(self.storage, entry)? {
            let fields = t.init_fields();
            if !t.single_file() || fields.is_empty() {
                continue;
            }
            let rel = format!(
                "{}/{}/{}",
                scope::owner_root(&entry.user, &None),
                t.directory,
                t.filename_template
            );
            let p = account_path(&entry.account, &rel)?;
            if self.storage.stat(&p)?.is_some() {
                continue;
            }
            let body = types::body(&t, &fields).map_err(ServiceError::internal)?;
            let mut fields = fields;
            fields.insert("version".into(), json!(1));
            fields.insert("memory_type".into(), json!(t.name));
            let text = file::render(&MemoryFile { body, fields });
            match self.storage.write_if(&p, text.as_bytes(), None) {
                Ok(_) => {}
                Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            crate::storage::tags::set_server_tags(
                self.storage,
                &p,
                &[format!("memory_type={}", t.name)],
            )?;
            written.push(rel);
        }
        if let (Some(r), false) = (self.recorder, written.is_empty()) {
            let rels: Vec<&str> = written.iter().map(String::as_str).collect();
            r.record_paths(self.storage, &entry.account, &rels, ChangeKind::Write);
        }
        Ok(())
    }

    /// A new memory whose every line some stored memory of the user already holds (found by
    /// keyword search, read from storage) is an echo, not a new memory.
    fn echoes_existing(&self, entry: &Entry, owner: &Owner, body: &str) -> ServiceResult<bool> {
        let Some(index) = self.index else {
            return Ok(false);
        };
        let terms = tokenizer::query_terms(body, 32);
        let scope = format!("{}/{}", entry.account, memories_rel(&entry.user, owner));
        let Ok(hits) = index.keyword_search(&entry.account, &terms, &[scope], 5) else {
            return Ok(false);
        };
        for h in hits {
            let Ok(p) = StorePath::parse(&h.path) else {
                continue;
            };
            if let Some((text, _)) = read_opt(self.storage, &p)? {
                if file::lines_contained(&file::parse(&text).body, body) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Apply the planned writes. `false` = a file changed since planning (plan again).
    fn apply(&self, entry: &Entry, plan: &Plan) -> ServiceResult<bool> {
        for w in &plan.writes {
            let p = account_path(&entry.account, &w.rel)?;
            match &w.after {
                Some(after) => {
                    let expected = w.expected.clone().map(Version);
                    match self
                        .storage
                        .write_if(&p, after.as_bytes(), expected.as_ref())
                    {
                        Ok(_) => {}
                        Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => {
                            // Ours already (a resumed run), or someone else's change.
                            let now = read_opt(self.storage, &p)?.map(|(t, _)| t);
                            if now.as_deref() != Some(after.as_str()) {
                                return Ok(false);
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                    // 0.5.2 tags extracted memories with their type (a reserved key only the
                    // server sets); merged by key, so a resumed run repeats it harmlessly.
                    crate::storage::tags::set_server_tags(
                        self.storage,
                        &p,
                        &[format!("memory_type={}", w.memory_type)],
                    )?;
                }
                None => {
                    let now = read_opt(self.storage, &p)?.map(|(t, _)| t);
                    match now {
                        None => {}
                        Some(t) if Some(&t) == w.before.as_ref() => {
                            crate::storage::remove_if_exists(self.storage, &p, false)?;
                            crate::storage::tags::forget_node(self.storage, &p)?;
                        }
                        Some(_) => return Ok(false),
                    }
                }
            }
        }
        Ok(true)
    }
}

/// One file while operations accumulate: stored version, stored text, planned text, type.
type Slot = (Option<Version>, Option<String>, Option<String>, String);

fn strip_meta(fields: &Map<String, Value>) -> Map<String, Value> {
    let mut f = fields.clone();
    f.remove("version");
    f.remove("memory_type");
    f
}

/// The type whose directory holds `rel` (the deepest match).
fn type_of<'t>(types: &'t [MemoryType], user: &str, rel: &str) -> Option<&'t MemoryType> {
    let name = rel.rsplit('/').next().unwrap_or("");
    if name.starts_with('.') || !name.ends_with(".md") {
        return None;
    }
    let (_, below) = scope::split_owner(user, rel)?;
    types
        .iter()
        .filter(|t| {
            let dir = format!("{}/", t.directory);
            below.starts_with(&dir)
                && (!t.single_file() || below == format!("{dir}{}", t.filename_template))
        })
        .max_by_key(|t| t.directory.len())
}

/// `year`/`month`/`day` of an event: the date of the first message its `ranges` names, else
/// the first message's.
fn event_date(fields: &Map<String, Value>, dates: &[String]) -> BTreeMap<String, String> {
    let first = fields
        .get("ranges")
        .and_then(Value::as_str)
        .and_then(|r| r.split([',', '-']).next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let date = dates
        .get(first)
        .or(dates.first())
        .filter(|d| d.len() == 10 && d.is_ascii())
        .cloned()
        .unwrap_or_else(|| crate::time::millis_z_now().chars().take(10).collect());
    let mut out = BTreeMap::new();
    out.insert("year".into(), date[0..4].to_string());
    out.insert("month".into(), date[5..7].to_string());
    out.insert("day".into(), date[8..10].to_string());
    out
}

/// The normalised `memory_policy` the session's extraction follows: its own, else its
/// user's stored one (0.5.2), else `null`.
fn session_policy(storage: &dyn Storage, entry: &Entry) -> ServiceResult<Value> {
    let meta = SessionMeta::load(storage, &entry.session())?;
    let own = meta.map(|m| m.memory_policy).unwrap_or(Value::Null);
    crate::storage::user_config::effective_memory_policy(storage, &entry.account, &entry.user, &own)
}

/// The types this session extracts: its `memory_policy.memory_types` (else every built-in
/// type), with the account's template edits. Whose memories they may be is `scope`'s part.
fn enabled_types(storage: &dyn Storage, entry: &Entry) -> ServiceResult<Vec<MemoryType>> {
    let policy = session_policy(storage, entry)?;
    let all = super::templates::effective_types(storage, &entry.account)?;
    Ok(filter_types(all, &policy))
}

/// 0.5.2's `effective_memory_types` of a policy: the listed types, else every type extracted
/// by default (agent-evolution types never: agent evolution is off).
pub fn effective_type_names(policy: &Value) -> Vec<String> {
    filter_types(types::builtin(), policy)
        .into_iter()
        .map(|t| t.name.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The types (built-in, with the account's template edits) a normalised `memory_policy` allows.
pub fn filter_types(all: Vec<MemoryType>, policy: &Value) -> Vec<MemoryType> {
    let wanted: Option<Vec<&str>> = policy["memory_types"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    all.into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| w.contains(&t.name)))
        .collect()
}

struct Piece {
    text: String,
    range: String,
}

/// The conversation cut into pieces of at most about `max_tokens` (a longer single message is
/// cut to fit).
fn pieces(messages: &[Value], max_tokens: u64) -> Vec<Piece> {
    let budget = max_tokens.max(256);
    let mut out = Vec::new();
    let mut text = String::new();
    let mut used = 0u64;
    let mut start = 0usize;
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("user");
        let mut body = String::new();
        for p in m["parts"].as_array().into_iter().flatten() {
            match p["type"].as_str() {
                Some("text") => body.push_str(p["text"].as_str().unwrap_or("")),
                Some("context") => body.push_str(p["abstract"].as_str().unwrap_or("")),
                Some("tool") => body.push_str(&format!(
                    "[tool {}] {}",
                    p["tool_name"].as_str().unwrap_or(""),
                    p["tool_output"].as_str().unwrap_or("")
                )),
                _ => {}
            }
            body.push(' ');
        }
        let who = match m["peer_id"].as_str().filter(|p| !p.trim().is_empty()) {
            Some(p) if role == "user" => format!("{role} (peer {})", p.trim()),
            _ => role.to_string(),
        };
        let mut line = format!("[{i}] {who}: {}\n", body.trim());
        let mut cost = tokens::estimate_text(&line);
        if cost > budget {
            let keep = (budget as usize * 4).saturating_sub(64);
            line = line.chars().take(keep).collect::<String>() + " …\n";
            cost = tokens::estimate_text(&line);
        }
        if used + cost > budget && !text.is_empty() {
            out.push(Piece {
                text: std::mem::take(&mut text),
                range: format!("{start}-{}", i - 1),
            });
            used = 0;
            start = i;
        }
        text.push_str(&line);
        used += cost;
    }
    if !text.is_empty() {
        out.push(Piece {
            text,
            range: format!("{start}-{}", messages.len() - 1),
        });
    }
    out
}

fn backoff(attempts: u32, max_secs: u64) -> u64 {
    (5u64 << attempts.min(10)).min(max_secs.max(1))
}

/// `extraction_outcome`: kind, reason and every call's outcome counted by kind.
fn outcome_of(plan: &Plan, no_model: bool) -> Value {
    let mut counts = Map::new();
    for k in OutcomeKind::ALL {
        counts.insert(
            k.as_str().into(),
            json!(plan.calls.iter().filter(|c| *c == k.as_str()).count()),
        );
    }
    let written = plan.writes.len();
    let (kind, reason) = if no_model {
        ("skipped".to_string(), archive::NO_MODEL.to_string())
    } else if written > 0 {
        (
            "ok".to_string(),
            format!("{written} memory file(s) written"),
        )
    } else if let (Some(last), false) = (
        plan.calls.last(),
        plan.calls.iter().any(|c| c == "ok" || c == "empty"),
    ) {
        (last.clone(), plan.last_error.clone().unwrap_or_default())
    } else if plan.calls.is_empty() {
        (
            "empty".into(),
            "nothing to extract for this session's memory policy".into(),
        )
    } else if plan.operations.iter().any(|o| o.op != "noop") {
        (
            "empty".into(),
            "everything the model found is already stored".into(),
        )
    } else {
        (
            "empty".into(),
            "the model found nothing worth remembering".into(),
        )
    };
    json!({"kind": kind, "reason": reason, "counts": counts, "tokens": plan.tokens,
        "prompt_tokens": plan.prompt_tokens, "completion_tokens": plan.completion_tokens})
}

/// `memory_diff.json`: 0.5.2's shape plus `extraction_outcome`.
fn diff_doc(archive_uri: &str, plan: &Plan, writes: &[PlannedWrite], outcome: Value) -> Value {
    let (mut adds, mut updates, mut deletes) = (vec![], vec![], vec![]);
    for w in writes {
        let body = |t: &Option<String>| {
            t.as_deref()
                .map(|t| file::parse(t).body)
                .unwrap_or_default()
        };
        match (&w.before, &w.after) {
            (None, Some(_)) => adds.push(json!({"uri": w.uri, "memory_type": w.memory_type, "after": body(&w.after)})),
            (Some(_), Some(_)) => updates.push(json!({"uri": w.uri, "memory_type": w.memory_type, "before": body(&w.before), "after": body(&w.after)})),
            (Some(_), None) => deletes.push(json!({"uri": w.uri, "memory_type": w.memory_type, "deleted_content": body(&w.before)})),
            (None, None) => {}
        }
    }
    let skipped: Vec<Value> = plan
        .skipped
        .iter()
        .chain(&plan.unresolved)
        .cloned()
        .collect();
    json!({
        "archive_uri": archive_uri,
        "trace_id": null,
        "extracted_at": crate::time::iso_micros_now(),
        "operations": {"adds": adds, "updates": updates, "deletes": deletes},
        "skipped_operations": skipped,
        "summary": {
            "total_adds": adds.len(), "total_updates": updates.len(),
            "total_deletes": deletes.len(), "total_skipped": skipped.len(),
        },
        "extraction_outcome": outcome,
    })
}

/// The chat tokens an extraction spent, from its diff's outcome.
fn llm_usage(diff: &Value) -> LlmUsage {
    let n = |k: &str| diff["extraction_outcome"][k].as_u64().unwrap_or(0);
    LlmUsage {
        prompt: n("prompt_tokens"),
        completion: n("completion_tokens"),
        total: n("tokens"),
    }
}

/// The completed task's result from the diff (0.5.2's fields plus `extraction_outcome`).
fn task_result(
    entry: &Entry,
    archive_uri: &str,
    diff: &Value,
    effective_types: &[String],
) -> Value {
    let s = entry.session();
    let mut result = archive::task_result(&s, &entry.archive);
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0;
    for key in ["adds", "updates"] {
        for item in diff["operations"][key].as_array().into_iter().flatten() {
            *per_type
                .entry(
                    item["memory_type"]
                        .as_str()
                        .unwrap_or("unknown")
                        .to_string(),
                )
                .or_default() += 1;
            total += 1;
        }
    }
    let mut extracted: Map<String, Value> =
        per_type.into_iter().map(|(k, v)| (k, json!(v))).collect();
    extracted.insert("total".into(), json!(total));
    result["memories_extracted"] = Value::Object(extracted);
    let skipped = diff["skipped_operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    result["memory_extraction"] = json!({"skipped": skipped.len(), "skipped_operations": skipped});
    result["memory_diff_uri"] = json!(format!("{archive_uri}/{MEMORY_DIFF}"));
    result["effective_memory_types"] = json!(effective_types);
    let usage = llm_usage(diff);
    result["token_usage"]["llm"]["prompt_tokens"] = json!(usage.prompt);
    result["token_usage"]["llm"]["completion_tokens"] = json!(usage.completion);
    result["token_usage"]["llm"]["total_tokens"] = json!(usage.total);
    result["token_usage"]["total"]["total_tokens"] = json!(usage.total);
    result["extraction_outcome"] = diff["extraction_outcome"].clone();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_fit_the_budget() {
        let msgs: Vec<Value> = (0..50)
            .map(|i| json!({"role": "user", "parts": [{"type": "text", "text": format!("message number {i} {}", "x".repeat(200))}]}))
            .collect();
        let p = pieces(&msgs, 300);
        assert!(p.len() > 5);
        for piece in &p {
            assert!(tokens::estimate_text(&piece.text) <= 300);
        }
        let huge =
            vec![json!({"role": "user", "parts": [{"type": "text", "text": "y".repeat(100_000)}]})];
        let p = pieces(&huge, 300);
        assert_eq!(p.len(), 1);
        assert!(tokens::estimate_text(&p[0].text) <= 300);
    }

    #[test]
    fn policy_filters_types() {
        assert_eq!(filter_types(types::builtin(), &Value::Null).len(), 6);
        assert_eq!(
            effective_type_names(&Value::Null),
            [
                "entities",
                "events",
                "identity",
                "preferences",
                "profile",
                "soul"
            ]
        );
        assert_eq!(
            effective_type_names(&json!({"memory_types": ["soul", "cases"]})),
            ["soul"]
        );
        let t = filter_types(types::builtin(), &json!({"memory_types": ["events"]}));
        assert_eq!(t.len(), 1);
        assert_eq!(backoff(0, 300), 5);
        assert_eq!(backoff(20, 300), 300);
    }
}
