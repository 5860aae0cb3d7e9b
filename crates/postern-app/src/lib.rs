//! The gateway as an application: [`App::build`] opens the state, loads the plugins and
//! makes the proxy, the access log and the token authority; [`App::run`] serves the wire
//! proxy and the admin API on the listeners it is given, with the reconciler, the issuer's
//! reaper and rotations, the signing-key rotation, SIGHUP reloads and the service manager's
//! notifications beside them, until `shutdown`. The binary only parses the command line;
//! tests start the same application in-process on port 0.

mod access_log;
mod background;
mod bootstrap;
mod changes;
mod leadership;
mod metrics;
mod plugins;
mod reload;
mod service;
mod settings;
mod state_backend;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_api::TokenAuthority;
use postern_config::Config;
use postern_model::Directory;
use postern_plugins::{AuthProviderChain, LogSinks, PolicyHooks};
use postern_proxy::Gateway;
use postern_state::Store;
use tokio::net::TcpListener;
use tracing::info;

pub use background::affects_grants;
pub use bootstrap::{write_bootstrap_token, BOOTSTRAP_TOKEN_FILE};
pub use metrics::{ReconcileRuns, ReconcileSummary};
pub use reload::Reload;
pub use settings::{
    key_settings, open_store, open_store_with, plugin_cache, proxy_settings, runtime, tls_config,
    token_settings,
};
pub use state_backend::postgres_settings;

/// The sockets the application serves on.
pub struct Listeners {
    /// The wire proxy.
    pub proxy: TcpListener,
    /// The admin API; `None` serves no API (also when `api.enabled` is off).
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds `listen`, and `admin_listen` when the API is on.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let proxy = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let admin = if config.api.enabled {
            Some(
                TcpListener::bind(config.admin_listen)
                    .await
                    .with_context(|| {
                        format!("cannot listen on {} (admin API)", config.admin_listen)
                    })?,
            )
        } else {
            None
        };
        Ok(Listeners { proxy, admin })
    }
}

/// A built gateway, ready to serve.
pub struct App {
    config: Config,
    store: Arc<Store>,
    gateway: Arc<Gateway>,
    tokens: Arc<TokenAuthority>,
    audit: Option<Arc<postern_audit::AuditPipeline>>,
    plugins: plugins::PluginLoader,
    policy_hooks: Arc<PolicyHooks>,
    log_sinks: Arc<LogSinks>,
    auth_providers: Arc<AuthProviderChain>,
    issuer: Arc<postern_issuer::Issuer>,
}

