//! The bootstrap admin token: written once into the state directory, for the first API
//! caller.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use postern_state::Store;
use tracing::info;

/// The file the bootstrap admin token is written to on first start.
pub const BOOTSTRAP_TOKEN_FILE: &str = "admin-token";

/// Writes the bootstrap admin token (0600) into the state directory on first start and
/// says where; later starts find one already made and say nothing new.
pub fn write_bootstrap_token(store: &Store, state_dir: &Path) -> anyhow::Result<()> {
    let path: PathBuf = state_dir.join(BOOTSTRAP_TOKEN_FILE);
    let created = store
        .create_bootstrap_token(|token| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            // `mode` applies only to a new file; an old one is tightened as well.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            writeln!(file, "{}", token.expose())?;
            file.sync_all()
        })
        .with_context(|| {
            format!(
                "cannot write the bootstrap admin token to {}",
                path.display()
            )
        })?;
    if created {
        info!(path = %path.display(), "bootstrap admin token written (account-admin; use it as a Bearer token and keep it safe)");
    }
    Ok(())
}
