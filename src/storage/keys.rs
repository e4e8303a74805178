//! API key formats (spec §2.3) and their storage forms (spec §2.4): generation, decoding of the
//! (account, user) hints, Argon2id hashing and constant-time comparison.
//!
//! Pure functions; Argon2 is deliberately slow (tens of milliseconds) and must only be called
//! from a pool thread.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Characters of a key kept beside its hash to find candidates (spec §2.4).
pub const PREFIX_LEN: usize = 8;

/// Argon2id parameters of spec §2.4: m = 64 MiB, t = 3, p = 2, 32-byte hash.
const ARGON_M_KIB: u32 = 65536;
const ARGON_T: u32 = 3;
const ARGON_P: u32 = 2;
const ARGON_OUT: usize = 32;

/// Why hashing failed (only on a broken parameter set or RNG; never on input).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("argon2: {0}")]
    Argon2(String),
}

/// What the shape of a presented key says about it, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyShape {
    /// A three-segment key that decodes to (account, user) hints.
    Hinted { account: String, user: String },
    /// Three segments that do not decode: 401 at once (spec §2.4 step 2).
    Undecodable,
    /// 64 lowercase hex characters: a legacy key, found through the prefix index.
    Legacy,
    /// Anything else cannot be a user key (only the root key has a free form).
    Other,
}

/// The 64-hex secret: random, or derived from `seed` as `hex(sha256(user_id "\0" seed))`.
pub fn secret(user_id: &str, seed: Option<&str>) -> String {
    match seed {
        Some(seed) => {
            let mut h = Sha256::new();
            h.update(user_id.as_bytes());
            h.update([0u8]);
            h.update(seed.as_bytes());
            hex::encode(h.finalize())
        }
        None => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            hex::encode(bytes)
        }
    }
}

/// `b64u(account) "." b64u(user) "." b64u(secret)`, padding stripped.
pub fn format_key(account: &str, user: &str, secret: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(account),
        URL_SAFE_NO_PAD.encode(user),
        URL_SAFE_NO_PAD.encode(secret)
    )
}

/// A fresh new-format key for (account, user), seeded or random.
pub fn new_key(account: &str, user: &str, seed: Option<&str>) -> String {
    format_key(account, user, &secret(user, seed))
}

fn decode_segment(seg: &str) -> Option<String> {
    // Padding is restored by accepting both padded and unpadded input.
    let trimmed = seg.trim_end_matches('=');
    let bytes = URL_SAFE_NO_PAD.decode(trimmed).ok()?;
    String::from_utf8(bytes).ok()
}

/// Classify a presented key (spec §2.4 steps 2–3).
pub fn shape(key: &str) -> KeyShape {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() == 3 {
        return match (decode_segment(parts[0]), decode_segment(parts[1])) {
            (Some(account), Some(user)) if !account.is_empty() && !user.is_empty() => {
                KeyShape::Hinted { account, user }
            }
            _ => KeyShape::Undecodable,
        };
    }
    if key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return KeyShape::Legacy;
    }
    KeyShape::Other
}

/// The first [`PREFIX_LEN`] characters of a key.
pub fn prefix(key: &str) -> String {
    key.chars().take(PREFIX_LEN).collect()
}

/// True if a stored key is an Argon2 PHC string rather than a plaintext key.
pub fn is_hashed(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// Constant-time equality over bytes (the length is not secret).
pub fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fast fingerprint of a presented key, for the cache of successful Argon2 verifications.
pub fn fingerprint(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn argon2() -> Result<Argon2<'static>, KeyError> {
    let params = Params::new(ARGON_M_KIB, ARGON_T, ARGON_P, Some(ARGON_OUT))
        .map_err(|e| KeyError::Argon2(e.to_string()))?;
    Ok(Argon2::new(
        Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// The Argon2id PHC string of `key` with a fresh 16-byte salt. Slow: pool threads only.
pub fn hash(key: &str) -> Result<String, KeyError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| KeyError::Argon2(e.to_string()))?;
    argon2()?
        .hash_password(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| KeyError::Argon2(e.to_string()))
}

/// A stored Argon2 hash a presented key may match.
#[derive(Debug, Clone)]
pub struct HashCandidate {
    pub account: String,
    pub user: String,
    pub phc: String,
}

/// The first candidate whose hash `key` verifies against (Argon2: tens of ms each, so only on
/// a pool thread).
pub fn first_match(candidates: Vec<HashCandidate>, key: &str) -> Option<HashCandidate> {
    candidates.into_iter().find(|c| verify_hash(&c.phc, key))
}

/// Check `key` against a stored PHC string (parameters are taken from the string, so hashes
/// written by OpenViking verify too). A malformed PHC string never matches. Slow.
pub fn verify_hash(phc: &str, key: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(key.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's hashlib/base64 (see the commit message).
    const SEEDED_BOB: &str = "YWNtZQ.Ym9i.ZDJkZTc0Y2RlNWU1ZDQ1ZTkyY2RhZjExZTJiMWVkYjkzNmQwNWJhOGNhMmZiNWJiOWY2ZmFlM2QyMTNmOTdmNw";
    const SEEDED_BOB_SECRET: &str =
        "d2de74cde5e5d45e92cdaf11e2b1edb936d05ba8ca2fb5bb9f6fae3d213f97f7";

    #[test]
    fn seeded_keys_match_fixed_vectors() {
        assert_eq!(secret("bob", Some("bob-seed")), SEEDED_BOB_SECRET);
        assert_eq!(new_key("acme", "bob", Some("bob-seed")), SEEDED_BOB);
        assert_eq!(
            new_key("acme", "alice", Some("s1")),
            "YWNtZQ.YWxpY2U.OTYxZjM1MTg4Y2E1YmJmYjNiMWZkMjliNThiOGMxYzlhNmU5MTYwZTg0MjhlOTlmZjMzZTkzMTg5YjA1NDYzZA"
        );
    }

    #[test]
    fn random_keys_are_new_format_and_distinct() {
        let a = new_key("acme", "bob", None);
        let b = new_key("acme", "bob", None);
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].len(), 86);
        assert!(!a.contains('='));
        assert_eq!(
            shape(&a),
            KeyShape::Hinted {
                account: "acme".into(),
                user: "bob".into()
            }
        );
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(&"ab".repeat(32)), KeyShape::Legacy);
        assert_eq!(shape(&"AB".repeat(32)), KeyShape::Other);
        assert_eq!(shape("a.b"), KeyShape::Other);
        assert_eq!(shape("!!.??.x"), KeyShape::Undecodable);
        assert_eq!(shape("YWNtZQ==.Ym9i.eA").clone(), shape("YWNtZQ.Ym9i.eA"));
        // Valid base64 but not UTF-8.
        assert_eq!(shape("_w.Ym9i.eA"), KeyShape::Undecodable);
        assert_eq!(prefix(SEEDED_BOB), "YWNtZQ.Y");
    }

    #[test]
    fn argon2_round_trip_and_format() {
        let phc = hash("k1").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=65536,t=3,p=2$"), "{phc}");
        assert!(is_hashed(&phc));
        assert!(verify_hash(&phc, "k1"));
        assert!(!verify_hash(&phc, "k2"));
        assert!(!verify_hash("$argon2id$garbage", "k1"));
        // 32-byte hash = 43 unpadded base64 characters after the last '$'.
        assert_eq!(phc.rsplit('$').next().map(str::len), Some(43));
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }
}
