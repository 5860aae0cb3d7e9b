//! SIGHUP: the configuration read again, what can change while serving applied, the rest
//! named as waiting for a restart.

use std::sync::Arc;

use postern_config::Config;

use crate::access_log::SINK_SETTINGS;
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

/// The access log's parts a reload needs to replace its sinks.
pub(crate) struct AuditSinks {
    pub pipeline: Arc<postern_audit::AuditPipeline>,
    pub store: Arc<postern_state::Store>,
    pub log_sinks: Arc<postern_plugins::LogSinks>,
}

/// On every SIGHUP: reads the configuration again, applies what can change while serving
/// (the TLS certificates of both listeners, the log level, the proxy's limits and
/// timeouts, the access log's sinks) and names the changed settings that wait for a
/// restart. A certificate that
/// fails to load, or a configuration with an error, leaves the running one in place.
pub(crate) async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    started: Config,
    reload: Option<Reload>,
    gateway: Arc<Gateway>,
    api_tls: Option<Arc<postern_api::ApiTls>>,
    audit: Option<AuditSinks>,
) {
    let mut applied = started.clone();
    while hangups.recv().await.is_some() {
        crate::service::reloading();
        if let Some(reload) = &reload {
            applied = reread_config(&started, applied, reload, &gateway, audit.as_ref());
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

/// The names of the settings `wanted` picks that differ between `before` and `after`; a
/// section's settings are named `section.name` (`audit.file`). Names only: values may be
/// secret.
fn changed_settings(before: &Config, after: &Config, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let as_map = |config: &Config| {
        let mut flat = serde_json::Map::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(config) {
            for (name, value) in map {
                match value {
                    serde_json::Value::Object(section) => {
                        for (key, value) in section {
                            flat.insert(format!("{name}.{key}"), value);
                        }
                    }
                    value => {
                        flat.insert(name, value);
                    }
                }
            }
        }
        flat
    };
    let (before, after) = (as_map(before), as_map(after));
    let mut changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| wanted(name) && before.get(*name) != after.get(*name))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    changed
}

/// Reads the configuration again, applies what changed since `applied` and can change
/// while serving, and names what changed since `started` and waits for a restart; returns
/// the configuration read (or `applied` when it cannot be read).
fn reread_config(
    started: &Config,
    applied: Config,
    reload: &Reload,
    gateway: &Gateway,
    audit: Option<&AuditSinks>,
) -> Config {
    let mut config = match (reload.read_config)() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "SIGHUP: the configuration has an error; nothing changed"
            );
            return applied;
        }
    };
    if config.log_level != applied.log_level {
        match (reload.set_log_level)(config.log_level.as_deref()) {
            Ok(()) => info!(log_level = ?config.log_level, "SIGHUP: log level changed"),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "SIGHUP: log level not changed"),
        }
    }
    let limits = changed_settings(&applied, &config, |name| PROXY_LIMITS.contains(&name));
    if !limits.is_empty() {
        gateway.set_settings(crate::proxy_settings(&config));
        info!(
            settings = limits.join(", "),
            "SIGHUP: limits changed for connections from now on"
        );
    }
    let sinks = changed_settings(&applied, &config, |name| SINK_SETTINGS.contains(&name));
    if let (false, Some(audit)) = (sinks.is_empty(), audit) {
        let replaced = crate::access_log::sinks(&config, &audit.store, &audit.log_sinks)
            .and_then(|new| Ok(audit.pipeline.replace_sinks(new)?));
        match replaced {
            Ok(()) => info!(
                settings = sinks.join(", "),
                "SIGHUP: access-log sinks replaced"
            ),
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "SIGHUP: access-log sinks not replaced; the previous ones stay"
                );
                config.audit = applied.audit.clone();
            }
        }
    }
    let waiting = changed_settings(started, &config, |name| {
        name != "log_level"
            && !PROXY_LIMITS.contains(&name)
            && !(audit.is_some() && SINK_SETTINGS.contains(&name))
    });
    if !waiting.is_empty() {
        tracing::warn!(
            settings = waiting.join(", "),
            "SIGHUP: changed settings take effect at the next restart"
        );
    }
    config
}

/// The settings behind the proxy's limits and timeouts ([`crate::proxy_settings`]): a
/// reload applies them to connections accepted afterwards.
const PROXY_LIMITS: &[&str] = &[
    "max_startup_packet",
    "max_message_size",
    "auth_timeout_secs",
    "max_client_connections",
    "shutdown_grace_secs",
    "upstream_connect_timeout_secs",
    "tcp_keepalive_secs",
    "client_write_timeout_secs",
    "require_tls",
    "token_password",
];
