//! What `certd import certbot` reports: one outcome per lineage and per certbot account, the lines
//! printed for them (results on stdout, skips and problems on stderr), and the exit code.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::config::Config;
use crate::exit::{EXIT_OK, EXIT_SOME_FAILED};
use crate::time_format::rfc3339;

/// What happened to one lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its pair is now the site's current version.
    Imported {
        /// The site it became the certificate of.
        site: String,
        /// The leaf's serial, lower-case hex.
        serial: String,
        /// The leaf's end of validity.
        expires: OffsetDateTime,
    },
    /// The site's current pair already has this leaf; nothing was written.
    AlreadyImported {
        /// The site.
        site: String,
    },
    /// The site already has a certificate valid for at least as long; nothing was written.
    NewerPresent {
        /// The site.
        site: String,
        /// The stored leaf's serial.
        serial: String,
        /// The stored leaf's end of validity.
        expires: OffsetDateTime,
    },
    /// Not imported, for this reason.
    Skipped(String),
}

/// What happened to one certbot account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountOutcome {
    /// certbot's id for the account.
    pub id: String,
    /// What was done, in words.
    pub message: String,
    /// Whether something went wrong reading it (printed on stderr); does not change the exit code,
    /// since certd registers an account of its own when it needs one.
    pub problem: bool,
}

/// Everything the import did, printed by [`Report::print`].
#[derive(Debug, Default)]
pub struct Report {
    /// One outcome per lineage, by lineage name.
    pub lineages: BTreeMap<String, Outcome>,
    /// One outcome per certbot account considered.
    pub accounts: Vec<AccountOutcome>,
    /// A `[[site]]` table for each lineage that matches no site, ready to paste into the config.
    pub suggestions: Vec<String>,
    /// How imported DNS-01 lineages will renew: `(is a problem, text)`; a problem goes to stderr.
    pub notes: Vec<(bool, String)>,
}

impl Report {
    /// The lines for the operator: `(on stderr, text)`, in print order.
    pub fn lines(&self) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        for (name, outcome) in &self.lineages {
            lines.push(match outcome {
                Outcome::Imported {
                    site,
                    serial,
                    expires,
                } => (
                    false,
                    format!(
                        "{name}: imported as {site} (serial {serial}, expires {})",
                        rfc3339(*expires)
                    ),
                ),
                Outcome::AlreadyImported { .. } => (false, format!("{name}: already imported")),
                Outcome::NewerPresent {
                    site,
                    serial,
                    expires,
                } => (
                    false,
                    format!(
                        "{name}: not imported, {site} already has a certificate that lasts as long or \
                         longer (serial {serial}, expires {})",
                        rfc3339(*expires)
                    ),
                ),
                Outcome::Skipped(reason) => (true, format!("{name}: skipped: {reason}")),
            });
        }
        for account in &self.accounts {
            lines.push((
                account.problem,
                format!("account {}: {}", account.id, account.message),
            ));
        }
        lines.extend(self.notes.iter().cloned());
        lines
    }

    /// Prints the lines, then the `[[site]]` tables to paste, if any.
    pub fn print(&self, config: &Config) {
        for (stderr, line) in self.lines() {
            if stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        if !self.suggestions.is_empty() {
            eprintln!(
                "\nTo import the lineages that are not in the config, add to {} and run the import again:",
                config.source.display()
            );
            for table in &self.suggestions {
                eprintln!("\n{table}");
            }
        }
    }

    /// 1 when any lineage was skipped, else 0.
    pub fn exit_code(&self) -> u8 {
        if self
            .lineages
            .values()
            .any(|outcome| matches!(outcome, Outcome::Skipped(_)))
        {
            EXIT_SOME_FAILED
        } else {
            EXIT_OK
        }
    }
}
