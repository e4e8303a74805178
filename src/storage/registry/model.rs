//! The registry files in the shapes of spec §4.2 / §4.3. Every struct keeps the fields it does
//! not know in `extra`, so a file written by OpenViking (or a newer Longship) survives our
//! rewrites; maps keep their on-disk order (registration order, used by A2/A5).

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `/local/_system/accounts.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountsFile {
    #[serde(default)]
    pub accounts: IndexMap<String, AccountEntry>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One account of `accounts.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountEntry {
    /// UTC ISO-8601 with microseconds; kept as found (OpenViking files are not re-formatted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Value>,
    /// Present only while an account deletion (A3) is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A pending deletion and who may poll its task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    #[serde(default)]
    pub task_id: String,
    #[serde(default)]
    pub owner_account_id: String,
    #[serde(default)]
    pub owner_user_id: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `/local/{account}/_system/users.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsersFile {
    #[serde(default)]
    pub users: IndexMap<String, UserEntry>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One user of `users.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserEntry {
    #[serde(default = "default_role")]
    pub role: String,
    /// The plaintext key, its Argon2 PHC string, or `""` (revoked: never matches).
    #[serde(default)]
    pub key: String,
    /// First 8 characters of the plaintext key; only beside a hashed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_role() -> String {
    "user".into()
}

impl UserEntry {
    /// The role as the API shows it; anything but `admin` is treated as `user`.
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }

    /// A key that can still authenticate (not empty, not being deleted).
    pub fn has_usable_key(&self) -> bool {
        !self.key.is_empty() && self.deletion.is_none()
    }

    /// The 8-character prefix shown by A5: stored beside a hash, else cut from the plaintext.
    pub fn shown_prefix(&self) -> Option<String> {
        if self.key.is_empty() {
            return None;
        }
        match &self.key_prefix {
            Some(p) => Some(p.clone()),
            None if super::super::keys::is_hashed(&self.key) => None,
            None => Some(super::super::keys::prefix(&self.key)),
        }
    }
}

/// Registry JSON as upstream writes it: pretty-printed with 2-space indent, non-ASCII as-is.
pub fn to_pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec_pretty(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_order_survive_a_round_trip() {
        let raw = r#"{
  "users": {
    "zed": {"role": "admin", "key": "k1", "color": "blue"},
    "amy": {"role": "user", "key": "$argon2id$x", "key_prefix": "YWNtZQ.Y",
            "deletion": {"task_id": "t", "owner_account_id": "_system", "owner_user_id": "root", "why": 1}}
  },
  "version": 3
}"#;
        let f: UsersFile = serde_json::from_str(raw).unwrap();
        let names: Vec<&String> = f.users.keys().collect();
        assert_eq!(names, ["zed", "amy"]);
        let out: Value = serde_json::from_slice(&to_pretty(&f).unwrap()).unwrap();
        assert_eq!(out["version"], 3);
        assert_eq!(out["users"]["zed"]["color"], "blue");
        assert_eq!(out["users"]["amy"]["deletion"]["why"], 1);
        assert!(out["users"]["zed"].get("key_prefix").is_none());
        let text = String::from_utf8(to_pretty(&f).unwrap()).unwrap();
        assert!(text.starts_with("{\n  \"users\": {\n    \"zed\""), "{text}");
        assert_eq!(f.users["amy"].shown_prefix().as_deref(), Some("YWNtZQ.Y"));
        assert_eq!(f.users["zed"].shown_prefix().as_deref(), Some("k1"));
    }

    #[test]
    fn created_at_format() {
        let s = crate::time::iso_micros_now();
        assert_eq!(s.len(), "2026-02-12T10:00:00.123456+00:00".len(), "{s}");
        assert!(s.ends_with("+00:00"));
    }
}
