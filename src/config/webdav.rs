//! WebDAV (`[webdav]`, issue #24): lock timeouts and the largest PUT.

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebdavSettings {
    /// Longest lock lifetime granted (seconds): a `Timeout` asking more, `Infinite` or none
    /// gets this. Expiry is by the wall clock in the stored lock (RFC 4918 timeouts are
    /// advisory; clients refresh well before).
    pub max_lock_timeout_secs: u64,
    /// Largest WebDAV PUT body (bytes; more: 413). Bodies above `server.max_body_bytes` are
    /// streamed to a staging file in pieces charged to the body budget, never held whole in
    /// memory on an HTTP worker.
    pub max_put_bytes: u64,
}

impl Default for WebdavSettings {
    fn default() -> Self {
        WebdavSettings {
            max_lock_timeout_secs: 3600,
            max_put_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl WebdavSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=7 * 24 * 3600).contains(&self.max_lock_timeout_secs) {
            return Err(ConfigError::Invalid(
                "webdav.max_lock_timeout_secs must be between 1 and 604800".into(),
            ));
        }
        if self.max_put_bytes == 0 {
            return Err(ConfigError::Invalid(
                "webdav.max_put_bytes must be positive".into(),
            ));
        }
        Ok(())
    }
}
