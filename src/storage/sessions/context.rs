//! SE9: the context a client feeds back to its model — the latest archive overview plus live
//! (and still-pending archived) messages, fitted to a token budget.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::actors::pool::{BlockingJob, JobContext};
use crate::error::{ServiceError, ServiceResult};

use super::archive::{self, State};
use super::{fit, live, ops, tokens, SessionRef};

pub struct GetContext {
    pub session: SessionRef,
    pub token_budget: u64,
}

impl BlockingJob for GetContext {
    /// Serialized here, on the pool: a large result never occupies an HTTP worker.
    type Output = ServiceResult<Vec<u8>>;
    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let s = &self.session;
        let storage = ctx.storage;
        let Some(meta) = ops::load_for_read(storage, s)? else {
            return Err(ops::not_found(s));
        };
        // Live first, archives second: a commit running meanwhile writes the archive's copy
        // before it shrinks the live file, so this order never misses a message (duplicates
        // are removed by id below).
        let live_msgs = live::read_live_messages(storage, s, &meta)?;
        let archives = archive::list(storage, s)?;
        let total = archives.len();
        let mut pending: Vec<String> = Vec::new();
        let mut latest_overview: Option<String> = None;
        let mut failed = 0;
        for (_, name) in archives.iter().rev() {
            let dir = s.archive(name)?;
            match archive::state(storage, &dir)? {
                State::Pending => pending.push(name.clone()),
                State::Done(done) => {
                    if !archive::is_reset_boundary(&done) {
                        match archive::overview(storage, &dir)? {
                            Some(o) => latest_overview = Some(o),
                            None if archive::working_memory_off(&done) => {}
                            None => failed = 1,
                        }
                    }
                    break;
                }
                State::Failed(_) => {
                    failed = 1;
                    break;
                }
            }
        }
        let mut messages = Vec::new();
        for name in pending.iter().rev() {
            messages.extend(live::read_messages(
                storage,
                &s.archive(name)?.join(archive::MESSAGES)?,
            )?);
        }
        messages.extend(live_msgs);
        let mut seen = HashSet::new();
        messages.retain(|m| match m.get("id").and_then(Value::as_str) {
            Some(id) => seen.insert(id.to_string()),
            None => true,
        });
        let (messages, active) = fit::fit(messages, self.token_budget);
        let left = self.token_budget.saturating_sub(active);
        let (overview, archive_tokens) = match latest_overview {
            Some(o) if tokens::estimate_text(&o) <= left => {
                let t = tokens::estimate_text(&o);
                (o, t)
            }
            _ => (String::new(), 0),
        };
        let included = 0;
        serde_json::to_vec(&json!({
            "latest_archive_overview": overview,
            "pre_archive_abstracts": [],
            "messages": messages,
            "estimatedTokens": active + archive_tokens,
            "stats": {
                "totalArchives": total,
                "includedArchives": included,
                "droppedArchives": total - failed - included,
                "failedArchives": failed,
                "activeTokens": active,
                "archiveTokens": archive_tokens,
            }
        }))
        .map_err(ServiceError::internal)
    }
}
