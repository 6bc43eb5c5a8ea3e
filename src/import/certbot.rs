//! `certd import certbot` (being written).

use std::path::Path;

/// Imports certbot's lineages from `from` into the state directory of the config at `config_path`.
/// Returns the exit code.
pub async fn run(from: &Path, config_path: &Path) -> u8 {
    let _ = (from, config_path);
    eprintln!("certd import certbot: not yet");
    crate::commands::EXIT_UNUSABLE
}
