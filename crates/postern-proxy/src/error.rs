//! Session errors and what a client may see of them: `to_client` is the one allow-list of
//! texts and SQLSTATEs that leave the gateway. Secrets cannot reach it: no variant holds one.

use postern_model::ErrorKind;
use postern_wire::WireError;

/// Why the upstream leg failed. Messages name the service, never credentials.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to {address}")]
    Timeout { address: String },
    #[error("connection to the upstream was lost: {0}")]
    Lost(std::io::Error),
    #[error("upstream closed the connection during login")]
    Closed,
    #[error("upstream refused the session: {sqlstate} {message}")]
    Refused { sqlstate: String, message: String },
    #[error("the target's {setting} ({limit}) is reached and no idle connection can be closed")]
    LimitReached { setting: &'static str, limit: usize },
    #[error("the password secret of the service is not set")]
    MissingPassword,
    #[error("upstream asked for {0}, which the gateway does not support")]
    UnsupportedAuth(String),
    #[error("upstream TLS settings are unusable: {0}")]
    TlsConfig(String),
    #[error("the upstream server declined TLS, which the target's sslMode requires")]
    TlsRefused,
    #[error("TLS to the upstream failed: {0}")]
    Tls(std::io::Error),
    #[error("upstream SCRAM exchange failed: {0}")]
    Scram(std::io::Error),
    #[error("upstream broke the protocol: {0}")]
    Protocol(WireError),
}

impl UpstreamError {
    /// SQLSTATE for the client: the server's own when it refused the session for a reason
    /// other than the gateway's credentials (53300 stays 53300); 08006 when an open
    /// connection broke, 08001 when one could not be established.
    fn sqlstate(&self) -> std::borrow::Cow<'static, str> {
        match self {
            UpstreamError::Refused { sqlstate, .. }
                if !is_credentials_refusal(sqlstate) && is_sqlstate(sqlstate) =>
            {
                sqlstate.clone().into()
            }
            UpstreamError::LimitReached { .. } => "53300".into(),
            UpstreamError::Lost(_) | UpstreamError::Closed | UpstreamError::Protocol(_) => {
                "08006".into()
            }
            _ => "08001".into(),
        }
    }

    /// The reason shown to clients: coarse on purpose where the server's words could
    /// tell about the gateway's credentials (those stay in our log); the server's own
    /// words when it refused for another reason (too many clients, a bad parameter value,
    /// shutting down), which name nothing secret.
    fn client_reason(&self) -> String {
        match self {
            UpstreamError::Refused { sqlstate, message } if !is_credentials_refusal(sqlstate) => {
                format!("the upstream server said: {message}")
            }
            UpstreamError::LimitReached { setting, limit } => {
                format!("the target's {setting} ({limit}) is reached")
            }
            other => other.coarse_reason().to_owned(),
        }
    }

    fn coarse_reason(&self) -> &'static str {
        match self {
            UpstreamError::LimitReached { .. } => "the target's connection limit is reached",
            UpstreamError::Connect { .. } => "the upstream server is unreachable",
            UpstreamError::Timeout { .. } => "the upstream server did not answer in time",
            UpstreamError::Lost(_) | UpstreamError::Closed | UpstreamError::Protocol(_) => {
                "the upstream server closed the connection"
            }
            UpstreamError::Refused { .. } | UpstreamError::Scram(_) => {
                "the upstream server refused the gateway's credentials"
            }
            UpstreamError::MissingPassword => "the service's upstream password is not set",
            UpstreamError::UnsupportedAuth(_) => {
                "the upstream server asked for an unsupported authentication method"
            }
            UpstreamError::TlsConfig(_) => "the target's TLS settings are unusable",
            UpstreamError::TlsRefused => {
                "the upstream server does not offer the TLS the target's sslMode requires"
            }
            UpstreamError::Tls(_) => {
                "TLS to the upstream server failed (is its certificate trusted for this name?)"
            }
        }
    }
}

/// Class 28 (invalid authorization): the server did not take the gateway's credentials
/// for the service. Said to the client in general terms only.
fn is_credentials_refusal(sqlstate: &str) -> bool {
    sqlstate.starts_with("28")
}

/// Five digits or upper-case letters: what a server that is not PostgreSQL could get wrong.
fn is_sqlstate(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Protocol(#[from] WireError),
    #[error("no user name in the startup packet")]
    NoUser,
    #[error("authentication failed for {user}")]
    AuthFailed { user: String },
    #[error("service {dbname:?} not found for {identity}")]
    UnknownService { dbname: String, identity: String },
    #[error("access denied: {0}")]
    Denied(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("rule {rule:?} of service {service} refuses the connection")]
    PolicyDenied {
        rule: String,
        service: String,
        /// A policy plugin's own reason.
        reason: Option<String>,
    },
    #[error("no route: {0}")]
    NoRoute(String),
    #[error("upstream of service {service}: {source}")]
    Upstream {
        service: String,
        source: UpstreamError,
    },
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("authentication timed out")]
    AuthTimeout,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("idle for {secs} s")]
    IdleTimeout { secs: u64 },
    #[error("idle in a transaction for {secs} s")]
    IdleInTransactionTimeout { secs: u64 },
    #[error("client closed the connection")]
    ClientGone,
    #[error("the client took nothing sent to it for {secs} s (client_write_timeout_secs)")]
    ClientStalled { secs: u64 },
    #[error("the session's credential lease expired")]
    LeaseExpired,
    #[error("no role for the session: {}", .0.detail)]
    NoLease(postern_model::LeaseRefused),
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(std::io::Error),
    #[error("client connected without TLS, which this gateway requires")]
    TlsRequired,
    #[error("{0} (while a message to the client was half sent, so it was not told)")]
    MidMessage(Box<SessionError>),
    #[error("client connection failed: {0}")]
    ClientIo(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("too many client connections (max_client_connections)")]
    TooManyClients,
    /// The state database cannot be reached: the message is for logs.
    #[error("the state database is unreachable: {0}")]
    StateUnavailable(String),
}

