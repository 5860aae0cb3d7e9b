//! Keeps the gateway's loaded policy-hook plugins equal to the Plugin resources in the
//! store: loaded before the gateway listens, then looked at every second. A changed
//! Plugin is loaded beside the old version and swapped in only once it started (its
//! `init` accepted the config); one that fails to load is logged and the old version, if
//! any, keeps serving. A deleted Plugin is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_model::PluginType;
use postern_model::{Kind, Spec};
use postern_plugins::{
    AuthProviderChain, AuthProviderPlugin, LogSinkPlugin, LogSinks, PluginSpec, PolicyHook,
    PolicyHooks, Runtime, RuntimeSettings, SecretReader,
};
use postern_state::Store;
use tracing::{error, info};

/// How often the store is asked whether a Plugin changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub struct PluginLoader {
    store: Arc<Store>,
    hooks: Arc<PolicyHooks>,
    sinks: Arc<LogSinks>,
    providers: Arc<AuthProviderChain>,
    settings: RuntimeSettings,
    /// Made at the first Plugin: a gateway without plugins runs no engine.
    runtime: Option<Arc<Runtime>>,
    /// `(namespace, name)` → the generation last tried.
    tried: HashMap<(String, String), i64>,
}

impl PluginLoader {
    pub fn new(
        store: Arc<Store>,
        hooks: Arc<PolicyHooks>,
        sinks: Arc<LogSinks>,
        providers: Arc<AuthProviderChain>,
        settings: RuntimeSettings,
    ) -> Self {
        PluginLoader {
            store,
            hooks,
            sinks,
            providers,
            settings,
            runtime: None,
            tried: HashMap::new(),
        }
    }

    /// Brings the loaded plugins up to date with the store.
    pub async fn sync(&mut self) -> anyhow::Result<()> {
        let store = self.store.clone();
        let plugins =
            tokio::task::spawn_blocking(move || store.list_resources(Some(Kind::Plugin), None))
                .await
                .context("listing plugins")??;
        let mut present = Vec::new();
        for stored in plugins {
            let Spec::Plugin(spec) = &stored.resource.spec else {
                continue;
            };
            let key = (
                stored.resource.namespace().to_owned(),
                stored.resource.name().to_owned(),
            );
            present.push(key.clone());
            if self.tried.get(&key) == Some(&stored.generation) {
                continue;
            }
            self.tried.insert(key.clone(), stored.generation);
            let (namespace, name) = &key;
            match self.load(namespace, name, spec, stored.generation).await {
                Ok(()) => {
                    info!(plugin = %name, %namespace, generation = stored.generation, "plugin loaded");
                }
                Err(e) => {
                    error!(plugin = %name, %namespace, error = format!("{e:#}"), "plugin not loaded; an earlier version, if any, keeps serving")
                }
            }
        }
        let loaded = self
            .hooks
            .names()
            .into_iter()
            .chain(self.sinks.names())
            .chain(self.providers.names());
        for (namespace, name) in loaded.collect::<Vec<_>>() {
            if !present.contains(&(namespace.clone(), name.clone())) {
                self.hooks.remove(&namespace, &name);
                self.sinks.remove(&namespace, &name);
                self.providers.remove(&namespace, &name);
                self.tried.remove(&(namespace.clone(), name.clone()));
                info!(plugin = %name, %namespace, "plugin unloaded");
            }
        }
        Ok(())
    }

    /// Loads one Plugin and installs it where its type belongs (replacing its last
    /// version only once the new one started).
    async fn load(
        &mut self,
        namespace: &str,
        name: &str,
        spec: &postern_model::PluginSpec,
        generation: i64,
    ) -> anyhow::Result<()> {
        let sha = spec.source.sha256.clone().unwrap_or_default();
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.plugin_component(&sha))
            .await
            .context("reading the component")??
            .context("its component is not in the store")?;
        let runtime = match &self.runtime {
            Some(runtime) => runtime.clone(),
            None => {
                let runtime = Runtime::new(self.settings.clone())?;
                self.runtime = Some(runtime.clone());
                runtime
            }
        };
        let mut plugin = PluginSpec::from_resource(name, spec);
        plugin.generation = generation;
        let bytes: Arc<[u8]> = bytes.into();
        let store = self.store.clone();
        let secrets_of = namespace.to_owned();
        let read: SecretReader = Arc::new(move |secret: &str| {
            store
                .secret_value(&secrets_of, secret)
                .ok()
                .flatten()
                .map(|value| value.expose().to_owned())
        });
        match spec.plugin_type {
            PluginType::Policy => {
                let hook = PolicyHook::load(&runtime, plugin, bytes).await?;
                self.hooks.install(namespace, hook);
            }
            PluginType::LogSink => {
                let sink = LogSinkPlugin::load(&runtime, plugin, bytes, Some(read)).await?;
                self.sinks.install(namespace, sink);
            }
            PluginType::AuthProvider => {
                let provider =
                    AuthProviderPlugin::load(&runtime, plugin, bytes, Some(read)).await?;
                self.providers.install(namespace, provider);
            }
        }
        Ok(())
    }

    /// Syncs every [`WATCH_INTERVAL`] until aborted.
    pub async fn watch(mut self) {
        let mut every = tokio::time::interval(WATCH_INTERVAL);
        loop {
            every.tick().await;
            if let Err(e) = self.sync().await {
                error!(error = format!("{e:#}"), "cannot read Plugin resources");
            }
        }
    }
}

