//! Canonicalisation of the viking URIs that message parts carry (spec §5.1, §5.3, §5.4).
//!
//! Parts only store URIs, they never open them, so this checks syntax and expands the caller's
//! aliases; access rules apply when a client later reads the URI through fs/content.

use crate::error::ServiceError;

const SCOPES: &[&str] = &["resources", "user", "agent", "session", "~"];

/// The canonical form of `raw` for a caller named `user`.
pub fn canonical(raw: &str, user: &str) -> Result<String, ServiceError> {
    let uri = raw.trim();
    if uri.is_empty() {
        return Err(ServiceError::invalid_uri(raw, "uri must not be empty"));
    }
    let Some(rest) = uri.strip_prefix("viking://") else {
        return Err(ServiceError::invalid_uri(
            uri,
            "URI must start with 'viking://'",
        ));
    };
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some(&scope) = segs.first() else {
        return Ok("viking://".to_string());
    };
    if !SCOPES.contains(&scope) {
        return Err(ServiceError::invalid_uri(
            uri,
            format!("Invalid scope '{scope}'. Must be one of: agent, resources, session, user"),
        ));
    }
    for seg in &segs {
        if *seg == "." || *seg == ".." || seg.contains('\\') || is_drive(seg) {
            return Err(ServiceError::permission_denied(format!(
                "Unsafe URI traversal segment '{seg}' in {uri}"
            ))
            .with_details(serde_json::json!({"resource": uri})));
        }
        if seg.chars().any(char::is_control) {
            return Err(ServiceError::invalid_uri(
                uri,
                "control characters are not allowed",
            ));
        }
    }
    let mut out: Vec<&str> = Vec::with_capacity(segs.len() + 2);
    match scope {
        "~" => {
            out.extend(["user", user]);
            segs.remove(0);
        }
        "session" => {
            out.extend(["user", user, "sessions"]);
            segs.remove(0);
        }
        _ => {}
    }
    out.extend(segs);
    Ok(format!("viking://{}", out.join("/")))
}

fn is_drive(seg: &str) -> bool {
    let b = seg.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises() {
        assert_eq!(
            canonical(" viking://resources/docs/ ", "bob").unwrap(),
            "viking://resources/docs"
        );
        assert_eq!(
            canonical("viking://~/m", "bob").unwrap(),
            "viking://user/bob/m"
        );
        assert_eq!(
            canonical("viking://session/s1", "bob").unwrap(),
            "viking://user/bob/sessions/s1"
        );
        assert_eq!(canonical("viking://", "bob").unwrap(), "viking://");
        for bad in [
            "",
            "http://x",
            "viking://temp/x",
            "viking://resources/../x",
            "viking://resources/C:",
        ] {
            assert!(canonical(bad, "bob").is_err(), "{bad}");
        }
    }
}
