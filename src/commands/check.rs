//! `certd check`: validate the configuration and name every problem in it.

use std::path::Path;

use super::{EXIT_OK, EXIT_UNUSABLE};
use crate::config;

/// Validates the configuration file at `path`; prints a summary, or every problem found.
pub fn check(path: &Path) -> u8 {
    match config::load(path) {
        Ok(config) => {
            let names: usize = config.sites.iter().map(|site| site.names.len()).sum();
            println!(
                "{}: OK: {} site{}, {names} name{}, CA {}, state in {}",
                path.display(),
                config.sites.len(),
                if config.sites.len() == 1 { "" } else { "s" },
                if names == 1 { "" } else { "s" },
                config.acme.directory_url,
                config.state_dir.display(),
            );
            EXIT_OK
        }
        Err(err) => {
            eprintln!("{err}");
            EXIT_UNUSABLE
        }
    }
}
