//! `postern state backup|restore`: the state database copied while the gateway runs, and put
//! back into a new state directory.

use anyhow::Context;
use postern_config::Config;

use crate::cli::StateCommand;
use postern_app::key_settings;

pub fn run(config: &Config, command: StateCommand) -> anyhow::Result<()> {
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
    }
    Ok(())
}
