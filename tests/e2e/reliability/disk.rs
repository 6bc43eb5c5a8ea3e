//! Disk faults under `certd run`: the certificate folders read-only, the state directory full, and the
//! whole state directory read-only, each during a renewal asked for through the daemon. The renewal
//! fails with a message naming the path, the old certificate keeps serving and stays intact on disk,
//! no half-written version is left behind, and once the disk is healthy again renewal works.
//!
//! The tests run as root, which ignores permission bits, so the faults are made with mounts: a small
//! tmpfs as the state directory (filled up for "full") and read-only bind mounts over `state/certs` and
//! over the whole state directory. Where mounting is not permitted (not root, no `mount`), the test
//! fails and says what it needs: a disk fault it cannot make is not a pass. Mounts are undone by a
//! guard, whatever happens.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{assert_contract_intact, static_site, write_file, CERT_WAIT};
use crate::harness::{Certd, Daemon, HttpsClient, Pebble, RunConfig};

const SITE: &str = "a.test";

/// Undoes what a test did to the filesystem, in reverse order, when dropped.
#[derive(Default)]
struct FsGuard {
    undo: Vec<Undo>,
}

enum Undo {
    /// `umount` (lazily if busy).
    Unmount(PathBuf),
}

impl FsGuard {
    /// Runs `mount args… point`; on success remembers to unmount `point`.
    fn mount(&mut self, args: &[&str], point: &Path) -> Result<(), String> {
        run("mount", args, point)?;
        self.undo.push(Undo::Unmount(point.to_owned()));
        Ok(())
    }

    /// `mount -o remount,<options> <point>` on a mount this guard made.
    fn remount(&self, options: &str, point: &Path) -> Result<(), String> {
        run("mount", &["-o", &format!("remount,{options}")], point)
    }

    /// Undoes the last step now.
    fn undo_last(&mut self) {
        if let Some(undo) = self.undo.pop() {
            undo.apply();
        }
    }
}

impl Undo {
    fn apply(&self) {
        match self {
            Self::Unmount(point) => {
                if run("umount", &[], point).is_err() {
                    let _ = run("umount", &["-l"], point);
                }
            }
        }
    }
}

impl Drop for FsGuard {
    fn drop(&mut self) {
        while let Some(undo) = self.undo.pop() {
            undo.apply();
        }
    }
}

