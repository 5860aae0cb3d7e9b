//! The error classes shared by every crate: they pick SQLSTATE classes, HTTP statuses and
//! the metric label.

/// Which side is at fault, used for metrics labels and status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request was wrong (bad name, unknown service).
    User,
    /// Authentication failed.
    Auth,
    /// Policy denied the request.
    Policy,
    /// The upstream PostgreSQL server failed or refused.
    Upstream,
    /// The peer broke the wire protocol.
    Protocol,
    /// Our own fault.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::User => "user",
            ErrorKind::Auth => "auth",
            ErrorKind::Policy => "policy",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Internal => "internal",
        }
    }
}
