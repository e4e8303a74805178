//! The WebDAV `If` request header (RFC 4918 §10.4): lists of state-token and entity-tag
//! conditions, optionally tagged with the resource they apply to. Parsed strictly and bounded
//! (a malformed or oversized header is 400 before any work); evaluated by
//! [`super::locks::WriteCheck`] against the stored locks and the resources' ETags.

use crate::error::{ServiceError, ServiceResult};
use sha2::{Digest, Sha256};

use crate::storage::{Meta, StorePath};

/// Longest `If` header read (a client names a few tokens; beyond: 400).
pub const MAX_IF_HEADER: usize = 16 * 1024;
/// Most conditions in one header.
const MAX_CONDITIONS: usize = 64;

/// One condition of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A state token (a lock token URI, or e.g. `DAV:no-lock`, which no lock has).
    Token(String),
    /// An entity tag, quotes included (`"abc"` or `W/"abc"`).
    ETag(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub not: bool,
    pub check: Check,
}

/// The resource a list applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject<T> {
    /// No tag: the request URI.
    Request,
    /// A tagged resource.
    Tagged(T),
}

/// One parenthesised list: true when every condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T> {
    pub subject: Subject<T>,
    pub conditions: Vec<Condition>,
}

/// A parsed header: true when any list holds. Tags are still raw (`Subject<String>`) until the
/// HTTP layer resolves them to storage paths (`None`: a resource outside the caller's view,
/// whose lists are false).
pub type IfHeader<T = Option<StorePath>> = Vec<List<T>>;

fn malformed(why: &str) -> ServiceError {
    ServiceError::invalid_argument(format!("malformed If header: {why}"))
}

/// Parse an `If` header value. Either every list is untagged, or the header starts with a
/// resource tag and each tag is followed by its lists (RFC 4918 §10.4.2).
pub fn parse(raw: &str) -> ServiceResult<IfHeader<String>> {
    if raw.len() > MAX_IF_HEADER {
        return Err(malformed("longer than 16 KiB"));
    }
    let mut rest = raw.trim_start();
    let tagged = rest.starts_with('<');
    let mut lists: IfHeader<String> = Vec::new();
    let mut tag: Option<String> = None;
    let mut conditions = 0usize;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            if !tagged {
                return Err(malformed("a resource tag after untagged lists"));
            }
            let (inner, after) = until(after, '>')?;
            if inner.is_empty() || inner.contains(char::is_whitespace) {
                return Err(malformed("empty or spaced resource tag"));
            }
            tag = Some(inner.to_string());
            rest = after.trim_start();
            if !rest.starts_with('(') {
                return Err(malformed("a resource tag must be followed by a list"));
            }
            continue;
        }
        let Some(after) = rest.strip_prefix('(') else {
            return Err(malformed("expected '(' or '<'"));
        };
        let (inner, after) = until(after, ')')?;
        let list = parse_list(inner, &mut conditions)?;
        lists.push(List {
            subject: match &tag {
                Some(t) => Subject::Tagged(t.clone()),
                None => Subject::Request,
            },
            conditions: list,
        });
        rest = after.trim_start();
    }
    if lists.is_empty() {
        return Err(malformed("no condition list"));
    }
    Ok(lists)
}

/// The text up to `end` (exclusive) and what follows it.
fn until(s: &str, end: char) -> ServiceResult<(&str, &str)> {
    match s.find(end) {
        Some(i) => Ok((&s[..i], &s[i + end.len_utf8()..])),
        None => Err(malformed(&format!("missing '{end}'"))),
    }
}

fn parse_list(mut s: &str, count: &mut usize) -> ServiceResult<Vec<Condition>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            break;
        }
        let mut not = false;
        if s.len() >= 3 && s[..3].eq_ignore_ascii_case("not") {
            not = true;
            s = s[3..].trim_start();
        }
        let check = if let Some(after) = s.strip_prefix('<') {
            let (token, after) = until(after, '>')?;
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(malformed("empty or spaced state token"));
            }
            s = after;
            Check::Token(token.to_string())
        } else if let Some(after) = s.strip_prefix('[') {
            let (tag, after) = until(after, ']')?;
            let tag = tag.trim();
            let bare = tag.strip_prefix("W/").unwrap_or(tag);
            if bare.len() < 2 || !bare.starts_with('"') || !bare.ends_with('"') {
                return Err(malformed("an entity tag must be quoted"));
            }
            s = after;
            Check::ETag(tag.to_string())
        } else {
            return Err(malformed(
                "expected a state token '<…>' or an entity tag '[…]'",
            ));
        };
        *count += 1;
        if *count > MAX_CONDITIONS {
            return Err(malformed("more than 64 conditions"));
        }
        out.push(Condition { not, check });
    }
    if out.is_empty() {
        return Err(malformed("an empty list"));
    }
    Ok(out)
}

/// The state tokens a header names (RFC 4918 §10.4.1: a lock token in an `If` header is
/// submitted with the request, whether or not its list is the one that held).
pub fn submitted_tokens<T>(header: &IfHeader<T>) -> Vec<&str> {
    header
        .iter()
        .flat_map(|l| &l.conditions)
        .filter_map(|c| match &c.check {
            Check::Token(t) if !c.not => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A strong ETag from the stored version (opaque: a hash, never a path or inode).
pub fn etag_of(meta: &Meta) -> Option<String> {
    let v = meta.version.as_ref()?;
    let digest = Sha256::digest(v.0.as_bytes());
    Some(format!("\"{}\"", hex::encode(&digest[..12])))
}

/// Two entity tags match (weak comparison: `W/` ignored, as clients echo what they were given).
pub fn etag_matches(given: &str, current: &str) -> bool {
    given.strip_prefix("W/").unwrap_or(given) == current.strip_prefix("W/").unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_untagged_and_tagged_lists() {
        let h = parse("(<opaquelocktoken:a> [\"e1\"]) (Not <DAV:no-lock>)").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].subject, Subject::Request);
        assert_eq!(h[0].conditions[1].check, Check::ETag("\"e1\"".to_string()));
        assert!(h[1].conditions[0].not);
        assert_eq!(submitted_tokens(&h), vec!["opaquelocktoken:a"]);
        let h = parse("<http://h/webdav/resources/a> (<t1>) <http://h/x> ([W/\"x\"])").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].subject, Subject::Tagged("http://h/x".to_string()));
        assert!(etag_matches("W/\"x\"", "\"x\""));
    }

    #[test]
    fn refuses_malformed_headers() {
        for bad in [
            "",
            "  ",
            "(",
            "()",
            "(<a>",
            "<a>",
            "(<a>) <b> (<c>)",
            "([x])",
            "(Not)",
            "junk",
            "(<a b>)",
            "<http://h/a> junk",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let many = "(<a>) ".repeat(65);
        assert!(parse(&many).is_err());
        assert!(parse(&"x".repeat(MAX_IF_HEADER + 1)).is_err());
    }
}
