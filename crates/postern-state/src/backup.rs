//! Online backup of the state database, and its restore into a state directory that has
//! none: SQLite's backup API copying every page in one step, so the copy is one consistent
//! snapshot even while a gateway writes.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

use crate::master_key::KeySettings;
use crate::migrations::known_version;
use crate::store::{open_connection, Store, STATE_DB_FILE};
use crate::StateError;

/// How long a backup waits for a lock a writer holds.
const LOCKED_RETRY_FOR: Duration = Duration::from_secs(10);

/// Copies the state database of `state_dir` to `target`, a new file (mode 0600).
pub fn backup(state_dir: &Path, target: &Path) -> Result<(), StateError> {
    let source_path = state_dir.join(STATE_DB_FILE);
    if !source_path.exists() {
        return Err(StateError::NotFound(format!(
            "state database {}",
            source_path.display()
        )));
    }
    if target.exists() {
        return Err(StateError::Conflict(format!(
            "{} exists; a backup goes to a new file",
            target.display()
        )));
    }
    let source = open_connection(&source_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    copy_into_new_file(&source, target)
}

impl Store {
    /// Puts the backup `file` in place as the state database of `state_dir`, which must
    /// not have one, and opens it with `keys` (migrating a backup of an older version). A
    /// backup the master key does not unseal is taken out again: the directory is left as
    /// it was.
    pub fn restore(state_dir: &Path, file: &Path, keys: &KeySettings) -> Result<Store, StateError> {
        let db_path = state_dir.join(STATE_DB_FILE);
        // A leftover journal beside would be taken for the restored file's own.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = sibling(&db_path, suffix);
            if path.exists() {
                return Err(StateError::Conflict(format!(
                    "{} exists; restore into a state directory without a database (stop the gateway and move the old database and its -wal, -shm files away first)",
                    path.display()
                )));
            }
        }
        let key_file_existed = keys.key_file.exists();
        if !file.is_file() {
            return Err(StateError::NotFound(format!(
                "backup file {}",
                file.display()
            )));
        }
        let backup = open_connection(file, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| {
            StateError::NotABackup {
                path: file.to_owned(),
                reason: e.to_string(),
            }
        })?;
        check_backup(&backup, file)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(StateError::io(state_dir))?;
        copy_into_new_file(&backup, &db_path)?;
        Store::open(state_dir, keys).inspect_err(|_| {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(sibling(&db_path, suffix));
            }
            if !key_file_existed {
                let _ = std::fs::remove_file(&keys.key_file);
            }
        })
    }
}

/// `file` is a sound postern state database this build can run on.
fn check_backup(backup: &Connection, file: &Path) -> Result<(), StateError> {
    let not_a_backup = |reason: String| StateError::NotABackup {
        path: file.to_owned(),
        reason,
    };
    let check: String = backup
        .query_row("PRAGMA quick_check", [], |row| row.get(0))
        .map_err(|e| not_a_backup(e.to_string()))?;
    if check != "ok" {
        return Err(not_a_backup(check));
    }
    let version: i64 = backup
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(|e| not_a_backup(e.to_string()))?;
    let found = usize::try_from(version).map_err(|_| not_a_backup(format!("version {version}")))?;
    if found > known_version() {
        return Err(StateError::NewerSchema {
            found,
            known: known_version(),
        });
    }
    Ok(())
}

/// Copies `source` page by page, in one step, into `target` (created, mode 0600, or an
/// error if it exists); the copy is written beside it and renamed into place when whole.
fn copy_into_new_file(source: &Connection, target: &Path) -> Result<(), StateError> {
    let partial = sibling(target, ".partial");
    let _ = std::fs::remove_file(&partial);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(StateError::io(&partial))?;
    let copied = (|| {
        let mut copy = Connection::open(&partial)?;
        copy_all_pages(source, &mut copy)?;
        // One self-contained file, whatever the source's journal mode.
        copy.pragma_update(None, "journal_mode", "DELETE")?;
        copy.close().map_err(|(_, e)| e)?;
        Ok::<_, rusqlite::Error>(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    // A link fails where a rename would replace a file that appeared meanwhile.
    let linked = std::fs::hard_link(&partial, target);
    let _ = std::fs::remove_file(&partial);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            StateError::Conflict(format!("{} exists", target.display()))
        }
        _ => StateError::io(target)(e),
    })
}

/// Every page in one backup step (one read transaction on `source`: a consistent copy),
/// retried for a while if a writer holds a lock.
fn copy_all_pages(source: &Connection, copy: &mut Connection) -> rusqlite::Result<()> {
    use rusqlite::backup::StepResult;
    let backup = Backup::new(source, copy)?;
    let deadline = Instant::now() + LOCKED_RETRY_FOR;
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the state database stayed locked".to_owned()),
                ))
            }
        }
    }
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
