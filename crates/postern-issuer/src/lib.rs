//! Postern's credential issuer: short-lived upstream roles made from a CredentialRole's
//! statements, each tracked by a lease in the state store from before it exists until it
//! is gone; a reaper that revokes at expiry and retries failures; static-role and admin
//! password rotation; a preflight of a target's admin rights; and a sweep for orphans.
//!
//! Crash safety follows Vault's rollback WAL: the lease is recorded (`creating`) before
//! the creation statements run, so a process that dies in between leaves a record the
//! next reaper pass rolls back.
#![forbid(unsafe_code)]

mod admin;
mod check;
mod error;
mod leases;
pub mod render;
mod rotate;
mod sweep;

use std::sync::Arc;

pub use admin::TargetAccess;
pub use check::{check_target, CheckItem};
pub use error::IssuerError;
pub use leases::{Issued, ReapReport, Renewed, RevokeOutcome};
pub use rotate::pending_secret_name;
pub use sweep::Orphan;

use postern_state::Store;

/// The issuer: shared by the CLI commands, the reaper and dynamic-mode sessions.
pub struct Issuer {
    store: Arc<Store>,
    /// `<pid>:<random>`: marks leases this process is creating, so another process can
    /// tell an abandoned creation from one in progress.
    owner: String,
    admin: admin::AdminPool,
}

impl Issuer {
    pub fn new(store: Arc<Store>) -> Arc<Issuer> {
        let mut random = [0u8; 6];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut random);
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Arc::new(Issuer {
            store,
            owner: format!("{}:{random}", std::process::id()),
            admin: admin::AdminPool::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(crate) fn secs(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
