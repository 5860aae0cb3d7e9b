//! Shared start-up steps: the layered config and logging.

use anyhow::Context;
use postern_config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

use crate::cli::SettingFlags;

pub fn load_config(flags: &SettingFlags) -> anyhow::Result<Config> {
    Ok(Config::load(flags.config.as_deref(), &flags.overrides())?)
}

/// Logs go to stderr. Long-running commands log at info (or the config's `log_level`), the
/// rest only warnings, unless `RUST_LOG` says otherwise.
pub fn init_logging(format: LogFormat, long_running: bool, level: Option<&str>) -> LogLevel {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let default = if long_running { "info" } else { "warn" };
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => level
            .filter(|_| long_running)
            .and_then(|level| log_filter(level).ok())
            .unwrap_or_else(|| quiet_clients(EnvFilter::new(default))),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(quiet_clients(filter));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    LogLevel { handle, from_env }
}

/// tokio-postgres logs each statement batch at debug, and the reconciler's batches set
/// role passwords (as SCRAM verifiers, but still not for logs): never below info.
fn quiet_clients(filter: EnvFilter) -> EnvFilter {
    match "tokio_postgres=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// A `log_level` setting as a filter, or what is wrong with it.
pub fn log_filter(level: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::try_new(level)
        .map(quiet_clients)
        .with_context(|| format!("log_level {level:?} is not a valid log filter"))
}

/// Changes the log filter of a running process (SIGHUP).
pub struct LogLevel {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    /// `RUST_LOG` chose the filter; the config's `log_level` does not override it.
    from_env: bool,
}

impl LogLevel {
    /// Applies `level` (the config's `log_level`; unset means info); says why not when it
    /// cannot.
    pub fn set(&self, level: Option<&str>) -> anyhow::Result<()> {
        if self.from_env {
            anyhow::bail!(
                "RUST_LOG is set and chooses what the log shows; log_level is not applied"
            );
        }
        let filter = log_filter(level.unwrap_or("info"))?;
        self.handle
            .reload(filter)
            .context("cannot change the log filter")
    }
}
