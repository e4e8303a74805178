//! Session ids (spec §13.8) and generated ids (spec §9.1).

use rand::Rng;

use crate::error::ServiceError;

/// Longest session id in bytes: one path segment.
pub const MAX_SESSION_ID_BYTES: usize = 255;

/// A session id is one safe path segment: 1–255 bytes of `[A-Za-z0-9_.@:-]`, not `.`/`..`.
pub fn validate(sid: &str) -> Result<(), ServiceError> {
    let fail = |why: &str| {
        Err(
            ServiceError::invalid_argument(format!("Invalid session_id: {why}"))
                .with_details(serde_json::json!({"field": "session_id", "value": sid})),
        )
    };
    if sid.is_empty() {
        return fail("must not be empty");
    }
    if sid.len() > MAX_SESSION_ID_BYTES {
        return fail("must not exceed 255 bytes");
    }
    if sid == "." || sid == ".." {
        return fail("must not be '.' or '..'");
    }
    if !sid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b':' | b'-'))
    {
        return fail("only letters, digits and _ . @ : - are allowed");
    }
    if crate::storage::is_internal_name(sid) {
        return fail("the name is reserved");
    }
    Ok(())
}

/// A fresh id: UTC `YYYYmmdd-HHMMSS-` + 16 hex.
pub fn generate() -> String {
    let stamp = crate::time::compact_now();
    let tail: u64 = rand::thread_rng().gen();
    format!("{stamp}-{tail:016x}")
}

/// A message id: `msg_` + 32 lowercase hex.
pub fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        for ok in ["s1", "a.b", "x@y:z-1_2", &"a".repeat(255), "..."] {
            assert!(validate(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a b",
            "a\0",
            "é",
            &"a".repeat(256),
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let g = generate();
        assert_eq!(g.len(), 8 + 1 + 6 + 1 + 16, "{g}");
        assert!(validate(&g).is_ok());
        let m = message_id();
        assert!(m.starts_with("msg_") && m.len() == 36);
    }
}
