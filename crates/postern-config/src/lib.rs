//! Server settings (listeners, state dir, master key source, log format, limits), layered
//! as defaults < config file < `POSTERN_*` environment < flags. Resources are applied, not
//! configured, so none live here.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
pub use postern_model::TokenPassword;
use serde::{Deserialize, Serialize};

/// Where the config file is looked for when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/postern/postern.toml";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What happens when the access log cannot keep up or its sinks fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailure {
    /// Keep events on disk and go on; past the disk budget, count them as dropped.
    #[default]
    Spill,
    /// Refuse statements (58030) while events are being dropped.
    Block,
}

/// The `[audit]` section: the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Log bind parameter values (off: only their count).
    pub log_parameters: bool,
    /// Bytes of each parameter value logged.
    pub max_parameter_bytes: usize,
    /// Functions whose string-literal arguments are redacted from logged statements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_functions: Option<Vec<String>>,
    /// JSON Lines file sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    pub file_max_bytes: u64,
    pub file_max_age_secs: u64,
    pub file_keep: usize,
    /// JSON lines on standard output.
    pub stdout: bool,
    /// The state database's table, read by `postern logs`.
    pub state: bool,
    /// Log-sink Plugins (`namespace/name`, or `name` in `default`) that also get every
    /// event. Until such a plugin is applied and loaded, its events wait in the spill.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_sinks: Vec<String>,
    pub state_retention_secs: u64,
    /// Spill files; `<state_dir>/audit-spill` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    pub spill_max_bytes: u64,
    pub queue_capacity: usize,
    pub on_failure: AuditFailure,
    /// Event types recorded (`SESSION_START`, `QUERY`, `PARSE`, …); unset: one event per
    /// statement executed plus session, authentication and denial events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            log_parameters: false,
            max_parameter_bytes: 256,
            redact_functions: None,
            file: None,
            file_max_bytes: 100 << 20,
            file_max_age_secs: 24 * 3600,
            file_keep: 7,
            stdout: false,
            state: true,
            plugin_sinks: Vec::new(),
            state_retention_secs: 7 * 24 * 3600,
            spill_dir: None,
            spill_max_bytes: 1 << 30,
            queue_capacity: 65_536,
            on_failure: AuditFailure::Spill,
            events: None,
        }
    }
}

/// Where the state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// `state.db` in `state_dir`: one gateway.
    #[default]
    Sqlite,
    /// A PostgreSQL database that every gateway of a fleet shares.
    Postgres,
}

/// The `[state]` section: the state database.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    pub backend: StateBackend,
    /// For `postgres`: a libpq connection string or URL (`host=db.internal dbname=postern
    /// user=postern sslmode=verify-full`, or `postgres://…`). `sslmode` is honoured
    /// (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`), with `sslrootcert`
    /// for the CA to verify against (the system's roots when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file holding the password (a trailing newline is ignored); unset:
    /// `$CREDENTIALS_DIRECTORY/state-password` when present, else the URL's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password.
        f.debug_struct("StateConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "***"))
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// The `[api]` section: the admin API and the access tokens it issues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the admin API on `admin_listen`.
    pub enabled: bool,
    /// Lifetime of tokens from the token endpoint and of `token issue` without `--ttl`.
    pub token_ttl_secs: u64,
    /// Longest lifetime `token issue --ttl` may ask for.
    pub max_token_ttl_secs: u64,
    /// A new signing key is made when the current one is this old; the old one keeps
    /// verifying for `max_token_ttl_secs`.
    pub signing_key_rotation_secs: u64,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Serve the API over TLS with `tls_cert_file` and `tls_key_file` (bearer tokens and
    /// secret values must not cross a network in the clear).
    pub tls: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            token_ttl_secs: 900,
            max_token_ttl_secs: 24 * 3600,
            signing_key_rotation_secs: 30 * 24 * 3600,
            max_body_bytes: 1 << 20,
            tls: false,
        }
    }
}

