//! The stored form of an account's configuration, for the registry loader (which must not
//! depend on the rest of this module: that imports the registry).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::ServiceResult;
use crate::storage::{Storage, StorageError, StorePath, Version};

/// The explicit settings of one account, as stored (unknown sections kept verbatim).
pub type StoredConfig = Map<String, Value>;

/// `<account>/_system/setting.json`; the id must already be validated.
pub fn config_path(account: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("setting.json")?)
}

/// The stored document for a registry snapshot: `None` (keep what is known, logged) when the
/// file is not valid JSON, so a damaged settings file never fails the key registry's load or
/// silently turns an account's switches back to their defaults. Storage errors propagate.
pub fn read_for_snapshot(
    storage: &dyn Storage,
    account: &str,
) -> ServiceResult<Option<Arc<StoredConfig>>> {
    Ok(read_versioned_for_snapshot(storage, account)?.0)
}

/// [`read_for_snapshot`] with the version read (`None`: no file), which the registry sweep
/// compares to find a change that was written but never announced.
pub fn read_versioned_for_snapshot(
    storage: &dyn Storage,
    account: &str,
) -> ServiceResult<(Option<Arc<StoredConfig>>, Option<Version>)> {
    let path = config_path(account)?;
    match storage.read_versioned(&path) {
        Ok((bytes, version)) => match serde_json::from_slice::<StoredConfig>(&bytes) {
            Ok(doc) => Ok((Some(Arc::new(doc)), Some(version))),
            Err(e) => {
                tracing::warn!(account, error = %e, "account settings file is not a JSON object; keeping the last known settings");
                Ok((None, Some(version)))
            }
        },
        Err(StorageError::NotFound(_)) => Ok((Some(Arc::new(StoredConfig::new())), None)),
        Err(e) => Err(e.into()),
    }
}
