//! F6 mv: a no-replace rename (spec §13.5: an existing destination is 409, never overwritten).

use serde_json::{json, Value};

use super::transfer::{check_destination, exists_conflict, source_meta, source_missing};
use super::StorageFail;
use crate::error::ServiceResult;
use crate::storage::uri::VikingUri;
use crate::storage::{acl, tags, watches, webdav};
use crate::storage::{Storage, StorageError};

/// Move `from` to `to`; the handler has checked rights, identity and overlap. A tree that
/// moves in many steps (S3) calls `between_steps` between them; the move always runs to the end.
pub fn move_entry(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    between_steps: &dyn Fn(),
) -> ServiceResult<Value> {
    let src = source_meta(storage, from)?;
    check_destination(storage, &src, to)?;
    // ACL rows reach the destination before the nodes do, so a moved node is never
    // readable there without its ACL (not even if this process dies mid-move).
    acl::store::before_move(storage, from, to)?;
    let moved = storage.rename_in_steps(from.store_path(), to.store_path(), between_steps);
    if let Err(e) = acl::store::after_move(storage, from, to, moved.is_ok()) {
        tracing::error!(from = %from.uri(), to = %to.uri(), error = %e.message, "ACL rows not settled after a move");
    }
    match moved {
        Ok(()) => {
            // Its own tags follow it (its subtree's went with the tree).
            if let Err(e) = tags::move_node(storage, from.store_path(), to.store_path()) {
                tracing::error!(from = %from.uri(), to = %to.uri(), error = %e.message, "tags not moved with their node");
            }
            // Watches follow their target (0.5.2 rewrites their to_uri).
            if let Some(account) = super::rm::watched_account(from) {
                if let Err(e) = watches::after_move(storage, account, &from.uri(), &to.uri()) {
                    tracing::error!(from = %from.uri(), to = %to.uri(), error = %e.message, "watches not moved with their target");
                }
            }
            // And its WebDAV dead properties.
            if let Err(e) =
                webdav::props::move_node(storage, from.store_path(), to.store_path(), false)
            {
                tracing::error!(from = %from.uri(), to = %to.uri(), error = %e, "dead properties not moved with their node");
            }
            Ok(json!({"from": from.uri(), "to": to.uri()}))
        }
        // Created between the check and the rename: still never replaced.
        Err(StorageError::AlreadyExists(_)) => Err(exists_conflict(to)),
        Err(StorageError::NotFound(_)) => Err(source_missing(from)),
        Err(e) => Err(StorageFail(to).map(e)),
    }
}
