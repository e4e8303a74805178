//! Canonicalisation of the viking URIs that message parts carry (spec §5.1, §5.3, §5.4), with
//! the shared URI rules. Parts only store URIs, they never open them, so no access check
//! applies here; it applies when a client later reads the URI through fs/content.

use crate::error::ServiceError;
use crate::identity::Identity;

/// The canonical form of `raw` for the caller `who`.
pub fn canonical(raw: &str, who: &Identity) -> Result<String, ServiceError> {
    Ok(crate::storage::uri::parse(raw, who)?.uri())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    #[test]
    fn canonicalises() {
        let bob = Identity {
            role: Role::User,
            account: "acme".into(),
            user: "bob".into(),
        };
        assert_eq!(
            canonical(" viking://resources/docs/ ", &bob).unwrap(),
            "viking://resources/docs"
        );
        assert_eq!(
            canonical("viking://~/m", &bob).unwrap(),
            "viking://user/bob/m"
        );
        assert_eq!(
            canonical("viking://session/s1", &bob).unwrap(),
            "viking://user/bob/sessions/s1"
        );
        for bad in ["", "http://x", "viking://temp/x", "viking://resources/../x"] {
            assert!(canonical(bad, &bob).is_err(), "{bad}");
        }
    }
}
