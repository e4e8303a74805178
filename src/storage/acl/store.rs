//! Stored ACL changes: the five ACL operations on `_system/acl.json`, and the bookkeeping
//! that keeps rows on their nodes when nodes move or go away (called by `fs::mv` and
//! `fs::rm`, so every route and tool that moves or removes nodes through them keeps the
//! table right). Every change is a compare-and-swap of the one file, then announced through
//! the registry generation marker (see the module docs of `acl`).

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::effective::{self, Effective};
use super::model::{
    normalize_entries, normalize_principal, AclFile, Entry, GroupsFile, Mode, NodeAcl,
    MAX_ACL_NODES, MAX_ENTRIES_PER_NODE,
};
use super::rel_path;
use crate::error::{ServiceError, ServiceResult};
use crate::storage::registry::store::{groups_path, read_doc, read_users, update_doc, Edit};
use crate::storage::registry::{OpCtx, RegistrySink};
use crate::storage::uri::VikingUri;
use crate::storage::{Storage, StorePath};

pub use super::files::{acl_path, read_access};

/// Announce a change of `account`'s ACL table or groups: bump the marker and hand the
/// account's stored state to this process's AuthActor. The change itself is already durable,
/// so a failure here is logged, not returned (the sweep and full reloads still find it).
pub fn announce(cx: &OpCtx<'_>, account: &str) {
    cx.announce_stored(account);
}

/// The sink moves and removals announce through (installed at startup; before that, and in
/// tools, changes are still stored and bumped, and reach memory through the freshness check).
static SINK: OnceLock<Arc<dyn RegistrySink>> = OnceLock::new();

pub fn install_sink(sink: Arc<dyn RegistrySink>) {
    let _ = SINK.set(sink);
}

fn with_installed_sink<T>(storage: &dyn Storage, f: impl FnOnce(&OpCtx<'_>) -> T) -> T {
    let none = crate::storage::registry::NoSink;
    let sink: &dyn RegistrySink = match SINK.get() {
        Some(s) => s.as_ref(),
        None => &none,
    };
    f(&OpCtx {
        storage,
        sink,
        hashing: false,
    })
}

/// An ACL change a request asks for (0.5.2's `AclSpec`: entries and/or a mode).
#[derive(Debug, Clone, Default)]
pub struct AclSpec {
    pub entries: Option<Vec<Entry>>,
    pub mode: Option<Mode>,
}

impl AclSpec {
    /// Validate a JSON `acl` object (`{"entries": [...], "acl_mode": ...}`, nothing else).
    pub fn from_json(v: &Value) -> ServiceResult<AclSpec> {
        let obj = v
            .as_object()
            .ok_or_else(|| ServiceError::invalid_argument("acl must be an object"))?;
        if let Some(k) = obj.keys().find(|k| *k != "entries" && *k != "acl_mode") {
            return Err(ServiceError::invalid_argument(format!(
                "acl: unknown field '{k}'"
            )));
        }
        let entries = match obj.get("entries") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(parse_entries(list)?),
            Some(_) => return Err(ServiceError::invalid_argument("acl.entries must be a list")),
        };
        let mode = match obj.get("acl_mode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Mode::parse_settable(s)?),
            Some(_) => {
                return Err(ServiceError::invalid_argument(
                    "acl_mode must be 'inherit' or 'restricted'",
                ))
            }
        };
        let spec = AclSpec { entries, mode };
        spec.check()?;
        Ok(spec)
    }

    /// 0.5.2: one of the two must be given; Longship bounds the list.
    pub fn check(&self) -> ServiceResult<()> {
        if self.entries.is_none() && self.mode.is_none() {
            return Err(ServiceError::invalid_argument(
                "entries or acl_mode must be provided",
            ));
        }
        Ok(())
    }
}

