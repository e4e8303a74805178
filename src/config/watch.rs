//! Watches (`[watch]`): URL resources re-fetched on a schedule (issue #24).

use serde::{Deserialize, Serialize};

use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchSettings {
    /// The shortest interval a watch runs at, in minutes (fractions allowed). A shorter
    /// `watch_interval` is accepted and raised to it; the answer says so (`interval_raised`).
    pub min_interval_minutes: f64,
    /// How often each instance reads every account's watches, to learn of watches created or
    /// changed on other instances (changes made here are seen at once).
    pub scan_interval_secs: u64,
    /// Most watches one account may hold (more: 429).
    pub max_per_account: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            min_interval_minutes: 1.0,
            scan_interval_secs: 30,
            max_per_account: 1000,
        }
    }
}

impl WatchSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.min_interval_minutes.is_finite()
            || self.min_interval_minutes <= 0.0
            || self.min_interval_minutes > 525_600.0
        {
            return Err(ConfigError::Invalid(
                "watch.min_interval_minutes must be > 0 and at most one year (525600)".into(),
            ));
        }
        if self.scan_interval_secs == 0 || self.max_per_account == 0 {
            return Err(ConfigError::Invalid(
                "watch.scan_interval_secs and watch.max_per_account must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
