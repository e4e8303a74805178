//! The two timestamp spellings sessions use (spec §9.1).

use chrono::{SecondsFormat, Utc};

/// `.meta.json` timestamps: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn meta_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Message `created_at` and archive records: `2026-05-01T12:00:00.123456+00:00`.
pub fn iso_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// A listing's `mod_time`: RFC 3339 UTC to the second.
pub fn rfc3339_secs(t: std::time::SystemTime) -> String {
    chrono::DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let m = meta_now();
        assert!(m.ends_with('Z') && m.len() == 24, "{m}");
        let i = iso_now();
        assert!(i.ends_with("+00:00") && i.len() == 32, "{i}");
    }
}
