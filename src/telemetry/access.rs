//! The access log: one line per request, written straight into the writer's queue.
//!
//! Going through `tracing`'s formatter (field visitors, a span per request, a fresh timestamp
//! rendered with `fmt`) cost more CPU per `/health` request than actix-web's whole request
//! handling; this formats the same facts with integer formatting and a timestamp prefix cached
//! per thread per second. Lines keep the shape of the other log lines (text or JSON).

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;

use super::LineQueue;

/// What one access-log line says.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
}

struct AccessLog {
    queue: LineQueue,
    format: LogFormat,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// Route access lines to `queue` (called once at start-up when the access log is enabled).
pub(super) fn install(queue: LineQueue, format: LogFormat) {
    let _ = ACCESS_LOG.set(AccessLog { queue, format });
}

/// Write `line` to the access log. False when no fast writer is installed (the caller then
/// logs through `tracing`, which applies its filter).
pub fn log(line: &AccessLine<'_>) -> bool {
    let Some(log) = ACCESS_LOG.get() else {
        return false;
    };
    LINE.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return;
        };
        buf.clear();
        render(&mut buf, log.format, SystemTime::now(), line);
        log.queue.push(&buf);
    });
    true
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
    /// The second the cached prefix is for, and `YYYY-MM-DDTHH:MM:SS.` of it.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

fn render(buf: &mut Vec<u8>, format: LogFormat, now: SystemTime, line: &AccessLine<'_>) {
    match format {
        LogFormat::Text => {
            timestamp(buf, now);
            buf.extend_from_slice(b"  INFO request{request_id=");
            buf.extend_from_slice(line.request_id.as_bytes());
            buf.extend_from_slice(b"}: longship::access: request method=");
            buf.extend_from_slice(line.method.as_bytes());
            buf.extend_from_slice(b" path=");
            buf.extend_from_slice(line.path.as_bytes());
            buf.extend_from_slice(b" status=");
            decimal(buf, u64::from(line.status));
            buf.extend_from_slice(b" latency_ms=");
            millis(buf, line.elapsed);
        }
        LogFormat::Json => {
            buf.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(buf, now);
            buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
            json_str(buf, line.method);
            buf.extend_from_slice(b",\"path\":");
            json_str(buf, line.path);
            buf.extend_from_slice(b",\"status\":");
            decimal(buf, u64::from(line.status));
            buf.extend_from_slice(b",\"latency_ms\":");
            millis(buf, line.elapsed);
            buf.extend_from_slice(b",\"target\":\"longship::access\",\"request_id\":");
            json_str(buf, line.request_id);
            buf.push(b'}');
        }
    }
    buf.push(b'\n');
}

/// RFC 3339 UTC with microseconds, e.g. `2026-12-07T06:14:13.123456Z`.
fn timestamp(buf: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let prefix = chrono::DateTime::<chrono::Utc>::from_timestamp(secs as i64, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S.").to_string())
                .unwrap_or_default();
            *cached = (secs, prefix);
        }
        buf.extend_from_slice(cached.1.as_bytes());
    });
    padded(buf, u64::from(since.subsec_micros()), 6);
    buf.push(b'Z');
}

/// Milliseconds with three decimals, from integer microseconds.
fn millis(buf: &mut Vec<u8>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    decimal(buf, us / 1000);
    buf.push(b'.');
    padded(buf, us % 1000, 3);
}

fn decimal(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` left-padded with zeros to `width` digits.
fn padded(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let s = digits.format(n);
    buf.extend(std::iter::repeat_n(b'0', width.saturating_sub(s.len())));
    buf.extend_from_slice(s.as_bytes());
}

fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// `secs.micros` with six decimals (the `X-Process-Time` header), written into `buf` without
/// float formatting or allocation (at most 20 + 1 + 6 bytes).
pub fn seconds_with_micros_into(buf: &mut [u8; 32], d: Duration) -> &[u8] {
    let mut secs = itoa::Buffer::new();
    let secs = secs.format(d.as_secs()).as_bytes();
    let mut micros = itoa::Buffer::new();
    let micros = micros.format(d.subsec_micros()).as_bytes();
    let dot = secs.len();
    let end = dot + 7;
    buf[..dot].copy_from_slice(secs);
    buf[dot] = b'.';
    let digits = end - micros.len();
    buf[dot + 1..digits].fill(b'0');
    buf[digits..end].copy_from_slice(micros);
    &buf[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            request_id: "abc-1",
            method: "GET",
            path: "/a\"b",
            status: 200,
            elapsed: Duration::from_micros(12_345),
        }
    }

    #[test]
    fn text_line_has_the_usual_shape() {
        let mut buf = Vec::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_796_000_000_000_042);
        render(&mut buf, LogFormat::Text, at, &line());
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "2026-11-30T00:53:20.000042Z  INFO request{request_id=abc-1}: longship::access: \
             request method=GET path=/a\"b status=200 latency_ms=12.345\n"
        );
    }

    #[test]
    fn json_line_parses_and_escapes() {
        let mut buf = Vec::new();
        render(&mut buf, LogFormat::Json, SystemTime::now(), &line());
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_ms"], 12.345);
        assert_eq!(v["target"], "longship::access");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn process_time_has_six_decimals() {
        let seconds_with_micros = |d| {
            let mut buf = [0u8; 32];
            String::from_utf8_lossy(seconds_with_micros_into(&mut buf, d)).into_owned()
        };
        assert_eq!(seconds_with_micros(Duration::from_micros(7)), "0.000007");
        assert_eq!(
            seconds_with_micros(Duration::new(u64::MAX, 999_999_999)),
            "18446744073709551615.999999"
        );
        assert_eq!(
            seconds_with_micros(Duration::from_micros(3_250_000)),
            "3.250000"
        );
    }
}
