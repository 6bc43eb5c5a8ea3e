//! The operator's hook: a program (`[hook] command`, argv without a shell) run after each renewal and
//! each failed attempt, for the people who must also reload another program (a mail server, an old
//! nginx) when a certificate changes. certbot calls these deploy hooks.
//!
//! Its environment says what happened: `CERTD_EVENT` (`renewed` or `failed`), `CERTD_SITE`,
//! `CERTD_NAMES` (space-separated), the contract paths `CERTD_FULLCHAIN`, `CERTD_PRIVKEY`, `CERTD_CERT`,
//! `CERTD_CHAIN`, and `CERTD_SERIAL` (renewed) or `CERTD_ERROR` (failed). It gets a minute; its output
//! and exit status are logged, and it can never fail or block a renewal.
//!
//! Who calls it: the renewal, for a single node. In a fleet (`[storage] backend = "postgres"`) every
//! node runs its `renewed` hook when it swaps a new pair into its resolver (`daemon::storage_sync`),
//! the renewing node included, with the paths of its local copy in its state directory; `failed`
//! runs on the node whose attempt failed (not for an install refused because another node renewed).

use std::process::Stdio;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::SiteConfig;
use crate::store::Layout;

/// How long the hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the hook is told about.
#[derive(Debug, Clone, Copy)]
pub enum HookEvent<'a> {
    /// A new certificate was stored (and, in the daemon, is being served).
    Renewed {
        /// Its serial, in hex.
        serial: &'a str,
    },
    /// An attempt failed; the previous certificate (if any) stays.
    Failed {
        /// What went wrong, as shown to the operator.
        error: &'a str,
    },
}

/// Runs `command` for `event` on `site` and waits for it (at most a minute).
pub async fn run(command: &[String], site: &SiteConfig, layout: &Layout, event: HookEvent<'_>) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let name = site.name();
    let mut process = tokio::process::Command::new(program);
    process
        .args(args)
        .env("CERTD_SITE", name)
        .env("CERTD_NAMES", site.names.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (variable, path) in [
        ("CERTD_FULLCHAIN", layout.fullchain_pem(name)),
        ("CERTD_PRIVKEY", layout.privkey_pem(name)),
        ("CERTD_CERT", layout.cert_pem(name)),
        ("CERTD_CHAIN", layout.chain_pem(name)),
    ] {
        if let Ok(path) = path {
            process.env(variable, path);
        }
    }
    match event {
        HookEvent::Renewed { serial } => process
            .env("CERTD_EVENT", "renewed")
            .env("CERTD_SERIAL", serial),
        HookEvent::Failed { error } => process
            .env("CERTD_EVENT", "failed")
            .env("CERTD_ERROR", error),
    };
    let child = match process.spawn() {
        Ok(child) => child,
        Err(err) => {
            warn!(site = name, program = %program, %err, "cannot start the hook");
            return;
        }
    };
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                info!(site = name, program = %program, stdout = %stdout.trim(), "hook ran");
            } else {
                warn!(site = name, program = %program, status = %output.status, stdout = %stdout.trim(), stderr = %stderr.trim(), "hook failed");
            }
        }
        Ok(Err(err)) => warn!(site = name, program = %program, %err, "hook failed"),
        // Dropping the future kills the child (`kill_on_drop`).
        Err(_) => {
            warn!(site = name, program = %program, seconds = HOOK_TIMEOUT.as_secs(), "hook timed out and was killed")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hook_sees_the_event_site_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hook.out");
        let script = format!(
            "echo \"$CERTD_EVENT $CERTD_SITE [$CERTD_NAMES] $CERTD_SERIAL $CERTD_FULLCHAIN\" > {}",
            out.display()
        );
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let site = SiteConfig::with_names(vec!["a.test".into(), "www.a.test".into()]);
        let layout = Layout::new(dir.path().join("state"));
        run(
            &command,
            &site,
            &layout,
            HookEvent::Renewed { serial: "0abc" },
        )
        .await;
        let seen = std::fs::read_to_string(&out).unwrap();
        let fullchain = layout.fullchain_pem("a.test").unwrap();
        assert_eq!(
            seen.trim(),
            format!(
                "renewed a.test [a.test www.a.test] 0abc {}",
                fullchain.display()
            )
        );
    }

    #[tokio::test]
    async fn a_failed_attempt_gives_the_error_and_no_serial() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("hook.out");
        let script = format!(
            "echo \"$CERTD_EVENT $CERTD_SITE [$CERTD_NAMES] [${{CERTD_SERIAL-unset}}] $CERTD_ERROR\" > {}",
            out.display()
        );
        let command = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        let site = SiteConfig::with_names(vec!["a.test".into()]);
        let layout = Layout::new(dir.path().join("state"));
        run(
            &command,
            &site,
            &layout,
            HookEvent::Failed {
                error: "the CA said no",
            },
        )
        .await;
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(seen.trim(), "failed a.test [a.test] [unset] the CA said no");
    }

    // A hook that cannot start, or that fails, is logged and returns: the renewal goes on.
    #[tokio::test]
    async fn a_missing_or_failing_program_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let site = SiteConfig::with_names(vec!["a.test".into()]);
        let layout = Layout::new(dir.path().join("state"));
        let missing = vec![dir.path().join("no-such-hook").display().to_string()];
        let marker = dir.path().join("ran");
        let failing = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("echo ran > {}; echo oops >&2; exit 3", marker.display()),
        ];
        for command in [missing, failing] {
            let ran = tokio::time::timeout(
                Duration::from_secs(10),
                run(
                    &command,
                    &site,
                    &layout,
                    HookEvent::Failed { error: "boom" },
                ),
            )
            .await;
            assert!(ran.is_ok(), "{command:?} held the caller for 10 s");
        }
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    }
}
