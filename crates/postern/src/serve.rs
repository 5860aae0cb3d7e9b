//! `postern serve`: the wire proxy in front of the configured state, until a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_config::Config;
use postern_model::Directory;
use postern_proxy::{Gateway, ProxySettings, TlsConfig};
use tokio::net::TcpListener;
use tracing::info;

use crate::setup::open_store_with;
use crate::tenancy::{token_settings, write_bootstrap_token, GatewayMetrics, ReconcileRuns};
use postern_api::TokenAuthority;

pub fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        max_startup_packet: config.max_startup_packet,
        max_message_size: config.max_message_size,
        auth_timeout: Duration::from_secs(config.auth_timeout_secs),
        max_client_connections: config.max_client_connections,
        upstream_connect_timeout: Duration::from_secs(config.upstream_connect_timeout_secs),
        tcp_keepalive: seconds_or_off(config.tcp_keepalive_secs),
        client_write_timeout: seconds_or_off(config.client_write_timeout_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        require_tls: config.require_tls,
        token_password: config.token_password,
    }
}

/// A duration in whole seconds where 0 turns the feature off.
fn seconds_or_off(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The client-leg TLS configuration, when certificate and key files are set.
pub fn tls_config(config: &Config) -> anyhow::Result<Option<TlsConfig>> {
    match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some(TlsConfig::load(
            cert.clone(),
            key.clone(),
            config.tls_client_ca_file.clone(),
        )?)),
        _ => Ok(None),
    }
}

/// What a SIGHUP re-reads and applies.
pub struct Reload {
    /// Reads the configuration again, from the same file, environment and flags.
    pub read_config: Box<dyn Fn() -> anyhow::Result<Config> + Send>,
    pub log_level: crate::setup::LogLevel,
}

/// On every SIGHUP: reads the configuration again, applies what can change while serving
/// (the TLS certificates of both listeners, the log level) and names the changed
/// settings that wait for a restart. A certificate that fails to load, or a configuration
/// with an error, leaves the running one in place.
async fn reload_on_sighup(
    mut running: Config,
    reload: Reload,
    gateway: Arc<Gateway>,
    api_tls: Option<Arc<postern_api::ApiTls>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        crate::service::reloading();
        match (reload.read_config)() {
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: the configuration has an error; nothing changed"
            ),
            Ok(config) => {
                if config.log_level != running.log_level {
                    match reload.log_level.set(config.log_level.as_deref()) {
                        Ok(()) => info!(log_level = ?config.log_level, "SIGHUP: log level changed"),
                        Err(e) => tracing::warn!(
                            error = format!("{e:#}"),
                            "SIGHUP: log level not changed"
                        ),
                    }
                }
                let waiting = settings_needing_restart(&running, &config);
                if !waiting.is_empty() {
                    tracing::warn!(
                        settings = waiting.join(", "),
                        "SIGHUP: changed settings take effect at the next restart"
                    );
                }
                running = Config {
                    log_level: config.log_level,
                    ..running
                };
            }
        }
        match gateway.reload_tls() {
            Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate stays in use")
            }
        }
        match api_tls.as_deref().map(postern_api::ApiTls::reload) {
            None => {}
            Some(Ok(())) => info!("SIGHUP: admin API TLS certificate reloaded"),
            Some(Err(e)) => tracing::error!(
                error = %e,
                "SIGHUP: admin API TLS reload failed; the previous certificate stays in use"
            ),
        }
        crate::service::ready("reloaded");
    }
}

/// The names of the settings that differ between `running` and `new`, other than those a
/// reload applies. Names only: values may be secret.
fn settings_needing_restart(running: &Config, new: &Config) -> Vec<String> {
    let as_map = |config: &Config| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(running), as_map(new));
    let mut changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| *name != "log_level" && before.get(*name) != after.get(*name))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

