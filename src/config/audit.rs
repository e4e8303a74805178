//! The audit log (`[audit]`): who changed what, when, with what outcome (issue #23).

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Whether mutations are recorded (an account's `audit.enabled` setting overrides it).
    pub enabled: bool,
    /// Group commit: entries are written in one batch at most this often, so a crash loses at
    /// most the entries of the last interval plus one storage write (bounded, ~1 s).
    pub flush_interval_ms: u64,
    /// Entries waiting for their batch; beyond it new entries are dropped and counted in
    /// /metrics (`longship_audit_dropped_total`), never blocking a request.
    pub queue_limit: usize,
    /// Days an entry is kept (0: forever); older segments are removed by a periodic sweep.
    pub retention_days: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            flush_interval_ms: 200,
            queue_limit: 65536,
            retention_days: 90,
        }
    }
}

impl AuditSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=1000).contains(&self.flush_interval_ms) {
            return Err(ConfigError::Invalid(
                "audit.flush_interval_ms must be between 10 and 1000".into(),
            ));
        }
        if self.queue_limit == 0 {
            return Err(ConfigError::Invalid(
                "audit.queue_limit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
