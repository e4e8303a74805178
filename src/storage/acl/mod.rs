//! Per-node ACLs and account groups (issue #23; OpenViking 0.5.2's model): who may read,
//! write or manage what under `viking://resources`.
//!
//! * Model and files: [`model`] (levels, modes, principals; `_system/acl.json`,
//!   `_system/groups.json`), inheritance in [`effective`], stored changes in [`store`].
//! * Freshness: both files are part of an account's registry snapshot
//!   (`registry::load::AccountSnapshot::access`). A change is written with compare-and-swap
//!   and announced through the registry generation marker, so it is in force on this instance
//!   at once and on every other within `auth.refresh_interval_ms` (at once in strict mode) —
//!   the same path a revoked key takes. The AuthActor publishes each account's loaded state
//!   into the process-wide [`directory`], which the enforcement point reads without I/O.
//! * Enforcement: [`enforce`], called by `uri::authorize` — the one access check every route
//!   makes — and [`AclView`] for code that decides per node (listings, walks, find's filter).
//!
//! Who is bound: USER callers, on nodes under `viking://resources`, in accounts whose
//! `acl.enabled` is on. ADMIN has manage implicitly (0.5.2), and so has ROOT.

pub mod effective;
pub mod files;
pub mod groups;
pub mod model;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use serde_json::json;

use crate::error::{ServiceError, ServiceResult};
use crate::identity::{Identity, Role};

pub use model::{AclFile, Entry, GroupsFile, Level, Mode, NodeAcl};

/// An account's ACL table and groups as loaded, with each user's groups indexed.
#[derive(Debug, Default)]
pub struct AccountAccess {
    pub acl: AclFile,
    pub groups: GroupsFile,
    member_of: HashMap<String, Vec<String>>,
}

impl AccountAccess {
    pub fn new(acl: AclFile, groups: GroupsFile) -> AccountAccess {
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for (gid, g) in &groups.groups {
            for m in &g.members {
                member_of.entry(m.clone()).or_default().push(gid.clone());
            }
        }
        for v in member_of.values_mut() {
            v.sort();
            v.dedup();
        }
        AccountAccess {
            acl,
            groups,
            member_of,
        }
    }

    /// The groups `user` belongs to, sorted.
    pub fn groups_of(&self, user: &str) -> &[String] {
        self.member_of.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The principals a user acts as: `user:<id>`, `user:*`, `group:<g>` for each group.
    pub fn principals(&self, user: &str) -> Vec<String> {
        let mut out = vec![format!("user:{user}"), "user:*".to_string()];
        out.extend(self.groups_of(user).iter().map(|g| format!("group:{g}")));
        out
    }
}

/// The account switches that govern ACLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// `acl.enabled`: ACLs are enforced (0.5.2 default: off).
    pub enabled: bool,
    /// `acl.hide_denied` (Longship): listings leave denied nodes out instead of showing
    /// `access: "denied"` placeholders.
    pub hide_denied: bool,
}

/// How the switches are read: installed once at startup over the account configuration
/// store (`storage::account_config`, as fresh as the key map).
type SwitchSource = Box<dyn Fn(&str) -> Switches + Send + Sync>;

static SWITCHES: std::sync::OnceLock<SwitchSource> = std::sync::OnceLock::new();

pub fn install_switches(source: SwitchSource) {
    let _ = SWITCHES.set(source);
}

/// The account's ACL switches (`acl.enabled`, `acl.hide_denied` of its configuration). With
/// none stored, or before the store is installed, ACLs are off (0.5.2's default).
pub fn switches(account: &str) -> Switches {
    SWITCHES.get().map(|f| f(account)).unwrap_or_default()
}

/// What the AuthActor loaded, per account: read by the enforcement point (no I/O).
pub struct Directory {
    accounts: RwLock<HashMap<String, Arc<AccountAccess>>>,
}

impl Directory {
    fn new() -> Directory {
        Directory {
            accounts: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, account: &str) -> Option<Arc<AccountAccess>> {
        let map = self.accounts.read().unwrap_or_else(|p| p.into_inner());
        map.get(account).cloned()
    }

    /// Install an account's loaded state (`None`: the account is gone).
    pub fn set(&self, account: &str, access: Option<Arc<AccountAccess>>) {
        let mut map = self.accounts.write().unwrap_or_else(|p| p.into_inner());
        match access {
            Some(a) => {
                map.insert(account.to_string(), a);
            }
            None => {
                map.remove(account);
            }
        }
    }
}

static DIRECTORY: LazyLock<Directory> = LazyLock::new(Directory::new);

/// The process-wide directory the AuthActor keeps current.
pub fn directory() -> &'static Directory {
    &DIRECTORY
}

/// A node as the ACL checks see it (implemented by `uri::VikingUri`; this module does not
/// depend on the URI code, which calls into it).
pub trait Node {
    /// The path below `viking://resources` (`""` for the root itself); `None` outside it
    /// (no ACL applies there).
    fn resources_rel(&self) -> Option<String>;
    /// The canonical URI, for messages.
    fn uri_string(&self) -> String;
}

/// [`Node::resources_rel`].
pub fn rel_path(node: &dyn Node) -> Option<String> {
    node.resources_rel()
}

/// How a node appears in a listing for one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Full,
    /// Name and type only, `"access": "denied"` (0.5.2).
    Denied,
    /// Left out (`acl.hide_denied`).
    Hidden,
}

