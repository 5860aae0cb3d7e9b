//! Planning the cluster-wide part: which managed roles to create, correct or drop, with
//! their attributes and memberships kept exactly as the gateway set them. Pure.

use std::collections::BTreeMap;

use postern_model::{QualifiedName, SecretValue};

use crate::sql::{ident, literal};

/// A role as `pg_roles` shows it, with its comment and memberships both ways.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualRole {
    pub name: String,
    /// Whether SUPERUSER, CREATEDB, CREATEROLE, REPLICATION, BYPASSRLS, LOGIN and INHERIT
    /// are exactly NOSUPERUSER … LOGIN INHERIT.
    pub attributes_as_managed: bool,
    pub comment: Option<String>,
    /// Roles it is a member of.
    pub member_of: Vec<String>,
    /// Roles that are members of it (the admin excepted).
    pub members: Vec<String>,
}

/// A role the Intents call for on this target.
#[derive(Debug, Clone)]
pub struct WantedRole {
    pub role: String,
    pub identity: QualifiedName,
    /// The stored password; `None` in a dry run for a role not recorded yet.
    pub password: Option<SecretValue>,
    /// Whether the upstream role already has the stored password.
    pub password_applied: bool,
}

/// A statement and its form for printing (no password in it).
#[derive(Clone, PartialEq, Eq)]
pub struct RoleStatement {
    pub sql: String,
    pub display: String,
}

impl RoleStatement {
    pub fn plain(sql: String) -> RoleStatement {
        RoleStatement {
            display: sql.clone(),
            sql,
        }
    }
}

/// Only the printable form: `sql` may carry a password verifier.
impl std::fmt::Debug for RoleStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

const ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT";

/// The comment that marks a role as made by this installation for this target, and
/// for whom. The target is part of it so two targets on one cluster never take (or drop)
/// each other's roles.
pub fn marker(installation_id: &str, target: &QualifiedName, identity: &QualifiedName) -> String {
    format!(
        "{} managed role of identity {identity}",
        marker_prefix(installation_id, target)
    )
}

/// `postern:<installation> target=<ns>/<name>`; names never contain spaces.
pub fn marker_prefix(installation_id: &str, target: &QualifiedName) -> String {
    format!("postern:{installation_id} target={target}")
}

/// Whether the role's comment carries `prefix` (from [`marker_prefix`]).
pub fn is_ours(role: &ActualRole, prefix: &str) -> bool {
    role.comment
        .as_deref()
        .is_some_and(|c| c.starts_with(&format!("{prefix} ")))
}

/// What to do with the roles of one target.
#[derive(Debug, Default)]
pub struct RolePlan {
    pub statements: Vec<RoleStatement>,
    /// Roles whose new password the statements set (to mark applied after commit).
    pub passwords_set: Vec<String>,
    /// Wanted roles that exist upstream without this installation's mark: never touched.
    pub conflicts: Vec<(WantedRole, String)>,
}

