//! The per-account daily token budget of memory extraction (`memory.daily_token_budget`, 0 =
//! off). Tokens an account's extractions spent on a UTC day are kept in
//! `<account>/_system/memory/usage/<YYYY-MM-DD>.json` (`{"tokens": n}`, compare-and-swap
//! charges, so every instance sees one figure). An extraction that would start when the
//! account has spent its budget for the day waits in the backlog until the next UTC day; one
//! that started within budget finishes (a day may overshoot by one archive's calls).

use serde_json::{json, Value};

use crate::error::{ServiceError, ServiceResult};
use crate::storage::{Storage, StorageError, StorePath};

const DAY_SECS: u64 = 86_400;

fn usage_path(account: &str, day: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("memory")?
        .join("usage")?
        .join(&format!("{day}.json"))?)
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today() -> String {
    crate::time::millis_z_now().chars().take(10).collect()
}

/// Seconds until the next UTC day starts (at least 1).
pub fn secs_to_next_day() -> u64 {
    let now = crate::time::epoch_secs_now().max(0.0) as u64;
    (DAY_SECS - now % DAY_SECS).max(1)
}

/// Tokens the account's extractions spent on `day`.
pub fn spent(storage: &dyn Storage, account: &str, day: &str) -> ServiceResult<u64> {
    match storage.read(&usage_path(account, day)?) {
        Ok(d) => Ok(serde_json::from_slice::<Value>(&d)
            .ok()
            .and_then(|v| v["tokens"].as_u64())
            .unwrap_or(0)),
        Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Add `tokens` to the account's figure for `day` (compare-and-swap, retried).
pub fn charge(storage: &dyn Storage, account: &str, day: &str, tokens: u64) -> ServiceResult<()> {
    if tokens == 0 {
        return Ok(());
    }
    let p = usage_path(account, day)?;
    for _ in 0..32 {
        let (now, version) = match storage.read_versioned(&p) {
            Ok((d, v)) => (
                serde_json::from_slice::<Value>(&d)
                    .ok()
                    .and_then(|v| v["tokens"].as_u64())
                    .unwrap_or(0),
                Some(v),
            ),
            Err(StorageError::NotFound(_)) => (0, None),
            Err(e) => return Err(e.into()),
        };
        let data = json!({"tokens": now.saturating_add(tokens)}).to_string();
        match storage.write_if(&p, data.as_bytes(), version.as_ref()) {
            Ok(_) => return Ok(()),
            Err(StorageError::Conflict(_)) | Err(StorageError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ServiceError::conflict(
        "token usage kept changing; not charged",
    ))
}

/// `Some(spent)` when the account has no budget left today (`budget` 0 = no budget).
pub fn exhausted(storage: &dyn Storage, account: &str, budget: u64) -> ServiceResult<Option<u64>> {
    if budget == 0 {
        return Ok(None);
    }
    let used = spent(storage, account, &today())?;
    Ok((used >= budget).then_some(used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn charges_add_up_per_day_and_account() {
        let d = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(d.path()).unwrap();
        let day = today();
        assert_eq!(exhausted(&st, "acme", 100).unwrap(), None);
        charge(&st, "acme", &day, 60).unwrap();
        charge(&st, "acme", &day, 50).unwrap();
        charge(&st, "acme", "2000-01-01", 500).unwrap();
        assert_eq!(spent(&st, "acme", &day).unwrap(), 110);
        assert_eq!(exhausted(&st, "acme", 100).unwrap(), Some(110));
        assert_eq!(exhausted(&st, "acme", 0).unwrap(), None);
        assert_eq!(exhausted(&st, "other", 100).unwrap(), None);
        assert!(secs_to_next_day() <= DAY_SECS);
    }
}
