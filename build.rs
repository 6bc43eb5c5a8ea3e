//! Build script: records the git commit the binary is built from, for `certd --version`.
//!
//! `CERTD_VERSION` becomes `0.1.0 (commit 1a2b3c4d5e6f)`. Outside a git checkout (a release tarball,
//! a vendored source package) the commit comes from `CERTD_BUILD_COMMIT` when the packager sets it,
//! and is `unknown` otherwise: a build never fails for want of git.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CERTD_BUILD_COMMIT");
    let commit = std::env::var("CERTD_BUILD_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points at (a commit), and
    // packed-refs (a ref packed by gc). `--git-path` finds them in a worktree too.
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(file) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=CERTD_VERSION={version} (commit {commit})");
    println!("cargo:rustc-env=CERTD_COMMIT={commit}");
}

/// The trimmed stdout of `git args`, or `None` when git is missing or fails (not a checkout).
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}
