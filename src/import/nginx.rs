//! `certd import nginx` (being written).

use std::path::PathBuf;

/// Translates the nginx configuration files `files` into a certd.toml fragment on stdout. Returns the
/// exit code.
pub fn run(files: &[PathBuf]) -> u8 {
    let _ = files;
    eprintln!("certd import nginx: not yet");
    crate::commands::EXIT_UNUSABLE
}
