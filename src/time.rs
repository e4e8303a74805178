//! Every timestamp spelling the server writes, in one place (spec §4.2, §6, §9.1, §10).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Seconds since the Unix epoch, with the fraction (task records, health probes).
pub fn epoch_secs_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Milliseconds since the Unix epoch (lock leases).
pub fn epoch_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 UTC with a `Z`: `2026-05-01T12:00:00Z` (`Secs`) or `…:00.123Z` (`Millis`): listing
/// `mod_time`/`modTime`, session `.meta.json` timestamps.
pub fn utc_z(t: SystemTime, precision: SecondsFormat) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(precision, true)
}

/// [`utc_z`] of now to the millisecond: `.meta.json` timestamps `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn millis_z_now() -> String {
    utc_z(SystemTime::now(), SecondsFormat::Millis)
}

/// Python's `isoformat()` of an aware UTC datetime: `2026-05-01T12:00:00.123456+00:00`
/// (message `created_at`, archive records, registry `created_at`).
pub fn iso_micros_now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// [`iso_micros_now`] for a time given in epoch seconds (task records).
pub fn iso_micros(epoch_secs: f64) -> String {
    let secs = epoch_secs.floor() as i64;
    let nanos = ((epoch_secs - epoch_secs.floor()) * 1e9) as u32;
    DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, false))
        .unwrap_or_default()
}

/// `YYYYmmdd-HHMMSS` in UTC, the head of generated session ids.
pub fn compact_now() -> String {
    Utc::now().format("%Y%m%d-%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let m = millis_z_now();
        assert!(m.ends_with('Z') && m.len() == 24, "{m}");
        let i = iso_micros_now();
        assert!(i.ends_with("+00:00") && i.len() == 32, "{i}");
        assert_eq!(
            iso_micros(1_777_636_800.5),
            "2026-05-01T12:00:00.500000+00:00"
        );
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_777_636_800_123);
        assert_eq!(utc_z(t, SecondsFormat::Secs), "2026-05-01T12:00:00Z");
        assert_eq!(utc_z(t, SecondsFormat::Millis), "2026-05-01T12:00:00.123Z");
        assert_eq!(compact_now().len(), 15);
    }
}
