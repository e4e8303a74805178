//! Storage-pool jobs of the audit log: a group commit of one batch, the retention sweep, and
//! the console's query.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{BlockingJob, JobContext};
use jiff::tz::TimeZone;

use crate::error::ServiceResult;
use crate::storage::audit::{
    self, visible_to, Entry, Filter, HourLog, Page, UsageEntry, Visibility, AUDIT_DIR, USAGE_DIR,
};
use crate::storage::{Storage, StorageError, StorePath};

/// This process's open hour logs (it is their only writer); flushes run one at a time.
#[derive(Debug)]
pub struct WriterState {
    pub writer: String,
    /// Keyed by (log, `YYYY-MM-DDTHH` UTC); per log at most the last two hours stay open.
    open: BTreeMap<(&'static str, String), HourLog>,
}

impl WriterState {
    pub fn new(writer: String) -> Self {
        WriterState {
            writer,
            open: BTreeMap::new(),
        }
    }
}

/// Write one batch: a segment per log and hour it touches. Durable when it succeeds.
pub struct FlushAudit {
    pub state: Arc<Mutex<WriterState>>,
    pub entries: Arc<Vec<Entry>>,
    pub usage: Arc<Vec<UsageEntry>>,
}

/// (`YYYY-MM-DDTHH`, day, hour) of a stored time.
fn hour_key(created_at: &str) -> Option<(String, String, u32)> {
    let key = created_at.get(..13)?;
    let day = key.get(..10)?;
    let hour = key.get(11..13)?.parse().ok()?;
    Some((key.to_string(), day.to_string(), hour))
}

type Groups = BTreeMap<(&'static str, String, String, u32), Vec<u8>>;

fn group<T: serde::Serialize>(
    groups: &mut Groups,
    base: &'static str,
    items: &[T],
    at: impl Fn(&T) -> &str,
) -> ServiceResult<()> {
    for item in items {
        let Some((key, day, hour)) = hour_key(at(item)) else {
            continue;
        };
        let buf = groups.entry((base, key, day, hour)).or_default();
        serde_json::to_writer(&mut *buf, item).map_err(crate::error::ServiceError::internal)?;
        buf.push(b'\n');
    }
    Ok(())
}

impl BlockingJob for FlushAudit {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut groups = Groups::new();
        group(&mut groups, AUDIT_DIR, &self.entries, |e| &e.created_at)?;
        group(&mut groups, USAGE_DIR, &self.usage, |e| &e.created_at)?;
        for ((base, key, day, hour), bytes) in groups {
            let writer = state.writer.clone();
            let log = state
                .open
                .entry((base, key))
                .or_insert_with(|| HourLog::new(base, &day, hour, &writer));
            log.append(ctx.storage, &bytes)?;
        }
        // Past hours are over: fold them into chunks and close them.
        for base in [AUDIT_DIR, USAGE_DIR] {
            loop {
                let mine: Vec<_> = state.open.keys().filter(|k| k.0 == base).cloned().collect();
                if mine.len() <= 2 {
                    break;
                }
                if let Some(mut old) = state.open.remove(&mine[0]) {
                    if let Err(e) = old.compact(ctx.storage) {
                        tracing::warn!(error = %e.message, "audit: compacting a past hour failed");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Remove days older than the retention period.
pub struct SweepAudit {
    pub retention_days: u64,
}

impl BlockingJob for SweepAudit {
    type Output = ServiceResult<usize>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let oldest = chrono::Utc::now() - chrono::Duration::days(self.retention_days as i64);
        let oldest = oldest.format("%Y-%m-%d").to_string();
        Ok(audit::remove_days_before(ctx.storage, AUDIT_DIR, &oldest)?
            + audit::remove_days_before(ctx.storage, USAGE_DIR, &oldest)?)
    }
}

/// The console's audit page.
pub struct QueryAudit {
    pub visibility: Visibility,
    pub filter: Filter,
    pub page: Page,
}

impl BlockingJob for QueryAudit {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        audit::query(
            ctx.storage,
            &self.visibility,
            &self.filter,
            self.page,
            &|| !ctx.is_abandoned(),
        )
    }
}

/// The window of whole days `start..=end` (`YYYY-MM-DD`) in `zone`, as stored-time strings
/// (UTC): from the first day's local midnight to the local midnight after the last.
fn day_window(start: &str, end: &str, zone: &TimeZone) -> (String, String) {
    let midnight = |day: &str, plus: i64| -> Option<String> {
        let d: jiff::civil::Date = day.parse().ok()?;
        let d = d.checked_add(jiff::Span::new().days(plus)).ok()?;
        let at = d.to_zoned(zone.clone()).ok()?.timestamp();
        let utc = chrono::DateTime::<chrono::Utc>::from_timestamp(at.as_second(), 0)?;
        Some(utc.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
    };
    (
        midnight(start, 0).unwrap_or_else(|| format!("{start}T00:00:00.000000+00:00")),
        midnight(end, 1).unwrap_or_else(|| format!("{end}T23:59:59.999999+00:00")),
    )
}

/// The local date and hour in `zone` of a stored time.
fn local_day_hour(created_at: &str, zone: &TimeZone) -> Option<(String, u32)> {
    let at: jiff::Timestamp = created_at.parse().ok()?;
    let local = at.to_zoned(zone.clone());
    Some((local.date().to_string(), u32::try_from(local.hour()).ok()?))
}

/// Today's date in `zone`.
fn today_in(zone: &TimeZone) -> String {
    jiff::Timestamp::now()
        .to_zoned(zone.clone())
        .date()
        .to_string()
}

fn dates(start: &str, end: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (Ok(mut d), Ok(last)) = (
        chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d"),
        chrono::NaiveDate::parse_from_str(end, "%Y-%m-%d"),
    ) else {
        return out;
    };
    while d <= last && out.len() <= 62 {
        out.push(d.format("%Y-%m-%d").to_string());
        match d.succ_opt() {
            Some(n) => d = n,
            None => break,
        }
    }
    out
}

/// The content-adding operation of a successful request, as 0.5.2 buckets them.
fn context_operation(e: &Entry) -> Option<&'static str> {
    if e.method != "POST" || !(200..400).contains(&e.status_code) {
        return None;
    }
    match e.route.as_str() {
        "/api/v1/resources" => Some("add_resource"),
        "/api/v1/skills" => Some("add_skill"),
        r if r.starts_with("/api/v1/sessions/") && r.ends_with("/messages") => {
            Some("session_add_message")
        }
        r if r.starts_with("/api/v1/sessions/") && r.ends_with("/commit") => Some("session_commit"),
        _ => None,
    }
}

/// `console/context-commits`: per date and hour bucket, the content-adding requests.
pub struct ContextCommits {
    pub visibility: Visibility,
    pub start: String,
    pub end: String,
    pub bucket_hours: u32,
    /// The zone dates and hours are cut in (0.5.2's `timezone`).
    pub zone: TimeZone,
}

impl BlockingJob for ContextCommits {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let ops = [
            "add_resource",
            "add_skill",
            "session_add_message",
            "session_commit",
        ];
        let mut rows: BTreeMap<(String, u32), BTreeMap<&'static str, u64>> = BTreeMap::new();
        for d in dates(&self.start, &self.end) {
            for h in (0..24).step_by(self.bucket_hours as usize) {
                rows.insert((d.clone(), h), ops.iter().map(|o| (*o, 0)).collect());
            }
        }
        let (since, until) = day_window(&self.start, &self.end, &self.zone);
        let keep_going = || !ctx.is_abandoned();
        audit::read_range(
            ctx.storage,
            AUDIT_DIR,
            &since,
            &until,
            &keep_going,
            |e: Entry| {
                if e.created_at < since || e.created_at >= until {
                    return;
                }
                if !visible_to(&e.account_id, e.user_id.as_deref(), &self.visibility) {
                    return;
                }
                let Some(op) = context_operation(&e) else {
                    return;
                };
                let Some((day, hour)) = local_day_hour(&e.created_at, &self.zone) else {
                    return;
                };
                let bucket = hour / self.bucket_hours * self.bucket_hours;
                if let Some(row) = rows.get_mut(&(day, bucket)) {
                    *row.entry(op).or_default() += 1;
                }
            },
        )?;
        let items: Vec<Value> = rows
            .into_iter()
            .map(|((date, hour), counts)| {
                let mut item = serde_json::json!({"date": date, "hour": hour});
                let mut total = 0;
                for (op, n) in counts {
                    item[op] = n.into();
                    total += n;
                }
                item["total"] = total.into();
                item
            })
            .collect();
        Ok(serde_json::json!({
            "start_date": self.start,
            "end_date": self.end,
            "bucket": if self.bucket_hours == 4 { "4h" } else { "hour" },
            "items": items,
        }))
    }
}

/// Tokens per date: (vlm input, vlm output, embedding input).
type ByDate = BTreeMap<String, [u64; 3]>;
/// Tokens per (account, user, model, source): (input, output).
type ByModel = BTreeMap<(String, String, String, String), [u64; 2]>;

/// Token totals of the usage log in `[since, until)` visible to the caller: per date
/// (`vlm_input`, `vlm_output`, `embedding_input`) and per account/user/model/source.
fn token_totals(
    storage: &dyn Storage,
    visibility: &Visibility,
    (since, until): (&str, &str),
    zone: &TimeZone,
    keep_going: &dyn Fn() -> bool,
) -> ServiceResult<(ByDate, ByModel)> {
    let mut by_date = ByDate::new();
    let mut by_model = ByModel::new();
    audit::read_range(
        storage,
        USAGE_DIR,
        since,
        until,
        keep_going,
        |u: UsageEntry| {
            if u.created_at.as_str() < since || u.created_at.as_str() >= until {
                return;
            }
            if !visible_to(&u.account_id, u.user_id.as_deref(), visibility) {
                return;
            }
            let Some((date, _)) = local_day_hour(&u.created_at, zone) else {
                return;
            };
            let slot = by_date.entry(date).or_default();
            if u.source == "embedding" {
                slot[2] += u.input_tokens;
            } else {
                slot[0] += u.input_tokens;
                slot[1] += u.output_tokens;
            }
            let key = (
                u.account_id,
                u.user_id.unwrap_or_default(),
                u.model,
                u.source,
            );
            let m = by_model.entry(key).or_default();
            m[0] += u.input_tokens;
            m[1] += u.output_tokens;
        },
    )?;
    Ok((by_date, by_model))
}

/// `console/tokens`: token usage per day, and (Longship) per account, user and model.
pub struct TokenSeries {
    pub visibility: Visibility,
    pub start: String,
    pub end: String,
    /// The zone days are cut in (0.5.2's `timezone`).
    pub zone: TimeZone,
}

impl BlockingJob for TokenSeries {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let (since, until) = day_window(&self.start, &self.end, &self.zone);
        let keep_going = || !ctx.is_abandoned();
        let (by_date, by_model) = token_totals(
            ctx.storage,
            &self.visibility,
            (&since, &until),
            &self.zone,
            &keep_going,
        )?;
        let items: Vec<Value> = dates(&self.start, &self.end)
            .into_iter()
            .map(|d| {
                let t = by_date.get(&d).copied().unwrap_or_default();
                serde_json::json!({"date": d, "vlm_input": t[0], "vlm_output": t[1], "embedding_input": t[2]})
            })
            .collect();
        let breakdown: Vec<Value> = by_model
            .into_iter()
            .map(|((account, user, model, source), t)| {
                serde_json::json!({
                    "account_id": account, "user_id": user, "model": model, "source": source,
                    "input_tokens": t[0], "output_tokens": t[1],
                })
            })
            .collect();
        Ok(serde_json::json!({
            "start_date": self.start,
            "end_date": self.end,
            "bucket": "day",
            "items": items,
            "breakdown": breakdown,
        }))
    }
}

/// Files under `dir`, counted by listing, at most `cap` (a bound on the work of one view).
fn count_files(
    storage: &dyn Storage,
    dir: &StorePath,
    cap: u64,
    keep_going: &dyn Fn() -> bool,
) -> ServiceResult<u64> {
    let mut stack = vec![dir.clone()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        if n >= cap || !keep_going() {
            break;
        }
        let entries = match storage.list(&d) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            if e.name.starts_with('.') || crate::storage::is_internal_name(&e.name) {
                continue;
            }
            if e.meta.is_dir() {
                stack.push(d.join(&e.name)?);
            } else {
                n += 1;
            }
        }
    }
    Ok(n.min(cap))
}

/// Most files one dashboard view counts per root.
const COUNT_CAP: u64 = 100_000;

/// `console/dashboard/summary`: content counts (files under resources, the caller's skills
/// and memories), today's (UTC) tokens and find/search requests.
pub struct DashboardSummary {
    pub visibility: Visibility,
    pub account: String,
    pub user: String,
    /// The zone "today" is in (0.5.2's `timezone`).
    pub zone: TimeZone,
}

impl BlockingJob for DashboardSummary {
    type Output = ServiceResult<Value>;

    fn runs_in_steps(&self) -> bool {
        true
    }

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let keep_going = || !ctx.is_abandoned();
        let base = StorePath::root().join(&self.account)?;
        let user_root = base.join("user")?.join(&self.user)?;
        let files = count_files(
            ctx.storage,
            &base.join("resources")?,
            COUNT_CAP,
            &keep_going,
        )?;
        let skills = count_files(
            ctx.storage,
            &user_root.join("skills")?,
            COUNT_CAP,
            &keep_going,
        )?;
        let memories = count_files(
            ctx.storage,
            &user_root.join("memories")?,
            COUNT_CAP,
            &keep_going,
        )?;
        let today = today_in(&self.zone);
        let (since, until) = day_window(&today, &today, &self.zone);
        let (by_date, _) = token_totals(
            ctx.storage,
            &self.visibility,
            (&since, &until),
            &self.zone,
            &keep_going,
        )?;
        let t = by_date.get(&today).copied().unwrap_or_default();
        let (mut find, mut search) = (0u64, 0u64);
        audit::read_range(
            ctx.storage,
            AUDIT_DIR,
            &since,
            &until,
            &keep_going,
            |e: Entry| {
                if !visible_to(&e.account_id, e.user_id.as_deref(), &self.visibility)
                    || !(200..400).contains(&e.status_code)
                {
                    return;
                }
                match e.route.as_str() {
                    "/api/v1/search/find" => find += 1,
                    "/api/v1/search/search" => search += 1,
                    _ => {}
                }
            },
        )?;
        Ok(serde_json::json!({
            "context_counts": {
                "files": files, "skills": skills, "memories": memories,
                "total": files + skills + memories,
            },
            "today_tokens": {"vlm_input": t[0], "vlm_output": t[1], "embedding_input": t[2]},
            "today_retrievals": {"find": find, "search": search},
        }))
    }
}
