//! The command line: every server setting is a global flag with a `POSTERN_*` variable of
//! the same name, so every command finds the same state directory the way `serve` does.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use postern_config::{LogFormat, Overrides, TokenPassword};

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version = crate::version::VERSION,
    long_version = crate::version::LONG_VERSION,
    about = "A single-binary PostgreSQL access gateway: clients log in as identities, never see database passwords",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Server settings; each overrides the config file and the environment.
#[derive(Debug, Args)]
pub struct SettingFlags {
    /// Config file (default: /etc/postern/postern.toml when it exists)
    #[arg(long, global = true, env = "POSTERN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Wire proxy listen address [default: 0.0.0.0:6432]
    #[arg(long, global = true, env = "POSTERN_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin API listen address [default: 127.0.0.1:8432]
    #[arg(long, global = true, env = "POSTERN_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// State directory [default: ./postern-data]
    #[arg(long, global = true, env = "POSTERN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Master key file [default: <state-dir>/master.key]; POSTERN_MASTER_KEY or
    /// $CREDENTIALS_DIRECTORY/master-key take precedence when set (the key itself has no
    /// flag, so it never shows in the process list)
    #[arg(
        long,
        global = true,
        env = "POSTERN_MASTER_KEY_FILE",
        value_name = "FILE"
    )]
    pub master_key_file: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, global = true, env = "POSTERN_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Largest startup packet accepted, in bytes [default: 10240]
    #[arg(
        long,
        global = true,
        env = "POSTERN_MAX_STARTUP_PACKET",
        value_name = "BYTES"
    )]
    pub max_startup_packet: Option<usize>,
    /// Largest protocol message accepted from clients, in bytes [default: 1 GiB]
    #[arg(
        long,
        global = true,
        env = "POSTERN_MAX_MESSAGE_SIZE",
        value_name = "BYTES"
    )]
    pub max_message_size: Option<usize>,
    /// Seconds a client has to finish logging in [default: 30]
    #[arg(
        long,
        global = true,
        env = "POSTERN_AUTH_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub auth_timeout_secs: Option<u64>,
    /// Client connections open at once; past it new clients get 53300 [default: 10000]
    #[arg(
        long,
        global = true,
        env = "POSTERN_MAX_CLIENT_CONNECTIONS",
        value_name = "N"
    )]
    pub max_client_connections: Option<usize>,
    /// Seconds sessions may run on after SIGTERM before they are closed [default: 30]
    #[arg(
        long,
        global = true,
        env = "POSTERN_SHUTDOWN_GRACE_SECS",
        value_name = "SECS"
    )]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds to open and log in to an upstream connection [default: 10]
    #[arg(
        long,
        global = true,
        env = "POSTERN_UPSTREAM_CONNECT_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub upstream_connect_timeout_secs: Option<u64>,
    /// Seconds between grant reconciler runs in `serve`; 0 turns the timer off [default: 30]
    #[arg(
        long,
        global = true,
        env = "POSTERN_RECONCILE_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub reconcile_interval_secs: Option<u64>,
    /// Reconcile in `serve` when Intents, Identities, Services or Targets change, whoever
    /// changed them [default: true]
    #[arg(long, global = true, env = "POSTERN_RECONCILE_ON_CHANGE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub reconcile_on_change: Option<bool>,
    /// Async worker threads [default: half the cores, at least 1]
    #[arg(long, global = true, env = "POSTERN_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// PEM certificate chain for client TLS (reloaded on SIGHUP)
    #[arg(
        long,
        global = true,
        env = "POSTERN_TLS_CERT_FILE",
        value_name = "FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for --tls-cert-file
    #[arg(long, global = true, env = "POSTERN_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Refuse clients that do not use TLS
    #[arg(long, global = true, env = "POSTERN_REQUIRE_TLS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub require_tls: Option<bool>,
    /// PEM CA bundle for client certificates (login by certificate common name)
    #[arg(
        long,
        global = true,
        env = "POSTERN_TLS_CLIENT_CA_FILE",
        value_name = "FILE"
    )]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Act on a remote gateway's admin API (e.g. http://127.0.0.1:8432) instead of the
    /// local state directory: get, apply, delete and secret set
    #[arg(long, global = true, env = "POSTERN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// File holding the bearer token for --server
    #[arg(long, global = true, env = "POSTERN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle that verifies an https --server (default: the public web roots)
    #[arg(long, global = true, env = "POSTERN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Where access tokens are taken as cleartext passwords [default: tls]
    #[arg(long, global = true, env = "POSTERN_TOKEN_PASSWORD", value_enum)]
    pub token_password: Option<TokenPasswordArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenPasswordArg {
    Off,
    Tls,
    TlsOrLoopback,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl SettingFlags {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            admin_listen: self.admin_listen,
            state_dir: self.state_dir.clone(),
            master_key_file: self.master_key_file.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            max_startup_packet: self.max_startup_packet,
            max_message_size: self.max_message_size,
            auth_timeout_secs: self.auth_timeout_secs,
            max_client_connections: self.max_client_connections,
            shutdown_grace_secs: self.shutdown_grace_secs,
            upstream_connect_timeout_secs: self.upstream_connect_timeout_secs,
            reconcile_interval_secs: self.reconcile_interval_secs,
            reconcile_on_change: self.reconcile_on_change,
            worker_threads: self.worker_threads,
            tls_cert_file: self.tls_cert_file.clone(),
            tls_key_file: self.tls_key_file.clone(),
            require_tls: self.require_tls,
            tls_client_ca_file: self.tls_client_ca_file.clone(),
            token_password: self.token_password.map(|t| match t {
                TokenPasswordArg::Off => TokenPassword::Off,
                TokenPasswordArg::Tls => TokenPassword::Tls,
                TokenPasswordArg::TlsOrLoopback => TokenPassword::TlsOrLoopback,
            }),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (wire proxy) until SIGTERM or SIGINT
    Serve,
    /// Start a throwaway PostgreSQL and a gateway in front of it, and print psql lines that work
    Demo,
    /// Check the server settings, and resource files if given, without changing anything
    CheckConfig {
        /// Resource files or directories to validate
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        files: Vec<PathBuf>,
    },
    /// Apply resource files (YAML or TOML): all of them or nothing
    Apply {
        /// Files or directories (*.yaml, *.yml, *.toml) to apply
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        files: Vec<PathBuf>,
        /// Print what would change and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also delete resources an earlier apply created that the files no longer declare
        #[arg(long)]
        prune: bool,
    },
    /// Show resources (secret values are never shown)
    Get {
        /// namespace, target, service, identity or secret (plural and short forms work)
        kind: String,
        /// Only this resource
        name: Option<String>,
        #[command(flatten)]
        scope: Scope,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a resource
    Delete {
        /// namespace, target, service, identity or secret
        kind: String,
        name: String,
        /// Namespace of the resource
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Manage secrets
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage identities' credentials
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Access tokens: issue, revoke, rotate the signing key
    #[command(subcommand)]
    Token(TokenCommand),
    /// Short-lived credentials from a CredentialRole
    #[command(subcommand)]
    Creds(CredsCommand),
    /// Leases of issued credentials: list, renew, revoke
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// The access log: recent events from the state database
    Logs(LogsArgs),
    /// Say whether IDENTITY may connect to SERVICE (and run a statement there), which role
    /// binding, route and rule decide it, without connecting
    Explain {
        /// The identity, as name.namespace
        identity: String,
        /// The service, as name.namespace
        service: String,
        /// A statement to check against the service's rules
        #[arg(long)]
        statement: Option<String>,
        /// The client address the rules see
        #[arg(long, default_value = "127.0.0.1")]
        client_address: String,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: ExplainOutput,
    },
    /// Upstream targets: check the admin's rights, rotate its password
    #[command(subcommand)]
    Target(TargetCommand),
    /// Static roles: rotate a password now
    #[command(subcommand)]
    StaticRole(StaticRoleCommand),
    /// Plugins (WebAssembly components): inspect one, run it against test cases
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Bring every managed role's privileges in line with the Intents now (the server also
    /// does this after each change and every --reconcile-interval-secs)
    Reconcile {
        /// Print the SQL it would run and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The state database: back it up while the gateway runs, restore it into a new state
    /// directory
    #[command(subcommand)]
    State(StateCommand),
    /// Print the version, git commit and build date
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the state database to FILE, consistent even while a gateway writes to it (the
    /// master key is not in it: back that up on its own)
    Backup {
        /// Where the copy goes; must not exist
        file: PathBuf,
    },
    /// Put a backup in place as the state database of --state-dir, which must not hold one
    /// yet; the master key must be the one the backup was sealed with
    Restore {
        /// A file `postern state backup` wrote
        file: PathBuf,
    },
    /// Copy a gateway's SQLite state into a new PostgreSQL state for a fleet (stop that
    /// gateway first); secrets stay sealed under the same master key, which every gateway
    /// of the fleet needs
    Migrate {
        /// sqlite:PATH, PATH a state directory (or its state.db)
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL state (libpq URL or connection string; its password from [state]
        /// password_file or the state-password credential, not the command line)
        /// [default: [state] url]
        #[arg(long, value_name = "URL")]
        to: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct Scope {
    /// Namespace to look in
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Look in every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Start a plugin project that builds as it is: the code, the interface (vendored at
    /// this gateway's version), a README, the Plugin resource and test cases
    New {
        /// The project's and the Plugin's name
        name: String,
        /// What the plugin extends
        #[arg(long, value_enum)]
        kind: PluginKindArg,
        /// The language to write it in
        #[arg(long, value_enum, default_value = "rust")]
        lang: PluginLang,
        /// Where to create it [default: ./NAME]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// What a Plugin wrote through `log` (and stdout, stderr) in the gateway, oldest first
    Logs {
        /// The Plugin's name
        name: String,
        /// Its namespace
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The most recent lines shown
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines as the plugin writes them (Ctrl-C stops)
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Build the plugin project in DIR (the current directory by default) and print the
    /// component's path and sha256
    Build {
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// What a component is: its kind, the interface version it was built against, what
    /// each import needs granted, and whether this gateway can load it (exits non-zero
    /// when it cannot)
    Inspect {
        /// The component (`.wasm`)
        file: PathBuf,
        /// Output format
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: ReportOutput,
        /// Then time its main function (p50, p99) on a sample input: a select for a
        /// policy hook, a password for an auth provider, one event for a log sink
        #[arg(long)]
        bench: bool,
        /// With --bench: the config (JSON) its `init` gets
        #[arg(long, value_name = "JSON", default_value = "{}", requires = "bench")]
        plugin_config: String,
    },
    /// Run a component against test cases (YAML: the plugin's spec, a fixed clock, fake
    /// secrets, canned HTTP responses, then each case's input and expected answer) in the
    /// real runtime, without a gateway or PostgreSQL; one line per case, non-zero exit
    /// when any fails
    Test {
        /// The component (`.wasm`)
        file: PathBuf,
        /// The cases file
        #[arg(long, value_name = "FILE")]
        cases: PathBuf,
        /// Then time each case's call (p50, p99) and, for a policy hook, a new instance
        #[arg(long)]
        bench: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginKindArg {
    AuthProvider,
    Policy,
    LogSink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PluginLang {
    Rust,
    Python,
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportOutput {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value (read from --value, --file or standard input; one trailing
    /// newline is dropped from a file or standard input)
    Set {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The value (visible in the process list and shell history: prefer --file or stdin)
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// API keys: secrets an identity logs in with (SCRAM-SHA-256; only verifiers are stored)
    #[command(subcommand)]
    Key(KeyCommand),
    /// Client credentials (workloads): exchanged for access tokens at POST /api/v1/token
    #[command(subcommand)]
    Client(ClientCommand),
    /// Give the identity's managed upstream roles (Service mode intents) new passwords
    RotatePassword {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; it is printed once, on standard output
    Create {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// List an identity's API keys (ids and dates only)
    List {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Revoke an API key by id
    Revoke {
        identity: String,
        id: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client id and secret; the secret is printed once (only an argon2 hash is kept)
    Create {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// List an identity's client ids
    List {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Delete a client id and its secret
    Delete {
        identity: String,
        client_id: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an access token (a signed JWT) for an identity and print it once
    Issue {
        identity: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Lifetime, e.g. 15m, 1h [default: api.token_ttl_secs]
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke an access token by its jti
    Revoke {
        /// A jti is base64url, so it may start with '-'
        #[arg(allow_hyphen_values = true)]
        jti: String,
    },
    /// Make a new signing key now; tokens signed by the old one stay valid until they expire
    RotateKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredsOutput {
    /// One `key: value` line each
    Table,
    Json,
    /// PGUSER/PGPASSWORD/… lines for `eval`
    Env,
    /// A postgresql:// connection URI
    Uri,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// Create a role from a CredentialRole and print its login once
    Issue {
        /// The CredentialRole
        role: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// How long the credential lives (e.g. 15m, 1h) [default: the role's defaultTtl]
        #[arg(long)]
        ttl: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: CredsOutput,
    },
    /// List (and unless --dry-run, drop) upstream roles that fit a CredentialRole's
    /// username template but have no lease
    Sweep {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List leases (ended ones with --all)
    List {
        #[command(flatten)]
        scope: Scope,
        /// Include revoked and rolled-back leases
        #[arg(long)]
        all: bool,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Extend a lease (never past its role's maxTtl from issue)
    Renew {
        id: String,
        /// How far from now [default: the role's defaultTtl]
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke a lease now, or every lease of a CredentialRole with --prefix
    Revoke {
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        id: Option<String>,
        /// A CredentialRole name: revoke all its leases
        #[arg(long, value_name = "ROLE")]
        prefix: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TargetCommand {
    /// Log in as the target's admin and report what each feature needs and lacks
    Check {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Give the target's admin role a new password (stored in its passwordSecret)
    RotateAdmin {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum StaticRoleCommand {
    /// Rotate the role's password now
    Rotate {
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing new events as they arrive
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this identity (`name` or `name.namespace`)
    #[arg(long)]
    pub identity: Option<String>,
    /// Only this service (`name` or `name.namespace`)
    #[arg(long)]
    pub service: Option<String>,
    /// Only this event type (QUERY, EXECUTE, POLICY_DENIED…)
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Only events newer than this (90s, 10m, 2h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// How many of the newest events to show first
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: LogsOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogsOutput {
    Table,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_that_starts_with_a_hyphen_is_a_value_not_a_flag() {
        let cli = Cli::try_parse_from(["postern", "token", "revoke", "-G-FL1zBcMwG2Z_cjbusLg"])
            .map_err(|error| error.to_string());
        let Ok(Cli {
            command: Command::Token(TokenCommand::Revoke { jti }),
            ..
        }) = cli
        else {
            panic!("not parsed as a revoke: {cli:?}");
        };
        assert_eq!(jti, "-G-FL1zBcMwG2Z_cjbusLg");
    }
}
