//! The AuthActor's in-memory registry: accounts → users → stored keys, plus the prefix index
//! for legacy 64-hex keys. Pure data and lookups; no I/O, no Argon2 (the actor hands those to
//! the storage pool).
//!
//! Lookups cost the same with 10 or 100k users: a new-format key names its (account, user), so
//! it is two hash-map probes and one constant-time compare; only legacy keys use the prefix
//! index, whose buckets hold the few users sharing 8 random hex characters.

use std::collections::HashMap;

use crate::identity::{Identity, Role};
use crate::storage::account_config::AccountConfigs;
use crate::storage::keys::{self, HashCandidate, KeyShape};
use crate::storage::registry::model::UserEntry;
use crate::storage::registry::AccountSnapshot;
use crate::storage::Version;

/// A stored key as the resolver needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKey {
    /// Revoked or never set: matches nothing.
    Empty,
    Plain(String),
    Hashed {
        phc: String,
        prefix: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct UserState {
    pub role: Role,
    pub key: StoredKey,
    pub deleting: bool,
    /// Fingerprint of the presented key that last passed Argon2 for this stored hash: the
    /// verification cache. It lives in the entry, so any change of the entry drops it.
    pub verified: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Default)]
pub struct AccountState {
    pub deleting: bool,
    pub users: HashMap<String, UserState>,
    /// Version of users.json this state was read at (`None`: no file), for probes.
    pub users_version: Option<Version>,
    /// Versions of acl.json, groups.json and setting.json as loaded (`None`: unknown), for
    /// the sweep.
    pub side: Option<crate::storage::registry::load::SideVersions>,
}

/// The outcome of an in-memory lookup.
#[derive(Debug)]
pub enum Lookup {
    /// The identity, and whether it came from the Argon2 verification cache.
    Found(Identity, bool),
    /// Hashed keys whose 8-character prefix matches; one of them may verify.
    NeedsArgon(Vec<HashCandidate>),
    Miss,
}

#[derive(Default)]
pub struct KeyIndex {
    accounts: HashMap<String, AccountState>,
    /// First 8 characters → (account, user), for stored legacy (64-hex) keys only.
    legacy: HashMap<String, Vec<(String, String)>>,
    /// Accounts' stored configuration, published with each snapshot applied here.
    configs: AccountConfigs,
}

fn role_of(entry: &UserEntry) -> Role {
    if entry.is_admin() {
        Role::Admin
    } else {
        Role::User
    }
}

fn stored_key(entry: &UserEntry) -> StoredKey {
    if entry.key.is_empty() {
        StoredKey::Empty
    } else if keys::is_hashed(&entry.key) {
        StoredKey::Hashed {
            phc: entry.key.clone(),
            prefix: entry.key_prefix.clone(),
        }
    } else {
        StoredKey::Plain(entry.key.clone())
    }
}