impl App {
    /// Opens the state (a configuration, key or schema problem fails here), loads the
    /// plugins the services name, starts the access log and makes the proxy.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        // A configuration made in code has not been through `Config::load`'s checks (an
        // API asked to use TLS without a certificate must not serve in the clear).
        config.validate()?;
        let policy_hooks = Arc::new(PolicyHooks::new());
        let log_sinks = Arc::new(LogSinks::new());
        let store = open_store_with(
            &config,
            postern_policy::CelEngine::with_plugins(policy_hooks.clone()),
        )?;
        info!(state = %store.location(), master_key = %store.key_origin(), "state opened");
        let mock_secret = store.mock_auth_secret();
        let store = Arc::new(store);
        let auth_providers = plugins::auth_providers_chain(store.clone());
        let mut plugins = plugins::PluginLoader::new(
            store.clone(),
            policy_hooks.clone(),
            log_sinks.clone(),
            auth_providers.clone(),
            postern_plugins::RuntimeSettings {
                cache_dir: Some(plugin_cache(&config)),
                clock: None,
                log_lines: Some(plugins::log_writer(store.clone())),
            },
        );
        // Plugins the services name are there before the first client.
        plugins.sync().await?;
        let audit = access_log::access_log(&config, &store, &log_sinks)?;
        let tokens = Arc::new(TokenAuthority::new(store.clone(), token_settings(&config))?);
        if let Some(kid) = tokens.maintain_keys()? {
            info!(kid = %kid, "new token signing key");
        }
        let issuer = postern_issuer::Issuer::new(store.clone());
        let directory: Arc<dyn Directory> = store.clone();
        let gateway = Gateway::new(
            proxy_settings(&config),
            directory,
            mock_secret,
            tls_config(&config)?,
            Some(Arc::new(postern_issuer::SessionIssuer(issuer.clone()))),
            audit
                .clone()
                .map(|a| a as Arc<dyn postern_model::AccessLog>),
            Some(tokens.clone()),
        );
        gateway.set_auth_providers(auth_providers.clone());
        Ok(App {
            config,
            store,
            gateway,
            tokens,
            audit,
            plugins,
            policy_hooks,
            log_sinks,
            auth_providers,
            issuer,
        })
    }

    /// The state store the application serves from.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Serves until `shutdown` completes, then drains the proxy's sessions (new logins get
    /// 57P03; after `shutdown_grace_secs` the rest get 57P01) and stops the API and the
    /// background work. `reload` (the binary's) makes SIGHUP re-read the configuration;
    /// without it SIGHUP reloads the TLS certificates only.
    pub async fn run(
        self,
        listeners: Listeners,
        reload: Option<Reload>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let App {
            config,
            store,
            gateway,
            tokens,
            audit,
            plugins,
            policy_hooks,
            log_sinks,
            auth_providers,
            issuer,
        } = self;
        let address = listeners.proxy.local_addr().context("listener address")?;
        info!(%address, "postern listening");
        let reconcile_runs = Arc::new(ReconcileRuns::default());
        let reconcile_wake = Arc::new(tokio::sync::Notify::new());
        let wakes = changes::Wakes {
            reconcile: config.reconcile_on_change.then(|| reconcile_wake.clone()),
            rotation: Arc::new(tokio::sync::Notify::new()),
        };
        let mut background = tokio::task::JoinSet::new();
        background.spawn(plugins.watch());
        background.spawn(leadership::lead(leadership::LeaderWork {
            store: store.clone(),
            reconcile_interval: (config.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(config.reconcile_interval_secs)),
            reconcile_wake,
            reconcile_runs: reconcile_runs.clone(),
            issuer: issuer.clone(),
            rotation_wake: wakes.rotation.clone(),
            tokens: tokens.clone(),
        }));
        background.spawn(changes::watch(store.clone(), wakes));

        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut api_tls = None;
        let api_server = match listeners.admin {
            Some(api_listener) => {
                bootstrap::write_bootstrap_token(&store, &config.state_dir)?;
                let api_address = api_listener
                    .local_addr()
                    .context("admin listener address")?;
                api_tls = match (config.api.tls, &config.tls_cert_file, &config.tls_key_file) {
                    (true, Some(cert), Some(key)) => Some(postern_api::ApiTls::load(cert, key)?),
                    _ => None,
                };
                info!(address = %api_address, tls = api_tls.is_some(), "admin API listening");
                let api = Arc::new(
                    postern_api::Api::new(
                        store.clone(),
                        tokens,
                        vec![
                            Arc::new(metrics::GatewayMetrics {
                                gateway: gateway.clone(),
                                audit: audit.clone(),
                                store: store.clone(),
                                reconcile_runs: reconcile_runs.clone(),
                            }),
                            Arc::new(plugins::PluginMetrics {
                                hooks: policy_hooks,
                                sinks: log_sinks.clone(),
                                providers: auth_providers,
                            }),
                        ],
                        config.api.max_body_bytes,
                    )
                    .with_issuer(issuer.clone())
                    .with_info(postern_api::ServerInfo {
                        started_at: chrono::Utc::now()
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        proxy_address: address.to_string(),
                        admin_address: api_address.to_string(),
                    }),
                );
                let served_tls = api_tls.clone();
                Some(tokio::spawn(async move {
                    let stopped = async {
                        let _ = api_stopped.await;
                    };
                    if let Err(e) = postern_api::serve(api_listener, api, served_tls, stopped).await
                    {
                        tracing::error!(error = %e, "admin API stopped");
                    }
                }))
            }
            None => None,
        };
        let audit_sinks = audit.clone().map(|pipeline| reload::AuditSinks {
            pipeline,
            store: store.clone(),
            log_sinks: log_sinks.clone(),
        });
        // Installed before READY=1: a `systemctl reload` right after start must not meet
        // SIGHUP's default action (exit).
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        background.spawn(reload::reload_on_sighup(
            hangups,
            config.clone(),
            reload,
            gateway.clone(),
            api_tls,
            audit_sinks,
        ));
        let relays = postern_proxy::RelayThreads::start(config.relay_threads)
            .context("cannot start the relay threads")?;
        let status = service::Status {
            gateway: gateway.clone(),
            store: store.clone(),
            reconcile_runs,
        };
        service::ready(&status.line().await);
        background.spawn(status.report());
        let shutdown = async {
            shutdown.await;
            service::stopping();
        };
        postern_proxy::serve_on(listeners.proxy, gateway, relays.handles(), shutdown).await;
        let _ = api_stop.send(());
        if let Some(api_server) = api_server {
            let _ = tokio::time::timeout(Duration::from_secs(5), api_server).await;
        }
        background.shutdown().await;
        Ok(())
    }
}

/// Builds the application and serves it on the configured addresses until SIGTERM or
/// SIGINT: `postern serve`.
pub fn serve(config: Config, reload: Reload) -> anyhow::Result<()> {
    runtime(&config)?.block_on(async {
        // Before READY=1 (sent by `run`): a SIGTERM right after it must drain, not kill.
        let shutdown = shutdown_signal()?;
        let app = App::build(config.clone()).await?;
        let listeners = Listeners::bind(&config).await?;
        app.run(listeners, Some(reload), shutdown).await
    })
}

/// Handles SIGTERM and SIGINT from now on; the future resolves at the first of them.
/// Needs a runtime.
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT received; shutting down"),
            _ = terminate.recv() => info!("SIGTERM received; shutting down"),
        }
    })
}
