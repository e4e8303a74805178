//! `GET /api/v1/stats/memories`: counts of the caller's memories by category, with 0.5.2's
//! hotness and staleness figures. Longship keeps no access counts, so every memory counts as
//! never retrieved (hotness = ½ × recency, with 0.5.2's 7-day half-life: "hot" is then never
//! reached); ages come from the files' modification times.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

/// 0.5.2's category names (a memory belongs to the first whose `/<name>/` is in its URI).
pub const CATEGORIES: &[&str] = &[
    "profile",
    "preferences",
    "entities",
    "events",
    "cases",
    "patterns",
    "tools",
    "skills",
];

/// Files looked at, at most (0.5.2 queries at most 10000 records too).
const MAX_FILES: usize = 10_000;
const HALF_LIFE_DAYS: f64 = 7.0;
const COLD: f64 = 0.2;
const HOT: f64 = 0.6;

/// Refuse an unknown `category` (400 with the valid list).
pub fn check_category(category: Option<&str>) -> ServiceResult<()> {
    match category {
        Some(c) if !CATEGORIES.contains(&c) => Err(ServiceError::invalid_argument(format!(
            "Unknown category: {c}. Valid categories: {}",
            CATEGORIES.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// Memory files (URI relative to the account, modification time) under the user's memories,
/// hidden names and sidecars skipped, at most [`MAX_FILES`].
fn memory_files(
    storage: &dyn Storage,
    account: &str,
    user: &str,
) -> ServiceResult<Vec<(String, SystemTime)>> {
    let root = format!("user/{user}/memories");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(rel) = dirs.pop() {
        let path = StorePath::root().join(account)?.join_path(&rel)?;
        let entries = match storage.list(&path) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            if e.name.starts_with('.') {
                continue;
            }
            let child = format!("{rel}/{}", e.name);
            if e.meta.is_dir() {
                dirs.push(child);
            } else if out.len() < MAX_FILES {
                out.push((child, e.meta.modified));
            }
        }
    }
    Ok(out)
}

pub fn memory_stats(
    storage: &dyn Storage,
    account: &str,
    user: &str,
    category: Option<&str>,
) -> ServiceResult<Value> {
    let categories: Vec<&str> = match category {
        Some(c) => vec![c],
        None => CATEGORIES.to_vec(),
    };
    let now = SystemTime::now();
    let mut by_category: Map<String, Value> = Map::new();
    let mut counts = vec![0u64; categories.len()];
    let (mut cold, mut warm, mut hot) = (0u64, 0u64, 0u64);
    let (mut stale7, mut stale30, mut oldest) = (0u64, 0u64, 0f64);
    for (rel, modified) in memory_files(storage, account, user)? {
        let uri = format!("viking://{rel}");
        let Some(i) = categories
            .iter()
            .position(|c| uri.contains(&format!("/{c}/")))
        else {
            continue;
        };
        counts[i] += 1;
        let age_days = now
            .duration_since(modified)
            .map(|d| d.as_secs_f64() / 86_400.0)
            .unwrap_or(0.0);
        let score = 0.5 * (-(std::f64::consts::LN_2 / HALF_LIFE_DAYS) * age_days).exp();
        if score < COLD {
            cold += 1;
        } else if score > HOT {
            hot += 1;
        } else {
            warm += 1;
        }
        if age_days > 7.0 {
            stale7 += 1;
        }
        if age_days > 30.0 {
            stale30 += 1;
        }
        oldest = oldest.max((age_days * 10.0).round() / 10.0);
    }
    for (c, n) in categories.iter().zip(&counts) {
        by_category.insert((*c).to_string(), json!(n));
    }
    Ok(json!({
        "total_memories": counts.iter().sum::<u64>(),
        "by_category": by_category,
        "hotness_distribution": {"cold": cold, "warm": warm, "hot": hot},
        "staleness": {
            "not_accessed_7d": stale7,
            "not_accessed_30d": stale30,
            "oldest_memory_age_days": oldest,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn counts_by_category() {
        let d = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(d.path()).unwrap();
        for p in [
            "acme/user/bob/memories/preferences/bob/tea.md",
            "acme/user/bob/memories/events/2026/01/02/x.md",
            "acme/user/bob/memories/profile.md",
            "acme/user/bob/memories/.abstract.md",
            "acme/user/eve/memories/preferences/eve/tea.md",
        ] {
            st.write(&StorePath::parse(p).unwrap(), b"- x").unwrap();
        }
        let v = memory_stats(&st, "acme", "bob", None).unwrap();
        assert_eq!(v["total_memories"], 2);
        assert_eq!(v["by_category"]["preferences"], 1);
        assert_eq!(v["by_category"]["profile"], 0);
        assert_eq!(v["hotness_distribution"]["warm"], 2);
        let v = memory_stats(&st, "acme", "bob", Some("events")).unwrap();
        assert_eq!(v["total_memories"], 1);
        assert!(check_category(Some("nope")).is_err());
    }
}