/// One caller's ACL state, taken once per request or walk.
#[derive(Debug, Clone)]
pub struct AclView {
    access: Arc<AccountAccess>,
    principals: Vec<String>,
    hide_denied: bool,
}

impl AclView {
    /// `None` when no ACL can restrict `who`: ROOT or ADMIN, ACLs off in the account, or
    /// nothing stored for it.
    pub fn for_caller(who: &Identity) -> Option<AclView> {
        if who.role != Role::User {
            return None;
        }
        let sw = switches(&who.account);
        if !sw.enabled {
            return None;
        }
        let access = directory().get(&who.account)?;
        Some(AclView {
            principals: access.principals(&who.user),
            access,
            hide_denied: sw.hide_denied,
        })
    }

    /// A view over explicit state (tests, tools).
    pub fn new(access: Arc<AccountAccess>, user: &str, hide_denied: bool) -> AclView {
        AclView {
            principals: access.principals(user),
            access,
            hide_denied,
        }
    }

    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// Whether the caller holds `level` on `uri` (always, outside `viking://resources`).
    pub fn allows(&self, uri: &dyn Node, level: Level) -> bool {
        match rel_path(uri) {
            Some(rel) => effective::allows(&self.access.acl, &rel, &self.principals, level),
            None => true,
        }
    }

    /// [`AclView::allows`] for a storage path inside the caller's account
    /// (`acme/resources/a/b.md`).
    pub fn allows_store_path(&self, account: &str, path: &str, level: Level) -> bool {
        let Some(rest) = path
            .strip_prefix(account)
            .and_then(|r| r.strip_prefix("/resources"))
        else {
            return true;
        };
        let rel = match rest.strip_prefix('/') {
            Some(r) => r,
            None if rest.is_empty() => "",
            None => return true, // `resourcesX`: another top-level name
        };
        effective::allows(&self.access.acl, rel, &self.principals, level)
    }

    /// [`AclView::allows`] on `uri` and on every node below it with an ACL of its own (only
    /// those can change the answer): removing or moving a subtree moves all of it.
    pub fn allows_subtree(&self, uri: &dyn Node, level: Level) -> bool {
        if !self.allows(uri, level) {
            return false;
        }
        let Some(rel) = rel_path(uri) else {
            return true;
        };
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.access
            .acl
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .all(|(k, _)| effective::allows(&self.access.acl, k, &self.principals, level))
    }

    /// How `uri` appears in a listing.
    pub fn shown(&self, uri: &dyn Node) -> Shown {
        if self.allows(uri, Level::Read) {
            Shown::Full
        } else if self.hide_denied {
            Shown::Hidden
        } else {
            Shown::Denied
        }
    }

    /// True if some node strictly below `uri` has its own ACL (a denied directory may still
    /// hold nodes the caller may read).
    pub fn has_rows_below(&self, uri: &dyn Node) -> bool {
        let Some(rel) = rel_path(uri) else {
            return false;
        };
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.access
            .acl
            .nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// The caller's readable part of `viking://resources` as subtrees with exceptions (see
    /// [`effective::allowed_subtrees`]); paths are below the resources root.
    pub fn readable_subtrees(&self) -> Vec<(String, Vec<String>)> {
        effective::allowed_subtrees(&self.access.acl, &self.principals, Level::Read)
    }
}

/// The one ACL check: `who` must hold `level` on `uri`. 403 "Access denied" as 0.5.2 when not.
pub fn enforce(uri: &dyn Node, who: &Identity, level: Level) -> ServiceResult<()> {
    if uri.resources_rel().is_none() {
        return Ok(());
    }
    let Some(view) = AclView::for_caller(who) else {
        return Ok(());
    };
    // Longship is stricter than 0.5.2 here: removing or moving a subtree needs manage on
    // every node of it, so nobody deletes a node whose ACL they could not change.
    let ok = if level == Level::Manage {
        view.allows_subtree(uri, level)
    } else {
        view.allows(uri, level)
    };
    if ok {
        Ok(())
    } else {
        Err(access_denied(uri, level))
    }
}

pub fn access_denied(uri: &dyn Node, level: Level) -> ServiceError {
    let shown = uri.uri_string();
    ServiceError::permission_denied(format!(
        "Access denied for {shown}: {} permission required",
        level.as_str()
    ))
    .with_details(json!({"resource": shown}))
}

/// Managing an ACL (get/set/grant/revoke/delete, an `acl` field on a write) needs manage on
/// the node: implicit for ADMIN and ROOT; a USER needs ACLs on and a manage grant (0.5.2).
pub fn ensure_manage(uri: &dyn Node, who: &Identity) -> ServiceResult<()> {
    let Some(_) = rel_path(uri) else {
        return Err(ServiceError::invalid_argument(
            "ACL is only supported for viking://resources",
        ));
    };
    if who.role != Role::User {
        return Ok(());
    }
    if switches(&who.account).enabled {
        let access = directory().get(&who.account).unwrap_or_default();
        let view = AclView::new(access, &who.user, false);
        if view.allows(uri, Level::Manage) {
            return Ok(());
        }
    }
    Err(ServiceError::permission_denied(format!(
        "ACL management denied for {}: manage permission required",
        uri.uri_string()
    ))
    .with_details(json!({"resource": uri.uri_string()})))
}
