//! Role bindings and what they allow: the one place that decides who may read, change or
//! connect to what, for the admin API and the wire proxy alike. Pure: callers hand in the
//! bindings that name the principal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::QualifiedName;
use crate::resource::{check_name, check_not_empty, ValidationError};

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, everywhere: namespaces, account-wide bindings, every resource.
    AccountAdmin,
    /// Reads every namespace's resources.
    AccountReader,
    /// Reads and changes the resources of the binding's namespace, and connects to its
    /// services.
    NamespaceAdmin,
    /// Reads the resources of the binding's namespace.
    NamespaceReader,
    /// Connects through the gateway to the services of the binding's namespace.
    NamespaceConnect,
}

impl Role {
    pub fn is_account_wide(self) -> bool {
        matches!(self, Role::AccountAdmin | Role::AccountReader)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::AccountAdmin => "account-admin",
            Role::AccountReader => "account-reader",
            Role::NamespaceAdmin => "namespace-admin",
            Role::NamespaceReader => "namespace-reader",
            Role::NamespaceConnect => "namespace-connect",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a binding names: one identity (`name.namespace`, or `name` in the binding's
/// namespace) or every identity in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `kind: RoleBinding`: a role for a subject. Namespace roles apply to the binding's own
/// namespace; account roles apply everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleBindingSpec {
    pub role: Role,
    pub subject: Subject,
}

impl RoleBindingSpec {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        match (&self.subject.identity, &self.subject.group) {
            (Some(identity), None) => {
                let (name, namespace) = identity
                    .rsplit_once('.')
                    .map_or((identity.as_str(), None), |(n, ns)| (n, Some(ns)));
                check_name("spec.subject.identity", name)?;
                if let Some(namespace) = namespace {
                    check_name("spec.subject.identity", namespace)?;
                }
                Ok(())
            }
            (None, Some(_)) if self.role.is_account_wide() => Err(ValidationError::new(
                "spec.subject.group",
                format!("{} is bound to identities only, not groups", self.role),
            )),
            (None, Some(group)) => check_not_empty("spec.subject.group", group),
            _ => Err(ValidationError::new(
                "spec.subject",
                "takes exactly one of identity and group",
            )),
        }
    }

    /// Whether the binding (living in `namespace`) names this identity. A group means
    /// that group's members in the binding's own namespace: groups are written on
    /// Identities by their namespace's admins, so a group must not reach further than
    /// they do.
    pub fn names(&self, namespace: &str, identity: &QualifiedName, groups: &[String]) -> bool {
        match (&self.subject.identity, &self.subject.group) {
            (Some(subject), _) => QualifiedName::parse(subject, namespace) == *identity,
            (None, Some(group)) => {
                identity.namespace == namespace && groups.iter().any(|g| g == group)
            }
            (None, None) => false,
        }
    }
}

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Connect,
}

/// The roles one principal holds, account-wide and per namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    account: BTreeSet<Role>,
    namespaces: BTreeMap<String, BTreeSet<Role>>,
    /// An identity's own namespace, where it may connect without a binding (the
    /// resource format's own example connects `alice.team-a` to `orders.team-a`).
    home: Option<String>,
}

impl Access {
    /// The bootstrap administrator's access.
    pub fn account_admin() -> Access {
        Access {
            account: BTreeSet::from([Role::AccountAdmin]),
            ..Access::default()
        }
    }

