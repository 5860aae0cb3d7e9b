//! `postern state backup|restore|migrate`: the state database copied while the gateway
//! runs, put back into a new state directory, or copied into PostgreSQL for a fleet.

use anyhow::Context;
use postern_config::Config;

use crate::cli::StateCommand;
use postern_app::key_settings;

pub fn run(config: &Config, command: StateCommand) -> anyhow::Result<()> {
    if config.state.backend == postern_config::StateBackend::Postgres
        && matches!(
            command,
            StateCommand::Backup { .. } | StateCommand::Restore { .. }
        )
    {
        anyhow::bail!(
            "state backup and restore copy a SQLite state; this configuration keeps the state in PostgreSQL: back it up with pg_dump (and keep the master key apart)"
        );
    }
    match command {
        StateCommand::Backup { file } => {
            postern_state::backup(&config.state_dir, &file).with_context(|| {
                format!(
                    "cannot back up the state in {} to {}",
                    config.state_dir.display(),
                    file.display()
                )
            })?;
            println!(
                "backed up {} to {} (the master key is not in it: keep a copy of the key too)",
                config.state_dir.display(),
                file.display()
            );
        }
        StateCommand::Restore { file } => {
            let store =
                postern_state::Store::restore(&config.state_dir, &file, &key_settings(config))
                    .with_context(|| {
                        format!(
                            "cannot restore {} into {}",
                            file.display(),
                            config.state_dir.display()
                        )
                    })?;
            println!(
                "restored {} into {} (master key from {})",
                file.display(),
                config.state_dir.display(),
                store.key_origin()
            );
        }
        StateCommand::Migrate { from, to } => migrate(config, &from, to)?,
    }
    Ok(())
}

fn migrate(config: &Config, from: &str, to: Option<String>) -> anyhow::Result<()> {
    let path = from
        .strip_prefix("sqlite:")
        .context("--from takes sqlite:PATH (a state directory or its state.db)")?;
    let path = std::path::Path::new(path);
    let dir = match path.file_name() {
        Some(name) if name == postern_state::STATE_DB_FILE => {
            path.parent().unwrap_or(std::path::Path::new("."))
        }
        _ => path,
    };
    if !dir.join(postern_state::STATE_DB_FILE).exists() {
        anyhow::bail!(
            "{} holds no {}",
            dir.display(),
            postern_state::STATE_DB_FILE
        );
    }
    // The master key as that directory's gateway found it (its key file by default).
    let mut source_config = config.clone();
    source_config.state_dir = dir.to_owned();
    let keys = key_settings(&source_config);
    let source = postern_state::Store::open(dir, &keys)
        .with_context(|| format!("cannot open the state in {}", dir.display()))?;
    let mut target_config = config.clone();
    target_config.state.backend = postern_config::StateBackend::Postgres;
    if to.is_some() {
        target_config.state.url = to;
    }
    let target = postern_state::Store::open_postgres(
        &postern_app::postgres_settings(&target_config)?,
        &keys,
    )
    .context("cannot open the PostgreSQL state")?;
    let report = source
        .copy_into(&target)
        .with_context(|| format!("cannot copy {} into {}", dir.display(), target.location()))?;
    for (table, rows) in &report {
        println!("{table}: {rows} rows");
    }
    println!(
        "copied {} into {} (give every gateway of the fleet the master key from {})",
        dir.display(),
        target.location(),
        source.key_origin()
    );
    Ok(())
}
