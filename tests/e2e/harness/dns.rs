//! A real BIND 9 (`named`, Debian's `bind9` package) for DNS-01 tests: authoritative for the test
//! zones, accepting RFC 2136 updates signed with one TSIG key, on a free loopback port (UDP and TCP),
//! with its config, zone files, journals and log in a temp folder; stopped by its own pid on drop.
//!
//! named is also the resolver Pebble validates through (`-dnsserver`), so it recurses, as a CA's
//! resolver does, to follow a CNAME from one test zone into another; the root zone is a local one of
//! its own, so no query ever leaves loopback.
//!
//! Each zone has two NS names (`ns1`, `ns2`) that both resolve to 127.0.0.1, so the propagation check
//! sees a zone with more than one authoritative server name; an apex and wildcard A record of
//! 127.0.0.1; and whatever extra records the test passes. [`Bind::txt`] asks with `dig` (Debian's
//! `bind9-dnsutils`, whose `nsupdate` the exec-hook test drives).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

use super::pebble::{free_port, ChildGuard};

/// How long named may take to load its zones and open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The TSIG key's name, as named.conf and certd's config spell it.
pub const TSIG_KEY: &str = "certd-key";

/// A running named.
pub struct Bind {
    /// The port named listens on, UDP and TCP, on 127.0.0.1.
    pub port: u16,
    /// The TSIG secret, base64 as BIND writes it.
    pub secret: String,
    // Drop order: the process first, then its folder.
    named: ChildGuard,
    _dir: TempDir,
}

impl Bind {
    /// Starts named authoritative for each `(zone, extra records)` in `zones` (records in zone-file
    /// syntax, names relative to the zone), and waits until it answers for the first zone.
    pub async fn start(zones: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("certd-bind-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path();
        let port = free_port();
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let mut conf = format!(
            "options {{\n\
             \tdirectory \"{dir}\";\n\
             \tpid-file \"{dir}/named.pid\";\n\
             \tsession-keyfile \"{dir}/session.key\";\n\
             \tmanaged-keys-directory \"{dir}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\
             \tlisten-on-v6 {{ none; }};\n\
             \trecursion yes;\n\
             \tallow-recursion {{ 127.0.0.1; }};\n\
             \tallow-query {{ any; }};\n\
             \tdnssec-validation no;\n\
             \tnotify no;\n\
             }};\n\
             controls {{ }};\n\
             key \"{TSIG_KEY}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
             zone \".\" {{ type primary; file \"{dir}/root.zone\"; }};\n",
            dir = path.display(),
        );
        std::fs::write(
            path.join("root.zone"),
            "$TTL 60\n@ IN SOA ns.root. hostmaster.root. 1 60 60 3600 60\n@ IN NS ns.root.\n\
             ns.root. IN A 127.0.0.1\n",
        )
        .expect("write root zone");
        for (zone, extra) in zones {
            let file = path.join(format!("{zone}.zone"));
            std::fs::write(
                &file,
                format!(
                    "$TTL 60\n\
                     @ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 60\n\
                     @ IN NS ns1.{zone}.\n\
                     @ IN NS ns2.{zone}.\n\
                     ns1 IN A 127.0.0.1\n\
                     ns2 IN A 127.0.0.1\n\
                     @ IN A 127.0.0.1\n\
                     * IN A 127.0.0.1\n\
                     {extra}\n"
                ),
            )
            .expect("write zone file");
            conf += &format!(
                "zone \"{zone}\" {{ type primary; file \"{}\"; allow-update {{ key \"{TSIG_KEY}\"; }}; }};\n",
                file.display()
            );
        }
        let conf_path = path.join("named.conf");
        std::fs::write(&conf_path, conf).expect("write named.conf");
        // /usr/sbin is not on every user's PATH.
        let binary = ["/usr/sbin/named", "/usr/local/sbin/named"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("named");
        let mut command = Command::new(binary);
        // -g: foreground, log to stderr; -u is left out so it stays the user running the tests.
        command.arg("-g").arg("-c").arg(&conf_path);
        let named = ChildGuard::spawn("named", command, path.join("named.log"));
        let mut bind = Self {
            port,
            secret,
            named,
            _dir: dir,
        };
        let first = zones.first().map_or("example.test", |(zone, _)| zone);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            bind.named.assert_running();
            if bind
                .dig(first, "SOA")
                .is_some_and(|answer| !answer.is_empty())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "named did not answer for {first} within {START_TIMEOUT:?}:\n{}",
                bind.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bind
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Writes the TSIG secret (or `secret` instead) as a BIND key file with `mode` and returns its path.
    pub fn write_secret_file(&self, file: &Path, secret: Option<&str>, mode: u32) -> PathBuf {
        let secret = secret.unwrap_or(&self.secret);
        std::fs::write(
            file,
            format!(
                "key \"{TSIG_KEY}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
            ),
        )
        .expect("write secret file");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        file.to_path_buf()
    }

    /// The TXT values named answers for `name` right now (empty when there are none).
    pub fn txt(&self, name: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .dig(name, "TXT")
            .unwrap_or_default()
            .lines()
            .map(|line| line.trim().trim_matches('"').to_owned())
            .filter(|line| !line.is_empty() && !line.starts_with(';'))
            .collect();
        values.sort();
        values
    }

    /// `dig +short`, or `None` when dig itself fails (e.g. before named listens).
    fn dig(&self, name: &str, kind: &str) -> Option<String> {
        let output = Command::new("dig")
            .args(["@127.0.0.1", "-p", &self.port.to_string()])
            .args(["+short", "+norec", "+time=1", "+tries=1", name, kind])
            .output()
            .expect("run dig (bind9-dnsutils)");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Everything named logged so far.
    pub fn log(&self) -> String {
        self.named.log()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- named log -----\n{}", self.named.log());
        }
    }
}
