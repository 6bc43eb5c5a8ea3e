//! What each CLI verb does. Every command returns the process exit code; they print for people on
//! stdout (results) and stderr (errors), and log through `tracing`.

mod assets;
mod check;
mod issue;
mod status;
mod storage;

pub use check::check;
pub use issue::issue;
pub use status::{status, SiteStatus};

use crate::cli::{Cli, Command, ImportCommand, StorageCommand};
use crate::exit::EXIT_UNUSABLE;

/// Runs the command `cli` names and returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Issue { force, sites } => issue(&cli.config, force, &sites).await,
        Command::Run => {
            // Before the daemon starts, so its first request is logged where the file says.
            let _access_log =
                match crate::access_log::install(&crate::config::log_settings(&cli.config)) {
                    Ok(guard) => guard,
                    Err(err) => {
                        eprintln!("certd: {err}");
                        return EXIT_UNUSABLE;
                    }
                };
            crate::daemon::run(&cli.config).await
        }
        Command::Status { json } => status(&cli.config, json),
        Command::Check { preflight } => check(&cli.config, preflight).await,
        Command::Import(ImportCommand::Certbot { from }) => {
            crate::import::certbot::run(&from, &cli.config).await
        }
        Command::Import(ImportCommand::Nginx {
            files,
            default_name,
        }) => crate::import::nginx::run(&files, default_name.as_deref()),
        Command::Storage(StorageCommand::Migrate {
            from,
            to,
            state_dir,
            overwrite,
        }) => storage::migrate(&cli.config, from, to, state_dir.as_deref(), overwrite),
        Command::Storage(StorageCommand::Export {
            to,
            state_dir,
            overwrite,
        }) => storage::migrate(
            &cli.config,
            crate::cli::Backend::Postgres,
            to,
            state_dir.as_deref(),
            overwrite,
        ),
        Command::GenerateAssets { out } => assets::run(&out),
    }
}