/// The typed runtime configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wire proxy listener.
    pub listen: SocketAddr,
    /// Admin API listener.
    pub admin_listen: SocketAddr,
    /// Directory of the state database, master key file and bootstrap files.
    pub state_dir: PathBuf,
    /// Master key file; `<state_dir>/master.key` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// Master key given inline (`POSTERN_MASTER_KEY`), base64 of 32 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<String>,
    /// systemd's `$CREDENTIALS_DIRECTORY`, where `master-key` may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_directory: Option<PathBuf>,
    pub log_format: LogFormat,
    /// What the log shows, as `RUST_LOG` directives (`info`, `warn,postern_proxy=debug`);
    /// `RUST_LOG` takes precedence when set. Reloaded on SIGHUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Largest startup packet accepted, in bytes.
    pub max_startup_packet: usize,
    /// Largest single protocol message accepted after startup, in bytes.
    pub max_message_size: usize,
    /// A client that has not finished authenticating after this many seconds is dropped.
    pub auth_timeout_secs: u64,
    /// Client connections open at once, logged in or not; past it a new client is told
    /// 53300 after its startup packet, as PostgreSQL does past `max_connections`.
    pub max_client_connections: usize,
    /// On SIGTERM, sessions get this many seconds to finish before they are closed.
    pub shutdown_grace_secs: u64,
    /// Timeout for opening and authenticating an upstream connection, in seconds.
    pub upstream_connect_timeout_secs: u64,
    /// TCP keepalive on client and upstream connections: the kernel starts probing a
    /// peer after this many seconds without traffic, so a vanished host ends its session
    /// (0: off).
    #[serde(default = "default_tcp_keepalive_secs")]
    pub tcp_keepalive_secs: u64,
    /// A client that takes nothing sent to it for this many seconds (it stopped reading)
    /// loses its session and frees its upstream connection (0: never).
    #[serde(default = "default_client_write_timeout_secs")]
    pub client_write_timeout_secs: u64,
    /// The grant reconciler runs this often, in seconds (0: no timer).
    pub reconcile_interval_secs: u64,
    /// `serve` also reconciles within a second of any change to Intents, Identities,
    /// Services or Targets, whoever made it (a local `apply`, the admin API, `--server`).
    /// Off: only the timer, the CLI's own writes and `postern reconcile` do.
    #[serde(default = "default_reconcile_on_change")]
    pub reconcile_on_change: bool,
    /// Async worker threads; unset means half the cores, at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Threads that relay sessions, each with a runtime of its own (thread-per-core);
    /// 0 relays on the async workers.
    #[serde(default)]
    pub relay_threads: usize,
    /// PEM certificate chain for TLS on the client leg (reloaded on SIGHUP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse clients that do not use TLS (28000).
    #[serde(default)]
    pub require_tls: bool,
    /// PEM CA bundle for client certificates; with it, a verified client certificate
    /// whose common name an Identity declares logs that identity in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Access tokens as cleartext passwords on the wire: `off`, `tls`, `tls-or-loopback`.
    #[serde(default)]
    pub token_password: TokenPassword,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub state: StateConfig,
}

fn default_reconcile_on_change() -> bool {
    true
}

fn default_tcp_keepalive_secs() -> u64 {
    60
}

