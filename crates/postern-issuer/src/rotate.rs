//! Password rotation of static roles (existing upstream users whose password Postern owns)
//! and of a target's admin. The new password is stored (sealed) before it is set upstream,
//! so an interruption leaves it recorded and the next attempt sets the same one again.

use postern_model::{Kind, QualifiedName, SecretValue, Spec, StaticRoleSpec};
use postern_reconciler::sql::{ident, literal};
use postern_reconciler::verifier_for;
use tracing::{info, warn};

use crate::admin::TargetAccess;
use crate::render;
use crate::{now, secs, Issuer, IssuerError};

/// Database admin work that belongs to no database in particular connects to.
const MAINTENANCE_DATABASE: &str = "postgres";

/// The name of the secret holding an admin password that is being rotated in.
pub fn pending_secret_name(secret: &str) -> String {
    format!("{secret}-next")
}

impl Issuer {
    fn static_role(&self, role: &QualifiedName) -> Result<StaticRoleSpec, IssuerError> {
        match self
            .store
            .get_resource(Kind::StaticRole, &role.namespace, &role.name)?
            .map(|s| s.resource.spec)
        {
            Some(Spec::StaticRole(spec)) => Ok(spec),
            _ => Err(IssuerError::Request(format!(
                "StaticRole {role} does not exist"
            ))),
        }
    }

    /// Gives StaticRole `role` a new password now.
    pub async fn rotate_static_role(&self, role: &QualifiedName) -> Result<(), IssuerError> {
        let spec = self.static_role(role)?;
        let stored = self.store.static_role_password(role)?;
        // A rotation cut short may have reached the server: set the same password again.
        let password = match stored
            .filter(|s| s.username == spec.username)
            .and_then(|s| s.pending)
        {
            Some(pending) => pending,
            None => {
                let fresh = SecretValue::new(render::password(&spec.password_policy));
                self.store
                    .set_static_role_pending(role, &spec.username, &fresh)?;
                fresh
            }
        };
        let result = async {
            let access = TargetAccess::load(
                &self.store,
                &QualifiedName::new(&role.namespace, &spec.target),
            )?;
            let connection = self.admin.get(&access, MAINTENANCE_DATABASE).await?;
            connection
                .client
                .batch_execute(&format!(
                    "ALTER ROLE {} PASSWORD {}",
                    ident(&spec.username),
                    literal(&verifier_for(&password))
                ))
                .await
                .map_err(IssuerError::upstream(format!(
                    "StaticRole {role}: setting the password of {}",
                    spec.username
                )))?;
            self.admin.put(connection);
            Ok::<(), IssuerError>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.store.confirm_static_role_rotation(role)?;
                info!(role = %role, username = %spec.username, "rotated a static role's password");
                Ok(())
            }
            Err(error) => {
                self.store.static_role_failed(role, &error.to_string())?;
                Err(error)
            }
        }
    }

    /// Rotates each StaticRole that was never rotated, has a rotation pending, or whose
    /// rotationPeriod has passed. Returns how many were rotated and the failures.
    pub async fn rotate_due_static_roles(&self) -> Result<(usize, Vec<String>), IssuerError> {
        let mut rotated = 0;
        let mut failures = Vec::new();
        for stored in self.store.list_resources(Some(Kind::StaticRole), None)? {
            let Spec::StaticRole(spec) = &stored.resource.spec else {
                continue;
            };
            let role = stored.resource.qualified_name();
            let due = match self.store.static_role_password(&role)? {
                Some(p)
                    if p.username == spec.username
                        && p.pending.is_none()
                        && p.current.is_some() =>
                {
                    p.rotated_at.saturating_add(secs(spec.rotation_period())) <= now()
                }
                _ => true,
            };
            if !due {
                continue;
            }
            match self.rotate_static_role(&role).await {
                Ok(()) => rotated += 1,
                Err(error) => {
                    warn!(role = %role, error = %error, "static role rotation failed");
                    failures.push(format!("StaticRole {role}: {error}"));
                }
            }
        }
        Ok((rotated, failures))
    }

    /// Gives the target's admin a new password: recorded as `<secret>-next` first, set
    /// upstream, then moved into the admin's secret. A `-next` left by an interrupted run
    /// is tried first and promoted when it is the one that works.
    pub async fn rotate_admin(&self, target: &QualifiedName) -> Result<(), IssuerError> {
        let access = TargetAccess::load(&self.store, target)?;
        let secret = access
            .spec
            .admin
            .as_ref()
            .map(|a| a.password_secret.clone())
            .unwrap_or_default();
        let pending_name = pending_secret_name(&secret);
        let ns = &target.namespace;
        if let Some(pending) = self.store.secret_value(ns, &pending_name)? {
            let with_pending = TargetAccess {
                password: pending.clone(),
                ..access.clone()
            };
            if self
                .admin
                .get(&with_pending, MAINTENANCE_DATABASE)
                .await
                .is_ok()
            {
                self.store.set_secret(ns, &secret, &pending)?;
            }
            self.store.delete_secret(ns, &pending_name)?;
            self.admin.clear();
        }
        let access = TargetAccess::load(&self.store, target)?;
        let fresh = SecretValue::new(render::password(&Default::default()));
        self.store.set_secret(ns, &pending_name, &fresh)?;
        let connection = self.admin.get(&access, MAINTENANCE_DATABASE).await?;
        connection
            .client
            .batch_execute(&format!(
                "ALTER ROLE CURRENT_USER PASSWORD {}",
                literal(&verifier_for(&fresh))
            ))
            .await
            .map_err(IssuerError::upstream(format!(
                "Target {target}: setting the admin's new password"
            )))?;
        drop(connection);
        self.store.set_secret(ns, &secret, &fresh)?;
        self.store.delete_secret(ns, &pending_name)?;
        self.admin.clear();
        info!(target = %target, "rotated the target admin's password");
        Ok(())
    }
}
