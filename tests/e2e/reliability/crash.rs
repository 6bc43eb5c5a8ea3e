//! Crash safety: `certd issue --force` killed with SIGKILL at random moments, at least 50 times (the
//! moments spread over a whole run, measured first, so kills land while ordering, while writing the
//! new version, and around the switch of `live`). After
//! every kill each site's contract files must still be a matching pair with a verifying chain, and
//! the JSON files certd keeps must still parse; at the end a clean renewal tidies up and `certd run`
//! serves the stored certificates.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{assert_contract_intact, static_site, write_file};
use crate::harness::{serial_hex, Certd, Daemon, HttpsClient, Pebble, RunConfig, Site};

/// The sites renewed over and over.
const SITES: [&str; 2] = ["a.test", "b.test"];
/// Kills required.
const KILLS: usize = 50;
/// The longest the loop may take before the test fails (it takes about 30 s on two cores).
const LOOP_BUDGET: Duration = Duration::from_secs(240);

/// What one `certd issue --force` run under fire came to.
enum Fate {
    /// Killed by SIGKILL before it finished.
    Killed,
    /// Finished by itself, with this exit code.
    Finished(Option<i32>),
}

#[tokio::test]
async fn sigkill_during_forced_renewals_never_leaves_a_mismatched_pair() {
    let started = Instant::now();
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    write_file(&certd.dir().join("www/index.html"), b"crash-safe\n");
    let mut config = RunConfig::for_pebble(
        &pebble,
        SITES.iter().map(|name| static_site(name, "www")).collect(),
    );
    config.write(&certd);
    let root = pebble.root_pem().await;

    // A first complete issuance: from here on the contract files must always be a valid pair. Then
    // two clean forced runs tell how long a whole renewal takes here.
    certd.issue(&[]).await.expect_code(0);
    for site in SITES {
        assert_contract_intact(&certd, site, Some(&root));
    }
    let mut whole = Duration::ZERO;
    for measure in 0..2 {
        config.sites = sites_named(&format!("m{measure}"));
        config.write(&certd);
        let run = certd.issue(&["--force"]).await;
        run.expect_code(0);
        whole = whole.max(run.elapsed);
    }
    // Kill anywhere from the start to a little past the usual end (at least 0-600 ms); every other
    // kill aims at the last quarter, where the new version is written and `live` switched.
    let whole_ms = whole.as_millis() as u64;
    let spread_ms = (whole_ms * 115 / 100).max(600);
    let late_ms = (whole_ms * 75 / 100)..=(whole_ms * 105 / 100).max(1);

    let log = certd.dir().join("killed-runs.log");
    let (mut kills, mut finished, mut interrupted_writes, mut switches) = (0, 0, 0, 0);
    let mut leftovers_seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); SITES.len()];
    let mut serials: Vec<String> = SITES
        .iter()
        .map(|site| serial_hex(&certd.read_site_file(site, "cert.pem")))
        .collect();
    let mut runs = 0;
    while kills < KILLS {
        assert!(
            started.elapsed() < LOOP_BUDGET,
            "only {kills} kills within {LOOP_BUDGET:?} ({finished} runs finished first)"
        );
        runs += 1;
        config.sites = sites_named(&format!("r{runs}"));
        config.write(&certd);
        let delay = Duration::from_millis(if runs % 2 == 0 {
            rand::random_range(late_ms.clone())
        } else {
            rand::random_range(0..=spread_ms)
        });
        match issue_killed_after(&certd, delay, &log, runs).await {
            Fate::Killed => kills += 1,
            Fate::Finished(code) => {
                finished += 1;
                assert_eq!(
                    code,
                    Some(0),
                    "a run that was not killed must succeed (run {runs}):\n{}",
                    tail(&log)
                );
            }
        }
        for (index, site) in SITES.iter().enumerate() {
            let serial = assert_contract_intact(&certd, site, Some(&root));
            if serial != serials[index] {
                switches += 1;
                serials[index] = serial;
            }
            let left = leftovers(&certd.site_dir(site));
            if !left.is_subset(&leftovers_seen[index]) {
                interrupted_writes += 1;
            }
            leftovers_seen[index] = left;
        }
        assert_json_files_parse(&certd.state_dir());
    }
    let loop_time = started.elapsed();
    println!(
        "crash: a forced renewal takes {whole:?}; {runs} runs in {loop_time:?}: {kills} killed \
         (SIGKILL after 0-{spread_ms} ms, every other one after {late_ms:?} ms), {finished} \
         finished first; {switches} live switches seen, {interrupted_writes} kills left a \
         new leftover behind"
    );

    // A clean run afterwards succeeds and tidies up what the kills left.
    let run = certd.issue(&["--force"]).await;
    run.expect_code(0);
    for site in SITES {
        assert_contract_intact(&certd, site, Some(&root));
        let versions = certd.versions(site);
        assert!(
            versions.len() <= 2,
            "{site}: old versions not pruned: {versions:?}"
        );
        assert!(
            leftovers(&certd.site_dir(site)).is_empty(),
            "{site}: temporary files left after a clean run: {:?}",
            crate::harness::walk(&certd.site_dir(site))
        );
    }

    // The daemon starts on what the kills left and serves it, verified.
    let daemon = Daemon::start(&certd, config.https_addr()).await;
    let client = HttpsClient::new(config.https_addr(), &root);
    for site in SITES {
        let stored = serial_hex(&certd.read_site_file(site, "cert.pem"));
        let mut h1 = client.http1(site).await;
        assert_eq!(
            h1.serial, stored,
            "{site}: the daemon serves the stored pair"
        );
        let reply = h1.get(site, "/index.html").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.text(), "crash-safe\n");
    }
    drop(daemon);
    println!("crash: whole test {:?}", started.elapsed());
}

