//! Where an account's ACL table and groups are stored, and reading both for the account's
//! registry snapshot (kept apart from the operations in `store`, which use the registry).

use super::model::{AclFile, GroupsFile};
use super::AccountAccess;
use crate::error::ServiceResult;
use crate::storage::registry::store::{groups_path, read_doc};
use crate::storage::{Storage, StorePath, Version};

/// `<account>/_system/acl.json`.
pub fn acl_path(account: &str) -> ServiceResult<StorePath> {
    Ok(StorePath::root()
        .join(account)?
        .join("_system")?
        .join("acl.json")?)
}

/// Both files of an account, for its registry snapshot (missing files are empty).
pub fn read_access(storage: &dyn Storage, account: &str) -> ServiceResult<AccountAccess> {
    Ok(read_access_versioned(storage, account)?.0)
}

/// [`read_access`] with the versions read of acl.json and groups.json (`None`: no file).
pub fn read_access_versioned(
    storage: &dyn Storage,
    account: &str,
) -> ServiceResult<(AccountAccess, Option<Version>, Option<Version>)> {
    let (acl, acl_version): (AclFile, _) = read_doc(storage, &acl_path(account)?)?;
    let (groups, groups_version): (GroupsFile, _) = read_doc(storage, &groups_path(account)?)?;
    Ok((AccountAccess::new(acl, groups), acl_version, groups_version))
}
