//! What the configuration turns into: the proxy's settings, TLS, the async runtime, token
//! lifetimes, and the state store with its master key.

use std::time::Duration;

use anyhow::Context;
use postern_api::TokenSettings;
use postern_config::{Config, StateBackend};
use postern_proxy::{ProxySettings, TlsConfig};
use postern_state::{KeySettings, Store};

/// The proxy's settings from the configuration.
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

pub fn token_settings(config: &Config) -> TokenSettings {
    TokenSettings {
        default_ttl: Duration::from_secs(config.api.token_ttl_secs),
        max_ttl: Duration::from_secs(config.api.max_token_ttl_secs),
        rotation: Duration::from_secs(config.api.signing_key_rotation_secs),
    }
}

/// Where the master key may be: inline, as a systemd credential, or in the key file.
pub fn key_settings(config: &Config) -> KeySettings {
    KeySettings {
        inline: config.master_key.clone(),
        credentials_directory: config.credentials_directory.clone(),
        key_file: config.master_key_path(),
    }
}

/// Opens the store the configuration names, saying where a new master key went.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    open_store_with(config, postern_policy::CelEngine::new())
}

/// [`open_store`] with the policy engine given (the gateway's knows its plugins).
pub fn open_store_with(
    config: &Config,
    engine: postern_policy::CelEngine,
) -> anyhow::Result<Store> {
    let store = match config.state.backend {
        StateBackend::Sqlite => Store::open(&config.state_dir, &key_settings(config))
            .with_context(|| format!("cannot open state in {}", config.state_dir.display()))?,
        StateBackend::Postgres => Store::open_postgres(
            &crate::state_backend::postgres_settings(config)?,
            &key_settings(config),
        )
        .context("cannot open the state on PostgreSQL")?,
    };
    store.set_policy_engine(std::sync::Arc::new(engine));
    if store.generated_key() {
        tracing::warn!(
            path = %store.key_origin(),
            "generated a new master key; back it up: without it the sealed secrets are lost"
        );
    }
    Ok(store)
}

/// Where the gateway (and `apply`, for it) keeps compiled plugin components.
pub fn plugin_cache(config: &Config) -> std::path::PathBuf {
    config.state_dir.join("plugin-cache")
}