    /// `identity`'s access from every binding that names it; `bindings` holds each
    /// binding's namespace with its spec.
    pub fn of_identity<'a>(
        identity: &QualifiedName,
        groups: &[String],
        bindings: impl IntoIterator<Item = (&'a str, &'a RoleBindingSpec)>,
    ) -> Access {
        let mut access = Access {
            home: Some(identity.namespace.clone()),
            ..Access::default()
        };
        for (namespace, binding) in bindings {
            if !binding.names(namespace, identity, groups) {
                continue;
            }
            if binding.role.is_account_wide() {
                access.account.insert(binding.role);
            } else {
                access
                    .namespaces
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(binding.role);
            }
        }
        access
    }

    /// The account-wide roles held.
    pub fn account_roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.account.iter().copied()
    }

    /// The roles held in `namespace` by its bindings (account roles not included).
    pub fn namespace_roles(&self, namespace: &str) -> impl Iterator<Item = Role> + '_ {
        self.namespaces
            .get(namespace)
            .into_iter()
            .flatten()
            .copied()
    }

    /// The identity's own namespace, where it connects without a binding.
    pub fn home(&self) -> Option<&str> {
        self.home.as_deref()
    }

    pub fn is_account_admin(&self) -> bool {
        self.account.contains(&Role::AccountAdmin)
    }

    /// Whether the principal may read everything, account-wide (metrics, audit).
    pub fn reads_account(&self) -> bool {
        self.account.contains(&Role::AccountAdmin) || self.account.contains(&Role::AccountReader)
    }

    /// Whether the principal may do `permission` in `namespace`.
    pub fn allows(&self, namespace: &str, permission: Permission) -> bool {
        if self.is_account_admin() {
            return true;
        }
        let roles = self.namespaces.get(namespace);
        let has = |role| roles.is_some_and(|r| r.contains(&role));
        match permission {
            Permission::Read => {
                self.account.contains(&Role::AccountReader)
                    || has(Role::NamespaceAdmin)
                    || has(Role::NamespaceReader)
            }
            Permission::Write => has(Role::NamespaceAdmin),
            Permission::Connect => {
                self.home.as_deref() == Some(namespace)
                    || has(Role::NamespaceAdmin)
                    || has(Role::NamespaceConnect)
            }
        }
    }

    /// Whether the principal could have granted everything `other` holds: only then may
    /// it change `other`'s identity (its groups or login certificate), which would hand
    /// it that access.
    pub fn covers(&self, other: &Access) -> bool {
        other.account.iter().all(|role| self.may_grant("", *role))
            && other
                .namespaces
                .iter()
                .all(|(namespace, roles)| roles.iter().all(|role| self.may_grant(namespace, *role)))
    }

    /// Whether the principal may grant `role` in `namespace` by writing a binding.
    pub fn may_grant(&self, namespace: &str, role: Role) -> bool {
        if role.is_account_wide() {
            self.is_account_admin()
        } else {
            self.allows(namespace, Permission::Write)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(role: Role, identity: Option<&str>, group: Option<&str>) -> RoleBindingSpec {
        RoleBindingSpec {
            role,
            subject: Subject {
                identity: identity.map(Into::into),
                group: group.map(Into::into),
            },
        }
    }

    #[test]
    fn namespace_roles_stay_in_their_namespace() {
        let alice = QualifiedName::new("team-a", "alice");
        let admin = binding(Role::NamespaceAdmin, Some("alice"), None);
        let elsewhere = binding(Role::NamespaceAdmin, Some("alice"), None);
        let groups = vec!["dbas".to_owned()];
        let readers = binding(Role::NamespaceReader, None, Some("dbas"));
        let access = Access::of_identity(
            &alice,
            &groups,
            [
                ("team-a", &admin),
                ("team-b", &elsewhere),
                ("team-c", &readers),
                ("team-a", &readers),
            ],
        );
        assert!(access.allows("team-a", Permission::Write));
        // `alice` in team-b's binding means alice.team-b, someone else.
        assert!(!access.allows("team-b", Permission::Read));
        assert!(!access.allows("team-b", Permission::Connect));
        // A group binding reaches its own namespace's members only.
        assert!(!access.allows("team-c", Permission::Read));
        assert!(!access.may_grant("team-a", Role::AccountAdmin));
        assert!(access.may_grant("team-a", Role::NamespaceAdmin));
        assert!(!access.may_grant("team-c", Role::NamespaceReader));
        let reader = Access::of_identity(&alice, &groups, [("team-a", &readers)]);
        assert!(access.covers(&reader));
        assert!(!reader.covers(&access));
        assert!(!access.covers(&Access::account_admin()));
    }

    #[test]
    fn connect_needs_home_or_a_binding() {
        let bob = QualifiedName::new("team-a", "bob");
        let connect = binding(Role::NamespaceConnect, Some("bob.team-a"), None);
        let access = Access::of_identity(&bob, &[], [("team-b", &connect)]);
        assert!(access.allows("team-a", Permission::Connect));
        assert!(access.allows("team-b", Permission::Connect));
        assert!(!access.allows("team-b", Permission::Read));
        assert!(!access.allows("team-c", Permission::Connect));
        assert!(!access.allows("team-a", Permission::Read));
        assert!(Access::account_admin().allows("team-z", Permission::Write));
    }

    #[test]
    fn subject_takes_one_of_identity_or_group() {
        let both = binding(Role::NamespaceReader, Some("a"), Some("g"));
        assert_eq!(both.validate().unwrap_err().path, "spec.subject");
        let bad = binding(Role::NamespaceReader, Some("Alice"), None);
        assert_eq!(bad.validate().unwrap_err().path, "spec.subject.identity");
        let wide = binding(Role::AccountReader, None, Some("everyone"));
        assert_eq!(wide.validate().unwrap_err().path, "spec.subject.group");
    }
}
