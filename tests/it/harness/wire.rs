//! A raw HTTP/1.1 client over a TCP socket, so a test controls every byte it sends (invalid
//! UTF-8, lying `Content-Length`, chunked bodies, non-ASCII header values) and sees a dropped
//! connection as the failure it is.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One HTTP exchange as seen on the wire.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Send `request` bytes, optionally half-close, and read the first response. `Err` = the
/// connection closed (or timed out) without a complete response.
pub fn exchange(port: u16, request: &[u8], half_close: bool) -> Result<Raw, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    // The server may answer (413) and close before it has read all of a large body.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf) {
                    return Ok(r);
                }
            }
            Err(e) => {
                return parse_response(&buf)
                    .ok_or_else(|| format!("read failed after {} bytes: {e}", buf.len()))
            }
        }
    }
    parse_response(&buf).ok_or_else(|| {
        format!(
            "connection closed without a complete response: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

/// The first complete response in `buf`, if there is one.
fn parse_response(buf: &[u8]) -> Option<Raw> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[at..line_end]).trim(), 16)
                    .ok()?;
            at = line_end + 2;
            if size == 0 {
                break;
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            out.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        out
    } else {
        let len: usize = find("content-length")?.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    };
    Some(Raw {
        status,
        headers,
        body,
    })
}

/// A request with `Connection: close`; `body` gets a JSON content type and its true length.
pub fn request(
    method: &str,
    path: &str,
    key: Option<&str>,
    extra: &[(&str, &[u8])],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    if let Some(k) = key {
        r.extend_from_slice(format!("X-API-Key: {k}\r\n").as_bytes());
    }
    for (k, v) in extra {
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if let Some(b) = body {
        r.extend_from_slice(b"Content-Type: application/json\r\n");
        r.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        r.extend_from_slice(b);
    }
    r
}