/// The async runtime with `config.worker_threads` workers (default: half the cores, at
/// least one). A gateway usually shares its machine with PostgreSQL or its clients, and
/// fewer workers mean fewer cross-thread wake-ups per round trip: on a 2-core box one
/// worker cut CPU per `pgbench -S` transaction from ~12 to ~10 µs. One worker runs on
/// the current-thread scheduler, which skips work-stealing bookkeeping altogether.
pub fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The access log with the sinks `[audit]` names; `None` when it is off.
fn access_log(
    config: &Config,
    store: &Arc<postern_state::Store>,
    log_sinks: &postern_plugins::LogSinks,
) -> anyhow::Result<Option<Arc<postern_audit::AuditPipeline>>> {
    use postern_audit::{AuditPipeline, AuditSettings, JsonlFileSink, StdoutSink};
    let audit = &config.audit;
    if !audit.enabled {
        return Ok(None);
    }
    let mut sinks: Vec<Box<dyn postern_model::AuditSink>> = Vec::new();
    if audit.state {
        sinks.push(Box::new(postern_state::StateAuditSink::new(
            store.clone(),
            Duration::from_secs(audit.state_retention_secs),
        )));
    }
    if let Some(path) = &audit.file {
        sinks.push(Box::new(JsonlFileSink::new(
            path.clone(),
            audit.file_max_bytes,
            Duration::from_secs(audit.file_max_age_secs),
            audit.file_keep,
        )));
    }
    if audit.stdout {
        sinks.push(Box::new(StdoutSink));
    }
    for entry in &audit.plugin_sinks {
        if let Some((namespace, name)) = Config::plugin_sink(entry) {
            let sink = log_sinks
                .sink(&namespace, &name)
                .context("cannot start a plugin sink's runtime")?;
            sinks.push(Box::new(sink));
        }
    }
    let settings = AuditSettings {
        queue_capacity: audit.queue_capacity,
        log_parameters: audit.log_parameters.then_some(audit.max_parameter_bytes),
        secret_functions: audit.redact_functions.clone().unwrap_or_else(|| {
            postern_policy::DEFAULT_SECRET_FUNCTIONS
                .iter()
                .map(|s| s.to_string())
                .collect()
        }),
        spill_dir: config.audit_spill_dir(),
        spill_budget: audit.spill_max_bytes,
        block_on_failure: audit.on_failure == postern_config::AuditFailure::Block,
        events: config.audit_events(),
    };
    let spill_dir = settings.spill_dir.clone();
    let pipeline = AuditPipeline::start(settings, sinks).with_context(|| {
        format!(
            "cannot start the access log (spill dir {})",
            spill_dir.display()
        )
    })?;
    info!(file = ?audit.file, state = audit.state, stdout = audit.stdout, "access log on");
    Ok(Some(pipeline))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received; shutting down"),
        () = terminate => info!("SIGTERM received; shutting down"),
    }
}

