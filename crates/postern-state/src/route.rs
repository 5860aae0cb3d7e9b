//! The proxy's `Directory` lookups: how an identity logs in, and where its session to a
//! service goes, after the service's rules (through the injected policy engine) have seen
//! the session and, for `mode: dynamicConfig`, chosen the upstream login.

use std::sync::Arc;

use crate::db::args;
use postern_model::{
    ClientFacts, ConnectDecision, ConnectionLimits, Directory, DirectoryError, IdentityCredentials,
    IdentitySpec, Kind, Permission, PolicyEngine, QualifiedName, Resource, RouteLookup,
    SessionFacts, Spec, StaticUpstream, TargetSpec, UpstreamRoute, UpstreamSpec,
};

use crate::{StateError, Store};

impl Directory for Store {
    fn identity_credentials(
        &self,
        identity: &QualifiedName,
    ) -> Result<Option<IdentityCredentials>, DirectoryError> {
        let lookup = || -> Result<Option<IdentityCredentials>, StateError> {
            let Some(stored) =
                self.resource(Kind::Identity, &identity.namespace, &identity.name)?
            else {
                return Ok(None);
            };
            let certificate_common_name = match stored.resource.spec {
                Spec::Identity(spec) => spec.client_certificate.map(|c| c.common_name),
                _ => None,
            };
            let verifiers = self.login_verifiers(identity)?;
            Ok(Some(IdentityCredentials {
                verifiers,
                certificate_common_name,
            }))
        };
        lookup().map_err(|e| directory_error(&e))
    }

    fn upstream_route(
        &self,
        service: &QualifiedName,
        identity: &QualifiedName,
        client: &ClientFacts,
    ) -> Result<RouteLookup, DirectoryError> {
        self.route(service, identity, client)
            .map_err(|e| directory_error(&e))
    }

    fn resource_epoch(&self) -> Result<u64, DirectoryError> {
        // Both epochs: what the login path caches is checked against them (snapshot.rs).
        self.read_epochs()
            .map(|epochs| u64::try_from(epochs.resources).unwrap_or(0))
            .map_err(|e| directory_error(&e))
    }
}

impl Store {
    /// The identity's API-key verifiers, read now.
    pub(crate) fn api_key_verifiers(
        &self,
        identity: &QualifiedName,
    ) -> Result<Vec<String>, StateError> {
        self.read(|conn| {
            conn.query_map(
                "SELECT verifier FROM api_keys WHERE namespace = ?1 AND identity = ?2",
                args![identity.namespace, identity.name],
                |row| row.get(0),
            )
        })
    }

    /// Sets the engine that evaluates services' rules; without one, services that have
    /// rules or `mode: dynamicConfig` refuse connections.
    pub fn set_policy_engine(&self, engine: Arc<dyn PolicyEngine>) {
        let _ = self.policy_engine.set(engine);
    }

    pub fn policy_engine(&self) -> Option<&Arc<dyn PolicyEngine>> {
        self.policy_engine.get()
    }

    fn target(
        &self,
        target: &QualifiedName,
        service: &QualifiedName,
    ) -> Result<TargetSpec, StateError> {
        match self
            .resource(Kind::Target, &target.namespace, &target.name)?
            .map(|s| s.resource)
        {
            Some(Resource {
                spec: Spec::Target(spec),
                ..
            }) => Ok(spec),
            _ => Err(StateError::NotFound(format!(
                "Target {target} of Service {service}"
            ))),
        }
    }

    /// What the rules see of `identity`'s session.
    fn session_facts(
        identity: &QualifiedName,
        service: &QualifiedName,
        spec: IdentitySpec,
        client: &ClientFacts,
    ) -> SessionFacts {
        SessionFacts {
            identity: identity.clone(),
            service: service.clone(),
            identity_type: match spec.identity_type {
                postern_model::IdentityType::Human => "human".into(),
                postern_model::IdentityType::Workload => "workload".into(),
            },
            groups: {
                let mut groups = spec.groups;
                for group in &client.credential_groups {
                    if !groups.contains(group) {
                        groups.push(group.clone());
                    }
                }
                groups
            },
            attributes: spec.attributes,
            client: client.clone(),
            user: String::new(),
            database: String::new(),
        }
    }