/// Starts `certd issue --force`, and kills it with SIGKILL (by its pid) after `delay` unless it has
/// finished by then. Its output is appended to `log`.
async fn issue_killed_after(certd: &Certd, delay: Duration, log: &Path, run: usize) -> Fate {
    use std::io::Write;
    let mut out = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open run log");
    writeln!(out, "===== run {run}: kill after {delay:?}").expect("write run log");
    let err = out.try_clone().expect("clone log handle");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_certd"))
        .arg("issue")
        .arg("--config")
        .arg(certd.config_path())
        .arg("--force")
        .current_dir(certd.dir())
        .env("CERTD_LOG", "info,certd=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("start certd issue");
    match tokio::time::timeout(delay, child.wait()).await {
        Ok(status) => Fate::Finished(status.expect("wait for certd issue").code()),
        Err(_) => {
            // tokio's `start_kill` sends SIGKILL to this child's own pid.
            child.start_kill().expect("kill -9 certd issue");
            let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .expect("a killed process is reaped at once")
                .expect("wait for certd issue");
            match status.code() {
                // It finished in the instant between the timeout and the signal.
                Some(code) => Fate::Finished(Some(code)),
                None => Fate::Killed,
            }
        }
    }
}

/// The sites, each with its own name set: its name (its folder) and `<tag>.<name>`. certd keeps to the
/// CA's duplicate-certificate limit (5 per exact name set a week), so every run orders names of its own.
fn sites_named(tag: &str) -> Vec<Site> {
    SITES
        .iter()
        .map(|name| {
            let mut site = static_site(name, "www");
            site.names.push(format!("{tag}.{name}"));
            site
        })
        .collect()
}

/// What an interrupted write left in `site_dir`: temporary version folders, files and links.
fn leftovers(site_dir: &Path) -> BTreeSet<String> {
    let listed = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    listed(site_dir)
        .into_iter()
        .chain(listed(&site_dir.join("versions")))
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

/// Every `*.json` certd keeps (accounts, records) parses: atomic writes never leave half a file. And
/// every line of every `*.jsonl` (the rate-limit ledger) parses: appends are never torn.
fn assert_json_files_parse(state: &Path) {
    for path in crate::harness::walk(state) {
        let extension = path.extension().and_then(|ext| ext.to_str()).unwrap_or("");
        let is_file = std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_file());
        if !is_file || !matches!(extension, "json" | "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        let documents: Vec<&str> = if extension == "json" {
            vec![&text]
        } else {
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{}: the last line is torn:\n{text}",
                path.display()
            );
            text.lines().collect()
        };
        for document in documents {
            serde_json::from_str::<serde_json::Value>(document)
                .unwrap_or_else(|err| panic!("{}: not JSON ({err}): {document}", path.display()));
        }
    }
}

/// The last 80 lines of `log`.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}
