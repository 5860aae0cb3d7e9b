//! Auth providers: plugins that check a cleartext password a client sent (a token) and
//! say who it proves. A service names its providers (`spec.auth.providers`); they are
//! asked in order until one answers other than `not-applicable`. A provider that traps,
//! times out or is not loaded rejects: the client only learns that its login failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use postern_model::{
    AuthProviders, BoxFuture, ClientFacts, ProviderCredential, ProviderVerdict, QualifiedName,
};
use wasmtime::Store;

use crate::bindings::auth_provider::exports::postern::plugin::authn::{Credential, Outcome};
use crate::bindings::auth_provider::{AuthProvider, AuthProviderPre};
use crate::bindings::types::ClientInfo;
use crate::error::PluginError;
use crate::host::{new_store, Capability, HostState, PluginShared, SecretReader};
use crate::policy::{call_failure, Health, PluginSpec, PluginStats};
use crate::registry::Registry;
use crate::runtime::{wrong_kind, Runtime};

pub(crate) const AUTH_OFFERS: [Capability; 4] = [
    Capability::Log,
    Capability::Cache,
    Capability::HttpClient,
    Capability::Secrets,
];

type Instance = (Store<HostState>, AuthProvider);

/// A loaded auth-provider plugin with its idle instances.
pub struct AuthProviderPlugin {
    runtime: Arc<Runtime>,
    spec: PluginSpec,
    pre: AuthProviderPre<HostState>,
    shared: Arc<PluginShared>,
    timeout_ticks: u64,
    idle: Mutex<Vec<Instance>>,
    /// Calls at once (each holds an instance): a flood of logins queues here, for at
    /// most the call's time limit, instead of taking every instance slot the gateway has.
    running: tokio::sync::Semaphore,
    health: Mutex<Health>,
    stats: PluginStats,
}

/// Logins one auth provider checks at once.
pub const CONCURRENT_LOGINS: usize = 8;

impl AuthProviderPlugin {
    /// Compiles the component, checks its imports and runs `init` on a first instance.
    pub async fn load(
        runtime: &Arc<Runtime>,
        spec: PluginSpec,
        component: Arc<[u8]>,
        secrets: Option<SecretReader>,
    ) -> Result<AuthProviderPlugin, PluginError> {
        const KIND: &str = "auth provider";
        let (instance_pre, timeout_ticks) = runtime
            .prepare(&spec, component, &AUTH_OFFERS, &runtime.auth_linker, KIND)
            .await?;
        let pre = AuthProviderPre::new(instance_pre).map_err(wrong_kind(&spec.name, KIND))?;
        let provider = AuthProviderPlugin {
            runtime: runtime.clone(),
            shared: Arc::new(PluginShared::new(
                &spec,
                secrets,
                runtime.settings.log_lines.clone(),
            )),
            spec,
            pre,
            timeout_ticks,
            idle: Mutex::new(Vec::new()),
            running: tokio::sync::Semaphore::new(CONCURRENT_LOGINS),
            health: Mutex::new(Health::default()),
            stats: PluginStats::default(),
        };
        let first = provider.instantiate().await?;
        provider.idle_instances().push(first);
        Ok(provider)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    fn idle_instances(&self) -> std::sync::MutexGuard<'_, Vec<Instance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let mut store = new_store(&self.runtime, &self.spec, &self.shared, self.timeout_ticks);
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        let failed = |e: wasmtime::Error| call_failure(&self.spec, &self.stats, &e);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed)?;
        bindings
            .postern_plugin_authn()
            .call_init(&mut store, &self.spec.config)
            .await
            .map_err(failed)?
            .map_err(|reason| PluginError::Init {
                plugin: self.spec.name.clone(),
                reason,
            })?;
        Ok((store, bindings))
    }

    /// What the plugin makes of a password.
    /// Refused at once while the plugin rests after [`crate::UNHEALTHY_AFTER`] failures
    /// in a row; it comes back from fresh instances.
    pub async fn authenticate(
        &self,
        client: &ClientInfo,
        credential: &Credential,
    ) -> Result<Outcome, PluginError> {
        if self.health().resting() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(PluginError::Unhealthy {
                plugin: self.spec.name.clone(),
            });
        }
        let answer = self.call(client, credential).await;
        // A login that waited too long for its turn says nothing of the plugin's health
        // (a flood of logins must not rest it).
        let rest = match &answer {
            Err(PluginError::Unhealthy { .. }) => None,
            other => self.health().note(other.is_ok()),
        };
        if let Some(backoff) = rest {
            self.idle_instances().clear();
            tracing::error!(
                plugin = self.spec.name,
                ?backoff,
                "auth provider unhealthy: logins it would check are refused until the backoff ends"
            );
        }
        answer
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// False while the plugin rests after failures in a row.
    pub fn healthy(&self) -> bool {
        !self.health().resting()
    }

    async fn call(
        &self,
        client: &ClientInfo,
        credential: &Credential,
    ) -> Result<Outcome, PluginError> {
        let started = std::time::Instant::now();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let busy = || PluginError::Unhealthy {
            plugin: self.spec.name.clone(),
        };
        let _turn = tokio::time::timeout(self.spec.call_timeout, self.running.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let idle = self.idle_instances().pop();
        let (mut store, bindings) = match idle {
            Some(instance) => instance,
            None => self.instantiate().await?,
        };
        store.set_epoch_deadline(self.timeout_ticks);
        let called = bindings
            .postern_plugin_authn()
            .call_authenticate(&mut store, client, credential)
            .await;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.count_call_time(nanos);
        match called {
            Ok(outcome) => {
                let mut idle = self.idle_instances();
                if idle.len() < self.spec.warm_instances {
                    idle.push((store, bindings));
                }
                if matches!(outcome, Outcome::Rejected(_)) {
                    self.stats.denies.fetch_add(1, Ordering::Relaxed);
                }
                Ok(outcome)
            }
            Err(e) => Err(call_failure(&self.spec, &self.stats, &e)),
        }
    }
}