    pub(crate) fn route(
        &self,
        service: &QualifiedName,
        identity: &QualifiedName,
        client: &ClientFacts,
    ) -> Result<RouteLookup, StateError> {
        let Some(stored) = self.resource(Kind::Service, &service.namespace, &service.name)? else {
            return Ok(RouteLookup::NoService);
        };
        let Spec::Service(spec) = stored.resource.spec else {
            return Err(StateError::Corrupt(format!(
                "Service {service} has another kind's spec"
            )));
        };
        // Other tenants' services are invisible: refused as if absent, unless the
        // identity may read the namespace and so knows the service is there.
        let (identity_spec, access) = match self.login_access_of(identity)? {
            Some((identity_spec, access)) => (identity_spec, Some(access)),
            None => (IdentitySpec::default(), None),
        };
        let allowed = |permission| {
            access
                .as_ref()
                .is_some_and(|a| a.allows(&service.namespace, permission))
        };
        if !allowed(Permission::Connect) {
            if !allowed(Permission::Read) {
                return Ok(RouteLookup::NoService);
            }
            return Ok(RouteLookup::Denied(format!(
                "{}.{} has no namespace-connect role in namespace {}",
                identity.name, identity.namespace, service.namespace
            )));
        }
        let cache_key = format!("{service}@{}", stored.generation);
        let mut facts = Self::session_facts(identity, service, identity_spec, client);
        let needs_engine = !spec.authorization.is_empty()
            || matches!(spec.upstream, UpstreamSpec::DynamicConfig(_));
        let engine = match (needs_engine, self.policy_engine.get()) {
            (false, _) => None,
            (true, Some(engine)) => Some(engine),
            (true, None) => {
                return Ok(RouteLookup::NotReady(format!(
                    "service {}.{} has rules and this gateway has no policy engine",
                    service.name, service.namespace
                )))
            }
        };
        let mut target = QualifiedName::new(&service.namespace, &spec.target);
        let mut database = spec.database.clone();
        let mut dynamic_role = None;
        let mut config_name = None;
        // A rotation in flight leaves two passwords: the one the upstream has had, tried
        // first, and the other one.
        let mut fallback_password = None;
        let (user, password) = match &spec.upstream {
            UpstreamSpec::Static(StaticUpstream {
                user: Some(user),
                password_secret: Some(secret),
                ..
            }) => (user.clone(), self.login_secret(&service.namespace, secret)?),
            UpstreamSpec::Static(StaticUpstream {
                static_role: Some(role),
                ..
            }) => {
                let role = QualifiedName::new(&service.namespace, role);
                match self.static_role_password(&role)? {
                    Some(stored) if stored.current.is_some() => {
                        fallback_password = stored.pending;
                        (stored.username, stored.current)
                    }
                    _ => {
                        return Ok(RouteLookup::NotReady(format!(
                            "the password of service {}.{} is not rotated in yet",
                            service.name, service.namespace
                        )))
                    }
                }
            }
            UpstreamSpec::Static(_) => {
                return Err(StateError::Corrupt(format!(
                    "Service {service} has neither user nor staticRole"
                )))
            }
            UpstreamSpec::Dynamic(dynamic) => {
                dynamic_role = Some(QualifiedName::new(
                    &service.namespace,
                    &dynamic.credential_role,
                ));
                (String::new(), None)
            }
            UpstreamSpec::DynamicConfig(routes) => {
                let chosen = match engine {
                    Some(engine) => engine
                        .choose_route(&format!("{cache_key}/routes"), &routes.rules, &facts)
                        .map_err(|e| StateError::Corrupt(e.to_string()))?,
                    None => None,
                };
                let Some(config) =
                    chosen.and_then(|name| routes.configs.iter().find(|c| c.name == name))
                else {
                    return Ok(RouteLookup::NoRouteRule(format!(
                        "no route of service {}.{} matches {}.{}",
                        service.name, service.namespace, identity.name, identity.namespace
                    )));
                };
                if let Some(name) = &config.target {
                    target = QualifiedName::new(&service.namespace, name);
                }
                if let Some(name) = &config.database {
                    database = name.clone();
                }
                config_name = Some(config.name.clone());
                (
                    config.user.clone(),
                    self.secret_value(&service.namespace, &config.password_secret)?,
                )
            }
            UpstreamSpec::Intents(_) => {
                if !self.has_intents_for(service, &spec, identity)? {
                    return Ok(RouteLookup::Denied(format!(
                        "no Intents give {}.{} access to service {}.{}",
                        identity.name, identity.namespace, service.name, service.namespace
                    )));
                }
                match self.managed_role(&target, identity)? {
                    Some(role) if role.applied_version > 0 => match role.previous_password {
                        Some(previous) => {
                            fallback_password = Some(role.password);
                            (role.role, Some(previous))
                        }
                        None => (role.role, Some(role.password)),
                    },
                    _ => {
                        return Ok(RouteLookup::NotReady(format!(
                            "the role of {}.{} on service {}.{} is not created yet (the next reconcile creates it)",
                            identity.name, identity.namespace, service.name, service.namespace
                        )))
                    }
                }
            }
        };
        facts.user = user.clone();
        facts.database = database.clone();
        let policy = match engine {
            Some(engine) => match engine
                .connect(&cache_key, &spec.authorization, &facts)
                .map_err(|e| StateError::Corrupt(e.to_string()))?
            {
                ConnectDecision::Allow(policy) => policy,
                ConnectDecision::Deny(denial) => return Ok(RouteLookup::PolicyDenied(denial)),
            },
            None => None,
        };
        let target_spec = self.target(&target, service)?;
        Ok(RouteLookup::Found(Box::new(UpstreamRoute {
            target,
            address: target_spec.address,
            ssl_mode: target_spec.ssl_mode,
            ca_file: target_spec.ca_file,
            database,
            user,
            password,
            fallback_password,
            pool: spec.pool,
            limits: ConnectionLimits {
                total: target_spec.max_connections,
                per_user: target_spec.max_connections_per_user,
            },
            timeouts: spec.timeouts,
            dynamic_role,
            config_name,
            policy,
            identity_groups: facts.groups,
        })))
    }

    /// Whether some Intents in the service's namespace name `identity` and cover the service.
    fn has_intents_for(
        &self,
        service: &QualifiedName,
        spec: &postern_model::ServiceSpec,
        identity: &QualifiedName,
    ) -> Result<bool, StateError> {
        if identity.namespace != service.namespace {
            return Ok(false);
        }
        Ok(self
            .resources(Kind::Intents, Some(&service.namespace))?
            .into_iter()
            .any(|stored| match &stored.resource.spec {
                Spec::Intents(intents) => {
                    intents.identity == identity.name
                        && intents
                            .access
                            .iter()
                            .any(|entry| entry.covers_service(&service.name, spec))
                }
                _ => false,
            }))
    }
}

fn directory_error(e: &StateError) -> DirectoryError {
    DirectoryError {
        message: e.to_string(),
        unavailable: matches!(e, StateError::Unavailable(_)),
    }
}
