//! The Debian package (scripts/build-deb.sh, packaging the certd this suite built): it installs with
//! `dpkg -i`, the installed binary says its version and commit, `certd check` accepts the shipped
//! example conffile, `systemd-analyze verify` accepts the installed unit, the man pages and shell
//! completions are where man and the shells look, and `dpkg --purge` removes it all again.
//! Needs root (CI runs as root) and dpkg-dev; the package is purged even when the test fails.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `program args`, returning its output; panics naming the command when it cannot start.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program} {args:?}: {err}"))
}

/// Asserts `output` succeeded, showing what it printed otherwise; returns its stdout.
fn ok(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Purges the package on drop, so a failed assertion leaves no certd installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "certd"]);
    }
}

/// The expected `--version` line of the binary built from this checkout.
fn expected_version() -> String {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    format!("certd {} (commit {commit})", env!("CARGO_PKG_VERSION"))
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let stdout = ok(
        "certd --version",
        &run(env!("CARGO_BIN_EXE_certd"), &["--version"]),
    );
    assert_eq!(stdout.trim(), expected_version());
}

#[test]
fn the_debian_package_installs_checks_verifies_and_purges() {
    let uid = ok("id -u", &run("id", &["-u"]));
    assert_eq!(
        uid.trim(),
        "0",
        "dpkg -i needs root: run the suite as root (CI does)"
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", "certd"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "a certd package is already installed on this machine; this test would replace it"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let built = ok(
        "scripts/build-deb.sh",
        &run(
            "bash",
            &[
                concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh"),
                "--binary",
                env!("CARGO_BIN_EXE_certd"),
                "--out",
                &out.path().display().to_string(),
                "--fast",
            ],
        ),
    );
    let deb = built.trim().lines().last().unwrap_or_default().to_owned();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).exists(),
        "no package: {built}"
    );
    let conffiles = ok(
        "dpkg-deb --ctrl-tarfile",
        &run("dpkg-deb", &["-I", &deb, "conffiles"]),
    );
    assert_eq!(
        conffiles.trim(),
        "/etc/certd/certd.toml\n/etc/logrotate.d/certd"
    );

    let _installed = Installed;
    ok("dpkg -i", &run("dpkg", &["-i", &deb]));
    let version = ok(
        "/usr/bin/certd --version",
        &run("/usr/bin/certd", &["--version"]),
    );
    assert_eq!(version.trim(), expected_version());
    let check = ok(
        "certd check on the shipped example",
        &run(
            "/usr/bin/certd",
            &["check", "--config", "/etc/certd/certd.toml"],
        ),
    );
    assert!(check.contains(": OK: 1 site"), "{check}");
    let unit = "/lib/systemd/system/certd.service";
    let text = std::fs::read_to_string(unit).expect("the installed unit");
    assert!(
        text.contains("ExecStart=/usr/bin/certd run --config /etc/certd/certd.toml"),
        "{text}"
    );
    let verify = run("systemd-analyze", &["verify", unit]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify:\n{stderr}");
    assert!(
        !stderr.contains("certd.service"),
        "warnings about the unit:\n{stderr}"
    );
    for file in [
        "/usr/share/man/man1/certd.1.gz",
        "/usr/share/man/man1/certd-issue.1.gz",
        "/usr/share/man/man1/certd-run.1.gz",
        "/usr/share/bash-completion/completions/certd",
        "/usr/share/zsh/vendor-completions/_certd",
        "/usr/share/fish/vendor_completions.d/certd.fish",
        "/usr/share/doc/certd/README.md",
        "/usr/share/doc/certd/monitoring/certd-rules.yml",
        "/usr/share/doc/certd/monitoring/certd-dashboard.json",
    ] {
        assert!(Path::new(file).is_file(), "{file} is not installed");
    }
    let man = ok(
        "zcat certd.1.gz",
        &run("zcat", &["/usr/share/man/man1/certd.1.gz"]),
    );
    assert!(man.contains(".TH certd 1"), "{man}");
    // The completion script is valid bash and registers itself for `certd`.
    ok(
        "bash -n on the completion",
        &run(
            "bash",
            &["-n", "/usr/share/bash-completion/completions/certd"],
        ),
    );

    ok("dpkg --purge", &run("dpkg", &["--purge", "certd"]));
    for gone in [
        "/usr/bin/certd",
        "/etc/certd/certd.toml",
        "/etc/logrotate.d/certd",
        unit,
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after purge"
        );
    }
}
