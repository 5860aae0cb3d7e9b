//! Errors of the issuer. None carries a password: statements are named by list and index,
//! and upstream errors are PostgreSQL's own messages.

use postern_model::{ErrorKind, StatementList};

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error(transparent)]
    State(#[from] postern_state::StateError),
    /// Something in the resources is missing or wrong.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Request(String),
    #[error("could not reach the upstream of {what}: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("CredentialRole {role}: spec.{list}[{index}] failed: {reason}")]
    Statement {
        role: String,
        list: StatementList,
        index: usize,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Upstream { what: String, reason: String },
    /// A bug: work on the blocking pool panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IssuerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            IssuerError::State(e) => e.kind(),
            IssuerError::Config(_) | IssuerError::Request(_) => ErrorKind::User,
            IssuerError::Unreachable { .. }
            | IssuerError::Statement { .. }
            | IssuerError::Upstream { .. } => ErrorKind::Upstream,
            IssuerError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The SQLSTATE a client of the gateway sees when its session's role cannot be made.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            IssuerError::Unreachable { .. } => "08001",
            IssuerError::Statement { .. } | IssuerError::Upstream { .. } => "58000",
            IssuerError::Config(_) | IssuerError::Request(_) => "28000",
            IssuerError::State(_) | IssuerError::Internal(_) => "XX000",
        }
    }

    pub(crate) fn upstream(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let what = what.into();
        move |e| IssuerError::Upstream {
            what,
            reason: postern_reconciler::describe(&e),
        }
    }
}

impl From<postern_reconciler::ReconcileError> for IssuerError {
    fn from(error: postern_reconciler::ReconcileError) -> Self {
        use postern_reconciler::ReconcileError as R;
        match error {
            R::State(e) => IssuerError::State(e),
            R::Config(message) => IssuerError::Config(message),
            R::Connect {
                target,
                database,
                reason,
            } => IssuerError::Unreachable {
                what: format!("Target {target} (database {database})"),
                reason,
            },
            R::Query { what, reason } => IssuerError::Upstream { what, reason },
        }
    }
}