fn default_client_write_timeout_secs() -> u64 {
    300
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("state_dir", &self.state_dir)
            .field("master_key_file", &self.master_key_file)
            .field("master_key", &self.master_key.as_ref().map(|_| "***"))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("max_startup_packet", &self.max_startup_packet)
            .field("max_message_size", &self.max_message_size)
            .field("auth_timeout_secs", &self.auth_timeout_secs)
            .field("max_client_connections", &self.max_client_connections)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("reconcile_interval_secs", &self.reconcile_interval_secs)
            .field("reconcile_on_change", &self.reconcile_on_change)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 6432)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8432)),
            state_dir: PathBuf::from("./postern-data"),
            master_key_file: None,
            master_key: None,
            credentials_directory: None,
            log_format: LogFormat::Text,
            log_level: None,
            max_startup_packet: 10 * 1024,
            max_message_size: 1 << 30,
            auth_timeout_secs: 30,
            max_client_connections: 10_000,
            shutdown_grace_secs: 30,
            upstream_connect_timeout_secs: 10,
            tcp_keepalive_secs: default_tcp_keepalive_secs(),
            client_write_timeout_secs: default_client_write_timeout_secs(),
            reconcile_interval_secs: 30,
            reconcile_on_change: default_reconcile_on_change(),
            worker_threads: None,
            relay_threads: 0,
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: false,
            tls_client_ca_file: None,
            token_password: TokenPassword::default(),
            audit: AuditConfig::default(),
            api: ApiConfig::default(),
            state: StateConfig::default(),
        }
    }
}

/// Values given as command-line flags; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_startup_packet: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_connect_timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_interval_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_on_change: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_password: Option<TokenPassword>,
}

