//! Account groups (0.5.2's admin group routes): `<account>/_system/groups.json`, users only.
//! Changes are compare-and-swapped and announced like ACL changes, so membership reaches
//! every instance within the auth refresh bound.

use serde_json::{json, Value};

use super::model::{Group, GroupsFile, MAX_GROUPS, MAX_GROUP_MEMBERS};
use super::store::announce;
use crate::error::{ServiceError, ServiceResult};
use crate::identity::{validate_id, IdKind};
use crate::storage::registry::store::{groups_path, read_doc, read_users, update_doc, Edit};
use crate::storage::registry::users::active_account;
use crate::storage::registry::{user_not_found, OpCtx};

fn group_not_found(group: &str) -> ServiceError {
    ServiceError::not_found("group", group, format!("Group not found: {group}"))
}

fn summary(id: &str, g: &Group) -> Value {
    let mut members = g.members.clone();
    members.sort();
    members.dedup();
    json!({"group_id": id, "member_count": members.len()})
}

fn edit<T>(
    cx: &OpCtx<'_>,
    account: &str,
    f: impl FnMut(&mut GroupsFile) -> ServiceResult<Edit<T>>,
) -> ServiceResult<T> {
    active_account(cx.storage, account)?;
    let (out, _, _) = update_doc(cx.storage, &groups_path(account)?, f)?;
    Ok(out)
}

pub fn create(cx: &OpCtx<'_>, account: &str, group: &str) -> ServiceResult<Value> {
    validate_id(IdKind::Group, group)?;
    let out = edit(cx, account, |f| {
        if f.groups.contains_key(group) {
            return Err(ServiceError::already_exists(
                "group",
                group,
                format!("Group already exists: {group}"),
            ));
        }
        if f.groups.len() >= MAX_GROUPS {
            return Err(ServiceError::invalid_argument(format!(
                "an account holds at most {MAX_GROUPS} groups"
            )));
        }
        f.groups.insert(group.to_string(), Group::default());
        Ok(Edit::Write(summary(group, &Group::default())))
    })?;
    announce(cx, account);
    Ok(out)
}

pub fn list(cx: &OpCtx<'_>, account: &str) -> ServiceResult<Value> {
    active_account(cx.storage, account)?;
    let (f, _): (GroupsFile, _) = read_doc(cx.storage, &groups_path(account)?)?;
    Ok(Value::Array(
        f.groups.iter().map(|(id, g)| summary(id, g)).collect(),
    ))
}

pub fn delete(cx: &OpCtx<'_>, account: &str, group: &str) -> ServiceResult<()> {
    validate_id(IdKind::Group, group)?;
    edit(cx, account, |f| {
        f.groups
            .remove(group)
            .ok_or_else(|| group_not_found(group))?;
        Ok(Edit::Write(()))
    })?;
    announce(cx, account);
    Ok(())
}

pub fn members(cx: &OpCtx<'_>, account: &str, group: &str) -> ServiceResult<Vec<String>> {
    validate_id(IdKind::Group, group)?;
    active_account(cx.storage, account)?;
    let (f, _): (GroupsFile, _) = read_doc(cx.storage, &groups_path(account)?)?;
    let g = f.groups.get(group).ok_or_else(|| group_not_found(group))?;
    let mut m = g.members.clone();
    m.sort();
    m.dedup();
    Ok(m)
}

/// 0.5.2: adding a member already there answers `added: true` too.
pub fn add_member(cx: &OpCtx<'_>, account: &str, group: &str, user: &str) -> ServiceResult<bool> {
    validate_id(IdKind::Group, group)?;
    validate_id(IdKind::User, user)?;
    active_account(cx.storage, account)?;
    if !read_users(cx.storage, account)?.0.users.contains_key(user) {
        return Err(user_not_found(user));
    }
    let changed = edit(cx, account, |f| {
        let g = f
            .groups
            .get_mut(group)
            .ok_or_else(|| group_not_found(group))?;
        if g.members.iter().any(|m| m == user) {
            return Ok(Edit::Keep(false));
        }
        if g.members.len() >= MAX_GROUP_MEMBERS {
            return Err(ServiceError::invalid_argument(format!(
                "a group holds at most {MAX_GROUP_MEMBERS} members"
            )));
        }
        g.members.push(user.to_string());
        g.members.sort();
        Ok(Edit::Write(true))
    })?;
    if changed {
        announce(cx, account);
    }
    Ok(true)
}

pub fn remove_member(
    cx: &OpCtx<'_>,
    account: &str,
    group: &str,
    user: &str,
) -> ServiceResult<bool> {
    validate_id(IdKind::Group, group)?;
    validate_id(IdKind::User, user)?;
    let removed = edit(cx, account, |f| {
        let g = f
            .groups
            .get_mut(group)
            .ok_or_else(|| group_not_found(group))?;
        let before = g.members.len();
        g.members.retain(|m| m != user);
        Ok(if g.members.len() != before {
            Edit::Write(true)
        } else {
            Edit::Keep(false)
        })
    })?;
    if removed {
        announce(cx, account);
    }
    Ok(removed)
}
