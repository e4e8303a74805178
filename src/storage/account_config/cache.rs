//! [`AccountConfigs`]: this process's copy of every account's stored configuration, written by
//! the AuthActor whenever it applies a registry snapshot (so it is exactly as fresh as the key
//! map: within `auth.refresh_interval_ms` of any request that resolved a key) and read by
//! anything that needs an account's effective settings.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::schema::{stored_bool, stored_int};
use super::stored::StoredConfig;
use crate::config::MemorySettings;

/// What an account gets for a setting it does not override (the server's configuration).
#[derive(Debug, Clone, Default)]
pub struct ClusterDefaults {
    pub audit_enabled: bool,
    pub memory: MemorySettings,
}

/// An account's effective settings: its overrides over the cluster's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// ACLs apply under `viking://resources` (default off, as 0.5.2).
    pub acl_enabled: bool,
    /// Longship extension: listings drop denied nodes instead of showing placeholders.
    pub acl_hide_denied: bool,
    /// Mutations of the account are written to the audit log.
    pub audit_enabled: bool,
    /// Memory extraction settings for the account's commits.
    pub memory: MemorySettings,
}

impl Effective {
    /// The shape the configuration routes show (`effective`), nested as the stored document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "acl": {"enabled": self.acl_enabled, "hide_denied": self.acl_hide_denied},
            "audit": {"enabled": self.audit_enabled},
            "memory": {
                "max_input_tokens": self.memory.max_input_tokens,
                "candidates": self.memory.candidates,
                "repair_attempts": self.memory.repair_attempts,
                "backlog_limit": self.memory.backlog_limit,
            },
        })
    }

    pub fn resolve(doc: Option<&StoredConfig>, defaults: &ClusterDefaults) -> Self {
        let b = |s, f| doc.and_then(|d| stored_bool(d, s, f));
        let n = |f| doc.and_then(|d| stored_int(d, "memory", f));
        let base = &defaults.memory;
        Effective {
            acl_enabled: b("acl", "enabled").unwrap_or(false),
            acl_hide_denied: b("acl", "hide_denied").unwrap_or(false),
            audit_enabled: b("audit", "enabled").unwrap_or(defaults.audit_enabled),
            memory: MemorySettings {
                max_input_tokens: n("max_input_tokens").unwrap_or(base.max_input_tokens),
                candidates: n("candidates").map_or(base.candidates, |v| v as usize),
                repair_attempts: n("repair_attempts").map_or(base.repair_attempts, |v| v as u32),
                backlog_limit: n("backlog_limit").map_or(base.backlog_limit, |v| v as usize),
                ..base.clone()
            },
        }
    }
}

/// Every account's stored configuration, shared between the AuthActor (the one writer) and
/// readers. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct AccountConfigs {
    inner: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    defaults: ClusterDefaults,
    accounts: RwLock<HashMap<String, Arc<StoredConfig>>>,
}

impl AccountConfigs {
    pub fn new(defaults: ClusterDefaults) -> Self {
        AccountConfigs {
            inner: Arc::new(Shared {
                defaults,
                accounts: RwLock::default(),
            }),
        }
    }

    /// The effective settings of `account` (defaults for an account with none stored, or one
    /// this instance does not know).
    pub fn effective(&self, account: &str) -> Effective {
        let doc = self.stored(account);
        Effective::resolve(doc.as_deref(), &self.inner.defaults)
    }

    /// Whether mutations of `account` are audited (the hot path of every mutation: no copy).
    pub fn audit_enabled(&self, account: &str) -> bool {
        let map = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(account)
            .and_then(|d| stored_bool(d, "audit", "enabled"))
            .unwrap_or(self.inner.defaults.audit_enabled)
    }

    /// The stored document of `account`, as this instance last loaded it.
    pub fn stored(&self, account: &str) -> Option<Arc<StoredConfig>> {
        let map = self
            .inner
            .accounts
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(account).cloned()
    }

    pub fn defaults(&self) -> &ClusterDefaults {
        &self.inner.defaults
    }

    /// Install `account`'s stored document (`None`: the account is gone).
    pub fn set(&self, account: &str, doc: Option<Arc<StoredConfig>>) {
        let mut map = self
            .inner
            .accounts
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match doc {
            Some(d) => map.insert(account.to_string(), d),
            None => map.remove(account),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overrides_over_defaults() {
        let configs = AccountConfigs::new(ClusterDefaults {
            audit_enabled: true,
            memory: MemorySettings::default(),
        });
        let e = configs.effective("a");
        assert!(!e.acl_enabled && !e.acl_hide_denied && e.audit_enabled);
        let doc = json!({"acl": {"enabled": true}, "audit": {"enabled": false},
                         "memory": {"candidates": 3, "backlog_limit": "x"}});
        configs.set("a", Some(Arc::new(doc.as_object().unwrap().clone())));
        let e = configs.effective("a");
        assert!(e.acl_enabled && !e.audit_enabled);
        assert_eq!(e.memory.candidates, 3);
        assert_eq!(
            e.memory.backlog_limit,
            MemorySettings::default().backlog_limit
        );
        assert!(!configs.effective("b").acl_enabled);
        configs.set("a", None);
        assert!(!configs.effective("a").acl_enabled);
    }
}
