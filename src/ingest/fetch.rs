//! Fetching a `path` URL with size and time limits and SSRF rules: only http(s); every host
//! is resolved by our own resolver, which refuses loopback, private, link-local, shared,
//! unspecified, multicast and cloud-metadata addresses (unless `allow_private_urls`); every
//! redirect hop is checked again (scheme, literal address, count) and resolved through the
//! same resolver.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::ResourceSettings;
use crate::error::{ErrorCode, ServiceError, ServiceResult};
use crate::net::client;

/// True for addresses a server-side fetch must not reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 can reach private v4
                || (s[0] == 0x2002) // 6to4 embeds v4
        }
    }
}

fn refused(url: &str, why: &str) -> ServiceError {
    ServiceError::invalid_argument(format!("Refusing to fetch {url:.200}: {why}"))
}

struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // The blocking client runs its own runtime thread per client; resolving inline
            // there blocks only this fetch.
            let addrs: Vec<SocketAddr> = (host.as_str(), 0u16).to_socket_addrs()?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            if !allow {
                if let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
                    return Err(format!(
                        "{host} resolves to {} (loopback, private, link-local or metadata \
                         addresses are not fetched)",
                        bad.ip()
                    )
                    .into());
                }
            }
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// Checks that need no DNS: scheme, credentials, literal addresses.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URLs with credentials are not fetched".into());
    }
    match url.host() {
        None => Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) if !allow_private && is_forbidden(IpAddr::V4(ip)) => Err(
            format!("{ip} is a loopback, private, link-local or metadata address"),
        ),
        Some(url::Host::Ipv6(ip)) if !allow_private && is_forbidden(IpAddr::V6(ip)) => Err(
            format!("{ip} is a loopback, private, link-local or metadata address"),
        ),
        Some(url::Host::Domain(d))
            if !allow_private
                && (d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")) =>
        {
            Err("localhost is not fetched".into())
        }
        _ => Ok(()),
    }
}

/// Fetch `raw_url` into `dest`; returns a file name for the content (from the URL path, with
/// an extension from the Content-Type when the path has none).
pub fn fetch_to_file(
    raw_url: &str,
    dest: &Path,
    settings: &ResourceSettings,
) -> ServiceResult<String> {
    match fetch_if_changed(raw_url, dest, settings, &Validators::default())? {
        Fetched::Body { name, .. } => Ok(name),
        // Without validators no server answers 304.
        Fetched::NotModified => Err(ServiceError::invalid_argument(format!(
            "Fetching {raw_url:.200} failed: HTTP 304 to an unconditional request"
        ))),
    }
}

/// What a server said identifies one version of its content (`ETag`, `Last-Modified`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// The outcome of a conditional fetch.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// 304: the content is the one the validators name; nothing was written.
    NotModified,
    /// The content is in `dest`: its file name and the validators it came with.
    Body {
        name: String,
        validators: Validators,
    },
}