/// `[{"principal", "level"}]`, bounded, normalised (highest level per principal).
pub fn parse_entries(list: &[Value]) -> ServiceResult<Vec<Entry>> {
    if list.len() > MAX_ENTRIES_PER_NODE {
        return Err(too_many_entries());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let bad = |m: &str| ServiceError::invalid_argument(format!("acl entry {i}: {m}"));
        let obj = item.as_object().ok_or_else(|| bad("must be an object"))?;
        if let Some(k) = obj.keys().find(|k| *k != "principal" && *k != "level") {
            return Err(bad(&format!("unknown field '{k}'")));
        }
        let principal = obj
            .get("principal")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("principal must be a string"))?;
        let level = obj
            .get("level")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("ACL level must be read, write, or manage"))?;
        out.push(Entry {
            principal: normalize_principal(principal)?,
            level: super::Level::parse(level)?,
        });
    }
    Ok(normalize_entries(out))
}

fn too_many_entries() -> ServiceError {
    ServiceError::invalid_argument(format!(
        "an ACL holds at most {MAX_ENTRIES_PER_NODE} entries"
    ))
}

/// Every principal must name a user or group of the account (or be `user:*`).
fn check_principals(storage: &dyn Storage, account: &str, entries: &[Entry]) -> ServiceResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let (users, _) = read_users(storage, account)?;
    let (groups, _): (GroupsFile, _) = read_doc(storage, &groups_path(account)?)?;
    for e in entries {
        let known = match e.principal.split_once(':') {
            Some(("user", "*")) => true,
            Some(("user", id)) => users.users.contains_key(id),
            Some(("group", id)) => groups.groups.contains_key(id),
            _ => false,
        };
        if !known {
            return Err(ServiceError::invalid_argument(format!(
                "unknown principal '{}': no such user or group in this account",
                e.principal
            )));
        }
    }
    Ok(())
}

fn target_rel(uri: &VikingUri) -> ServiceResult<String> {
    match rel_path(uri) {
        Some(rel) if !rel.is_empty() => Ok(rel),
        Some(_) => Err(ServiceError::invalid_argument(
            "ACL cannot be set on viking://resources",
        )),
        None => Err(ServiceError::invalid_argument(
            "ACL is only supported for viking://resources",
        )),
    }
}

