//! Errors of the state store.

use std::path::PathBuf;

use postern_model::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    MasterKey(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An optimistic-concurrency check failed (the resource changed, or already exists).
    #[error("{0}")]
    Stale(String),
    /// A write's guard refused it: its writer may not make it.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Plan(#[from] postern_model::PlanError),
    #[error("state database holds an invalid row: {0}")]
    Corrupt(String),
}

impl StateError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StateError {
        let path = path.into();
        move |source| StateError::Io { path, source }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StateError::NotFound(_)
            | StateError::Conflict(_)
            | StateError::Stale(_)
            | StateError::Refused(_)
            | StateError::Plan(_) => ErrorKind::User,
            _ => ErrorKind::Internal,
        }
    }
}