/// Runs `program args… path`, returning what it said on failure.
fn run(program: &str, args: &[&str], path: &Path) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .map_err(|err| format!("{program}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} {}: {}",
            args.join(" "),
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Fills the filesystem holding `path` (a file it creates) until writes fail; returns the bytes
/// written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create filler");
    let mut written = 0;
    for chunk in [64 * 1024, 4096, 512, 1] {
        let bytes = vec![0u8; chunk];
        while file.write_all(&bytes).and_then(|()| file.flush()).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

/// Panics unless a failed `certd issue` exited with one of `codes` and said which path (under
/// `state`) and `reason`; prints what it said.
fn expect_failure(
    what: &str,
    state: &Path,
    code: Option<i32>,
    messages: &[&str],
    run: &dyn std::fmt::Display,
    reason: &str,
    codes: &[i32],
) {
    assert!(
        code.is_some_and(|code| codes.contains(&code)),
        "{what}: expected exit {codes:?}\n{run}"
    );
    let messages = messages.join("\n");
    assert!(
        messages.contains(&state.display().to_string()) && messages.contains(reason),
        "{what}: the message must name the path under {} and say {reason:?}\n{run}",
        state.display()
    );
    println!("disk: {what}: exit {code:?}: {messages}");
}

/// What a failed or interrupted write left (`.tmp-` names) in the site's folders.
fn leftovers(site_dir: &Path) -> Vec<String> {
    [site_dir.to_owned(), site_dir.join("versions")]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

#[tokio::test]
async fn read_only_or_full_state_fails_the_renewal_and_keeps_the_old_certificate() {
    let started = Instant::now();
    // Drop order (reverse of declaration): the daemon, then the filesystem guard, then the folder.
    let certd = Certd::new();
    let state = certd.state_dir();
    let state_arg = state.display().to_string();
    std::fs::create_dir_all(&state).expect("create state dir");
    let mut guard = FsGuard::default();
    guard
        .mount(&["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"], &state)
        .unwrap_or_else(|err| {
            panic!(
                "disk: this test makes its disk faults with mounts and could not mount a tmpfs \
                 ({err}): run it as root (CI does) with `mount` installed (Debian package `mount`, \
                 from util-linux)"
            )
        });

    let pebble = Pebble::start().await;
    write_file(&certd.dir().join("www/index.html"), b"kept\n");
    let config = RunConfig::for_pebble(&pebble, vec![static_site(SITE, "www")]);
    config.write(&certd);
    let root = pebble.root_pem().await;
    let mut daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &root);
    let old = client.wait_for_certificate(SITE, CERT_WAIT).await;
    assert_eq!(assert_contract_intact(&certd, SITE, Some(&root)), old);
    let site_dir = certd.site_dir(SITE);
    let certs = state.join("certs");
    let certs_arg = certs.display().to_string();

    // After each failure: the old pair is served and intact, nothing half-written is left, the daemon
    // still runs.
    let check_kept = |what: &str, daemon: &mut Daemon| {
        assert!(
            daemon.try_wait().is_none(),
            "{what}: certd run exited:\n{}",
            daemon.log()
        );
        assert_eq!(
            assert_contract_intact(&certd, SITE, Some(&root)),
            old,
            "{what}: the stored pair changed"
        );
        let left = leftovers(&site_dir);
        assert!(left.is_empty(), "{what}: left behind {left:?}");
    };

    // 1. The certificate folders read-only (a read-only bind mount over state/certs).
    guard
        .mount(&["--bind", &certs_arg], &certs)
        .expect("bind mount state/certs");
    guard
        .remount("bind,ro", &certs)
        .expect("remount state/certs read-only");
    let run = certd.issue(&["--force"]).await;
    expect_failure(
        "certs read-only",
        &state,
        run.code,
        &run.stderr_messages(),
        &run,
        "Read-only file system",
        &[1],
    );
    assert!(
        run.stderr_messages()
            .iter()
            .any(|line| line.starts_with("a.test: failed: ")),
        "{run}"
    );
    assert_eq!(client.serial(SITE).await.expect("served"), old);
    check_kept("certs read-only", &mut daemon);
    guard.undo_last();

    // 2. The state directory full.
    let filler = state.join("filler");
    let filled = fill(&filler);
    let run = certd.issue(&["--force"]).await;
    expect_failure(
        "state full",
        &state,
        run.code,
        &run.stderr_messages(),
        &run,
        "No space left on device",
        &[1],
    );
    assert_eq!(client.serial(SITE).await.expect("served"), old);
    check_kept("state full", &mut daemon);
    std::fs::remove_file(&filler).expect("remove filler");
    println!("disk: state full: filled with {filled} bytes");

    // 3. The whole state directory read-only (as after `errors=remount-ro`), through a read-only
    //    bind mount over it (a plain read-only remount is refused while the daemon holds its lock
    //    file open for writing). `certd issue` cannot even open the lock file, so it may fail
    //    before reaching the daemon; either way it must say which path and why, and the daemon
    //    keeps serving.
    guard
        .mount(&["--bind", &state_arg], &state)
        .expect("bind mount the state directory");
    guard
        .remount("bind,ro", &state)
        .expect("remount the state directory read-only");
    let run = certd.issue(&["--force"]).await;
    expect_failure(
        "state read-only",
        &state,
        run.code,
        &run.stderr_messages(),
        &run,
        "Read-only file system",
        &[1, 2],
    );
    assert_eq!(client.serial(SITE).await.expect("served"), old);
    check_kept("state read-only", &mut daemon);
    guard.undo_last();

    // Healthy again: renewal through the daemon works and is served at once.
    let run = certd.issue(&["--force"]).await;
    run.expect_code(0);
    let new = assert_contract_intact(&certd, SITE, Some(&root));
    assert_ne!(new, old, "a new certificate after the disk recovered");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.serial(SITE).await.ok().as_deref() != Some(new.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leftovers(&site_dir).is_empty());
    assert!(certd.versions(SITE).len() <= 2);
    drop(daemon);
    println!("disk: whole test {:?}", started.elapsed());
}
