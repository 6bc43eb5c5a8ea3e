//! The systemd unit in deploy/ passes `systemd-analyze verify`, with the binary path pointed at the
//! certd just built. Without `systemd-analyze` the test fails and says what to install.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run systemd-analyze ({err}): install the Debian package `systemd` \
                 (scripts/test.sh does)"
            )
        });
    assert!(version.status.success(), "systemd-analyze --version failed");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/certd.service"))
            .expect("deploy/certd.service");
    assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("certd.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/certd", env!("CARGO_BIN_EXE_certd")),
    )
    .expect("write unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains(&*path.to_string_lossy()),
        "warnings about the unit:\n{stderr}"
    );
}
