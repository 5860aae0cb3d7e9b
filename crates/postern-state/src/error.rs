//! Errors of the state store.

use std::path::PathBuf;

use postern_model::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not marked as the source: its text is already in this one's, once.
    #[error("state database error: {0}")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL refused a statement (its message and SQLSTATE).
    #[error("state database error: {0}")]
    Postgres(String),
    /// The state database cannot be reached (PostgreSQL: no connection).
    #[error("{0}")]
    Unavailable(String),
    /// The filesystem of the state directory has no room: the write was rolled back.
    #[error("the state database's disk is full; nothing was written (free space in the state directory and retry)")]
    DiskFull,
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
    /// A file given as a backup cannot be one.
    #[error("{path} is not a postern state backup: {reason}")]
    NotABackup { path: PathBuf, reason: String },
    /// A newer postern migrated the database: this one must not write to it.
    #[error("state database is at schema version {found}, newer than this build knows ({known}); upgrade postern")]
    NewerSchema { found: usize, known: usize },
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> StateError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StateError::DiskFull,
            _ => StateError::Sqlite(e),
        }
    }
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
