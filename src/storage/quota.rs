//! Per-account storage quota (`[quota]`, off by default): the bytes and files an account's
//! content (everything but `_system`) may hold. One check, [`admit`], for every path that adds
//! content — content writes, uploads, ingestion before it publishes, and future imports — and
//! [`charge`] after the addition succeeded.
//!
//! Usage is shared by every instance in `<account>/_system/usage.json`: a measurement (a walk
//! of the account) plus the charges made since, each added by compare-and-swap. A usage older
//! than `quota.usage_max_age_secs` is measured again, which also forgets removals and
//! overwrites (they are never subtracted in between, so usage errs high until then).
//! Accuracy: between two measurements an account can exceed its quota by what writers on
//! several instances admitted at the same moment (each check passes before the others charge):
//! at most one request body or one ingestion per concurrent writer.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Storage, StorageError, StorePath};
use crate::config::QuotaSettings;
use crate::error::{ErrorCode, ServiceError, ServiceResult};

static INSTALLED: OnceLock<QuotaSettings> = OnceLock::new();

/// Install the process's quota settings (startup); later calls are ignored.
pub fn install(settings: QuotaSettings) {
    let _ = INSTALLED.set(settings);
}

/// The installed settings (off when none were installed).
pub fn installed() -> QuotaSettings {
    INSTALLED.get().cloned().unwrap_or_default()
}

/// Stored usage of one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
    /// When the walk this usage started from was made (seconds since the epoch).
    pub measured_at: u64,
}

fn usage_path(account: &str) -> Result<StorePath, StorageError> {
    StorePath::root()
        .join(account)?
        .join("_system")?
        .join("usage.json")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Walk the account's content (not `_system`) and count files and bytes.
pub fn measure(storage: &dyn Storage, account: &str) -> ServiceResult<Usage> {
    let mut usage = Usage {
        measured_at: now_secs(),
        ..Usage::default()
    };
    let root = StorePath::root().join(account)?;
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        let entries = match storage.list(&dir) {
            Ok(e) => e,
            Err(StorageError::NotFound(_)) | Err(StorageError::NotADirectory(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            if dir == root && e.name == "_system" {
                continue;
            }
            if e.meta.is_dir() {
                pending.push(dir.join(&e.name)?);
            } else {
                usage.files += 1;
                usage.bytes += e.meta.size;
            }
        }
    }
    Ok(usage)
}

/// The account's usage: the stored one while younger than `max_age`, else measured anew
/// (and stored).
fn current(storage: &dyn Storage, account: &str, max_age: Duration) -> ServiceResult<Usage> {
    let path = usage_path(account)?;
    if let Ok(data) = storage.read(&path) {
        if let Ok(u) = serde_json::from_slice::<Usage>(&data) {
            if now_secs().saturating_sub(u.measured_at) <= max_age.as_secs() {
                return Ok(u);
            }
        }
    }
    let fresh = measure(storage, account)?;
    let body = serde_json::to_vec(&fresh).map_err(ServiceError::internal)?;
    // Last measurement wins; a charge made meanwhile is in the walk or lost until the next.
    storage.write(&path, &body)?;
    Ok(fresh)
}

/// Refuse (`RESOURCE_EXHAUSTED`, 429) an addition of `bytes` and `files` that would take
/// `account` over its quota. Off (both limits 0): always admitted, nothing read.
pub fn admit(
    storage: &dyn Storage,
    account: &str,
    bytes: u64,
    files: u64,
    settings: &QuotaSettings,
) -> ServiceResult<()> {
    if settings.account_max_bytes == 0 && settings.account_max_files == 0 {
        return Ok(());
    }
    let max_age = Duration::from_secs(settings.usage_max_age_secs);
    let usage = current(storage, account, max_age)?;
    let over_bytes =
        settings.account_max_bytes > 0 && usage.bytes + bytes > settings.account_max_bytes;
    let over_files =
        settings.account_max_files > 0 && usage.files + files > settings.account_max_files;
    if over_bytes || over_files {
        return Err(ServiceError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "Account storage quota exceeded: {} bytes in {} files stored, adding {bytes} \
                 bytes in {files} files; the quota is {} bytes and {} files (quota.*; 0 = none)",
                usage.bytes, usage.files, settings.account_max_bytes, settings.account_max_files
            ),
        ));
    }
    Ok(())
}

/// Add what was stored to the account's usage (compare-and-swap, a few attempts). Never fails
/// the caller: a lost charge is corrected by the next measurement.
pub fn charge(
    storage: &dyn Storage,
    account: &str,
    bytes: i64,
    files: i64,
    settings: &QuotaSettings,
) {
    if settings.account_max_bytes == 0 && settings.account_max_files == 0 {
        return;
    }
    let Ok(path) = usage_path(account) else {
        return;
    };
    for _ in 0..8 {
        let Ok((data, version)) = storage.read_versioned(&path) else {
            return; // not measured yet: the first admit walks the account
        };
        let Ok(mut usage) = serde_json::from_slice::<Usage>(&data) else {
            return;
        };
        usage.bytes = usage.bytes.saturating_add_signed(bytes);
        usage.files = usage.files.saturating_add_signed(files);
        let Ok(body) = serde_json::to_vec(&usage) else {
            return;
        };
        match storage.write_if(&path, &body, Some(&version)) {
            Ok(_) => return,
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "quota usage not charged");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::backend::local::LocalStorage;

    #[test]
    fn usage_is_measured_charged_and_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let st = LocalStorage::open(dir.path()).unwrap();
        let p = |s: &str| {
            s.split('/')
                .fold(StorePath::root(), |p, seg| p.join(seg).unwrap())
        };
        st.write(&p("acme/resources/a.md"), b"12345").unwrap();
        st.write(&p("acme/user/u/b.md"), b"123").unwrap();
        st.write(&p("acme/_system/uploads/x"), b"not counted")
            .unwrap();
        let q = QuotaSettings {
            account_max_bytes: 10,
            account_max_files: 3,
            usage_max_age_secs: 3600,
        };
        assert_eq!(measure(&st, "acme").unwrap().bytes, 8);
        admit(&st, "acme", 2, 1, &q).unwrap();
        let err = admit(&st, "acme", 3, 1, &q).unwrap_err();
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        charge(&st, "acme", 2, 1, &q);
        assert!(admit(&st, "acme", 1, 0, &q).is_err());
        assert!(admit(&st, "acme", 0, 0, &q).is_ok());
        let off = QuotaSettings::default();
        admit(&st, "acme", 1 << 40, 1 << 20, &off).unwrap();
    }
}
