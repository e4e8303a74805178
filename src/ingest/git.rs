//! Cloning a Git repository over http(s) for a skill source, with the `git` binary under the
//! URL-fetch SSRF rules: the URL is checked like a fetch (`fetch::check_url`), the host is
//! resolved here and refused when it is loopback, private, link-local or metadata (unless
//! `resources.allow_private_urls`), and git is pinned to the checked address
//! (`http.curloptResolve`), so a second DNS answer cannot move it. Git may follow no
//! redirect, use no other protocol, ask for no credentials and read no user or system
//! config; it runs under a wall-clock deadline (`resources.fetch_timeout_secs` × 4) and a
//! file-size limit (`resources.upload_max_bytes`: the pack is one file), and dies with the
//! server. The checkout is then packed like a server-local directory, so it meets the archive
//! rules of an upload.

use std::io::Read;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fetch::{check_url, is_forbidden};
use crate::config::ResourceSettings;
use crate::error::{ServiceError, ServiceResult};

/// Where a skill's Git source is (0.5.2's recorded fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What the client gave.
    pub source: String,
    pub clone_url: String,
    /// Branch or tag; `None`: the default branch.
    pub ref_name: Option<String>,
    /// Directory inside the repository the skills are in.
    pub subdir: Option<String>,
}

fn refused(url: &str, why: &str) -> ServiceError {
    ServiceError::invalid_argument(format!("Refusing to clone {url:.200}: {why}"))
}

/// Parse a Git URL: `https://host/owner/repo(.git)`, or a GitHub tree URL
/// `https://github.com/owner/repo/tree/<ref>/<subdir>` (the subdir starts at its `skills`
/// segment when there is one, as 0.5.2 reads it). Only http(s).
pub fn parse_source(raw: &str) -> ServiceResult<GitSource> {
    let raw = raw.trim();
    if ["git@", "ssh://", "git://"]
        .iter()
        .any(|p| raw.starts_with(p))
    {
        return Err(ServiceError::unimplemented(
            "Only http(s) Git URLs are cloned by this server (no ssh:// or git@ remotes)",
        ));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| refused(raw, &format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ServiceError::unimplemented(
            "Only http(s) Git URLs are cloned by this server (no ssh:// or git@ remotes)",
        ));
    }
    let parts: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let github = url.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("github.com") || h.eq_ignore_ascii_case("www.github.com")
    });
    if github && parts.len() > 3 && parts[2] == "tree" {
        let rest = &parts[3..];
        let split = rest
            .iter()
            .skip(1)
            .position(|p| *p == "skills")
            .map(|i| i + 1)
            .unwrap_or(1);
        let decode = |segs: &[&str]| {
            segs.iter()
                .map(|s| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut clone = url.clone();
        clone.set_path(&format!("/{}/{}", parts[0], parts[1]));
        clone.set_query(None);
        clone.set_fragment(None);
        let subdir = decode(&rest[split..]);
        return Ok(GitSource {
            source: raw.to_string(),
            clone_url: clone.to_string(),
            ref_name: Some(decode(&rest[..split])),
            subdir: (!subdir.is_empty()).then_some(subdir),
        });
    }
    if parts.is_empty() {
        return Err(refused(raw, "the URL names no repository"));
    }
    Ok(GitSource {
        source: raw.to_string(),
        clone_url: raw.to_string(),
        ref_name: None,
        subdir: None,
    })
}

/// A relative directory that stays inside the repository.
fn safe_subdir(subdir: &str) -> Option<PathBuf> {
    let p = Path::new(subdir);
    if subdir.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The address git is pinned to: the host resolved here and checked.
fn checked_address(
    url: &reqwest::Url,
    allow_private: bool,
) -> ServiceResult<(String, u16, IpAddr)> {
    let shown = url.as_str();
    check_url(url, allow_private).map_err(|why| refused(shown, &why))?;
    let host = url
        .host_str()
        .ok_or_else(|| refused(shown, "the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| refused(shown, &format!("{host} cannot be resolved ({e})")))?
        .map(|a| a.ip())
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(refused(shown, &format!("{host} has no addresses")));
    };
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_forbidden(**a)) {
            return Err(refused(
                shown,
                &format!("{host} resolves to {bad} (loopback, private, link-local or metadata addresses are not fetched)"),
            ));
        }
    }
    Ok((host, port, first))
}

/// Clone `src` into `<work>/repo` and return the directory holding its skills (the
/// repository, or its `subdir`), `.git` removed.
pub fn clone(
    src: &GitSource,
    work: &Path,
    settings: &ResourceSettings,
    heartbeat: &mut dyn FnMut(),
) -> ServiceResult<PathBuf> {
    let url =
        reqwest::Url::parse(&src.clone_url).map_err(|e| refused(&src.clone_url, &e.to_string()))?;
    let (host, port, addr) = checked_address(&url, settings.allow_private_urls)?;
    let dest = work.join("repo");
    let pin = match addr {
        IpAddr::V4(a) => format!("{host}:{port}:{a}"),
        IpAddr::V6(a) => format!("{host}:{port}:[{a}]"),
    };
    let deadline = Duration::from_secs(settings.fetch_timeout_secs.saturating_mul(4).max(10));
    let outcome = run_git(src, &pin, &dest, work, true, settings, deadline, heartbeat);
    let outcome = match outcome {
        // The dumb HTTP protocol cannot clone shallowly: take the whole (bounded) history.
        Err(msg) if msg.contains("shallow") => {
            let _ = std::fs::remove_dir_all(&dest);
            run_git(src, &pin, &dest, work, false, settings, deadline, heartbeat)
        }
        other => other,
    };
    outcome.map_err(|msg| {
        ServiceError::invalid_argument(format!("Cannot clone {:.200}: {msg}", src.clone_url))
            .with_details(serde_json::json!({"field": "data"}))
    })?;
    let _ = std::fs::remove_dir_all(dest.join(".git"));
    let Some(sub) = src.subdir.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(dest);
    };
    let rel = safe_subdir(sub).ok_or_else(|| {
        ServiceError::invalid_argument("Skill source subdir must stay inside the repository")
    })?;
    let dir = dest.join(rel);
    // No symlink may lead the subdir out of the checkout.
    let inside = dir
        .canonicalize()
        .ok()
        .zip(dest.canonicalize().ok())
        .is_some_and(|(d, r)| d.starts_with(r) && d.is_dir());
    if !inside {
        return Err(ServiceError::invalid_argument(
            "Skill source subdir is not a directory inside the repository",
        ));
    }
    Ok(dir)
}

