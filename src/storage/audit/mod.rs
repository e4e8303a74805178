//! The audit log (issue #23): one JSON line per mutation — who (account, user, role), what
//! (method, route, targets), when, the outcome and the request id; never contents or keys.
//!
//! Layout: `_system/audit/<YYYY-MM-DD>/<HH>/<writer>.json` is one writer's manifest for that
//! UTC hour (a [`seglog::LogState`]), its log under `_system/audit/<day>/<HH>/<writer>/`. Each
//! instance is its own writer (a fresh id per process), so there is no shared hot object:
//! the manifest is replaced by compare-and-swap by its only writer, segments are create-only
//! (`seglog::write_segment`), one per group commit, and a writer folds its segments into
//! chunks (`seglog::compact`) as they accumulate and when its hour is over. Readers list the
//! hours of the asked time range, read each writer's manifest and its log (`seglog::read`).
//! Retention removes whole days.

mod query;

use serde::{Deserialize, Serialize};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::registry::store::read_doc;
use crate::storage::seglog::{self, LogState};
use crate::storage::{remove_if_exists, Storage, StorageError, StorePath, Version};

pub use query::{day_hour, iso, query, range, visible_to, Filter, Page, Visibility};

/// Folder of the audit log in the store (outside every account).
pub const AUDIT_DIR: &str = "_system/audit";
/// Folder of the token-usage log (same layout; `UsageEntry` lines).
pub const USAGE_DIR: &str = "_system/usage";
/// A writer compacts its hour's segments once this many have accumulated.
const COMPACT_AFTER_SEGMENTS: u64 = 64;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// UTC, ISO 8601 with microseconds.
    pub created_at: String,
    pub request_id: String,
    /// The account acted on (the path's account for admin routes, else the caller's).
    pub account_id: String,
    pub user_id: Option<String>,
    pub role: String,
    pub method: String,
    /// The route template (`/api/v1/fs/mv`), never the query string.
    pub route: String,
    pub api_type: String,
    pub status_code: u16,
    pub duration_ms: f64,
    /// The error code of a refused or failed request (`NOT_FOUND`, …).
    pub error_code: Option<String>,
    /// The `viking://` URIs the request named (the first few) and the path's ids.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// Tokens one model call spent, for the console's `tokens` view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub created_at: String,
    pub account_id: String,
    pub user_id: Option<String>,
    /// `vlm` (chat model) or `embedding`.
    pub source: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Read every JSON line of `T` in the hours of `[since, until)` (strings compared as the
/// stored `created_at`), at most [`query::MAX_SCAN_BYTES`] of log.
pub fn read_range<T: serde::de::DeserializeOwned>(
    storage: &dyn Storage,
    base: &str,
    since: &str,
    until: &str,
    keep_going: &dyn Fn() -> bool,
    mut each: impl FnMut(T),
) -> ServiceResult<()> {
    let (first_day, last_day) = (since.get(..10).unwrap_or(""), until.get(..10).unwrap_or(""));
    let mut scanned = 0usize;
    for day in days(storage, base)?
        .into_iter()
        .filter(|d| d.as_str() >= first_day && d.as_str() <= last_day)
    {
        for hour in hours(storage, base, &day)? {
            let start = format!("{day}T{hour:02}:00:00.000000+00:00");
            let end = format!("{day}T{hour:02}:59:59.999999+00:00");
            if end.as_str() < since || start.as_str() >= until {
                continue;
            }
            let bytes = read_hour(storage, base, &day, hour, keep_going)?;
            scanned += bytes.len();
            if scanned > query::MAX_SCAN_BYTES {
                return Err(ServiceError::invalid_argument(
                    "the log holds too much in this time range; narrow it",
                ));
            }
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(v) = serde_json::from_slice::<T>(line) {
                    each(v);
                }
            }
        }
    }
    Ok(())
}

