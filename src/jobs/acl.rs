//! Storage-pool jobs of the ACL routes and the account-group routes (issue #23). Each runs one
//! operation of `storage::acl`, announcing through the registry sink so the change is in
//! force in this process before the answer.

use serde_json::Value;

use super::admin::Registry;
use super::{BlockingJob, JobContext};
use crate::error::ServiceResult;
use crate::storage::acl::{groups, store};
use crate::storage::registry::OpCtx;
use crate::storage::uri::VikingUri;

fn cx<'a>(registry: &'a Registry, ctx: &'a JobContext<'_>) -> OpCtx<'a> {
    OpCtx {
        storage: ctx.storage,
        sink: registry.sink.as_ref(),
        hashing: registry.hashing,
    }
}

/// GET /api/v1/acl: a node's resolved ACL.
pub struct GetAcl {
    pub uri: VikingUri,
}

impl BlockingJob for GetAcl {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        store::get(ctx.storage, &self.uri)
    }
}

/// PUT / DELETE /api/v1/acl, grant, revoke; and an `acl` field of a write that creates its
/// node (`must_exist: false`: the row is stored before the node appears, so it is never
/// readable without it).
pub struct ChangeAcl {
    pub registry: Registry,
    pub uri: VikingUri,
    pub change: store::Change,
    pub must_exist: bool,
}

impl BlockingJob for ChangeAcl {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        store::change(
            &cx(&self.registry, ctx),
            &self.uri,
            self.change,
            self.must_exist,
        )
    }
}

/// After a write carrying an `acl` failed: drop the row stored for it if its node does not
/// exist (a row on nothing would apply to whatever is created there later).
pub struct DropAclIfMissing {
    pub registry: Registry,
    pub uri: VikingUri,
}

impl BlockingJob for DropAclIfMissing {
    type Output = ServiceResult<()>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        if ctx.storage.stat(self.uri.store_path())?.is_none() {
            store::change(
                &cx(&self.registry, ctx),
                &self.uri,
                store::Change::Clear,
                false,
            )?;
        }
        Ok(())
    }
}

/// One group operation of the admin API.
pub enum GroupOp {
    Create,
    List,
    Delete,
    Members,
    AddMember(String),
    RemoveMember(String),
}

pub struct GroupJob {
    pub registry: Registry,
    pub account: String,
    /// Empty for `List`.
    pub group: String,
    pub op: GroupOp,
}

impl BlockingJob for GroupJob {
    type Output = ServiceResult<Value>;

    fn run(self, ctx: &JobContext<'_>) -> Self::Output {
        let cx = cx(&self.registry, ctx);
        let (a, g) = (self.account.as_str(), self.group.as_str());
        Ok(match self.op {
            GroupOp::Create => groups::create(&cx, a, g)?,
            GroupOp::List => groups::list(&cx, a)?,
            GroupOp::Delete => {
                groups::delete(&cx, a, g)?;
                serde_json::json!({"deleted": true})
            }
            GroupOp::Members => {
                serde_json::json!({"group_id": g, "members": groups::members(&cx, a, g)?})
            }
            GroupOp::AddMember(u) => {
                serde_json::json!({"added": groups::add_member(&cx, a, g, &u)?})
            }
            GroupOp::RemoveMember(u) => {
                serde_json::json!({"removed": groups::remove_member(&cx, a, g, &u)?})
            }
        })
    }
}
