//! Keeps the gateway's loaded policy-hook plugins equal to the Plugin resources in the
//! store: loaded before the gateway listens, then looked at every second. A changed
//! Plugin is loaded beside the old version and swapped in only once it started (its
//! `init` accepted the config); one that fails to load is logged and the old version, if
//! any, keeps serving. A deleted Plugin is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// `(namespace, name)` → the last load tried.
    tried: HashMap<(String, String), Tried>,
}

/// A load of one Plugin generation; a failed one is tried again after a backoff.
struct Tried {
    generation: i64,
    failed: Option<(Instant, Duration)>,
    /// The state last written to the store's plugin status (`get plugins` shows it).
    noted: &'static str,
}

impl Tried {
    fn due(&self, generation: i64) -> bool {
        generation != self.generation
            || self
                .failed
                .is_some_and(|(at, backoff)| at.elapsed() >= backoff)
    }
}

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(60);

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
            if self
                .tried
                .get(&key)
                .is_some_and(|tried| !tried.due(stored.generation))
            {
                continue;
            }
            let (namespace, name) = &key;
            let failed = match self.load(namespace, name, spec, stored.generation).await {
                Ok(()) => {
                    info!(plugin = %name, %namespace, generation = stored.generation, "plugin loaded");
                    let message = format!("generation {}", stored.generation);
                    self.note(namespace, name, "loaded", message).await;
                    None
                }
                Err(e) => {
                    // Fail closed: an earlier version may hold grants the new one took
                    // away. Its users are refused until a version loads.
                    self.unload(namespace, name);
                    let backoff = match self.tried.get(&key) {
                        Some(Tried {
                            generation,
                            failed: Some((_, last)),
                            ..
                        }) if *generation == stored.generation => (*last * 2).min(RETRY_LAST),
                        _ => RETRY_FIRST,
                    };
                    error!(plugin = %name, %namespace, error = format!("{e:#}"), retry_in = ?backoff, "plugin not loaded; its services refuse what it would decide");
                    let message = format!("{e:#} (tried again in {}s)", backoff.as_secs());
                    self.note(namespace, name, "error", message).await;
                    Some((Instant::now(), backoff))
                }
            };
            let noted = if failed.is_some() { "error" } else { "loaded" };
            self.tried.insert(
                key.clone(),
                Tried {
                    generation: stored.generation,
                    failed,
                    noted,
                },
            );
        }
        self.note_health().await;
        let loaded = self
            .hooks
            .names()
            .into_iter()
            .chain(self.sinks.names())
            .chain(self.providers.plugins.names());
        for (namespace, name) in loaded.collect::<Vec<_>>() {
            if !present.contains(&(namespace.clone(), name.clone())) {
                self.unload(&namespace, &name);
                self.tried.remove(&(namespace.clone(), name.clone()));
                info!(plugin = %name, %namespace, "plugin unloaded");
            }
        }
        Ok(())
    }

    /// Writes what became of a Plugin to the store, for `postern get plugins`.
    async fn note(&self, namespace: &str, name: &str, state: &'static str, message: String) {
        let store = self.store.clone();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let written = tokio::task::spawn_blocking(move || {
            store.set_plugin_status(&namespace, &name, state, &message)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("cannot record a plugin's status");
        }
    }

    /// Notes policy hooks that became unhealthy (resting after failures), or healthy again.
    async fn note_health(&mut self) {
        let mut changed = Vec::new();
        for (key, tried) in &mut self.tried {
            let Some(hook) = self.hooks.get(&key.0, &key.1) else {
                continue;
            };
            let state = if hook.healthy() {
                "loaded"
            } else {
                "unhealthy"
            };
            if tried.failed.is_none() && tried.noted != state {
                tried.noted = state;
                changed.push((key.clone(), state, tried.generation));
            }
        }
        for ((namespace, name), state, generation) in changed {
            let message = match state {
                "unhealthy" => "resting after failures in a row: its calls fail closed".to_owned(),
                _ => format!("generation {generation}"),
            };
            self.note(&namespace, &name, state, message).await;
        }
    }

    fn unload(&self, namespace: &str, name: &str) {
        self.hooks.remove(namespace, name);
        self.sinks.remove(namespace, name);
        self.providers.plugins.remove(namespace, name);
    }

    /// Loads one Plugin and installs it where its type belongs (replacing its last
    /// version only once the new one started; out of the others, if its type changed).
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
        plugin.namespace = namespace.to_owned();
        plugin.generation = generation;
        let bytes: Arc<[u8]> = bytes.into();
        // The granted secrets are read now, off the async workers: a plugin call may
        // not wait on the store (a changed secret takes effect at the next load).
        let store = self.store.clone();
        let (secrets_of, granted) = (namespace.to_owned(), spec.secrets.clone());
        let values: HashMap<String, String> = tokio::task::spawn_blocking(move || {
            granted
                .into_iter()
                .filter_map(|name| {
                    let value = store.secret_value(&secrets_of, &name).ok().flatten()?;
                    Some((name, value.expose().to_owned()))
                })
                .collect()
        })
        .await
        .context("reading the plugin's secrets")?;
        let read: SecretReader = Arc::new(move |secret: &str| values.get(secret).cloned());
        match spec.plugin_type {
            PluginType::Policy => {
                let hook = PolicyHook::load(&runtime, plugin, bytes).await?;
                self.hooks.install(namespace, name, hook);
                self.sinks.remove(namespace, name);
                self.providers.plugins.remove(namespace, name);
            }
            PluginType::LogSink => {
                let sink = LogSinkPlugin::load(&runtime, plugin, bytes, Some(read)).await?;
                self.sinks.install(namespace, name, sink);
                self.hooks.remove(namespace, name);
                self.providers.plugins.remove(namespace, name);
            }
            PluginType::AuthProvider => {
                let provider =
                    AuthProviderPlugin::load(&runtime, plugin, bytes, Some(read)).await?;
                self.providers.plugins.install(namespace, name, provider);
                self.hooks.remove(namespace, name);
                self.sinks.remove(namespace, name);
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

/// Lines waiting for the plugin log's writer; past this, lines are dropped (and counted
/// in the gateway's log) rather than slowing a plugin call.
const LOG_QUEUE: usize = 4096;
/// Lines written to the state database in one transaction.
const LOG_BATCH: usize = 512;

/// Plugins' log lines into the state database (`postern plugin logs`), by a thread of its
/// own: a plugin call only queues its line.
pub fn log_writer(store: Arc<Store>) -> postern_plugins::LogLines {
    let (queue, lines) = std::sync::mpsc::sync_channel::<postern_state::PluginLogLine>(LOG_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("plugin-log".into())
        .spawn(move || {
            // Ends when every sender (the runtime's plugins) is gone.
            while let Ok(first) = lines.recv() {
                let mut batch = vec![first];
                batch.extend(lines.try_iter().take(LOG_BATCH - 1));
                if let Err(e) = store.append_plugin_logs(&batch) {
                    error!(error = %e, lines = batch.len(), "plugin log lines not recorded");
                }
            }
        });
    if let Err(e) = spawned {
        error!(error = %e, "plugin log writer not started: plugin log lines go to the gateway's log only");
    }
    let dropped = std::sync::atomic::AtomicU64::new(0);
    Arc::new(
        move |namespace: &str, name: &str, level: &'static str, message: &str| {
            let line = postern_state::PluginLogLine {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                level: level.to_owned(),
                at: postern_model::unix_millis(std::time::SystemTime::now()),
                message: message.to_owned(),
            };
            if queue.try_send(line).is_err() {
                let dropped = dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        "plugin log lines not recorded (the writer is behind)"
                    );
                }
            }
        },
    )
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

/// Each loaded plugin's counters in `/metrics`, labelled by namespace, plugin and type.
pub struct PluginMetrics {
    pub hooks: Arc<PolicyHooks>,
    pub sinks: Arc<LogSinks>,
    pub providers: Arc<AuthProviderChain>,
}

/// What `/metrics` shows of one plugin.
struct Row {
    labels: Vec<(&'static str, String)>,
    generation: i64,
    /// calls, denials, traps, timeouts, unhealthy refusals, cache hits, instances.
    counts: [u64; 7],
    p50: f64,
    p99: f64,
    healthy: bool,
    lost: u64,
}

fn row<T>(
    kind: &str,
    (namespace, name): (String, String),
    plugin: Arc<T>,
    spec: fn(&T) -> &PluginSpec,
    stats: fn(&T) -> &postern_plugins::PluginStats,
) -> Row {
    use std::sync::atomic::Ordering::Relaxed;
    let of = stats(&plugin);
    let quantile = |q| of.call_time_quantile(q).map_or(0.0, |d| d.as_secs_f64());
    let (p50, p99) = (quantile(0.5), quantile(0.99));
    let counts = [
        of.calls.load(Relaxed),
        of.denies.load(Relaxed),
        of.traps.load(Relaxed),
        of.timeouts.load(Relaxed),
        of.skipped.load(Relaxed),
        of.cache_hits.load(Relaxed),
        of.instances_created.load(Relaxed),
    ];
    Row {
        labels: vec![
            ("namespace", namespace),
            ("plugin", name),
            ("type", kind.to_owned()),
        ],
        generation: spec(&plugin).generation,
        counts,
        p50,
        p99,
        healthy: true,
        lost: 0,
    }
}

impl postern_api::MetricsSource for PluginMetrics {
    fn collect(&self) -> Vec<postern_api::MetricFamily> {
        use postern_api::MetricType::{Counter, Gauge};
        let mut rows = Vec::new();
        for key in self.hooks.names() {
            if let Some(hook) = self.hooks.get(&key.0, &key.1) {
                let healthy = hook.healthy();
                let mut r = row("policy", key, hook, PolicyHook::spec, PolicyHook::stats);
                r.healthy = healthy;
                rows.push(r);
            }
        }
        for key in self.sinks.names() {
            if let Some(sink) = self.sinks.get(&key.0, &key.1) {
                let lost = sink.lost.load(std::sync::atomic::Ordering::Relaxed);
                let mut r = row(
                    "logSink",
                    key,
                    sink,
                    LogSinkPlugin::spec,
                    LogSinkPlugin::stats,
                );
                r.lost = lost;
                rows.push(r);
            }
        }
        for key in self.providers.plugins.names() {
            if let Some(provider) = self.providers.plugins.get(&key.0, &key.1) {
                let healthy = provider.healthy();
                let mut r = row(
                    "authProvider",
                    key,
                    provider,
                    AuthProviderPlugin::spec,
                    AuthProviderPlugin::stats,
                );
                r.healthy = healthy;
                rows.push(r);
            }
        }
        type Read = fn(&Row) -> f64;
        let families: [(&'static str, &'static str, postern_api::MetricType, Read); 12] = [
            (
                "postern_plugin_generation",
                "Generation of the Plugin resource loaded",
                Gauge,
                |r| r.generation as f64,
            ),
            (
                "postern_plugin_calls_total",
                "Calls into the plugin (kept verdicts and skipped statements not counted)",
                Counter,
                |r| r.counts[0] as f64,
            ),
            (
                "postern_plugin_denials_total",
                "Statements or logins the plugin refused, failures included",
                Counter,
                |r| r.counts[1] as f64,
            ),
            (
                "postern_plugin_traps_total",
                "Calls that trapped (panic, memory limit)",
                Counter,
                |r| r.counts[2] as f64,
            ),
            (
                "postern_plugin_timeouts_total",
                "Calls stopped at their time limit",
                Counter,
                |r| r.counts[3] as f64,
            ),
            (
                "postern_plugin_unhealthy_refusals_total",
                "Calls refused unrun while the plugin rested after failures",
                Counter,
                |r| r.counts[4] as f64,
            ),
            (
                "postern_plugin_verdict_cache_hits_total",
                "Statements answered from a kept verdict",
                Counter,
                |r| r.counts[5] as f64,
            ),
            (
                "postern_plugin_instances_created_total",
                "Instances made (a trapped one is replaced)",
                Counter,
                |r| r.counts[6] as f64,
            ),
            (
                "postern_plugin_healthy",
                "1 unless the plugin rests after failures in a row",
                Gauge,
                |r| f64::from(u8::from(r.healthy)),
            ),
            (
                "postern_plugin_events_lost_total",
                "Access-log events a log-sink plugin refused for good",
                Counter,
                |r| r.lost as f64,
            ),
            (
                "postern_plugin_call_seconds_p50",
                "Median call time (upper bound of a power-of-two bucket)",
                Gauge,
                |r| r.p50,
            ),
            (
                "postern_plugin_call_seconds_p99",
                "99th percentile call time (upper bound of a power-of-two bucket)",
                Gauge,
                |r| r.p99,
            ),
        ];
        families
            .into_iter()
            .map(|(name, help, kind, read)| postern_api::MetricFamily {
                name,
                help,
                kind,
                samples: rows.iter().map(|r| (r.labels.clone(), read(r))).collect(),
            })
            .collect()
    }
}