/// Which providers a service names, read from the store (may block briefly).
pub type ProvidersOf = Arc<dyn Fn(&QualifiedName) -> Vec<String> + Send + Sync>;

/// Loaded auth-provider plugins, asked for the services that name them.
pub struct AuthProviderChain {
    pub plugins: Registry<AuthProviderPlugin>,
    providers_of: ProvidersOf,
}

impl AuthProviderChain {
    pub fn new(providers_of: ProvidersOf) -> AuthProviderChain {
        AuthProviderChain {
            plugins: Registry::new(),
            providers_of,
        }
    }

    async fn ask(
        &self,
        service: &QualifiedName,
        identity: &QualifiedName,
        client: &ClientFacts,
        credential: ProviderCredential<'_>,
    ) -> ProviderVerdict {
        let providers_of = self.providers_of.clone();
        let who = service.clone();
        let Ok(names) = tokio::task::spawn_blocking(move || providers_of(&who)).await else {
            return ProviderVerdict::Rejected("cannot read the service's providers".into());
        };
        let info = ClientInfo {
            peer_address: client.address.clone(),
            database: service.dotted(),
            user: identity.dotted(),
            application_name: client.application_name.clone(),
            tls: client.tls,
        };
        let credential = match credential {
            ProviderCredential::Password(password) => Credential::Password(password.to_owned()),
            ProviderCredential::Certificate(der) => Credential::ClientCertificate(der.to_vec()),
        };
        for name in names {
            let Some(provider) = self.plugins.get(&service.namespace, &name) else {
                return ProviderVerdict::Rejected(format!("auth provider {name} is not loaded"));
            };
            match provider.authenticate(&info, &credential).await {
                Ok(Outcome::NotApplicable) => continue,
                Ok(Outcome::Rejected(reason)) => {
                    return ProviderVerdict::Rejected(format!("{name}: {reason}"))
                }
                Ok(Outcome::Authenticated(proven)) => {
                    if proven.name != identity.name || proven.namespace != identity.namespace {
                        return ProviderVerdict::Rejected(format!(
                            "{name}: the credential is {}.{}'s, not {identity}'s",
                            proven.name, proven.namespace
                        ));
                    }
                    return ProviderVerdict::Authenticated {
                        groups: proven.groups,
                    };
                }
                Err(e) => return ProviderVerdict::Rejected(e.to_string()),
            }
        }
        ProviderVerdict::NotApplicable
    }
}

impl AuthProviders for AuthProviderChain {
    fn authenticate<'a>(
        &'a self,
        service: &'a QualifiedName,
        identity: &'a QualifiedName,
        client: &'a ClientFacts,
        credential: ProviderCredential<'a>,
    ) -> BoxFuture<'a, ProviderVerdict> {
        Box::pin(self.ask(service, identity, client, credential))
    }
}
