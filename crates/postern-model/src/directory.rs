//! What the proxy needs to know at connect time, as a trait: the proxy is handed an
//! `Arc<dyn Directory>` and never sees the store, so tests can give it a fake.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::name::QualifiedName;
use crate::policy::{ClientFacts, Denial, SessionPolicy};
use crate::resource::{PoolSpec, SslMode, TimeoutSpec};

/// A secret value in memory. It prints as `***` so it cannot leak through `{:?}` or logs;
/// read it with [`SecretValue::expose`] only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

/// Where and as whom the gateway connects for a service.
#[derive(Debug, Clone)]
pub struct UpstreamRoute {
    pub target: QualifiedName,
    pub address: String,
    pub ssl_mode: SslMode,
    /// PEM roots for `verify-ca` / `verify-full`.
    pub ca_file: Option<String>,
    pub database: String,
    pub user: String,
    /// `None` when the service's password secret has not been set yet.
    pub password: Option<SecretValue>,
    /// Tried when the upstream refuses `password` (28P01): the other side of a rotation
    /// in flight (a static role's pending password, a managed role's new one), so logins
    /// work whether or not the upstream has taken the new password yet.
    pub fallback_password: Option<SecretValue>,
    pub pool: PoolSpec,
    /// The target's bounds on the gateway's connections (`maxConnections…`).
    pub limits: ConnectionLimits,
    pub timeouts: TimeoutSpec,
    /// `mode: dynamic`: the CredentialRole each session gets a fresh role from; `user`
    /// and `password` are then empty until the session's lease fills them.
    pub dynamic_role: Option<QualifiedName>,
    /// `mode: dynamicConfig`: the config the route rules chose.
    pub config_name: Option<String>,
    /// The service's rules bound to this session; `None` when it has none.
    pub policy: Option<std::sync::Arc<dyn SessionPolicy>>,
    /// The identity's groups, for the access log.
    pub identity_groups: Vec<String>,
}

/// Bounds a target sets on the gateway's own connections to it, in use and idle together;
/// `None` leaves the bound to what the server says of itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub total: Option<u32>,
    pub per_user: Option<u32>,
}

/// How an identity may log in.
#[derive(Debug, Clone, Default)]
pub struct IdentityCredentials {
    /// SCRAM verifiers of its active API keys, all sharing one salt.
    pub verifiers: Vec<String>,
    /// Common name of a client certificate that logs it in, if it has one.
    pub certificate_common_name: Option<String>,
}

/// The outcome of looking up where an identity's session to a service goes.
#[derive(Debug, Clone)]
pub enum RouteLookup {
    Found(Box<UpstreamRoute>),
    /// No such service, or one the identity may not see.
    NoService,
    /// The service exists but this identity may not use it; the text is for the client.
    Denied(String),
    /// The route is not ready yet (its managed role is still being created); for the client.
    NotReady(String),
    /// The service's rules refuse this identity at connect.
    PolicyDenied(Denial),
    /// No `dynamicConfig` route rule matched; the text is for the client.
    NoRouteRule(String),
}

/// The state store failed; the message is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
#[error("state lookup failed: {message}")]
pub struct DirectoryError {
    pub message: String,
    /// The state database cannot be reached (a shared one, down or cut off): new logins
    /// wait for it (57P03) while open sessions go on.
    pub unavailable: bool,
}

/// Connect-time lookups. Implementations may block briefly (SQLite reads); async callers
/// run them on a blocking thread.
pub trait Directory: Send + Sync + 'static {
    /// How the identity may log in, or `None` if it does not exist.
    fn identity_credentials(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<IdentityCredentials>, DirectoryError>;

    /// Where and as whom `identity`'s session to `service` logs in upstream, after the
    /// service's rules have seen the session (`client` is what the proxy knows of it).
    fn upstream_route(
        &self,
        service: &QualifiedName,
        identity: &QualifiedName,
        client: &ClientFacts,
    ) -> Result<RouteLookup, DirectoryError>;

    /// A number that changes whenever any resource changes, from any process: open
    /// sessions bind their service's rules again when it moves.
    fn resource_epoch(&self) -> Result<u64, DirectoryError>;
}

/// A boxed future, so the traits below stay object-safe without an async runtime here.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a service's auth-provider plugins make of a cleartext password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderVerdict {
    /// A provider proved the identity; `groups` come from the credential.
    Authenticated { groups: Vec<String> },
    /// A provider refused, or proved another identity (the reason is for the log only).
    Rejected(String),
    /// The service has no providers, or none took this kind of credential.
    NotApplicable,
}

/// What a client offers an auth provider.
#[derive(Debug, Clone, Copy)]
pub enum ProviderCredential<'a> {
    /// The cleartext password message (a token).
    Password(&'a str),
    /// The DER of a client certificate the TLS handshake verified.
    Certificate(&'a [u8]),
}

/// The auth-provider plugins services name (`spec.auth.providers`), asked in order.
pub trait AuthProviders: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        service: &'a QualifiedName,
        identity: &'a QualifiedName,
        client: &'a ClientFacts,
        credential: ProviderCredential<'a>,
    ) -> BoxFuture<'a, ProviderVerdict>;
}

/// A role issued for one session (`mode: dynamic`).
#[derive(Debug, Clone)]
pub struct SessionLease {
    pub lease_id: String,
    pub user: String,
    pub password: SecretValue,
    /// The session is ended when the lease runs out.
    pub expires_at: SystemTime,
}

/// Why a session got no role: what the client is told, and what the log gets.
#[derive(Debug, Clone)]
pub struct LeaseRefused {
    pub sqlstate: &'static str,
    /// Safe for the client: names the service and role, never a password.
    pub message: String,
    pub detail: String,
}

/// Issues and revokes per-session roles; the credential issuer implements it.
pub trait SessionCredentials: Send + Sync + 'static {
    /// A fresh role from `credential_role` for `identity`'s session.
    fn acquire<'a>(
        &'a self,
        credential_role: &'a QualifiedName,
        identity: &'a QualifiedName,
    ) -> BoxFuture<'a, Result<SessionLease, LeaseRefused>>;

    /// The session ended: revoke its role (in the background; failures are retried).
    fn release(&self, lease_id: String);
}

/// Where the wire proxy takes an access token as a cleartext password. Never over plain
/// TCP from another host: the token would cross the network readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenPassword {
    Off,
    /// Over TLS only.
    #[default]
    Tls,
    /// Over TLS, or over plain TCP from a loopback address.
    TlsOrLoopback,
}

/// Why an access token was not accepted; for logs, never for clients (they get 28P01).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("access token refused: {0}")]
pub struct TokenRejected(pub String);

/// Checks access tokens offered as passwords. Implementations may block briefly (a
/// revocation lookup); async callers run them on a blocking thread.
pub trait TokenVerifier: Send + Sync + 'static {
    /// Accepts `token` only when it is a valid, unexpired, unrevoked token of `identity`.
    fn verify(&self, token: &str, identity: &QualifiedName) -> Result<(), TokenRejected>;

    /// Whether `token` names one of this verifier's own keys (valid or not): such a
    /// password is never handed on to auth-provider plugins.
    fn issued_here(&self, _token: &str) -> bool {
        false
    }
}
