//! `postern target check`: logs in as the target's admin and reports, per feature, whether
//! the admin role has what that feature needs, with the statement that fixes each gap.

use postern_model::{QualifiedName, Spec, UpstreamSpec};
use postern_reconciler::sql::ident;

use crate::admin::TargetAccess;
use crate::{Issuer, IssuerError};

/// One requirement of one feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// `connect`, `issuer`, `reconciler` or `rotation`.
    pub feature: &'static str,
    pub requirement: String,
    pub ok: bool,
    /// What to run (as a superuser) to close the gap.
    pub fix: Option<String>,
}

fn item(feature: &'static str, requirement: String, ok: bool, fix: Option<String>) -> CheckItem {
    CheckItem {
        feature,
        requirement,
        ok,
        fix: if ok { None } else { fix },
    }
}

/// Checks the admin of `target`. A login failure is an error, not a report.
pub async fn check_target(
    issuer: &Issuer,
    target: &QualifiedName,
) -> Result<Vec<CheckItem>, IssuerError> {
    let access = TargetAccess::load(&issuer.store, target)?;
    let admin = ident(&access.user);
    let connection = issuer.admin.get(&access, "postgres").await?;
    let client = &connection.client;
    let row = client
        .query_one(
            "SELECT r.rolsuper, r.rolcreaterole,
                    pg_has_role(current_user, 'pg_signal_backend', 'USAGE'),
                    current_setting('server_version_num')::int
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(IssuerError::upstream("reading the admin's attributes"))?;
    let (superuser, createrole, signal, version): (bool, bool, bool, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let resources: Vec<_> = issuer
        .store
        .list_resources(None, Some(&target.namespace))?
        .into_iter()
        .map(|s| s.resource)
        .collect();
    let mut items = vec![item(
        "connect",
        format!("log in as {} to database postgres", access.user),
        true,
        None,
    )];
    items.push(item(
        "issuer",
        "CREATEROLE, to create and drop roles".into(),
        superuser || createrole,
        Some(format!("ALTER ROLE {admin} CREATEROLE;")),
    ));
    items.push(item(
        "issuer",
        "pg_signal_backend, to end a revoked role's sessions".into(),
        superuser || signal,
        Some(format!("GRANT pg_signal_backend TO {admin};")),
    ));
    items.push(item(
        "reconciler",
        "CREATEROLE, to create managed roles and set their passwords".into(),
        superuser || createrole,
        Some(format!("ALTER ROLE {admin} CREATEROLE;")),
    ));
    items.push(item(
        "reconciler",
        "pg_signal_backend, to end sessions of roles being dropped".into(),
        superuser || signal,
        Some(format!("GRANT pg_signal_backend TO {admin};")),
    ));
    // Before PostgreSQL 16 a CREATEROLE admin is not a member of the roles it creates, and
    // REASSIGN OWNED / DROP OWNED need that membership.
    if !superuser && version < 160_000 {
        for resource in &resources {
            if let Spec::CredentialRole(role) = &resource.spec {
                if role.target != target.name {
                    continue;
                }
                let grants_membership = role.creation_statements.iter().any(|s| {
                    let s = s.to_ascii_lowercase().replace(' ', "");
                    s.contains("grant{{name}}to") || s.contains("grant\"{{name}}\"to")
                });
                items.push(item(
                    "issuer",
                    format!(
                        "membership in the roles CredentialRole {} creates, so revocation can REASSIGN OWNED (PostgreSQL 15)",
                        resource.name()
                    ),
                    grants_membership || !role.revocation_statements.is_empty(),
                    Some(format!(
                        "add `GRANT {{{{name}}}} TO {admin}` to spec.creationStatements of CredentialRole {}",
                        resource.qualified_name()
                    )),
                ));
            }
        }
    }
    let databases: Vec<&String> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::CredentialRole(r) if r.target == target.name => Some(&r.database),
            Spec::Service(svc) if svc.target == target.name => match svc.upstream {
                UpstreamSpec::Intents(_) => Some(&svc.database),
                _ => None,
            },
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for database in databases {
        let can_connect: Option<bool> = client
            .query_opt(
                "SELECT has_database_privilege(current_user, datname, 'CONNECT')
                 FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(IssuerError::upstream("reading database privileges"))?
            .map(|row| row.get(0));
        items.push(item(
            "connect",
            format!("CONNECT on database {database}"),
            can_connect == Some(true),
            Some(match can_connect {
                None => format!("CREATE DATABASE {};", ident(database)),
                Some(_) => format!("GRANT CONNECT ON DATABASE {} TO {admin};", ident(database)),
            }),
        ));
    }
    for resource in &resources {
        let Spec::StaticRole(role) = &resource.spec else {
            continue;
        };
        if role.target != target.name {
            continue;
        }
        let found: Option<bool> = client
            .query_opt(
                "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
                &[&role.username],
            )
            .await
            .map_err(IssuerError::upstream("reading static roles"))?
            .map(|row| row.get(0));
        let (ok, fix) = match found {
            None => (false, format!("CREATE ROLE {} LOGIN;", ident(&role.username))),
            Some(true) if !superuser => (
                false,
                format!(
                    "ALTER ROLE {} NOSUPERUSER; (only a superuser may change a superuser's password)",
                    ident(&role.username)
                ),
            ),
            Some(_) => (superuser || createrole, format!("ALTER ROLE {admin} CREATEROLE;")),
        };
        items.push(item(
            "rotation",
            format!(
                "set the password of {} (StaticRole {})",
                role.username,
                resource.name()
            ),
            ok,
            Some(fix),
        ));
    }
    issuer.admin.put(connection);
    Ok(items)
}