fn account_of(uri: &VikingUri) -> String {
    uri.store_path()
        .as_str()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The ACL target must exist (0.5.2: 404 for a missing resource).
pub fn ensure_target(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<()> {
    match storage.stat(uri.store_path())? {
        Some(_) => Ok(()),
        None => Err(ServiceError::not_found(
            "resource",
            &uri.uri(),
            format!("Resource not found: {}", uri.uri()),
        )),
    }
}

/// GET: the node's resolved ACL, from storage (not the cached table).
pub fn get(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<Value> {
    let rel = rel_path(uri).ok_or_else(|| {
        ServiceError::invalid_argument("ACL is only supported for viking://resources")
    })?;
    ensure_target(storage, uri)?;
    let (table, _): (AclFile, _) = read_doc(storage, &acl_path(&account_of(uri))?)?;
    Ok(effective::resolve(&table, &rel).report(&uri.uri()))
}

/// How a stored row changes.
pub enum Change {
    /// Set entries and/or mode (PUT, an `acl` field on a write).
    Set(AclSpec),
    /// Add or raise one principal's grant.
    Grant(Entry),
    /// Drop one principal's grant.
    Revoke(String),
    /// Back to plain inheritance (DELETE).
    Clear,
}

/// Apply `change` to the row of `uri` (which must exist unless `must_exist` is false: a node
/// being created by the same request) and announce it. Returns the node's new report.
pub fn change(
    cx: &OpCtx<'_>,
    uri: &VikingUri,
    change: Change,
    must_exist: bool,
) -> ServiceResult<Value> {
    let rel = target_rel(uri)?;
    let account = account_of(uri);
    if must_exist {
        ensure_target(cx.storage, uri)?;
    }
    let named: Vec<Entry> = match &change {
        Change::Set(spec) => spec.entries.clone().unwrap_or_default(),
        Change::Grant(e) => vec![e.clone()],
        Change::Revoke(_) | Change::Clear => Vec::new(),
    };
    check_principals(cx.storage, &account, &named)?;
    let (eff, _, _) = update_doc(cx.storage, &acl_path(&account)?, |t: &mut AclFile| {
        let before = t.nodes.get(&rel).cloned();
        apply_row(t, &rel, &change)?;
        let eff = effective::resolve(t, &rel);
        Ok(if t.nodes.get(&rel) == before.as_ref() {
            Edit::Keep(eff)
        } else {
            Edit::Write(eff)
        })
    })?;
    announce(cx, &account);
    Ok(report(eff, uri))
}

/// Apply `change` to the row of `rel` in the table (bounds checked; trivial rows dropped).
fn apply_row(t: &mut AclFile, rel: &str, change: &Change) -> ServiceResult<()> {
    let before = t.nodes.get(rel).cloned();
    let mut row = before.clone().unwrap_or_default();
    match change {
        Change::Set(spec) => {
            if let Some(e) = &spec.entries {
                row.entries = e.clone();
            }
            if let Some(m) = spec.mode {
                row.acl_mode = Some(m);
            }
        }
        Change::Grant(e) => {
            row.entries.retain(|x| x.principal != e.principal);
            row.entries.push(e.clone());
            row.entries = normalize_entries(row.entries.drain(..));
        }
        Change::Revoke(p) => row.entries.retain(|x| &x.principal != p),
        Change::Clear => row = NodeAcl::default(),
    }
    if row.entries.len() > MAX_ENTRIES_PER_NODE {
        return Err(too_many_entries());
    }
    if row.acl_mode == Some(Mode::Inherit) {
        row.acl_mode = None; // the default below the root; not stored
    }
    if row.is_trivial() {
        t.nodes.remove(rel);
    } else {
        if before.is_none() && t.nodes.len() >= MAX_ACL_NODES {
            return Err(ServiceError::invalid_argument(format!(
                "an account holds ACLs on at most {MAX_ACL_NODES} nodes"
            )));
        }
        t.nodes.insert(rel.to_string(), row);
    }
    Ok(())
}

/// The `acl` fields of a batch write, stored in one change before anything is written (as a
/// single write's are, so no node is ever readable without its ACL), with each node's row as
/// it was, so [`StagedRows::settle`] can put back the rows of nodes the batch did not write.
#[derive(Debug, Default)]
pub struct StagedRows {
    account: String,
    before: Vec<(String, crate::storage::StorePath, Option<NodeAcl>)>,
}

/// Stage the rows of `specs` (nodes of `account`; every principal must exist): one
/// compare-and-swap and one announcement for the whole batch.
pub fn stage_many(
    cx: &OpCtx<'_>,
    account: &str,
    specs: &[(VikingUri, AclSpec)],
) -> ServiceResult<StagedRows> {
    if specs.is_empty() {
        return Ok(StagedRows::default());
    }
    let mut targets = Vec::with_capacity(specs.len());
    let mut named = Vec::new();
    for (uri, spec) in specs {
        targets.push((target_rel(uri)?, uri.store_path().clone(), spec));
        named.extend(spec.entries.iter().flatten().cloned());
    }
    check_principals(cx.storage, account, &named)?;
    let (before, _, _) = update_doc(cx.storage, &acl_path(account)?, |t: &mut AclFile| {
        let mut before = Vec::with_capacity(targets.len());
        for (rel, path, spec) in &targets {
            before.push((rel.clone(), path.clone(), t.nodes.get(rel).cloned()));
            apply_row(t, rel, &Change::Set((*spec).clone()))?;
        }
        Ok(Edit::Write(before))
    })?;
    announce(cx, account);
    Ok(StagedRows {
        account: account.to_string(),
        before,
    })
}

impl StagedRows {
    /// After the batch: nodes it did not write (conflicts, or not reached after an error)
    /// get their rows back as they were.
    pub fn settle(
        self,
        cx: &OpCtx<'_>,
        written: &[crate::storage::StorePath],
    ) -> ServiceResult<()> {
        let undo: Vec<_> = self
            .before
            .into_iter()
            .filter(|(_, path, _)| !written.contains(path))
            .collect();
        if undo.is_empty() {
            return Ok(());
        }
        update_doc(cx.storage, &acl_path(&self.account)?, |t: &mut AclFile| {
            for (rel, _, row) in &undo {
                match row {
                    Some(r) => t.nodes.insert(rel.clone(), r.clone()),
                    None => t.nodes.remove(rel),
                };
            }
            Ok(Edit::Write(()))
        })?;
        announce(cx, &self.account);
        Ok(())
    }
}

fn report(eff: Effective, uri: &VikingUri) -> Value {
    eff.report(&uri.uri())
}

/// Rows at or below `rel` (`""`: all).
fn rows_under<'a>(t: &'a AclFile, rel: &'a str) -> impl Iterator<Item = &'a String> + 'a {
    t.nodes
        .keys()
        .filter(move |k| rel.is_empty() || *k == rel || k.starts_with(&format!("{rel}/")))
}

/// Before a move of `from` to `to`: the rows of `from`'s subtree are copied onto `to`'s
/// (replacing any left there), so the moved nodes are never readable without their ACLs,
/// even if the process dies mid-move. Call [`after_move`] with the outcome.
pub fn before_move(storage: &dyn Storage, from: &VikingUri, to: &VikingUri) -> ServiceResult<()> {
    let (Some(src), Some(dst)) = (rel_path(from), rel_path(to)) else {
        return Ok(());
    };
    edit_table(storage, from, |t| {
        let moved: Vec<(String, NodeAcl)> = rows_under(t, &src)
            .map(|k| (format!("{dst}{}", &k[src.len()..]), t.nodes[k].clone()))
            .collect();
        let stale: Vec<String> = rows_under(t, &dst).cloned().collect();
        if moved.is_empty() && stale.is_empty() {
            return false;
        }
        for k in stale {
            t.nodes.remove(&k);
        }
        t.nodes.extend(moved);
        true
    })
}

/// After a move: on success the source rows go; on failure the copies made by
/// [`before_move`] go (the target does not exist).
pub fn after_move(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
    moved: bool,
) -> ServiceResult<()> {
    let gone = if moved { from } else { to };
    after_remove(storage, gone)
}

/// After `uri` was removed: its subtree's rows go (a node created there later starts with
/// its parent's permissions, as in 0.5.2).
pub fn after_remove(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<()> {
    let Some(rel) = rel_path(uri) else {
        return Ok(());
    };
    if rel.is_empty() {
        return Ok(());
    }
    edit_table(storage, uri, |t| {
        let gone: Vec<String> = rows_under(t, &rel).cloned().collect();
        for k in &gone {
            t.nodes.remove(k);
        }
        !gone.is_empty()
    })
}

/// The rows of a subtree, as they were before a change (`take_rows`, `seal_node`), so a
/// failed operation can put them back with [`put_back`].
#[derive(Debug, Default)]
pub struct SavedRows {
    account: String,
    rel: Option<String>,
    rows: Vec<(String, NodeAcl)>,
}

/// `uri` is about to receive other content in place (a WebDAV MOVE onto an existing file):
/// until [`before_move`] gives it the source's rows, only ADMIN may read it — neither the old
/// content under the source's rows nor the new content under the old rows is ever readable
/// by someone the final rows would refuse. Nothing is sealed when neither node has a row
/// (then nothing differs). Returns the rows it replaced, for [`put_back`] on failure.
pub fn seal_node(
    storage: &dyn Storage,
    from: &VikingUri,
    to: &VikingUri,
) -> ServiceResult<SavedRows> {
    let (Some(src), Some(dst)) = (rel_path(from), rel_path(to)) else {
        return Ok(SavedRows::default());
    };
    let mut saved = Vec::new();
    edit_table(storage, to, |t| {
        saved = rows_under(t, &dst)
            .map(|k| (k.clone(), t.nodes[k].clone()))
            .collect();
        if saved.is_empty() && rows_under(t, &src).next().is_none() {
            return false;
        }
        for (k, _) in &saved {
            t.nodes.remove(k);
        }
        let seal = NodeAcl {
            acl_mode: Some(Mode::Restricted),
            entries: Vec::new(),
        };
        t.nodes.insert(dst.clone(), seal);
        true
    })?;
    Ok(SavedRows {
        account: account_of(to),
        rel: Some(dst),
        rows: saved,
    })
}

/// `uri`'s tree is about to be replaced whole (a pack import with overwrite): its rows
/// become one seal on `uri` (restricted, no grants: ADMIN only) until [`take_rows`] drops it
/// after the replacement. Returns the rows it replaced, for [`put_back`]. Nothing is sealed
/// when the subtree has no rows, or at the resources root (its ACL is fixed).
pub fn seal_subtree(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<SavedRows> {
    let Some(rel) = rel_path(uri).filter(|r| !r.is_empty()) else {
        return Ok(SavedRows::default());
    };
    let mut saved = Vec::new();
    edit_table(storage, uri, |t| {
        saved = rows_under(t, &rel)
            .map(|k| (k.clone(), t.nodes[k].clone()))
            .collect();
        if saved.is_empty() {
            return false;
        }
        for (k, _) in &saved {
            t.nodes.remove(k);
        }
        let seal = NodeAcl {
            acl_mode: Some(Mode::Restricted),
            entries: Vec::new(),
        };
        t.nodes.insert(rel.clone(), seal);
        true
    })?;
    Ok(SavedRows {
        account: account_of(uri),
        rel: Some(rel),
        rows: saved,
    })
}

/// Remove (and return) the rows of `uri`'s subtree: its content was moved out of reach (an
/// import about to publish a new tree in its place). `viking://resources` itself takes every
/// row of the account.
pub fn take_rows(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<SavedRows> {
    let Some(rel) = rel_path(uri) else {
        return Ok(SavedRows::default());
    };
    let mut saved = Vec::new();
    edit_table(storage, uri, |t| {
        saved = rows_under(t, &rel)
            .map(|k| (k.clone(), t.nodes[k].clone()))
            .collect();
        for (k, _) in &saved {
            t.nodes.remove(k);
        }
        !saved.is_empty()
    })?;
    Ok(SavedRows {
        account: account_of(uri),
        rel: Some(rel),
        rows: saved,
    })
}

/// The rows of `uri`'s subtree as they stand (nothing changes): what
/// [`keep_where_rewritten`] gives back after the subtree is replaced by a copy.
pub fn rows_of(storage: &dyn Storage, uri: &VikingUri) -> ServiceResult<SavedRows> {
    let Some(rel) = rel_path(uri).filter(|r| !r.is_empty()) else {
        return Ok(SavedRows::default());
    };
    let mut saved = Vec::new();
    edit_table(storage, uri, |t| {
        saved = rows_under(t, &rel)
            .map(|k| (k.clone(), t.nodes[k].clone()))
            .collect();
        false
    })?;
    Ok(SavedRows {
        account: account_of(uri),
        rel: Some(rel),
        rows: saved,
    })
}

/// A copy is about to write `saved`'s subtree again (a WebDAV COPY onto an existing target,
/// already removed): one seal row there (restricted, no grants: ADMIN only) until
/// [`keep_where_rewritten`], so the new content is never readable under the parent's
/// permissions by someone the kept rows refuse. Nothing to seal when the target had no rows.
pub fn seal_for_rewrite(storage: &dyn Storage, saved: &SavedRows) -> ServiceResult<()> {
    let Some(rel) = saved.rel.clone().filter(|_| !saved.rows.is_empty()) else {
        return Ok(());
    };
    edit_account_table(storage, &saved.account, |t| {
        let seal = NodeAcl {
            acl_mode: Some(Mode::Restricted),
            entries: Vec::new(),
        };
        t.nodes.insert(rel.clone(), seal);
        true
    })
}

/// After a copy replaced `to`'s subtree (whose rows were `saved`): the rows come back on the
/// nodes the copy wrote again (0.5.2 keeps an overwritten copy target's ACL), the seal goes,
/// and rows of nodes that are gone stay gone.
pub fn keep_where_rewritten(
    storage: &dyn Storage,
    to: &VikingUri,
    saved: SavedRows,
) -> ServiceResult<()> {
    let Some(rel) = saved.rel else {
        return Ok(());
    };
    if saved.rows.is_empty() {
        return Ok(());
    }
    let base = to.store_path().as_str();
    let mut kept = Vec::new();
    for (k, row) in saved.rows {
        let node = StorePath::parse(&format!("{base}{}", &k[rel.len()..]))?;
        if storage.stat(&node)?.is_some() {
            kept.push((k, row));
        }
    }
    edit_account_table(storage, &saved.account, |t| {
        let stale: Vec<String> = rows_under(t, &rel).cloned().collect();
        for k in stale {
            t.nodes.remove(&k);
        }
        t.nodes.extend(kept.iter().cloned());
        true
    })
}

/// Undo [`take_rows`] / [`seal_node`]: the subtree's rows become what was saved.
pub fn put_back(storage: &dyn Storage, saved: SavedRows) -> ServiceResult<()> {
    let Some(rel) = saved.rel else {
        return Ok(());
    };
    edit_account_table(storage, &saved.account, |t| {
        let stale: Vec<String> = rows_under(t, &rel).cloned().collect();
        if stale.is_empty() && saved.rows.is_empty() {
            return false;
        }
        for k in stale {
            t.nodes.remove(&k);
        }
        t.nodes.extend(saved.rows.iter().cloned());
        true
    })
}

/// After nodes of `account` were removed by account-relative storage paths
/// (`resources/a/b.md`, as a snapshot restore names them): the rows at and below each go, in
/// one change. Paths outside `resources/` have no rows.
pub fn forget_account_paths(
    storage: &dyn Storage,
    account: &str,
    paths: &[String],
) -> ServiceResult<()> {
    let rels: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.strip_prefix("resources/"))
        .filter(|r| !r.is_empty())
        .collect();
    if rels.is_empty() {
        return Ok(());
    }
    edit_account_table(storage, account, |t| {
        let gone: Vec<String> = rels
            .iter()
            .flat_map(|r| rows_under(t, r).cloned().collect::<Vec<_>>())
            .collect();
        for k in &gone {
            t.nodes.remove(k);
        }
        !gone.is_empty()
    })
}

/// Compare-and-swap `edit` (true = changed) on the table of `uri`'s account, announcing a
/// change. A missing table is not created.
fn edit_table(
    storage: &dyn Storage,
    uri: &VikingUri,
    edit: impl FnMut(&mut AclFile) -> bool,
) -> ServiceResult<()> {
    edit_account_table(storage, &account_of(uri), edit)
}

/// [`edit_table`] by account id.
fn edit_account_table(
    storage: &dyn Storage,
    account: &str,
    mut edit: impl FnMut(&mut AclFile) -> bool,
) -> ServiceResult<()> {
    let account = account.to_string();
    let path = acl_path(&account)?;
    if storage.stat(&path)?.is_none() {
        return Ok(());
    }
    let (changed, _, _) = update_doc(storage, &path, |t: &mut AclFile| {
        Ok(if edit(t) {
            Edit::Write(true)
        } else {
            Edit::Keep(false)
        })
    })?;
    if changed {
        with_installed_sink(storage, |cx| announce(cx, &account));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, Role};
    use crate::storage::acl::{AclView, Level};
    use crate::storage::backend::local::LocalStorage;
    use crate::storage::registry::model::{AccountEntry, UserEntry};
    use crate::storage::registry::store::{update_accounts, update_users};
    use crate::storage::registry::NoSink;
    use serde_json::json;

    fn setup() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        update_accounts(&s, |f| {
            f.accounts.insert("acme".into(), AccountEntry::default());
            Ok(Edit::Write(()))
        })
        .unwrap();
        update_users(&s, "acme", |f| {
            for u in ["bob", "carol"] {
                f.users.insert(u.into(), UserEntry::default());
            }
            Ok(Edit::Write(()))
        })
        .unwrap();
        (dir, s)
    }

    fn uri(raw: &str) -> VikingUri {
        let who = Identity {
            role: Role::Admin,
            account: "acme".into(),
            user: "alice".into(),
        };
        crate::storage::uri::parse(raw, &who).unwrap()
    }

    fn spec(v: Value) -> Change {
        Change::Set(AclSpec::from_json(&v).unwrap())
    }

    fn view(s: &LocalStorage, user: &str) -> AclView {
        AclView::new(Arc::new(read_access(s, "acme").unwrap()), user, false)
    }

    #[test]
    fn rows_follow_moves_and_go_with_removals() {
        let (_d, s) = setup();
        let cx = OpCtx {
            storage: &s,
            sink: &NoSink,
            hashing: false,
        };
        s.write(
            &uri("viking://resources/a/b/f.md").store_path().clone(),
            b"x",
        )
        .unwrap();
        let restricted = json!({"acl_mode": "restricted", "entries": [{"principal": "user:carol", "level": "read"}]});
        change(&cx, &uri("viking://resources/a/b"), spec(restricted), true).unwrap();
        assert!(!view(&s, "bob").allows(&uri("viking://resources/a/b/f.md"), Level::Read));
        // Unknown principals and missing targets change nothing.
        let ghost = json!({"entries": [{"principal": "user:ghost", "level": "read"}]});
        assert!(change(&cx, &uri("viking://resources/a/b"), spec(ghost), true).is_err());
        let missing = change(
            &cx,
            &uri("viking://resources/none"),
            spec(json!({"acl_mode": "restricted"})),
            true,
        );
        assert_eq!(missing.unwrap_err().code, crate::error::ErrorCode::NotFound);
        let (from, to) = (uri("viking://resources/a"), uri("viking://resources/z"));
        before_move(&s, &from, &to).unwrap();
        s.rename(from.store_path(), to.store_path()).unwrap();
        after_move(&s, &from, &to, true).unwrap();
        let t = read_access(&s, "acme").unwrap().acl;
        assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["z/b"]);
        assert!(!view(&s, "bob").allows(&uri("viking://resources/z/b/f.md"), Level::Read));
        assert!(view(&s, "carol").allows(&uri("viking://resources/z/b/f.md"), Level::Read));
        // A failed move drops the copies only.
        before_move(&s, &to, &uri("viking://resources/q")).unwrap();
        after_move(&s, &to, &uri("viking://resources/q"), false).unwrap();
        let t = read_access(&s, "acme").unwrap().acl;
        assert_eq!(t.nodes.keys().collect::<Vec<_>>(), ["z/b"]);
        after_remove(&s, &uri("viking://resources/z")).unwrap();
        assert!(read_access(&s, "acme").unwrap().acl.nodes.is_empty());
    }

    #[test]
    fn grant_revoke_clear_and_bounds() {
        let (_d, s) = setup();
        let cx = OpCtx {
            storage: &s,
            sink: &NoSink,
            hashing: false,
        };
        let u = uri("viking://resources/t");
        s.mkdir(u.store_path()).unwrap();
        let g = |p: &str, l| {
            Change::Grant(Entry {
                principal: p.into(),
                level: l,
            })
        };
        change(&cx, &u, g("user:bob", Level::Read), true).unwrap();
        let r = change(&cx, &u, g("user:bob", Level::Manage), true).unwrap();
        assert_eq!(
            r["direct_entries"],
            json!([{"principal": "user:bob", "level": "manage"}])
        );
        let r = change(&cx, &u, Change::Revoke("user:bob".into()), true).unwrap();
        assert_eq!(r["direct_entries"], json!([]));
        assert!(read_access(&s, "acme").unwrap().acl.nodes.is_empty());
        let many: Vec<Value> = (0..=MAX_ENTRIES_PER_NODE)
            .map(|i| json!({"principal": format!("user:u{i}"), "level": "read"}))
            .collect();
        assert!(AclSpec::from_json(&json!({"entries": many})).is_err());
        assert!(AclSpec::from_json(&json!({})).is_err());
        assert!(AclSpec::from_json(&json!({"acl_mode": "none"})).is_err());
        assert!(change(&cx, &uri("viking://resources"), Change::Clear, false).is_err());
        assert!(change(&cx, &uri("viking://agent/x"), Change::Clear, false).is_err());
    }
}
