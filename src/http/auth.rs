//! The auth extractor: every protected route names its role rule in its signature, so a route
//! cannot forget its check (`Caller<RootOnly>`, `Caller<DataAccess>`, …).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName};
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};

use crate::error::ServiceError;
use crate::identity::{validate_id, AuthMode, IdKind, Identity, Role};
use crate::storage::uri::{self, Access, VikingUri};

use super::AppState;

/// How long a request waits for the AuthActor before answering 503.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// A role rule of spec §2.1.
pub trait Rule: 'static {
    /// Whether `X-OpenViking-Actor-Peer` is validated (spec §1.5: session routes ignore it).
    const VALIDATES_ACTOR_PEER: bool = true;

    fn check(identity: &Identity, mode: AuthMode) -> Result<(), ServiceError>;
}

/// Any authenticated caller, ROOT included.
pub struct AnyRole;
/// ROOT only (account management).
pub struct RootOnly;
/// ROOT, or an ADMIN (the account check is the handler's: it knows the path's account).
pub struct RootOrAdmin;
/// Tenant data (fs, content, search, sessions): ADMIN and USER; ROOT only in dev mode.
pub struct DataAccess;

const ADMIN_NEEDS_API_KEY: &str =
    "Admin API requires api_key mode with root_api_key configured. Dev mode has no key registry.";

impl Rule for AnyRole {
    fn check(_: &Identity, _: AuthMode) -> Result<(), ServiceError> {
        Ok(())
    }
}

impl Rule for RootOnly {
    fn check(identity: &Identity, mode: AuthMode) -> Result<(), ServiceError> {
        if mode == AuthMode::Dev {
            return Err(ServiceError::permission_denied(ADMIN_NEEDS_API_KEY));
        }
        match identity.role {
            Role::Root => Ok(()),
            _ => Err(ServiceError::permission_denied("Requires role: root")),
        }
    }
}

impl Rule for RootOrAdmin {
    fn check(identity: &Identity, mode: AuthMode) -> Result<(), ServiceError> {
        if mode == AuthMode::Dev {
            return Err(ServiceError::permission_denied(ADMIN_NEEDS_API_KEY));
        }
        match identity.role {
            Role::Root | Role::Admin => Ok(()),
            Role::User => Err(ServiceError::permission_denied(
                "Requires role: root, admin",
            )),
        }
    }
}

/// Any role, api_key mode only (0.5.2's `require_auth_role(ROOT, ADMIN, USER)`: pack export
/// and import; dev mode is refused like the admin API).
pub struct AnyKey;

impl Rule for AnyKey {
    fn check(_: &Identity, mode: AuthMode) -> Result<(), ServiceError> {
        if mode == AuthMode::Dev {
            return Err(ServiceError::permission_denied(ADMIN_NEEDS_API_KEY));
        }
        Ok(())
    }
}

impl Rule for DataAccess {
    fn check(identity: &Identity, mode: AuthMode) -> Result<(), ServiceError> {
        if identity.role == Role::Root && mode == AuthMode::ApiKey {
            return Err(ServiceError::permission_denied(
                "ROOT API keys cannot access tenant-scoped data APIs in api_key mode. Use a \
                 user/admin API key for data access, or trusted mode for upstream identity \
                 assertion.",
            )
            .with_details(serde_json::json!({})));
        }
        Ok(())
    }
}

/// Sessions: the same callers as [`DataAccess`]; the actor-peer header is ignored there.
pub struct SessionAccess;

impl Rule for SessionAccess {
    const VALIDATES_ACTOR_PEER: bool = false;

    fn check(identity: &Identity, mode: AuthMode) -> Result<(), ServiceError> {
        DataAccess::check(identity, mode)
    }
}

/// The caller as the admission middleware resolved it (requests with a body), for the
/// `Caller` extractor to reuse: one resolution per request. Taken once.
pub struct Resolution(pub Result<Identity, ServiceError>);

/// The authenticated caller of a request, admitted by rule `R`.
pub struct Caller<R: Rule = AnyRole> {
    pub identity: Identity,
    _rule: PhantomData<R>,
}

impl<R: Rule> Caller<R> {
    pub fn account(&self) -> &str {
        &self.identity.account
    }
    pub fn user(&self) -> &str {
        &self.identity.user
    }
    pub fn role(&self) -> Role {
        self.identity.role
    }
}

