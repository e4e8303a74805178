//! The AuthActor: the one owner of the in-memory account/user map, resolving API keys.
//!
//! It runs on its own Arbiter and never does I/O itself; it loads and persists the registry
//! through the storage pool.

use actix::prelude::*;
use subtle::ConstantTimeEq;

use crate::error::{ServiceError, ServiceResult};
use crate::identity::Identity;

use super::Pools;

pub struct AuthActor {
    root_key: Option<String>,
    #[allow(dead_code)]
    pools: Pools,
}

impl AuthActor {
    pub fn new(root_key: Option<String>, pools: Pools) -> Self {
        AuthActor { root_key, pools }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;
}

/// Resolve a presented API key to an identity (spec §2.4).
#[derive(Message)]
#[rtype(result = "ServiceResult<Identity>")]
pub struct ResolveKey {
    pub key: String,
}

impl Handler<ResolveKey> for AuthActor {
    type Result = ServiceResult<Identity>;

    fn handle(&mut self, msg: ResolveKey, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(root) = &self.root_key {
            if bool::from(root.as_bytes().ct_eq(msg.key.as_bytes())) {
                return Ok(Identity::root());
            }
        }
        Err(ServiceError::unauthenticated("Invalid API key"))
    }
}

/// Counters and state for observers and metrics.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct AuthStatus;

impl Handler<AuthStatus> for AuthActor {
    type Result = MessageResult<AuthStatus>;

    fn handle(&mut self, _msg: AuthStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(serde_json::json!({"root_key_configured": self.root_key.is_some()}))
    }
}
