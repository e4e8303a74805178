//! F5 rm: idempotent removal of a file or (with `recursive`) a directory tree.

use serde_json::{json, Value};

use super::walk::{Flow, Order, Walker};
use super::{stat, StorageFail};
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};
use crate::storage::uri::VikingUri;
use crate::storage::{acl, tags, watches};
use crate::storage::{remove_if_exists, Storage};

/// Remove `uri`; a missing target is success with nothing deleted.
pub fn remove(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    uri: &VikingUri,
    recursive: bool,
) -> ServiceResult<Value> {
    let done = |n: u64| Ok(json!({"uri": uri.uri(), "estimated_deleted_count": n}));
    let Some(meta) = stat(storage, uri)? else {
        return done(0);
    };
    let mut count = 1u64;
    if meta.is_dir() {
        if !recursive {
            let shown = uri.uri();
            return Err(ServiceError::invalid_argument(format!(
                "Cannot remove directory without --recursive: {shown}"
            ))
            .with_details(json!({"resource": shown, "expected_flag": "recursive"})));
        }
        count += count_nodes(storage, abandoned, uri)?;
    }
    // Removed concurrently: the outcome the caller asked for.
    remove_if_exists(storage, uri.store_path(), meta.is_dir())
        .map_err(|e| StorageFail(uri).map(e))?;
    // Its own tags go too (its subtree's went with the tree).
    tags::forget_node(storage, uri.store_path()).map_err(|e| StorageFail(uri).map(e))?;
    // And its subtree's ACL rows: a node created there later starts from its parent's.
    acl::store::after_remove(storage, uri)?;
    // A watch goes with its resource.
    if let Some(account) = watched_account(uri) {
        watches::forget_under(storage, account, &uri.uri())?;
    }
    done(count)
}

/// The account of `uri` when a watch may target it or something below it (resource trees).
pub(crate) fn watched_account(uri: &VikingUri) -> Option<&str> {
    let segs = uri.segments();
    let resources = match segs.first().map(String::as_str) {
        Some("resources") => true,
        Some("user") => segs.len() < 3 || segs[2] == "resources",
        _ => segs.is_empty(),
    };
    resources
        .then(|| uri.store_path().as_str().split('/').next())
        .flatten()
}

/// Every node below `dir`, hidden ones included (they are deleted too).
fn count_nodes(
    storage: &dyn Storage,
    abandoned: &dyn Fn() -> bool,
    dir: &VikingUri,
) -> ServiceResult<u64> {
    // A ROOT view so that the count covers everything the removal deletes.
    let who = Identity {
        role: Role::Root,
        account: String::new(),
        user: String::new(),
    };
    let walker = Walker {
        who: &who,
        show_hidden_files: true,
        max_depth: usize::MAX,
        order: Order::ByName,
        exclude: None,
    };
    let mut n = 0u64;
    walker.run(storage, abandoned, dir, |_, _, _| {
        n += 1;
        Ok(Flow::Continue)
    })?;
    Ok(n)
}
