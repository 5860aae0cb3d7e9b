//! The connection simulator: what would happen if an identity connected to a service (and
//! sent a statement), told from the same lookups and rules the wire proxy uses, without
//! connecting. Backs `POST /api/v1/explain` and `postern explain`.

use postern_model::{ClientFacts, Kind, QualifiedName, Role, RouteLookup, Spec, UpstreamSpec};
use serde_json::{json, Value};

use crate::{StateError, Store};

/// Why a connection would be let through or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectVerdict {
    pub allowed: bool,
    pub reason: String,
    /// The role binding (`namespace/name`) that gives the connect right, if one does.
    pub binding: Option<String>,
    /// `binding`, `home-namespace` (an identity connects in its own namespace) or
    /// `account-role`.
    pub via: Option<&'static str>,
}

/// Where an allowed connection would go. Never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSummary {
    pub target: String,
    pub user: String,
    pub database: String,
    /// `mode: dynamicConfig`: the config the route rules chose.
    pub config: Option<String>,
    pub mode: &'static str,
}

/// What the service's rules say of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementVerdict {
    pub allowed: bool,
    pub rule: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub connect: ConnectVerdict,
    pub route: Option<RouteSummary>,
    /// Only when a statement was given and the connection would be allowed.
    pub statement: Option<StatementVerdict>,
}

impl Explanation {
    /// The API's and `postern explain -o json`'s form.
    pub fn to_json(&self) -> Value {
        json!({
            "connect": {
                "allowed": self.connect.allowed,
                "reason": self.connect.reason,
                "binding": self.connect.binding,
                "via": self.connect.via,
            },
            "route": self.route.as_ref().map(|r| json!({
                "target": r.target,
                "user": r.user,
                "database": r.database,
                "config": r.config,
                "mode": r.mode,
            })),
            "statement": self.statement.as_ref().map(|s| json!({
                "allowed": s.allowed,
                "rule": s.rule,
                "kind": s.kind,
                "reason": s.reason,
            })),
        })
    }
}

fn mode_name(upstream: &UpstreamSpec) -> &'static str {
    match upstream {
        UpstreamSpec::Static(_) => "static",
        UpstreamSpec::Intents(_) => "intents",
        UpstreamSpec::Dynamic(_) => "dynamic",
        UpstreamSpec::DynamicConfig(_) => "dynamicConfig",
    }
}

fn refused(reason: String) -> Explanation {
    Explanation {
        connect: ConnectVerdict {
            allowed: false,
            reason,
            binding: None,
            via: None,
        },
        route: None,
        statement: None,
    }
}

impl Store {
    /// What the gateway would decide for `identity` connecting to `service` from
    /// `client`, and for `statement` in that session. Runs the service's connect and
    /// route rules (and policy-hook plugins) as a login would; issues no credential and
    /// opens no upstream connection.
    pub fn explain(
        &self,
        identity: &QualifiedName,
        service: &QualifiedName,
        statement: Option<&str>,
        client: &ClientFacts,
    ) -> Result<Explanation, StateError> {
        // Named as clients name them (`name.namespace`).
        let (who, what) = (identity.dotted(), service.dotted());
        let Some((identity_spec, access)) = self.access_of(identity)? else {
            return Ok(refused(format!("there is no Identity {who}")));
        };
        let Some(stored) = self.get_resource(Kind::Service, &service.namespace, &service.name)?
        else {
            return Ok(refused(format!("there is no Service {what}")));
        };
        let mode = match &stored.resource.spec {
            Spec::Service(spec) => mode_name(&spec.upstream),
            _ => "static",
        };
        // The binding that grants connect, for the answer; `route` decides on its own.
        let mut groups = identity_spec.groups.clone();
        groups.extend(client.credential_groups.iter().cloned());
        let (binding, via) = if access.is_account_admin() {
            (None, Some("account-role"))
        } else if access.home() == Some(service.namespace.as_str()) {
            (None, Some("home-namespace"))
        } else {
            let binding = self
                .list_resources(Some(Kind::RoleBinding), Some(&service.namespace))?
                .into_iter()
                .find(|b| match &b.resource.spec {
                    Spec::RoleBinding(spec) => {
                        matches!(spec.role, Role::NamespaceAdmin | Role::NamespaceConnect)
                            && spec.names(&service.namespace, identity, &groups)
                    }
                    _ => false,
                })
                .map(|b| format!("{}/{}", service.namespace, b.resource.metadata.name));
            let via = binding.as_ref().map(|_| "binding");
            (binding, via)
        };
        let lookup = match self.route(service, identity, client) {
            Ok(lookup) => lookup,
            // What a login would fail on (a missing secret or target, a rule that cannot
            // be evaluated) is the answer to the question, not a failure to answer it.
            Err(StateError::NotFound(what)) => {
                return Ok(refused(format!("a login would fail: {what} not found")))
            }
            Err(StateError::Corrupt(message)) => {
                return Ok(refused(format!("a login would fail: {message}")))
            }
            Err(e) => return Err(e),
        };
        let route = match lookup {
            RouteLookup::Found(route) => route,
            RouteLookup::NoService => {
                return Ok(refused(format!(
                    "{who} may not see namespace {} (no namespace-connect, -reader or -admin role there), so Service {what} is as absent to it",
                    service.namespace
                )))
            }
            RouteLookup::Denied(reason)
            | RouteLookup::NotReady(reason)
            | RouteLookup::NoRouteRule(reason) => return Ok(refused(reason)),
            RouteLookup::PolicyDenied(denial) => {
                let mut explanation = refused(match &denial.reason {
                    Some(reason) => format!("rule {} refuses the connection: {reason}", denial.rule),
                    None => format!("rule {} refuses the connection", denial.rule),
                });
                explanation.connect.binding = binding;
                explanation.connect.via = via;
                return Ok(explanation);
            }
        };
        let statement = statement.map(|sql| match &route.policy {
            None => StatementVerdict {
                allowed: true,
                rule: None,
                kind: None,
                reason: Some(format!("Service {what} has no statement rules")),
            },
            Some(policy) => match policy.check_statement(sql) {
                Ok(()) => StatementVerdict {
                    allowed: true,
                    rule: None,
                    kind: None,
                    reason: Some("no rule denies it".to_owned()),
                },
                Err(denial) => StatementVerdict {
                    allowed: false,
                    rule: Some(denial.rule),
                    kind: Some(denial.kind),
                    reason: denial.reason,
                },
            },
        });
        let reason = match via {
            Some("account-role") => format!("{who} is an account admin"),
            Some("home-namespace") => format!(
                "{who} connects to services of its own namespace {}",
                service.namespace
            ),
            _ => match &binding {
                Some(binding) => format!("role binding {binding} lets {who} connect"),
                None => format!("{who} may connect to Service {what}"),
            },
        };
        Ok(Explanation {
            connect: ConnectVerdict {
                allowed: true,
                reason,
                binding,
                via,
            },
            route: Some(RouteSummary {
                target: route.target.dotted(),
                user: match &route.dynamic_role {
                    Some(role) => format!("a new role from CredentialRole {role}"),
                    None => route.user.clone(),
                },
                database: route.database.clone(),
                config: route.config_name.clone(),
                mode,
            }),
            statement,
        })
    }
}