#[allow(clippy::too_many_arguments)]
fn run_git(
    src: &GitSource,
    pin: &str,
    dest: &Path,
    work: &Path,
    shallow: bool,
    settings: &ResourceSettings,
    deadline: Duration,
    heartbeat: &mut dyn FnMut(),
) -> Result<(), String> {
    let stderr_path = work.join("git.stderr");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| format!("scratch space: {e}"))?;
    let mut cmd = Command::new("git");
    for c in [
        "protocol.allow=never",
        "protocol.http.allow=always",
        "protocol.https.allow=always",
        "http.followRedirects=false",
        "credential.helper=",
        "core.hooksPath=/dev/null",
        "core.symlinks=false",
        "submodule.recurse=false",
    ] {
        cmd.arg("-c").arg(c);
    }
    cmd.arg("-c").arg(format!("http.curloptResolve={pin}"));
    cmd.args([
        "clone",
        "--quiet",
        "--no-tags",
        "--single-branch",
        "--no-recurse-submodules",
    ]);
    if shallow {
        cmd.args(["--depth", "1"]);
    }
    if let Some(r) = src.ref_name.as_deref().filter(|r| !r.is_empty()) {
        if r.starts_with('-') {
            return Err("invalid ref".into());
        }
        cmd.arg("--branch").arg(r);
    }
    cmd.arg("--").arg(&src.clone_url).arg(dest);
    cmd.current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", work)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_LFS_SKIP_SMUDGE", "1");
    let max_file = settings.upload_max_bytes;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl and
    // setrlimit, which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let lim = libc::rlimit {
                rlim_cur: max_file as libc::rlim_t,
                rlim_max: max_file as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run git: {e}"))?;
    let until = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the clone did not finish within {} s",
                    deadline.as_secs()
                ));
            }
            Ok(None) => {
                heartbeat();
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("lost the git process: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    if status.signal() == Some(libc::SIGXFSZ) {
        return Err(format!(
            "the repository is larger than {max_file} bytes (resources.upload_max_bytes)"
        ));
    }
    let mut tail = String::new();
    if let Ok(f) = std::fs::File::open(&stderr_path) {
        let _ = f.take(4096).read_to_string(&mut tail);
    }
    let tail = tail
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    Err(format!("git failed ({status}): {tail:.300}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_parse_as_0_5_2_reads_them() {
        let plain = parse_source("https://example.com/acme/skills.git").unwrap();
        assert_eq!(plain.clone_url, "https://example.com/acme/skills.git");
        assert_eq!((plain.ref_name, plain.subdir), (None, None));
        let tree = parse_source("https://github.com/acme/kit/tree/main/skills/pdf").unwrap();
        assert_eq!(tree.clone_url, "https://github.com/acme/kit");
        assert_eq!(tree.ref_name.as_deref(), Some("main"));
        assert_eq!(tree.subdir.as_deref(), Some("skills/pdf"));
        let deep = parse_source("https://github.com/acme/kit/tree/release/v2/skills").unwrap();
        assert_eq!(deep.ref_name.as_deref(), Some("release/v2"));
        assert_eq!(deep.subdir.as_deref(), Some("skills"));
        assert!(parse_source("ssh://git@example.com/a/b").is_err());
        assert_eq!(
            parse_source("git@github.com:acme/kit.git")
                .unwrap_err()
                .code,
            crate::error::ErrorCode::Unimplemented
        );
        assert!(parse_source("https://example.com/").is_err());
        assert_eq!(safe_subdir("../x"), None);
        assert_eq!(safe_subdir("/etc"), None);
        assert_eq!(safe_subdir("a/./b"), Some(PathBuf::from("a/b")));
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/a/b.git").unwrap();
        assert!(checked_address(&url, false)
            .unwrap_err()
            .message
            .contains("loopback"));
        let (host, port, addr) = checked_address(&url, true).unwrap();
        assert_eq!(
            (host.as_str(), port, addr.to_string().as_str()),
            ("127.0.0.1", 9, "127.0.0.1")
        );
        let meta = reqwest::Url::parse("http://169.254.169.254/x").unwrap();
        assert!(checked_address(&meta, false).is_err());
    }
}
