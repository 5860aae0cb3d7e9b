//! SIGHUP: the configuration read again, what can change while serving applied, the rest
//! named as waiting for a restart.

use std::sync::Arc;

use postern_config::Config;
use postern_proxy::Gateway;
use tracing::info;

/// Applies a `log_level` setting to the running process's log filter.
pub type SetLogLevel = Box<dyn Fn(Option<&str>) -> anyhow::Result<()> + Send>;

/// What a SIGHUP re-reads and applies.
pub struct Reload {
    /// Reads the configuration again, from the same file, environment and flags.
    pub read_config: Box<dyn Fn() -> anyhow::Result<Config> + Send>,
    /// Applies a `log_level` (unset: the default); says why not when it cannot.
    pub set_log_level: SetLogLevel,
}

/// On every SIGHUP: reads the configuration again, applies what can change while serving
/// (the TLS certificates of both listeners, the log level) and names the changed
/// settings that wait for a restart. A certificate that fails to load, or a configuration
/// with an error, leaves the running one in place.
pub(crate) async fn reload_on_sighup(
    mut running: Config,
    reload: Option<Reload>,
    gateway: Arc<Gateway>,
    api_tls: Option<Arc<postern_api::ApiTls>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        crate::service::reloading();
        if let Some(reload) = &reload {
            running = reread_config(running, reload);
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

/// Reads the configuration again and applies the log level; returns the configuration now
/// in effect.
fn reread_config(running: Config, reload: &Reload) -> Config {
    let config = match (reload.read_config)() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: the configuration has an error; nothing changed"
            );
            return running;
        }
    };
    let mut log_level = running.log_level.clone();
    if config.log_level != running.log_level {
        match (reload.set_log_level)(config.log_level.as_deref()) {
            Ok(()) => {
                info!(log_level = ?config.log_level, "SIGHUP: log level changed");
                log_level = config.log_level.clone();
            }
            Err(e) => tracing::warn!(error = format!("{e:#}"), "SIGHUP: log level not changed"),
        }
    }
    let waiting = settings_needing_restart(&running, &config);
    if !waiting.is_empty() {
        tracing::warn!(
            settings = waiting.join(", "),
            "SIGHUP: changed settings take effect at the next restart"
        );
    }
    Config {
        log_level,
        ..running
    }
}