pub fn run(config: &Config, reload: Reload) -> anyhow::Result<()> {
    let policy_hooks = Arc::new(postern_plugins::PolicyHooks::new());
    let log_sinks = Arc::new(postern_plugins::LogSinks::new());
    let store = open_store_with(
        config,
        postern_policy::CelEngine::with_plugins(policy_hooks.clone()),
    )?;
    info!(state = %store.db_path().display(), master_key = %store.key_origin(), "state opened");
    runtime(config)?.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("listener address")?;
        info!(%address, "postern listening");
        let mock_secret = store.mock_auth_secret();
        let store = Arc::new(store);
        let auth_providers = crate::plugins::auth_providers_chain(store.clone());
        let auth_providers_for_metrics = auth_providers.clone();
        let mut plugins = crate::plugins::PluginLoader::new(
            store.clone(),
            policy_hooks.clone(),
            log_sinks.clone(),
            auth_providers.clone(),
            postern_plugins::RuntimeSettings {
                cache_dir: Some(plugin_cache(config)),
                clock: None,
                log_lines: Some(crate::plugins::log_writer(store.clone())),
            },
        );
        // Plugins the services name are there before the first client.
        plugins.sync().await?;
        let plugin_watcher = tokio::spawn(plugins.watch());
        let directory: Arc<dyn Directory> = store.clone();
        let reconcile_runs = Arc::new(ReconcileRuns::default());
        let reconcile_wake = Arc::new(tokio::sync::Notify::new());
        let wakes = crate::changes::Wakes {
            reconcile: config.reconcile_on_change.then(|| reconcile_wake.clone()),
            rotation: Arc::new(tokio::sync::Notify::new()),
        };
        let reconciler = tokio::spawn(crate::reconcile::when_due(
            store.clone(),
            (config.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(config.reconcile_interval_secs)),
            reconcile_wake,
            reconcile_runs.clone(),
        ));
        let issuer = postern_issuer::Issuer::new(store.clone());
        let issuer_work = tokio::spawn(crate::issuer::background(
            issuer.clone(),
            wakes.rotation.clone(),
        ));
        let change_watcher = tokio::spawn(crate::changes::watch(store.clone(), wakes));
        let audit = access_log(config, &store, &log_sinks)?;
        let tokens = Arc::new(TokenAuthority::new(store.clone(), token_settings(config))?);
        if let Some(kid) = tokens.maintain_keys()? {
            info!(kid = %kid, "new token signing key");
        }
        let gateway = Gateway::new(
            proxy_settings(config),
            directory,
            mock_secret,
            tls_config(config)?,
            Some(Arc::new(postern_issuer::SessionIssuer(issuer.clone()))),
            audit
                .clone()
                .map(|a| a as Arc<dyn postern_model::AccessLog>),
            Some(tokens.clone()),
        );
        gateway.set_auth_providers(auth_providers);
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut api_tls = None;
        let api_server = if config.api.enabled {
            write_bootstrap_token(&store, &config.state_dir)?;
            let api_listener = TcpListener::bind(config.admin_listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin API)", config.admin_listen))?;
            let api_address = api_listener
                .local_addr()
                .context("admin listener address")?;
            api_tls = match (config.api.tls, &config.tls_cert_file, &config.tls_key_file) {
                (true, Some(cert), Some(key)) => Some(postern_api::ApiTls::load(cert, key)?),
                _ => None,
            };
            let served_tls = api_tls.clone();
            info!(address = %api_address, tls = api_tls.is_some(), "admin API listening");
            let metrics = GatewayMetrics {
                gateway: gateway.clone(),
                audit,
                store: store.clone(),
                reconcile_runs: reconcile_runs.clone(),
            };
            let api = Arc::new(postern_api::Api {
                store: store.clone(),
                tokens: tokens.clone(),
                metrics: vec![
                    Arc::new(metrics),
                    Arc::new(crate::plugins::PluginMetrics {
                        hooks: policy_hooks.clone(),
                        sinks: log_sinks.clone(),
                        providers: auth_providers_for_metrics.clone(),
                    }),
                ],
                max_body_bytes: config.api.max_body_bytes,
                client_checks: tokio::sync::Semaphore::new(postern_api::CONCURRENT_CLIENT_CHECKS),
            });
            Some(tokio::spawn(async move {
                let stopped = async {
                    let _ = api_stopped.await;
                };
                if let Err(e) = postern_api::serve(api_listener, api, served_tls, stopped).await {
                    tracing::error!(error = %e, "admin API stopped");
                }
            }))
        } else {
            None
        };
        let key_maintenance = tokio::spawn(async move {
            let mut hourly = tokio::time::interval(Duration::from_secs(3600));
            loop {
                hourly.tick().await;
                let tokens = tokens.clone();
                match tokio::task::spawn_blocking(move || tokens.maintain_keys()).await {
                    Ok(Ok(Some(kid))) => info!(kid = %kid, "token signing key rotated"),
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "token signing key maintenance failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "token signing key maintenance failed"),
                }
            }
        });
        let reloader = tokio::spawn(reload_on_sighup(
            config.clone(),
            reload,
            gateway.clone(),
            api_tls,
        ));
        let relays = postern_proxy::RelayThreads::start(config.relay_threads)
            .context("cannot start the relay threads")?;
        let status = crate::service::Status {
            gateway: gateway.clone(),
            store: store.clone(),
            reconcile_runs,
        };
        crate::service::ready(&status.line());
        let status_reports = tokio::spawn(status.report());
        let shutdown = async {
            shutdown_signal().await;
            crate::service::stopping();
        };
        postern_proxy::serve_on(listener, gateway, relays.handles(), shutdown).await;
        status_reports.abort();
        let _ = api_stop.send(());
        if let Some(api_server) = api_server {
            let _ = tokio::time::timeout(Duration::from_secs(5), api_server).await;
        }
        key_maintenance.abort();
        reloader.abort();
        plugin_watcher.abort();
        issuer_work.abort();
        change_watcher.abort();
        reconciler.abort();
        Ok(())
    })
}

/// Where the gateway (and `apply`, for it) keeps compiled plugin components.
pub fn plugin_cache(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("plugin-cache")
}