/// 0.5.2's product API type of a route template.
pub fn api_type(route: &str) -> String {
    match route {
        "/api/v1/search/find" => return "search.find".into(),
        "/api/v1/search/search" => return "search.search".into(),
        _ => {}
    }
    let mut parts = route.split('/').filter(|p| !p.is_empty());
    match (parts.next(), parts.next(), parts.next()) {
        (Some("api"), Some("v1"), Some("fs")) => "filesystem".into(),
        (Some("api"), Some("v1"), Some(area)) => area.to_string(),
        _ => "unknown".into(),
    }
}

/// The hour directory of a time, `_system/audit/<day>/<HH>`.
pub fn hour_dir(base: &str, day: &str, hour: u32) -> ServiceResult<StorePath> {
    Ok(StorePath::parse(base)?
        .join(day)?
        .join(&format!("{hour:02}"))?)
}

/// One writer's manifest for one hour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub log: LogState,
}

/// This process's log for one hour, as its writer knows it (it is the only writer).
#[derive(Debug, Clone)]
pub struct HourLog {
    pub base: &'static str,
    pub day: String,
    pub hour: u32,
    pub writer: String,
    state: LogState,
    version: Option<Version>,
}

impl HourLog {
    pub fn new(base: &'static str, day: &str, hour: u32, writer: &str) -> Self {
        HourLog {
            base,
            day: day.to_string(),
            hour,
            writer: writer.to_string(),
            state: LogState::default(),
            version: None,
        }
    }

    fn dir(&self) -> ServiceResult<StorePath> {
        Ok(hour_dir(self.base, &self.day, self.hour)?.join(&self.writer)?)
    }

    fn manifest_path(&self) -> ServiceResult<StorePath> {
        Ok(hour_dir(self.base, &self.day, self.hour)?.join(&format!("{}.json", self.writer))?)
    }

    fn store_state(&mut self, storage: &dyn Storage, state: LogState) -> ServiceResult<()> {
        let doc = Manifest { log: state.clone() };
        let bytes = serde_json::to_vec(&doc).map_err(ServiceError::internal)?;
        let v = storage.write_if(&self.manifest_path()?, &bytes, self.version.as_ref())?;
        self.state = state;
        self.version = Some(v);
        Ok(())
    }

    /// Append one batch of entries (JSON lines) as one segment: take its number in the
    /// manifest, then write it create-only. Durable when this returns.
    pub fn append(&mut self, storage: &dyn Storage, batch: &[u8]) -> ServiceResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut state = self.state.clone();
        let seq = state.reserve();
        self.store_state(storage, state)?;
        seglog::write_segment(storage, &self.dir()?, seq, batch)?;
        if self.state.segments() >= COMPACT_AFTER_SEGMENTS {
            self.compact(storage)?;
        }
        Ok(())
    }

    /// Fold the segments into chunks (also when the hour is over, so a past hour is a few
    /// objects per writer).
    pub fn compact(&mut self, storage: &dyn Storage) -> ServiceResult<()> {
        if self.state.segments() == 0 {
            return Ok(());
        }
        let dir = self.dir()?;
        let segments_only = LogState {
            chunks: Vec::new(),
            ..self.state.clone()
        };
        let content = seglog::read_sealed(storage, &dir, &segments_only)?;
        let (next, garbage) = seglog::compact(storage, &dir, &self.state, &content.bytes)?;
        self.store_state(storage, next)?;
        seglog::collect_garbage(storage, garbage);
        Ok(())
    }
}

