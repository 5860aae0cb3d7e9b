//! `postern creds sweep`: upstream roles that look issued (their name fits a
//! CredentialRole's username template) but that no live lease accounts for. Leaked roles
//! bloat the catalogs until GRANTs fail; the sweep lists them and, asked to, drops them.

use std::collections::BTreeSet;

use postern_model::{QualifiedName, Spec};

use crate::admin::TargetAccess;
use crate::render::matches_template;
use crate::{Issuer, IssuerError, RevokeOutcome};

/// A role no lease accounts for.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub credential_role: QualifiedName,
    pub target: QualifiedName,
    pub username: String,
    /// The drop's outcome, when not a dry run.
    pub dropped: Option<Result<RevokeOutcome, String>>,
}

impl Issuer {
    /// Finds orphans of every CredentialRole; drops them unless `dry_run`.
    pub async fn sweep(&self, dry_run: bool) -> Result<Vec<Orphan>, IssuerError> {
        let resources = self.store.list_resources(None, None)?;
        // Names Postern uses for something else are never orphans.
        let mut spoken_for: BTreeSet<(QualifiedName, String)> = BTreeSet::new();
        for stored in &resources {
            let ns = stored.resource.namespace();
            match &stored.resource.spec {
                Spec::StaticRole(r) => {
                    spoken_for.insert((QualifiedName::new(ns, &r.target), r.username.clone()));
                }
                Spec::Target(t) => {
                    if let Some(admin) = &t.admin {
                        spoken_for.insert((stored.resource.qualified_name(), admin.user.clone()));
                    }
                }
                _ => {}
            }
        }
        let mut orphans = Vec::new();
        for stored in &resources {
            let Spec::CredentialRole(spec) = &stored.resource.spec else {
                continue;
            };
            let role = stored.resource.qualified_name();
            let target = QualifiedName::new(&role.namespace, &spec.target);
            let leased: BTreeSet<String> =
                self.store.leased_usernames(&target)?.into_iter().collect();
            let access = TargetAccess::load(&self.store, &target)?;
            let connection = self.admin.get(&access, &spec.database).await?;
            let names: Vec<String> = connection
                .client
                .query(
                    "SELECT rolname FROM pg_roles WHERE NOT rolsuper ORDER BY rolname",
                    &[],
                )
                .await
                .map_err(IssuerError::upstream("listing roles"))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            self.admin.put(connection);
            let template = spec.username_template();
            for username in names {
                if leased.contains(&username)
                    || spoken_for.contains(&(target.clone(), username.clone()))
                    || !matches_template(&template, &username)
                    || orphans
                        .iter()
                        .any(|o: &Orphan| o.target == target && o.username == username)
                {
                    continue;
                }
                let dropped = if dry_run {
                    None
                } else {
                    Some(
                        self.drop_role(&role, spec, &target, &username, false)
                            .await
                            .map_err(|e| e.to_string()),
                    )
                };
                orphans.push(Orphan {
                    credential_role: role.clone(),
                    target: target.clone(),
                    username,
                    dropped,
                });
            }
        }
        Ok(orphans)
    }
}