/// Plans the role statements; `verifier` turns a stored password into the SCRAM verifier
/// sent upstream (so not even the server's statement log sees the password).
pub fn plan_roles(
    wanted: &[WantedRole],
    actual: &BTreeMap<String, ActualRole>,
    installation_id: &str,
    target: &QualifiedName,
    verifier: impl Fn(&SecretValue) -> String,
) -> RolePlan {
    let mut plan = RolePlan::default();
    let prefix = marker_prefix(installation_id, target);
    for want in wanted {
        let role = ident(&want.role);
        let password = |password: Option<&SecretValue>| RoleStatement {
            sql: format!(
                "ALTER ROLE {role} PASSWORD {}",
                literal(&password.map(&verifier).unwrap_or_default())
            ),
            display: format!("ALTER ROLE {role} PASSWORD '***'"),
        };
        match actual.get(&want.role) {
            None => {
                plan.statements.push(RoleStatement::plain(format!(
                    "CREATE ROLE {role} {ATTRIBUTES}"
                )));
                plan.statements.push(RoleStatement::plain(format!(
                    "COMMENT ON ROLE {role} IS {}",
                    literal(&marker(installation_id, target, &want.identity))
                )));
                // A new role always gets the stored password, applied before or not.
                plan.statements.push(password(want.password.as_ref()));
                plan.passwords_set.push(want.role.clone());
            }
            Some(found) if !is_ours(found, &prefix) => {
                plan.conflicts.push((
                    want.clone(),
                    format!(
                        "role {} already exists upstream and is not managed by this gateway; it was left alone",
                        want.role
                    ),
                ));
            }
            Some(found) => {
                if !found.attributes_as_managed {
                    plan.statements.push(RoleStatement::plain(format!(
                        "ALTER ROLE {role} {ATTRIBUTES}"
                    )));
                }
                if !want.password_applied {
                    plan.statements.push(password(want.password.as_ref()));
                    plan.passwords_set.push(want.role.clone());
                }
                for group in &found.member_of {
                    plan.statements.push(RoleStatement::plain(format!(
                        "REVOKE {} FROM {role}",
                        ident(group)
                    )));
                }
                for member in &found.members {
                    plan.statements.push(RoleStatement::plain(format!(
                        "REVOKE {role} FROM {}",
                        ident(member)
                    )));
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(role: &str, password_applied: bool) -> WantedRole {
        WantedRole {
            role: role.into(),
            identity: QualifiedName::new("team-a", "server"),
            password: Some(SecretValue::new("pw")),
            password_applied,
        }
    }

    fn target() -> QualifiedName {
        QualifiedName::new("team-a", "pg")
    }

    fn fake_verifier(password: &SecretValue) -> String {
        format!("SCRAM-SHA-256$4096:x${}:z", password.expose())
    }

    fn displays(plan: &RolePlan) -> Vec<&str> {
        plan.statements.iter().map(|s| s.display.as_str()).collect()
    }

    #[test]
    fn new_roles_are_created_marked_and_given_their_password_unprinted() {
        let plan = plan_roles(
            &[wanted("pn_a", true)],
            &BTreeMap::new(),
            "id1",
            &target(),
            fake_verifier,
        );
        assert_eq!(
            displays(&plan),
            [
                r#"CREATE ROLE "pn_a" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"#,
                r#"COMMENT ON ROLE "pn_a" IS 'postern:id1 target=team-a/pg managed role of identity team-a/server'"#,
                r#"ALTER ROLE "pn_a" PASSWORD '***'"#,
            ]
        );
        assert!(plan.statements[2].sql.contains("SCRAM-SHA-256$4096:x$pw:z"));
        assert!(
            !format!("{plan:?}").contains("$pw"),
            "Debug shows no verifier"
        );
        assert_eq!(plan.passwords_set, ["pn_a"]);
    }

    #[test]
    fn existing_roles_are_corrected_only_when_ours() {
        let ours = ActualRole {
            name: "pn_a".into(),
            attributes_as_managed: false,
            comment: Some(marker(
                "id1",
                &target(),
                &QualifiedName::new("team-a", "server"),
            )),
            member_of: vec!["pg_read_all_data".into()],
            members: vec!["bob".into()],
        };
        let theirs = ActualRole {
            name: "pn_b".into(),
            comment: Some("postern:id1 target=team-a/other-pg managed role".into()),
            ..ours.clone()
        };
        let actual = [("pn_a".to_owned(), ours), ("pn_b".to_owned(), theirs)].into();
        let plan = plan_roles(
            &[wanted("pn_a", true), wanted("pn_b", true)],
            &actual,
            "id1",
            &target(),
            fake_verifier,
        );
        assert_eq!(
            displays(&plan),
            [
                r#"ALTER ROLE "pn_a" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"#,
                r#"REVOKE "pg_read_all_data" FROM "pn_a""#,
                r#"REVOKE "pn_a" FROM "bob""#,
            ]
        );
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].0.role, "pn_b");
    }
}
