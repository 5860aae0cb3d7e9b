//! The `postern` binary: parses the command line, sets up logging and hands off to the
//! command. Errors end the process with one line on stderr and a non-zero status.

mod authoring;
mod changes;
mod cli;
mod demo;
mod issuer;
mod logs;
mod plugins;
mod reconcile;
mod remote;
mod resources;
mod serve;
mod setup;
mod tenancy;

use std::process::ExitCode;

use clap::Parser;
use postern_model::{Change, Kind};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` puts the whole cause chain on one line.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
    // Plugin authoring reports in its own lines; the runtime's log would repeat them.
    if !matches!(cli.command, Command::Plugin(_)) {
        setup::init_logging(config.log_format, long_running);
    }
    match cli.command {
        Command::Serve => serve::run(&config),
        Command::Demo => demo::run(&config, cli.settings.listen.is_some()),
        Command::CheckConfig { files } => resources::check_config(&config, &files),
        Command::Apply {
            files,
            dry_run,
            prune,
        } => {
            let store = setup::open_store(&config)?;
            let changes =
                resources::apply(&store, &files, dry_run, prune, serve::plugin_cache(&config))?;
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
            &setup::open_store(&config)?,
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
            let store = setup::open_store(&config)?;
            if resources::delete(&store, &kind, &name, &namespace)?
                .is_some_and(reconcile::affects_grants)
            {
                reconcile::after_change(&store);
            }
            Ok(())
        }
        Command::Logs(args) => logs::run(&setup::open_store(&config)?, &args),
        Command::Creds(command) => issuer::creds(setup::open_store(&config)?, command),
        Command::Lease(command) => issuer::lease(setup::open_store(&config)?, command),
        Command::Target(command) => issuer::target(setup::open_store(&config)?, command),
        Command::StaticRole(command) => issuer::static_role(setup::open_store(&config)?, command),
        Command::Reconcile { dry_run } => reconcile::command(&setup::open_store(&config)?, dry_run),
        Command::Secret(command) => resources::secret(&setup::open_store(&config)?, command),
        Command::Identity(command) => resources::identity(&setup::open_store(&config)?, command),
        Command::Token(command) => tenancy::token(setup::open_store(&config)?, &config, command),
        Command::Plugin(command) => authoring::run(command, &config),
    }
}
