//! The `postern` binary: parses the command line, sets up logging and hands off to the
//! command. Errors end the process with one line on stderr and a non-zero status.

mod authoring;
mod cli;
mod demo;
mod explain;
mod issuer;
mod logs;
mod reconcile;
mod remote;
mod resources;
mod setup;
mod state;
mod tenancy;
mod version;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use postern_model::{Change, Kind};

use crate::cli::{Cli, Command};

/// EX_CONFIG (sysexits.h): the configuration, the master key or the state database's
/// version is wrong. The systemd unit does not restart on it: retrying cannot help.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` puts the whole cause chain on one line.
            eprintln!("error: {error:#}");
            if is_configuration_error(&error) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// An error that only a change of configuration (or of binary) fixes.
fn is_configuration_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<postern_config::ConfigError>()
            || cause.is::<postern_proxy::TlsError>()
            || cause.is::<postern_api::ApiTlsError>()
            || matches!(
                cause.downcast_ref::<postern_state::StateError>(),
                Some(
                    postern_state::StateError::NewerSchema { .. }
                        | postern_state::StateError::MasterKey(_)
                )
            )
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Needs no configuration, state or server.
    match &cli.command {
        Command::Version => {
            println!("postern {}", version::LONG_VERSION);
            return Ok(());
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "postern", &mut script);
            return print_bytes(&script);
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut page)
                .context("cannot render the man page")?;
            return print_bytes(&page);
        }
        _ => {}
    }
    // Plugin authoring runs here even with --server (`plugin logs` reads this machine's
    // state directory).
    if let Some(server) = cli
        .settings
        .server
        .as_ref()
        .filter(|_| !matches!(cli.command, Command::Plugin(_)))
    {
        return remote::run(server, &cli.settings, cli.command);
    }
    let config = setup::load_config(&cli.settings)?;
    let long_running = matches!(cli.command, Command::Serve | Command::Demo);
    if let Some(level) = config.log_level.as_deref() {
        setup::log_filter(level)
            .map_err(|e| postern_config::ConfigError::Invalid(format!("{e:#}")))?;
    }
    // Plugin authoring reports in its own lines; the runtime's log would repeat them.
    let log_level = (!matches!(cli.command, Command::Plugin(_)))
        .then(|| setup::init_logging(config.log_format, long_running, config.log_level.as_deref()));
    match cli.command {
        Command::Serve => {
            let flags = cli.settings;
            let log_level = log_level.context("logging is set up for serve")?;
            let reload = postern_app::Reload {
                read_config: Box::new(move || setup::load_config(&flags)),
                set_log_level: Box::new(move |level| log_level.set(level)),
            };
            postern_app::serve(config, reload)
        }
        Command::State(command) => state::run(&config, command),
        Command::Version | Command::Completions { .. } | Command::Man => Ok(()),
        Command::Demo => demo::run(&config, cli.settings.listen.is_some()),
        Command::CheckConfig { files } => resources::check_config(&config, &files),
        Command::Apply {
            files,
            dry_run,
            prune,
        } => {
            let store = postern_app::open_store(&config)?;
            let changes = resources::apply(
                &store,
                &files,
                dry_run,
                prune,
                postern_app::plugin_cache(&config),
            )?;
            if !dry_run && reconcile::changes_affect_grants(&changes) {
                reconcile::after_change(&store);
            }
            if !dry_run
                && changes.iter().any(|c| {
                    !matches!(c, Change::Unchanged(_) | Change::Delete(_))
                        && c.resource().kind() == Kind::StaticRole
                })
            {
                issuer::after_apply(store);
            }
            Ok(())
        }
        Command::Get {
            kind,
            name,
            scope,
            output,
        } => resources::get(
            &postern_app::open_store(&config)?,
            &kind,
            name.as_deref(),
            &scope,
            output,
        ),
        Command::Delete {
            kind,
            name,
            namespace,
        } => {
            let store = postern_app::open_store(&config)?;
            if resources::delete(&store, &kind, &name, &namespace)?
                .is_some_and(postern_app::affects_grants)
            {
                reconcile::after_change(&store);
            }
            Ok(())
        }
        Command::Logs(args) => logs::run(&postern_app::open_store(&config)?, &args),
        Command::Explain {
            identity,
            service,
            statement,
            client_address,
            output,
        } => explain::local(
            &postern_app::open_store(&config)?,
            &explain::Question {
                identity,
                service,
                statement,
                client_address,
            },
            output,
        ),
        Command::Creds(command) => issuer::creds(postern_app::open_store(&config)?, command),
        Command::Lease(command) => issuer::lease(postern_app::open_store(&config)?, command),
        Command::Target(command) => issuer::target(postern_app::open_store(&config)?, command),
        Command::StaticRole(command) => {
            issuer::static_role(postern_app::open_store(&config)?, command)
        }
        Command::Reconcile { dry_run } => {
            reconcile::command(&postern_app::open_store(&config)?, dry_run)
        }
        Command::Secret(command) => resources::secret(&postern_app::open_store(&config)?, command),
        Command::Identity(command) => {
            resources::identity(&postern_app::open_store(&config)?, command)
        }
        Command::Token(command) => {
            tenancy::token(postern_app::open_store(&config)?, &config, command)
        }
        Command::Plugin(command) => authoring::run(command, &config),
    }
}
