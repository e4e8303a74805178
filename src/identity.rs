//! Who is calling: roles and resolved identities (spec §2.1).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// How requests are authenticated (spec §1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No root key: every request is ROOT in the account named by headers; loopback only.
    Dev,
    /// Keys resolve to (role, account, user).
    ApiKey,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Dev => "dev",
            AuthMode::ApiKey => "api_key",
        }
    }
}

/// A resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub account: String,
    pub user: String,
}

impl Identity {
    /// The ROOT identity, booked under `default/default` (spec §1.4).
    pub fn root() -> Self {
        Identity {
            role: Role::Root,
            account: "default".into(),
            user: "default".into(),
        }
    }
}

use crate::error::ServiceError;

/// Which identifier rule set applies (spec §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Account,
    User,
    Peer,
    /// A group of users (ACL principals `group:<id>`).
    Group,
}

impl IdKind {
    fn field(self) -> &'static str {
        match self {
            IdKind::Account => "account_id",
            IdKind::User => "user_id",
            IdKind::Peer => "peer_id",
            IdKind::Group => "group_id",
        }
    }
}

/// Longest id accepted when an account or user is created (spec §13.8).
pub const MAX_NEW_ID_LEN: usize = 255;

/// Validate an account/user/peer id (spec §2.2); `$` anchors at the true end, so a trailing
/// newline is rejected too.
pub fn validate_id(kind: IdKind, value: &str) -> Result<(), ServiceError> {
    let field = kind.field();
    let prefix = if kind == IdKind::Peer {
        "Invalid peer_id: "
    } else {
        ""
    };
    let fail = |m: String| {
        Err(ServiceError::invalid_argument(format!("{prefix}{m}"))
            .with_details(serde_json::json!({})))
    };
    if value.is_empty() {
        return fail(format!("{field} is empty"));
    }
    if value == "." || value == ".." {
        return fail(format!("{field} must not be '.' or '..'"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
    {
        return fail(format!("{field} must be alpha_numeric string."));
    }
    if value.bytes().filter(|&b| b == b'@').count() > 1 {
        return fail(format!("{field} must have at most one @."));
    }
    // An id is a path segment (`user/<id>`, an account's top folder): never a reserved name.
    if crate::reserved::is_internal_name(value) {
        return fail(format!("{field} is a reserved name"));
    }
    if kind == IdKind::Account && value.starts_with('_') {
        return fail(format!("{field} cannot start with underscore _."));
    }
    Ok(())
}

/// The creation-time length rule of spec §13.8 (account: bytes, user: characters).
pub fn validate_new_id(kind: IdKind, value: &str) -> Result<(), ServiceError> {
    validate_id(kind, value)?;
    let too_long = match kind {
        IdKind::Account => value.len() > MAX_NEW_ID_LEN,
        _ => value.chars().count() > MAX_NEW_ID_LEN,
    };
    if too_long {
        let unit = if kind == IdKind::Account {
            "UTF-8 bytes"
        } else {
            "characters"
        };
        return Err(ServiceError::invalid_argument(format!(
            "{} must not exceed {MAX_NEW_ID_LEN} {unit}.",
            kind.field()
        ))
        .with_details(serde_json::json!({})));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["acme", "a.b", "bob@x", "A_1-2"] {
            assert!(validate_id(IdKind::Account, ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "a\n", "a@b@c", "_system", "é"] {
            assert!(validate_id(IdKind::Account, bad).is_err(), "{bad:?}");
        }
        assert!(validate_id(IdKind::User, "_ok").is_ok());
        assert!(validate_new_id(IdKind::User, &"u".repeat(255)).is_ok());
        assert!(validate_new_id(IdKind::User, &"u".repeat(256)).is_err());
    }
}
