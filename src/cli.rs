//! The command line: what the operator can type. Each verb's behaviour lives in [`crate::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// certd: ACME certificates, TLS termination and reverse proxy in one binary.
#[derive(Debug, Parser)]
// `--version` names the commit too (build.rs), so a bug report says exactly what was running.
#[command(name = "certd", version = env!("CERTD_VERSION"), about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        default_value = "certd.toml",
        env = "CERTD_CONFIG"
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Obtain certificates for every configured site that has none or is due for renewal, then exit.
    ///
    /// Exits 0 when every site succeeded or was not due, 1 when any site failed (after trying all of
    /// them), 2 when nothing could be tried (bad configuration, state directory locked, CA unreachable).
    Issue {
        /// Renew even certificates that are not due.
        #[arg(long)]
        force: bool,
        /// Only these sites (by their first name); all sites when none is given.
        #[arg(value_name = "SITE_NAME")]
        sites: Vec<String>,
    },
    /// Run the daemon: answer challenges and redirect on :80, terminate TLS and reverse-proxy on :443,
    /// renew certificates in-process. SIGHUP reloads the configuration; SIGTERM or SIGINT stops it.
    Run,
    /// Show every managed site: names, issuer, serial, expiry, when renewal is due, the last error.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and name every problem in it.
    ///
    /// Exits 0 when it is valid (and, with `--preflight`, every name passed), 1 when a preflight check
    /// found a problem, 2 when the configuration is invalid.
    Check {
        /// Also check that every name resolves and that an HTTP request for it reaches certd (a
        /// self-test token served on `[http].listen`), naming what is wrong otherwise.
        #[arg(long)]
        preflight: bool,
    },
    /// Move in from another tool without re-issuing anything.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Move the state between backends: the state directory and the `[storage]` database.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Write the man page (certd.1) and the bash, zsh and fish completions into a folder, generated
    /// from this very definition; for packaging (scripts/build-deb.sh), so hidden from `--help`.
    #[command(hide = true)]
    GenerateAssets {
        /// The folder to write into (created when missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// What `certd import` can adopt.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Adopt certbot's live certificates (and its ACME account) into the state directory, with no new
    /// order; lineages become sites (or match existing ones by names) and are renewed when due.
    Certbot {
        /// certbot's configuration folder.
        #[arg(long, default_value = "/etc/letsencrypt")]
        from: PathBuf,
    },
    /// Translate nginx server blocks into a certd.toml fragment on stdout; every directive that cannot
    /// be translated is listed as a comment with its file and line.
    Nginx {
        /// nginx configuration files (e.g. /etc/nginx/sites-enabled/example).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The name for nginx's catch-all server block (no `server_name`, or `server_name _`):
        /// its site's name and `[https] default_site`.
        #[arg(long, value_name = "NAME")]
        default_name: Option<String>,
    },
}

/// A place certd keeps its state in, for `certd storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The state directory: `state_dir` of the config, or `--state-dir`.
    State,
    /// The database the config's `[storage]` table names (`backend = "postgres"`).
    Postgres,
}

/// What `certd storage` can do. Neither contacts a CA; both take the writer lock on both sides
/// (stop `certd run` on this node first) and can be run again safely: what is already there is left
/// alone.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Copy the state from one backend into the other, without a new order.
    ///
    /// Copies the accounts (per configured CA), each site's live certificate and record, and the
    /// ledgers. A site the destination already serves with another certificate is not touched
    /// (exit 1) unless `--overwrite` is given.
    ///
    /// Exits 0 when everything was copied or already there, 1 when something was refused or
    /// failed, 2 when nothing could be done (configuration, a store, its lock).
    Migrate {
        /// Where the state is now.
        #[arg(long, value_enum)]
        from: Backend,
        /// Where it should go.
        #[arg(long, value_enum)]
        to: Backend,
        /// The state directory to use instead of the config's `state_dir`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Replace the certificate of a site (and the account at a CA) the destination already has.
        #[arg(long)]
        overwrite: bool,
    },
    /// The way back: copy the database's state into a state directory (`migrate --from postgres
    /// --to state`).
    ///
    /// E.g. into a fresh `--state-dir` for a single-node setup.
    Export {
        /// Where the state should go (only `state`).
        #[arg(long, value_enum, default_value = "state")]
        to: Backend,
        /// The state directory to write instead of the config's `state_dir`.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Replace the certificate of a site (and the account at a CA) the state directory already has.
        #[arg(long)]
        overwrite: bool,
    },
}
