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
    admin: admin::AdminPool,
}

impl Issuer {
    pub fn new(store: Arc<Store>) -> Arc<Issuer> {
        Arc::new(Issuer {
            store,
            admin: admin::AdminPool::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
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

/// The issuer as the gateway sees it in `mode: dynamic`: a role per session, revoked when
/// the session ends.
pub struct SessionIssuer(pub Arc<Issuer>);

impl postern_model::SessionCredentials for SessionIssuer {
    fn acquire<'a>(
        &'a self,
        credential_role: &'a postern_model::QualifiedName,
        identity: &'a postern_model::QualifiedName,
    ) -> postern_model::BoxFuture<
        'a,
        Result<postern_model::SessionLease, postern_model::LeaseRefused>,
    > {
        Box::pin(async move {
            let issued = self
                .0
                .issue(
                    credential_role,
                    None,
                    &identity.name,
                    &format!("session {identity}"),
                )
                .await
                .map_err(|error| postern_model::LeaseRefused {
                    sqlstate: error.sqlstate(),
                    message: format!(
                        "could not issue a role from CredentialRole {}",
                        credential_role.name
                    ),
                    detail: error.to_string(),
                })?;
            let expires_at = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(issued.expires_at).unwrap_or(0));
            Ok(postern_model::SessionLease {
                lease_id: issued.lease_id,
                user: issued.username,
                password: issued.password,
                expires_at,
            })
        })
    }

    fn release(&self, lease_id: String) {
        // Without a runtime (the process is exiting) the lease simply expires; the next
        // start ends leases of sessions whose process is gone.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let issuer = self.0.clone();
        runtime.spawn(async move {
            if let Err(error) = issuer.revoke(&lease_id).await {
                tracing::warn!(lease = %lease_id, error = %error, "revoking a session's role failed; the reaper retries");
            }
        });
    }
}
