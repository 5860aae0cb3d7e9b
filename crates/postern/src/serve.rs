//! `postern serve`: the wire proxy in front of the configured state, until a signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_config::Config;
use postern_model::Directory;
use postern_proxy::{Gateway, ProxySettings};
use tokio::net::TcpListener;
use tracing::info;

use crate::setup::open_store;

pub fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        max_startup_packet: config.max_startup_packet,
        max_message_size: config.max_message_size,
        auth_timeout: Duration::from_secs(config.auth_timeout_secs),
        upstream_connect_timeout: Duration::from_secs(config.upstream_connect_timeout_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
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

pub fn run(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    info!(state = %store.db_path().display(), master_key = %store.key_origin(), "state opened");
    runtime()?.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("listener address")?;
        info!(%address, "postern listening");
        let mock_secret = store.mock_auth_secret();
        let directory: Arc<dyn Directory> = Arc::new(store);
        let gateway = Gateway::new(proxy_settings(config), directory, mock_secret);
        postern_proxy::serve(listener, gateway, shutdown_signal()).await;
        Ok(())
    })
}
