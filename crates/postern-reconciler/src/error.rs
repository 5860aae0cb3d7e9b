//! Errors of a reconcile run. None carries a password: statements are kept in their
//! printable form, and upstream errors are PostgreSQL's own messages.

use postern_model::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] postern_state::StateError),
    #[error("{0}")]
    Config(String),
    #[error("could not connect to {target} database {database}: {reason}")]
    Connect {
        target: String,
        database: String,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Query { what: String, reason: String },
}

/// PostgreSQL's own text for an error: the server's message when there is one.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

impl ReconcileError {
    pub(crate) fn query(what: &str) -> impl Fn(tokio_postgres::Error) -> ReconcileError + '_ {
        move |e| ReconcileError::Query {
            what: what.to_owned(),
            reason: describe(&e),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::State(e) => e.kind(),
            ReconcileError::Config(_) => ErrorKind::User,
            ReconcileError::Connect { .. } | ReconcileError::Query { .. } => ErrorKind::Upstream,
        }
    }
}
