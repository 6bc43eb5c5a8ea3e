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

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::{Cli, Command, ImportCommand, StorageCommand};

/// Everything succeeded.
pub const EXIT_OK: u8 = 0;
/// Some site failed; the others were tried.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Nothing could be tried: the configuration, the state directory, the listener or the CA is at fault.
pub const EXIT_UNUSABLE: u8 = 2;

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

/// Formats a time as RFC 3339 in whole seconds, the one format certd prints.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}