/// A setting that could not be read; one line saying which and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads settings. `config_file` names a file that must exist; without it
    /// [`DEFAULT_CONFIG_FILE`] is read when present. `POSTERN_CONFIG` is the caller's to
    /// resolve (it is a flag's env fallback, not a setting).
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match config_file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        let config: Config = figment
            .merge(Env::prefixed("POSTERN_").ignore(&["config"]))
            .merge(Env::raw().only(&["credentials_directory"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| {
                ConfigError::Invalid(
                    e.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: ranges and settings that need one another.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.max_startup_packet < 8 {
            return invalid("max_startup_packet must be at least 8 bytes");
        }
        if self.max_message_size < 1024 {
            return invalid("max_message_size must be at least 1024 bytes");
        }
        match (self.state.backend, &self.state.url) {
            (StateBackend::Postgres, None) => {
                return invalid("state.backend = \"postgres\" needs state.url")
            }
            (StateBackend::Sqlite, Some(_)) => {
                return invalid("state.url is for state.backend = \"postgres\"")
            }
            _ => {}
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return invalid("tls_cert_file and tls_key_file go together");
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            return invalid("tls_client_ca_file needs tls_cert_file and tls_key_file");
        }
        if self.require_tls && self.tls_cert_file.is_none() {
            return invalid("require_tls needs tls_cert_file and tls_key_file");
        }
        if self.worker_threads == Some(0) {
            return invalid("worker_threads must be at least 1");
        }
        if self.relay_threads > 1024 {
            return invalid("relay_threads must be at most 1024");
        }
        if self.reconcile_interval_secs > 365 * 24 * 3600 {
            return invalid("reconcile_interval_secs must be at most a year");
        }
        if self.auth_timeout_secs == 0 {
            return invalid("auth_timeout_secs must be at least 1");
        }
        if self.max_client_connections == 0 || self.max_client_connections > 1 << 24 {
            return invalid("max_client_connections must be between 1 and 16777216");
        }
        if self.api.token_ttl_secs == 0 || self.api.token_ttl_secs > self.api.max_token_ttl_secs {
            return invalid("api.token_ttl_secs must be between 1 and api.max_token_ttl_secs");
        }
        if self.api.tls && self.tls_cert_file.is_none() {
            return invalid("api.tls needs tls_cert_file and tls_key_file");
        }
        if self.api.signing_key_rotation_secs < 60 {
            return invalid("api.signing_key_rotation_secs must be at least 60");
        }
        if self.audit.queue_capacity == 0 {
            return invalid("audit.queue_capacity must be at least 1");
        }
        if self.audit.file_max_bytes == 0 || self.audit.file_max_age_secs == 0 {
            return invalid("audit.file_max_bytes and audit.file_max_age_secs must be at least 1");
        }
        if let Some(unknown) = self
            .audit
            .events
            .iter()
            .flatten()
            .find(|name| postern_model::EventType::parse(name).is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "audit.events: unknown event type {unknown:?} (one of {})",
                postern_model::EventType::ALL.map(|t| t.as_str()).join(", ")
            )));
        }
        if let Some(bad) = self
            .audit
            .plugin_sinks
            .iter()
            .find(|entry| Config::plugin_sink(entry).is_none())
        {
            return Err(ConfigError::Invalid(format!(
                "audit.plugin_sinks: {bad:?} is not a Plugin name (name or namespace/name)"
            )));
        }
        Ok(())
    }

    /// `(namespace, name)` of an `audit.plugin_sinks` entry.
    pub fn plugin_sink(entry: &str) -> Option<(String, String)> {
        let (namespace, name) = entry
            .split_once('/')
            .unwrap_or((postern_model::DEFAULT_NAMESPACE, entry));
        (postern_model::validate_name(namespace).is_ok()
            && postern_model::validate_name(name).is_ok())
        .then(|| (namespace.to_owned(), name.to_owned()))
    }

    /// Where the access log's spill files go.
    /// The event types `audit.events` names, or the default set.
    pub fn audit_events(&self) -> Vec<postern_model::EventType> {
        match &self.audit.events {
            Some(names) => names
                .iter()
                .filter_map(|name| postern_model::EventType::parse(name))
                .collect(),
            None => postern_model::EventType::DEFAULT_RECORDED.to_vec(),
        }
    }

    pub fn audit_spill_dir(&self) -> PathBuf {
        self.audit
            .spill_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("audit-spill"))
    }

    /// The master key file in force.
    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("master.key"))
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn layers_file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "postern.toml",
                "listen = \"127.0.0.1:7000\"\nstate_dir = \"/from/file\"\nauth_timeout_secs = 5\n",
            )?;
            jail.set_env("POSTERN_STATE_DIR", "/from/env");
            jail.set_env("POSTERN_MASTER_KEY", "c2VjcmV0");
            let overrides = Overrides {
                auth_timeout_secs: Some(9),
                ..Default::default()
            };
            let config = Config::load(Some(Path::new("postern.toml")), &overrides).unwrap();
            assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
            assert_eq!(config.state_dir, PathBuf::from("/from/env"));
            assert_eq!(config.auth_timeout_secs, 9);
            assert_eq!(
                config.master_key_path(),
                PathBuf::from("/from/env/master.key")
            );
            assert!(!format!("{config:?}").contains("c2VjcmV0"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_and_missing_files_are_one_line_errors() {
        Jail::expect_with(|jail| {
            jail.set_env("POSTERN_LISTEN", "not-an-address");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains("listen"), "{err}");
            assert!(!err.contains('\n'));
            let err = Config::load(Some(Path::new("nope.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("nope.toml"), "{err}");
            jail.set_env("POSTERN_LISTEN", "127.0.0.1:6432");
            let none = Overrides {
                max_client_connections: Some(0),
                ..Overrides::default()
            };
            let err = Config::load(None, &none).unwrap_err().to_string();
            assert!(err.contains("max_client_connections"), "{err}");
            assert!(!err.contains('\n'));
            Ok(())
        });
    }

    #[test]
    fn audit_events_default_to_statements_run_and_name_typos() {
        Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).unwrap();
            let events = config.audit_events();
            assert!(events.contains(&postern_model::EventType::Execute));
            assert!(!events.contains(&postern_model::EventType::Parse));
            jail.create_file("postern.toml", "[audit]\nevents = ['query', 'PARSE']\n")?;
            let config =
                Config::load(Some(Path::new("postern.toml")), &Overrides::default()).unwrap();
            assert_eq!(
                config.audit_events(),
                [
                    postern_model::EventType::Query,
                    postern_model::EventType::Parse
                ]
            );
            jail.create_file("postern.toml", "[audit]\nevents = ['QUERY', 'PRASE']\n")?;
            let err = Config::load(Some(Path::new("postern.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("audit.events") && err.contains("PRASE"),
                "{err}"
            );
            Ok(())
        });
    }
}