/// Every writer's entries of one hour, as JSON lines (concatenated).
pub fn read_hour(
    storage: &dyn Storage,
    base: &str,
    day: &str,
    hour: u32,
    keep_going: &dyn Fn() -> bool,
) -> ServiceResult<Vec<u8>> {
    let dir = hour_dir(base, day, hour)?;
    let listing = match storage.list(&dir) {
        Ok(l) => l,
        Err(StorageError::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for e in listing {
        let Some(writer) = e.name.strip_suffix(".json") else {
            continue;
        };
        if !keep_going() {
            return Err(ServiceError::unavailable(
                "audit",
                "the request was abandoned",
            ));
        }
        let (m, _) = read_doc::<Manifest>(storage, &dir.join(&e.name)?)?;
        let content = seglog::read(storage, &dir.join(writer)?, &m.log, keep_going)?;
        out.extend_from_slice(&content.bytes);
    }
    Ok(out)
}

/// The days present (names `YYYY-MM-DD`), oldest first.
pub fn days(storage: &dyn Storage, base: &str) -> ServiceResult<Vec<String>> {
    let dir = StorePath::parse(base)?;
    let mut names: Vec<String> = match storage.list(&dir) {
        Ok(l) => l
            .into_iter()
            .filter(|e| e.meta.is_dir())
            .map(|e| e.name)
            .collect(),
        Err(StorageError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    Ok(names)
}

/// The hours present in one day.
pub fn hours(storage: &dyn Storage, base: &str, day: &str) -> ServiceResult<Vec<u32>> {
    let dir = StorePath::parse(base)?.join(day)?;
    let mut out: Vec<u32> = match storage.list(&dir) {
        Ok(l) => l.into_iter().filter_map(|e| e.name.parse().ok()).collect(),
        Err(StorageError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    out.sort_unstable();
    Ok(out)
}

/// Remove the days before `oldest_kept` (a `YYYY-MM-DD`). Returns how many were removed.
pub fn remove_days_before(
    storage: &dyn Storage,
    base: &str,
    oldest_kept: &str,
) -> ServiceResult<usize> {
    let mut removed = 0;
    for day in days(storage, base)? {
        if day.as_str() < oldest_kept {
            remove_if_exists(storage, &StorePath::parse(base)?.join(&day)?, true)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    fn entry(i: usize) -> Entry {
        Entry {
            created_at: format!("2026-01-02T03:04:{:02}.000000+00:00", i % 60),
            request_id: format!("r{i}"),
            account_id: "acme".into(),
            user_id: Some("alice".into()),
            role: "admin".into(),
            method: "POST".into(),
            route: "/api/v1/content/write".into(),
            api_type: "content".into(),
            status_code: 200,
            duration_ms: 1.0,
            error_code: None,
            targets: vec!["viking://resources/a.md".into()],
        }
    }

    #[test]
    fn appends_compacts_and_reads_back_every_entry_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let mut a = HourLog::new(AUDIT_DIR, "2026-01-02", 3, "wa");
        let mut b = HourLog::new(AUDIT_DIR, "2026-01-02", 3, "wb");
        for i in 0..150 {
            let mut line = serde_json::to_vec(&entry(i)).unwrap();
            line.push(b'\n');
            let log = if i % 2 == 0 { &mut a } else { &mut b };
            log.append(&s, &line).unwrap();
        }
        a.compact(&s).unwrap();
        let bytes = read_hour(&s, AUDIT_DIR, "2026-01-02", 3, &|| true).unwrap();
        let mut ids: Vec<String> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<Entry>(l).unwrap().request_id)
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 150);
        assert_eq!(hours(&s, AUDIT_DIR, "2026-01-02").unwrap(), vec![3]);
        assert_eq!(remove_days_before(&s, AUDIT_DIR, "2026-01-03").unwrap(), 1);
        assert!(days(&s, AUDIT_DIR).unwrap().is_empty());
    }

    #[test]
    fn api_types_as_upstream() {
        assert_eq!(api_type("/api/v1/fs/mv"), "filesystem");
        assert_eq!(api_type("/api/v1/admin/accounts"), "admin");
        assert_eq!(api_type("/api/v1/search/find"), "search.find");
        assert_eq!(api_type("/api/v1/sessions/{sid}/commit"), "sessions");
    }
}
