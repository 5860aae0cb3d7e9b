//! Shared start-up steps: layered config, logging, and opening the state store.

use anyhow::Context;
use postern_config::{Config, LogFormat};
use postern_state::{KeySettings, Store};
use tracing_subscriber::EnvFilter;

use crate::cli::SettingFlags;

pub fn load_config(flags: &SettingFlags) -> anyhow::Result<Config> {
    Ok(Config::load(flags.config.as_deref(), &flags.overrides())?)
}

/// Logs go to stderr. Long-running commands log at info, the rest only warnings, unless
/// `RUST_LOG` says otherwise.
pub fn init_logging(format: LogFormat, long_running: bool) {
    let default = if long_running { "info" } else { "warn" };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // tokio-postgres logs each statement batch at debug, and the reconciler's batches set
    // role passwords (as SCRAM verifiers, but still not for logs): never below info.
    if let Ok(directive) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(directive);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

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
    let store = Store::open(&config.state_dir, &key_settings(config))
        .with_context(|| format!("cannot open state in {}", config.state_dir.display()))?;
    store.set_policy_engine(std::sync::Arc::new(engine));
    if store.generated_key() {
        tracing::warn!(
            path = %store.key_origin(),
            "generated a new master key; back it up: without it the sealed secrets are lost"
        );
    }
    Ok(store)
}