impl From<postern_model::DirectoryError> for SessionError {
    fn from(e: postern_model::DirectoryError) -> SessionError {
        match e.unavailable {
            true => SessionError::StateUnavailable(e.message),
            false => SessionError::Internal(e.to_string()),
        }
    }
}

/// What the client is told: SQLSTATE and message.
pub struct ClientError {
    pub sqlstate: std::borrow::Cow<'static, str>,
    pub message: String,
}

impl SessionError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SessionError::MidMessage(inner) => inner.kind(),
            SessionError::Protocol(_)
            | SessionError::ClientIo(_)
            | SessionError::ClientGone
            | SessionError::ClientStalled { .. }
            | SessionError::TlsHandshake(_) => ErrorKind::Protocol,
            SessionError::NoUser
            | SessionError::AuthFailed { .. }
            | SessionError::AuthTimeout
            | SessionError::TlsRequired => ErrorKind::Auth,
            SessionError::Denied(_)
            | SessionError::PolicyDenied { .. }
            | SessionError::NoRoute(_) => ErrorKind::Policy,
            SessionError::UnknownService { .. }
            | SessionError::NotReady(_)
            | SessionError::Unsupported(_)
            | SessionError::IdleTimeout { .. }
            | SessionError::IdleInTransactionTimeout { .. } => ErrorKind::User,
            SessionError::Upstream { .. } | SessionError::NoLease(_) => ErrorKind::Upstream,
            SessionError::LeaseExpired | SessionError::TooManyClients => ErrorKind::User,
            SessionError::ShuttingDown
            | SessionError::Internal(_)
            | SessionError::StateUnavailable(_) => ErrorKind::Internal,
        }
    }

    /// The allow-list of what a client may see; `None` when nothing can be sent.
    pub fn to_client(&self) -> Option<ClientError> {
        let (sqlstate, message) = match self {
            SessionError::Protocol(e) => ("08P01", format!("invalid frontend message: {e}")),
            SessionError::NoUser => (
                "28000",
                "no PostgreSQL user name specified in startup packet".to_owned(),
            ),
            // The same text whether the identity exists or not.
            SessionError::AuthFailed { user } => (
                "28P01",
                format!("password authentication failed for user \"{user}\""),
            ),
            SessionError::UnknownService { dbname, .. } => {
                ("3D000", format!("service \"{dbname}\" does not exist"))
            }
            // The texts come from the directory and name only the identity and service.
            SessionError::Denied(reason) => ("42501", format!("permission denied: {reason}")),
            SessionError::NotReady(reason) => ("57P03", reason.clone()),
            SessionError::PolicyDenied {
                rule,
                service,
                reason: Some(reason),
            } => (
                "42501",
                format!(
                    "permission denied by {} of service {service}: {reason}",
                    rule.replace(':', " ")
                ),
            ),
            SessionError::PolicyDenied {
                rule,
                service,
                reason: None,
            } => (
                "42501",
                format!("permission denied: rule \"{rule}\" of service {service} refuses this connection"),
            ),
            SessionError::NoRoute(reason) => ("28000", reason.clone()),
            SessionError::Upstream { service, source } => {
                return Some(ClientError {
                    sqlstate: source.sqlstate(),
                    message: format!(
                        "could not connect to service \"{service}\": {}",
                        source.client_reason()
                    ),
                })
            }
            // PostgreSQL's words for a pg_hba.conf `hostssl`-only rejection.
            SessionError::TlsRequired => (
                "28000",
                "TLS is required: connect with sslmode=require or stricter".to_owned(),
            ),
            SessionError::Unsupported(what) => ("0A000", format!("{what} is not supported")),
            SessionError::AuthTimeout => (
                "08006",
                "canceling authentication due to timeout".to_owned(),
            ),
            SessionError::IdleTimeout { secs } => (
                "57P05",
                format!("terminating connection due to idle-session timeout (the service allows {secs} s idle)"),
            ),
            SessionError::IdleInTransactionTimeout { secs } => (
                "25P03",
                format!(
                    "terminating connection due to idle-in-transaction timeout (the service allows {secs} s idle in a transaction)"
                ),
            ),
            SessionError::LeaseExpired => (
                "57P01",
                "terminating connection because its credential lease expired".to_owned(),
            ),
            SessionError::NoLease(refused) => (refused.sqlstate, refused.message.clone()),
            SessionError::ShuttingDown => (
                "57P01",
                "terminating connection due to administrator command".to_owned(),
            ),
            SessionError::Internal(_) => ("XX000", "internal error in the gateway".to_owned()),
            // As PostgreSQL answers while it cannot take connections yet: retry later.
            SessionError::StateUnavailable(_) => (
                "57P03",
                "the gateway cannot reach its state database; try again shortly".to_owned(),
            ),
            // PostgreSQL's own words past max_connections.
            SessionError::TooManyClients => ("53300", "sorry, too many clients already".to_owned()),
            // It reads nothing: an ErrorResponse could not reach it.
            SessionError::ClientGone
            | SessionError::ClientIo(_)
            | SessionError::ClientStalled { .. }
            | SessionError::TlsHandshake(_)
            | SessionError::MidMessage(_) => {
                return None
            }
        };
        Some(ClientError {
            sqlstate: sqlstate.into(),
            message,
        })
    }
}