/// The prefix under which a stored key is reachable by a legacy (prefix-only) lookup.
fn legacy_prefix(key: &StoredKey) -> Option<String> {
    let is_hex8 = |p: &str| {
        p.len() == keys::PREFIX_LEN && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match key {
        StoredKey::Plain(k) if keys::shape(k) == KeyShape::Legacy => Some(keys::prefix(k)),
        StoredKey::Hashed {
            prefix: Some(p), ..
        } if is_hex8(p) => Some(p.clone()),
        _ => None,
    }
}

fn identity(account: &str, user: &str, role: Role) -> Identity {
    Identity {
        role,
        account: account.to_string(),
        user: user.to_string(),
    }
}

impl KeyIndex {
    pub fn new(configs: AccountConfigs) -> Self {
        KeyIndex {
            configs,
            ..KeyIndex::default()
        }
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn user_count(&self) -> usize {
        self.accounts.values().map(|a| a.users.len()).sum()
    }

    pub fn account(&self, id: &str) -> Option<&AccountState> {
        self.accounts.get(id)
    }

    pub fn account_ids(&self) -> impl Iterator<Item = (&String, &AccountState)> {
        self.accounts.iter()
    }

    fn unindex(&mut self, account: &str) {
        let Some(state) = self.accounts.get(account) else {
            return;
        };
        for (user, u) in &state.users {
            if let Some(p) = legacy_prefix(&u.key) {
                if let Some(bucket) = self.legacy.get_mut(&p) {
                    bucket.retain(|(a, x)| !(a == account && x == user));
                    if bucket.is_empty() {
                        self.legacy.remove(&p);
                    }
                }
            }
        }
    }

    /// Replace one account with its stored state (`None`: it no longer exists). Verification
    /// cache entries survive only for users whose stored hash is unchanged.
    pub fn replace_account(&mut self, id: &str, snapshot: Option<AccountSnapshot>) {
        self.unindex(id);
        let old = self.accounts.remove(id);
        // The enforcement point reads ACLs and groups from here (no I/O on its path).
        crate::storage::acl::directory().set(id, snapshot.as_ref().map(|s| s.access.clone()));
        let Some(snap) = snapshot else {
            self.configs.set(id, None);
            return;
        };
        if let Some(config) = snap.config {
            self.configs.set(id, Some(config));
        }
        let mut state = AccountState {
            deleting: snap.deletion.is_some(),
            users: HashMap::with_capacity(snap.users.users.len()),
            users_version: snap.users_version,
            side: snap.side,
        };
        for (user, entry) in snap.users.users {
            let key = stored_key(&entry);
            let verified = old
                .as_ref()
                .and_then(|o| o.users.get(&user))
                .filter(|o| o.key == key)
                .and_then(|o| o.verified);
            if let Some(p) = legacy_prefix(&key) {
                self.legacy
                    .entry(p)
                    .or_default()
                    .push((id.to_string(), user.clone()));
            }
            state.users.insert(
                user,
                UserState {
                    role: role_of(&entry),
                    key,
                    deleting: entry.deletion.is_some(),
                    verified,
                },
            );
        }
        self.accounts.insert(id.to_string(), state);
    }

    /// Replace everything except the accounts in `keep` (changed locally meanwhile).
    pub fn replace_all(&mut self, snapshots: Vec<AccountSnapshot>, keep: &[String]) {
        let stale: Vec<String> = self
            .accounts
            .keys()
            .filter(|id| !keep.contains(id))
            .cloned()
            .collect();
        let mut fresh: HashMap<String, AccountSnapshot> = snapshots
            .into_iter()
            .filter(|s| !keep.contains(&s.id))
            .map(|s| (s.id.clone(), s))
            .collect();
        for id in stale {
            let snap = fresh.remove(&id);
            self.replace_account(&id, snap);
        }
        for (id, snap) in fresh {
            self.replace_account(&id, Some(snap));
        }
    }

    fn usable<'a>(&'a self, account: &str, user: &str) -> Option<&'a UserState> {
        let acct = self.accounts.get(account)?;
        if acct.deleting {
            return None;
        }
        acct.users.get(user).filter(|u| !u.deleting)
    }

    /// Resolve `key` in memory (spec §2.4 step 3). `fingerprint` is the key's fast hash, used
    /// to recognise keys that already passed Argon2.
    pub fn lookup(&self, key: &str, shape: &KeyShape, fingerprint: &[u8; 32]) -> Lookup {
        let mut hashed = Vec::new();
        let mut check = |account: &str, user: &str, u: &UserState| -> Option<(Identity, bool)> {
            match &u.key {
                StoredKey::Empty => None,
                StoredKey::Plain(stored) => {
                    keys::ct_eq(stored, key).then(|| (identity(account, user, u.role), false))
                }
                StoredKey::Hashed { phc, prefix } => {
                    if u.verified.as_ref() == Some(fingerprint) {
                        return Some((identity(account, user, u.role), true));
                    }
                    let prefix_ok = prefix
                        .as_deref()
                        .is_none_or(|p| keys::ct_eq(p, &keys::prefix(key)));
                    if prefix_ok {
                        hashed.push(HashCandidate {
                            account: account.to_string(),
                            user: user.to_string(),
                            phc: phc.clone(),
                        });
                    }
                    None
                }
            }
        };
        match shape {
            KeyShape::Hinted { account, user } => {
                if let Some(u) = self.usable(account, user) {
                    if let Some((id, cached)) = check(account, user, u) {
                        return Lookup::Found(id, cached);
                    }
                }
            }
            KeyShape::Legacy => {
                if let Some(bucket) = self.legacy.get(&keys::prefix(key)) {
                    for (account, user) in bucket {
                        if let Some(u) = self.usable(account, user) {
                            if let Some((id, cached)) = check(account, user, u) {
                                return Lookup::Found(id, cached);
                            }
                        }
                    }
                }
            }
            KeyShape::Undecodable | KeyShape::Other => {}
        }
        if hashed.is_empty() {
            Lookup::Miss
        } else {
            Lookup::NeedsArgon(hashed)
        }
    }

    /// Record that `fingerprint` verified against (account, user)'s hash `phc`, if that is
    /// still the stored hash; returns the identity then.
    pub fn remember_verified(
        &mut self,
        account: &str,
        user: &str,
        phc: &str,
        fingerprint: [u8; 32],
    ) -> Option<Identity> {
        let acct = self.accounts.get_mut(account)?;
        if acct.deleting {
            return None;
        }
        let u = acct.users.get_mut(user).filter(|u| !u.deleting)?;
        match &u.key {
            StoredKey::Hashed { phc: current, .. } if current == phc => {
                u.verified = Some(fingerprint);
                Some(identity(account, user, u.role))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::registry::model::{Deletion, UsersFile};

    fn snap(id: &str, users: &[(&str, &str, &str)]) -> AccountSnapshot {
        let mut f = UsersFile::default();
        for (u, role, key) in users {
            f.users.insert(
                u.to_string(),
                UserEntry {
                    role: role.to_string(),
                    key: key.to_string(),
                    ..UserEntry::default()
                },
            );
        }
        AccountSnapshot {
            id: id.into(),
            deletion: None,
            users: f,
            users_version: None,
            access: Default::default(),
            config: None,
            side: None,
        }
    }

    fn find(ix: &KeyIndex, key: &str) -> Option<Identity> {
        match ix.lookup(key, &keys::shape(key), &keys::fingerprint(key)) {
            Lookup::Found(id, _) => Some(id),
            _ => None,
        }
    }

    #[test]
    fn new_format_legacy_and_revocation() {
        let k_bob = keys::new_key("acme", "bob", Some("s"));
        let legacy = "ab".repeat(32);
        let mut ix = KeyIndex::default();
        ix.replace_account(
            "acme",
            Some(snap(
                "acme",
                &[
                    ("bob", "user", &k_bob),
                    ("old", "admin", &legacy),
                    ("gone", "user", ""),
                ],
            )),
        );
        assert_eq!(find(&ix, &k_bob).unwrap().user, "bob");
        let old = find(&ix, &legacy).unwrap();
        assert_eq!((old.user.as_str(), old.role), ("old", Role::Admin));
        assert!(find(&ix, &"ab".repeat(31)).is_none());
        assert!(find(&ix, &keys::new_key("acme", "bob", Some("t"))).is_none());
        // A key naming another user does not match bob's stored key.
        let forged = format!("YWNtZQ.Z29uZQ.{}", k_bob.split('.').nth(2).unwrap());
        assert!(find(&ix, &forged).is_none());
        // Account marked deleting: every key dies.
        let mut s = snap("acme", &[("bob", "user", &k_bob)]);
        s.deletion = Some(Deletion::default());
        ix.replace_account("acme", Some(s));
        assert!(find(&ix, &k_bob).is_none());
        assert!(find(&ix, &legacy).is_none());
        ix.replace_account("acme", None);
        assert_eq!(ix.account_count(), 0);
        assert!(ix.legacy.is_empty());
    }

    #[test]
    fn hashed_keys_need_argon_until_remembered() {
        let key = keys::new_key("acme", "bob", None);
        let phc = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA".to_string();
        let mut f = snap("acme", &[]);
        f.users.users.insert(
            "bob".into(),
            UserEntry {
                role: "user".into(),
                key: phc.clone(),
                key_prefix: Some(keys::prefix(&key)),
                ..UserEntry::default()
            },
        );
        let mut ix = KeyIndex::default();
        ix.replace_account("acme", Some(f.clone()));
        let fp = keys::fingerprint(&key);
        assert!(matches!(
            ix.lookup(&key, &keys::shape(&key), &fp),
            Lookup::NeedsArgon(c) if c.len() == 1
        ));
        assert!(ix.remember_verified("acme", "bob", &phc, fp).is_some());
        assert!(find(&ix, &key).is_some());
        // Same stored hash: the cache survives a reload; a new hash drops it.
        ix.replace_account("acme", Some(f.clone()));
        assert!(find(&ix, &key).is_some());
        f.users.users["bob"].key = "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$b3RoZXI".into();
        ix.replace_account("acme", Some(f));
        assert!(find(&ix, &key).is_none());
        assert!(ix.remember_verified("acme", "bob", &phc, fp).is_none());
    }

    #[test]
    fn replace_all_keeps_locally_changed_accounts() {
        let mut ix = KeyIndex::default();
        ix.replace_account("a", Some(snap("a", &[("x", "user", "k1")])));
        ix.replace_account("b", Some(snap("b", &[])));
        ix.replace_all(vec![snap("c", &[])], &["a".to_string()]);
        assert!(ix.account("a").is_some());
        assert!(ix.account("b").is_none());
        assert!(ix.account("c").is_some());
    }
}