/// [`fetch_to_file`] as a conditional request (`If-None-Match` / `If-Modified-Since` from
/// `known`), under the same SSRF rules and limits.
pub fn fetch_if_changed(
    raw_url: &str,
    dest: &Path,
    settings: &ResourceSettings,
    known: &Validators,
) -> ServiceResult<Fetched> {
    let url = reqwest::Url::parse(raw_url.trim())
        .map_err(|e| ServiceError::invalid_argument(format!("Invalid URL {raw_url:.200}: {e}")))?;
    let allow = settings.allow_private_urls;
    check_url(&url, allow).map_err(|m| refused(raw_url, &m))?;
    let max_redirects = settings.fetch_max_redirects;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max_redirects {
            return attempt.error(format!("more than {max_redirects} redirects"));
        }
        if let Err(m) = check_url(attempt.url(), allow) {
            let m = format!("redirect to {:.200} refused: {m}", attempt.url().as_str());
            return attempt.error(m);
        }
        attempt.follow()
    });
    let client = client::blocking_builder(Duration::from_secs(settings.fetch_timeout_secs.min(10)))
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver {
            allow_private: allow,
        }))
        .no_proxy()
        .timeout(Duration::from_secs(settings.fetch_timeout_secs))
        .build()
        .map_err(|e| ServiceError::internal(format!("HTTP client: {e}")))?;
    let budget = FetchBudget::new(settings);
    // A request's own timeout is one deadline for connect, redirects, headers and body (the
    // client-wide one only bounds each blocking wait, so a drip outlived it): it carries the
    // total; the rate is checked between reads.
    let mut request = client.get(url.clone()).timeout(budget.total);
    if let Some(etag) = &known.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
    }
    if let Some(modified) = &known.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, modified.as_str());
    }
    let resp = request
        .send()
        .map_err(|e| fetch_error(raw_url, &e, &budget))?;
    budget.check(raw_url)?;
    let conditional = known.etag.is_some() || known.last_modified.is_some();
    if conditional && resp.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if resp.status().is_redirection() {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let why = match reqwest::Url::parse(location).or_else(|_| resp.url().join(location)) {
            Ok(next) => check_url(&next, allow)
                .err()
                .unwrap_or_else(|| format!("more than {max_redirects} redirects")),
            Err(_) => "an unreadable Location".to_string(),
        };
        return Err(refused(
            raw_url,
            &format!("redirect to {location:.200} refused: {why}"),
        ));
    }
    if !resp.status().is_success() {
        return Err(ServiceError::invalid_argument(format!(
            "Fetching {raw_url:.200} failed: HTTP {}",
            resp.status().as_u16()
        )));
    }
    let final_url = resp.url().clone();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 512)
            .map(str::to_string)
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    let max = settings.fetch_max_bytes;
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_large(raw_url, max));
    }
    let mut out = std::fs::File::create(dest).map_err(ServiceError::internal)?;
    let mut body = resp.take(max + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let mut window = budget.window_start();
    loop {
        let n = body.read(&mut buf).map_err(|e| {
            budget.check(raw_url).err().unwrap_or_else(|| {
                ServiceError::invalid_argument(format!("Fetching {raw_url:.200} failed: {e}"))
            })
        })?;
        budget.check(raw_url)?;
        if n == 0 {
            break;
        }
        window.count(n as u64, raw_url, &budget)?;
        total += n as u64;
        if total > max {
            return Err(too_large(raw_url, max));
        }
        out.write_all(&buf[..n]).map_err(ServiceError::internal)?;
    }
    Ok(Fetched::Body {
        name: file_name(&final_url, &content_type),
        validators,
    })
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn too_large(url: &str, max: u64) -> ServiceError {
    ServiceError::new(
        ErrorCode::PayloadTooLarge,
        format!("{url:.200} is larger than {max} bytes (resources.fetch_max_bytes)"),
    )
}

/// The time rules of one fetch: a total deadline (`fetch_timeout_secs`, across connect,
/// redirects and body) and a minimum transfer rate (`fetch_min_bytes_per_window` bytes in
/// every `fetch_rate_window_secs`, judged whenever data arrives; a server that sends nothing
/// at all is cut by the total).
struct FetchBudget {
    started: Instant,
    total: Duration,
    window: Duration,
    min_bytes: u64,
}

impl FetchBudget {
    fn new(settings: &ResourceSettings) -> Self {
        FetchBudget {
            started: Instant::now(),
            total: Duration::from_secs(settings.fetch_timeout_secs.max(1)),
            window: Duration::from_secs(settings.fetch_rate_window_secs.max(1)),
            min_bytes: settings.fetch_min_bytes_per_window,
        }
    }

    fn expired(&self) -> bool {
        self.started.elapsed() >= self.total
    }

    fn check(&self, url: &str) -> ServiceResult<()> {
        if self.expired() {
            return Err(ServiceError::invalid_argument(format!(
                "Fetching {url:.200} failed: it took longer than {} s \
                 (resources.fetch_timeout_secs)",
                self.total.as_secs()
            )));
        }
        Ok(())
    }

    fn window_start(&self) -> RateWindow {
        RateWindow {
            since: Instant::now(),
            bytes: 0,
        }
    }
}

/// Bytes received since the current rate window began.
struct RateWindow {
    since: Instant,
    bytes: u64,
}

impl RateWindow {
    /// Count `n` more bytes; a window that ended with too few bytes fails the fetch.
    fn count(&mut self, n: u64, url: &str, budget: &FetchBudget) -> ServiceResult<()> {
        self.bytes += n;
        if self.since.elapsed() < budget.window {
            return Ok(());
        }
        if self.bytes < budget.min_bytes {
            return Err(ServiceError::invalid_argument(format!(
                "Fetching {url:.200} failed: the server sent {} bytes in {} s, fewer than \
                 {} (resources.fetch_min_bytes_per_window)",
                self.bytes,
                budget.window.as_secs(),
                budget.min_bytes
            )));
        }
        *self = budget.window_start();
        Ok(())
    }
}

fn fetch_error(url: &str, e: &reqwest::Error, budget: &FetchBudget) -> ServiceError {
    if let Err(e) = budget.check(url) {
        return e;
    }
    // The error chain carries our resolver's and redirect policy's reasons.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    if e.is_timeout() {
        msg = format!("no answer within {} s", budget.total.as_secs());
    }
    ServiceError::invalid_argument(format!("Fetching {url:.200} failed: {msg:.400}"))
}

fn file_name(url: &reqwest::Url, content_type: &str) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| url.host_str().unwrap_or("index").to_string());
    if last.contains('.') && !last.ends_with('.') && url.host_str().is_none_or(|h| h != last) {
        return last;
    }
    let ext = if content_type.contains("html") {
        "html"
    } else if content_type.contains("pdf") {
        "pdf"
    } else if content_type.contains("markdown") {
        "md"
    } else if content_type.contains("zip") {
        "zip"
    } else {
        "txt"
    };
    format!("{}.{ext}", last.replace('.', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn url_checks() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(check_url(&u("file:///etc/passwd"), true).is_err());
        assert!(check_url(&u("http://127.0.0.1/x"), false).is_err());
        assert!(check_url(&u("http://127.0.0.1/x"), true).is_ok());
        assert!(check_url(&u("http://[::1]/x"), false).is_err());
        assert!(check_url(&u("http://user:pw@example.com/"), false).is_err());
        assert!(check_url(&u("http://localhost:80/"), false).is_err());
        assert_eq!(file_name(&u("http://h/docs/guide.md"), ""), "guide.md");
        assert_eq!(
            file_name(&u("http://h/docs/page"), "text/html"),
            "page.html"
        );
        assert_eq!(
            file_name(&u("http://example.com/"), "text/html"),
            "example_com.html"
        );
    }
}