/// The auth providers a service names (`spec.auth.providers`); none when it cannot be
/// read (its clients then fall back to the other ways to log in).
pub fn auth_providers_chain(store: Arc<Store>) -> Arc<AuthProviderChain> {
    Arc::new(AuthProviderChain::new(Arc::new(
        move |service| match store.get_resource(Kind::Service, &service.namespace, &service.name) {
            Ok(Some(stored)) => match stored.resource.spec {
                Spec::Service(spec) => spec.auth.providers,
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
    )))
}

/// Each loaded plugin's counters in `/metrics`, labelled by namespace and plugin.
pub struct PluginMetrics(pub Arc<PolicyHooks>);

impl postern_api::MetricsSource for PluginMetrics {
    fn collect(&self) -> Vec<postern_api::MetricFamily> {
        use postern_api::MetricType::{Counter, Gauge};
        use std::sync::atomic::Ordering::Relaxed;
        type Read = fn(&PolicyHook) -> f64;
        let families: [(&'static str, &'static str, postern_api::MetricType, Read); 12] = [
            (
                "postern_plugin_generation",
                "Generation of the Plugin resource loaded",
                Gauge,
                |h| h.spec().generation as f64,
            ),
            (
                "postern_plugin_calls_total",
                "Calls into the plugin (kept verdicts not counted)",
                Counter,
                |h| h.stats().calls.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_denials_total",
                "Statements the plugin denied, failures included",
                Counter,
                |h| h.stats().denies.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_traps_total",
                "Calls that trapped (panic, memory limit)",
                Counter,
                |h| h.stats().traps.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_timeouts_total",
                "Calls stopped at their time limit",
                Counter,
                |h| h.stats().timeouts.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_unhealthy_refusals_total",
                "Calls refused unrun while the plugin rested after failures",
                Counter,
                |h| h.stats().skipped.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_verdict_cache_hits_total",
                "Statements answered from a kept verdict",
                Counter,
                |h| h.stats().cache_hits.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_instances_created_total",
                "Instances made (a trapped one is replaced)",
                Counter,
                |h| h.stats().instances_created.load(Relaxed) as f64,
            ),
            (
                "postern_plugin_idle_instances",
                "Warm instances waiting for a call",
                Gauge,
                |h| h.idle_instances() as f64,
            ),
            (
                "postern_plugin_healthy",
                "1 unless the plugin rests after failures in a row",
                Gauge,
                |h| f64::from(u8::from(h.healthy())),
            ),
            (
                "postern_plugin_call_seconds_p50",
                "Median call time (upper bound of a power-of-two bucket)",
                Gauge,
                |h| {
                    h.stats()
                        .call_time_quantile(0.5)
                        .map_or(0.0, |d| d.as_secs_f64())
                },
            ),
            (
                "postern_plugin_call_seconds_p99",
                "99th percentile call time (upper bound of a power-of-two bucket)",
                Gauge,
                |h| {
                    h.stats()
                        .call_time_quantile(0.99)
                        .map_or(0.0, |d| d.as_secs_f64())
                },
            ),
        ];
        let loaded: Vec<(String, String, Arc<PolicyHook>)> = self
            .0
            .names()
            .into_iter()
            .filter_map(|(ns, name)| self.0.get(&ns, &name).map(|h| (ns, name, h)))
            .collect();
        families
            .into_iter()
            .map(|(name, help, kind, read)| postern_api::MetricFamily {
                name,
                help,
                kind,
                samples: loaded
                    .iter()
                    .map(|(ns, plugin, hook)| {
                        (
                            vec![("namespace", ns.clone()), ("plugin", plugin.clone())],
                            read(hook),
                        )
                    })
                    .collect(),
            })
            .collect()
    }
}
