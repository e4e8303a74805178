//! The one outbound HTTP client set-up. Every outbound call (embeddings, chat, URL fetch, and
//! object_store's S3 client) goes through blocking or async reqwest over rustls with the ring
//! provider, installed here once, and checks certificates against the operating system's
//! trust store (reqwest's rustls-platform-verifier), so all of them trust the same roots.
//!
//! A blocking client owns a runtime thread: build it on the blocking thread that uses it
//! (reqwest refuses to build one inside an async runtime).

use std::sync::Once;
use std::time::Duration;

static TLS: Once = Once::new();

/// Install ring as the process's rustls provider (a no-op after the first call).
pub fn install_tls() {
    TLS.call_once(|| {
        // An error only means another provider was installed first; reqwest uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A blocking client builder with TLS set up, the Longship user agent and `connect_timeout`.
/// Callers add what is theirs (timeouts, redirect policy, resolver) and build it.
pub fn blocking_builder(connect_timeout: Duration) -> reqwest::blocking::ClientBuilder {
    install_tls();
    reqwest::blocking::Client::builder()
        .tls_backend_rustls()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("longship/", env!("CARGO_PKG_VERSION")))
}

/// A reqwest error without its URL (a query string could carry a key).
pub fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<api_base>");
    }
    msg
}

/// The pause a `Retry-After` header asks for (delay seconds or an HTTP date), if readable.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_client_builds_with_the_shared_tls_set_up() {
        assert!(blocking_builder(Duration::from_secs(1)).build().is_ok());
    }
}
