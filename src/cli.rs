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
