//! `certd generate-assets --out DIR` (hidden): the man page and shell completions, generated from the
//! clap definition in [`crate::cli`] so they can never fall out of step with the real options.
//! scripts/build-deb.sh runs it with the binary it packages.

use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::exit::{EXIT_OK, EXIT_UNUSABLE};

/// Writes the man pages into `out/man` (`certd.1`, `certd-issue.1`, …), and `certd.bash`, `_certd`
/// (zsh) and `certd.fish` into `out`.
pub fn run(out: &Path) -> u8 {
    match write_all(out) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!(
                "certd: cannot write the assets into {}: {err}",
                out.display()
            );
            EXIT_UNUSABLE
        }
    }
}

/// The CLI as operators see it: [`Cli`] without its hidden verbs, which clap_complete would offer.
fn operator_command() -> clap::Command {
    let full = Cli::command();
    let mut command = clap::Command::new("certd")
        .version(env!("CERTD_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    command.subcommand_required(true)
}

fn write_all(out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    // certd.1 and one page per verb (certd-issue.1, certd-import-certbot.1, …), as git does.
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(operator_command(), &man)?;
    for (shell, file) in [
        (Shell::Bash, "certd.bash"),
        (Shell::Zsh, "_certd"),
        (Shell::Fish, "certd.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut operator_command(), "certd", &mut script);
        std::fs::write(out.join(file), script)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_and_completions_name_the_subcommands() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run(dir.path()), EXIT_OK);
        let man = std::fs::read_to_string(dir.path().join("man/certd.1")).unwrap();
        let issue = std::fs::read_to_string(dir.path().join("man/certd-issue.1")).unwrap();
        assert!(issue.contains("\\-\\-force"), "{issue}");
        assert!(dir.path().join("man/certd-import-certbot.1").exists());
        assert!(!dir.path().join("man/certd-generate-assets.1").exists());
        assert!(man.starts_with(".ie"), "{man}");
        assert!(man.contains("issue"), "{man}");
        assert!(man.contains("\\-\\-config"), "{man}");
        assert!(!man.contains("generate\\-assets"), "{man}");
        for file in ["certd.bash", "_certd", "certd.fish"] {
            let script = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(script.contains("preflight"), "{file}: {script}");
            // The packaging verb is not offered to operators.
            assert!(!script.contains("generate-assets"), "{file}: {script}");
        }
    }
}
