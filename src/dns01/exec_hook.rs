//! The exec-hook DNS-01 method: `dns_hook = "/path"` run as `program add|remove <record-name>
//! <value>`, the lego `exec` provider's convention (the name fully qualified, with its trailing dot),
//! so a provider's CLI or a three-line `nsupdate` script works. The same facts are in the environment
//! (`CERTD_DNS_ACTION`, `CERTD_DNS_RECORD`, `CERTD_DNS_VALUE`) for scripts that prefer it.
//!
//! The hook gets no shell and no stdin; it must finish within its timeout (then it is killed) and exit
//! 0. On failure the error carries the exit status and the end of its stderr, since that is where a
//! provider's CLI says what is wrong.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tracing::{debug, info};

use super::{DnsError, TxtRecord};

/// The most of the hook's stderr kept for the error message (its end, where the reason usually is).
const STDERR_KEPT: usize = 2048;

/// Runs the hook to add (`add == true`) or remove `record`.
pub(super) async fn run(
    program: &Path,
    timeout: Duration,
    add: bool,
    record: &TxtRecord,
) -> Result<(), DnsError> {
    let action = if add { "add" } else { "remove" };
    let fqdn = format!("{}.", record.name);
    let failed = |reason: String| DnsError::Hook {
        program: program.to_path_buf(),
        action,
        record: record.name.clone(),
        reason,
    };
    let child = tokio::process::Command::new(program)
        .arg(action)
        .arg(&fqdn)
        .arg(&record.value)
        .env("CERTD_DNS_ACTION", action)
        .env("CERTD_DNS_RECORD", &fqdn)
        .env("CERTD_DNS_VALUE", &record.value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| failed(format!("cannot start it: {err}")))?;
    // Dropping the future on timeout drops the child, which kills it (`kill_on_drop`).
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| {
            failed(format!(
                "still running after {}s; killed it",
                timeout.as_secs()
            ))
        })?
        .map_err(|err| failed(format!("cannot wait for it: {err}")))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        info!(program = %program.display(), action, record = %record.name, "DNS hook done");
        if !stderr.trim().is_empty() {
            debug!(stderr = %stderr.trim(), "DNS hook stderr");
        }
        return Ok(());
    }
    let tail = tail(stderr.trim(), STDERR_KEPT);
    let status = match output.status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    Err(failed(if tail.is_empty() {
        format!("{status}, nothing on stderr")
    } else {
        format!("{status}: {tail}")
    }))
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("hook.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        path
    }

    fn record() -> TxtRecord {
        TxtRecord {
            name: "_acme-challenge.example.org".into(),
            value: "abc".into(),
        }
    }

    #[tokio::test]
    async fn the_hook_gets_action_fqdn_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("args");
        let hook = script(dir.path(), &format!("echo \"$@\" > {}", out.display()));
        run(&hook, Duration::from_secs(10), true, &record())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "add _acme-challenge.example.org. abc"
        );
    }

    #[tokio::test]
    async fn a_failing_hook_reports_its_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "echo 'API token rejected' >&2; exit 3");
        let err = run(&hook, Duration::from_secs(10), false, &record())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove"), "{err}");
        assert!(err.contains("exit status 3: API token rejected"), "{err}");
    }

    #[tokio::test]
    async fn a_hook_past_its_deadline_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let hook = script(dir.path(), "exec sleep 30");
        let started = std::time::Instant::now();
        let err = run(&hook, Duration::from_millis(300), true, &record())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("still running"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_cuts_at_a_character_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("abcdef", 3), "def");
    }
}