/// Where the WebDAV share is mounted (`http::webdav`), the only paths that take HTTP Basic.
pub const WEBDAV_PREFIX: &str = "/webdav/resources";

/// The presented key: `X-API-Key` if non-empty, else `Authorization: Bearer <key>`.
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

pub fn presented_key(req: &HttpRequest) -> Option<String> {
    let header = |name: &HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(k) = header(&X_API_KEY) {
        return Some(k.to_string());
    }
    let authorization = header(&header::AUTHORIZATION)?;
    if let Some(key) = authorization.strip_prefix("Bearer ") {
        return Some(key.trim().to_string()).filter(|k| !k.is_empty());
    }
    // WebDAV only (file managers and litmus speak nothing else): HTTP Basic with the key as
    // the password. Sent in the clear, so fit for TLS or loopback only (README).
    if req.path().starts_with(WEBDAV_PREFIX) {
        return basic_password(authorization);
    }
    None
}

/// The password of an `Authorization: Basic` value (`user:password`, base64).
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_string()).filter(|p| !p.is_empty())
}

/// An identity header, trimmed; empty → absent. A value with bytes outside visible ASCII is
/// kept (lossily decoded) rather than dropped, so the §2.2 check answers 400 for it instead of
/// the request silently running as `default` or without its peer.
fn identity_header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The dev-mode identity: ROOT in the account/user named by headers (default `default`).
fn dev_identity(req: &HttpRequest) -> Result<Identity, ServiceError> {
    let account = identity_header(req, "x-openviking-account").unwrap_or_else(|| "default".into());
    let user = identity_header(req, "x-openviking-user").unwrap_or_else(|| "default".into());
    validate_id(IdKind::Account, &account)?;
    validate_id(IdKind::User, &user)?;
    Ok(Identity {
        role: Role::Root,
        account,
        user,
    })
}

/// `X-OpenViking-Actor-Peer` is validated and otherwise ignored (spec §13.9).
fn check_actor_peer(req: &HttpRequest) -> Result<(), ServiceError> {
    if let Some(peer) = identity_header(req, "x-openviking-actor-peer") {
        if peer.contains('/') || peer.contains('\\') {
            return Err(ServiceError::invalid_argument(
                "actor_peer_id must not contain path separators.",
            ));
        }
        validate_id(IdKind::Peer, &peer)?;
    }
    Ok(())
}

/// Resolve the caller of `req` (no role check).
pub async fn resolve(state: &AppState, req: &HttpRequest) -> Result<Identity, ServiceError> {
    match state.mode {
        AuthMode::Dev => dev_identity(req),
        AuthMode::ApiKey => {
            let key = presented_key(req).ok_or_else(|| {
                ServiceError::unauthenticated("Missing API Key when resolving identity.")
            })?;
            state.resolve_key(key, AUTH_DEADLINE).await
        }
    }
}

impl<R: Rule> FromRequest for Caller<R> {
    type Error = ServiceError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ServiceError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ServiceError::internal("application state missing"))?
                .clone();
            // The admission middleware resolved callers that send a body already.
            let resolved = req.extensions_mut().remove::<Resolution>();
            let identity = match resolved {
                Some(Resolution(r)) => r?,
                None => resolve(&state, &req).await?,
            };
            // Noted before the role check: a refused mutation is audited with its 403.
            crate::telemetry::audit_note::caller(
                identity.role.as_str(),
                &identity.account,
                &identity.user,
            );
            R::check(&identity, state.mode)?;
            // Jobs of this request wait in its account's lane (fair between accounts).
            crate::telemetry::request::attribute_account(&identity.account);
            if R::VALIDATES_ACTOR_PEER {
                check_actor_peer(&req)?;
            }
            Ok(Caller {
                identity,
                _rule: PhantomData,
            })
        })
    }
}

/// Parse `raw` for the caller and check `access` (spec §5).
pub fn resolve_uri(
    caller: &Caller<DataAccess>,
    raw: &str,
    access: Access,
) -> Result<VikingUri, ServiceError> {
    let uri = uri::parse(raw, &caller.identity)?;
    uri::authorize(&uri, &caller.identity, access)?;
    Ok(uri)
}
