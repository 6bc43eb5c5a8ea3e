//! The fleet setup and the change-propagation probe of `bench/fleet.sh`: many sites whose
//! certificates live in PostgreSQL (installed through certd's own [`PostgresStore`], so sealing and
//! the change notification are the real cost), and two node configurations sharing that database.
//!
//! ```text
//! bench_fleet gen --dir /tmp/fleet --sites 100000 --url postgres://certd@127.0.0.1:5432/certd \
//!     --password-file pw --https-a 127.0.0.1:8443 --http-a 127.0.0.1:8080 \
//!     --https-b 127.0.0.1:9443 --http-b 127.0.0.1:9080 --upstream http://127.0.0.1:18080
//! bench_fleet swap --dir /tmp/fleet --url … --password-file pw --site s00042.fleet.bench \
//!     --addr 127.0.0.1:9443 --rounds 20
//! ```
//!
//! `gen` writes, under `--dir`: `ca.pem` and `ca.key` (a throwaway rcgen CA that signed every site
//! certificate), `fleet.key` (the 32-byte sealing key, mode 0600), `a/certd.toml` and
//! `b/certd.toml` (every site, `[storage] backend = "postgres"`, each node with its own listeners
//! and state folder), `names.txt` (every name, in order) and `sample.txt` (the first name, 1,000
//! random others, the last name: what the readiness probe checks).
//!
//! `load` times the store's side of a node's first start both ways, into fresh local copies under
//! `--dir`: `current` once per site (the start before `StateStore::current_batches`) for a sample,
//! then `current_batches` for every site and `keep_local_copies` after it (for the same sample).
//!
//! `swap` installs a new certificate for one site through the store (as the node holding the lease
//! would after a renewal), then polls `--addr` with verified handshakes until it serves exactly that
//! certificate, `--rounds` times, and prints the median and the maximum.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context as _;
use certd::config::{PostgresConfig, SslMode, DEFAULT_LEASE_SECONDS, DEFAULT_POLL};
use certd::storage::postgres::PostgresStore;
use certd::storage::StateStore;
use clap::{Args as ClapArgs, Parser, Subcommand};
use rand::seq::IndexedRandom as _;
use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;

#[path = "bench_common/sites.rs"]
mod sites;
use sites::{for_each_site, BenchCa};

// Only the verifying client is used here.
#[allow(dead_code)]
#[path = "bench_common/tls.rs"]
mod tls;

#[derive(Parser)]
#[command(about = "Fleet bench: sites in PostgreSQL, and how fast a change reaches a node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(ClapArgs)]
struct Db {
    /// The database (`postgres://user@127.0.0.1:port/db`).
    #[arg(long)]
    url: String,
    /// A file holding the database password.
    #[arg(long)]
    password_file: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// The CA, every site's certificate in the database, and two node configurations.
    Gen {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        sites: usize,
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        https_a: SocketAddr,
        #[arg(long)]
        http_a: SocketAddr,
        #[arg(long)]
        https_b: SocketAddr,
        #[arg(long)]
        http_b: SocketAddr,
        /// Where every site proxies `/`.
        #[arg(long)]
        upstream: String,
        /// Threads generating and installing.
        #[arg(long, default_value_t = 8)]
        threads: usize,
    },
    /// The store's side of a node's first start, both ways: `current` once per site for the first
    /// --per-site sites (one query and one fsynced local-copy write each: the daemon's start
    /// before `current_batches`), then `current_batches` over every site and `keep_local_copies`
    /// after it over the first --per-site (today's start), each into a fresh local copy under --dir.
    Load {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        sites: usize,
        #[arg(long, default_value_t = 1000)]
        per_site: usize,
    },
    /// Install a new certificate for --site, time until --addr serves it; --rounds times.
    Swap {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        db: Db,
        #[arg(long)]
        site: String,
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Give up on one round after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn site_name(index: usize) -> String {
    format!("s{:05}.fleet.bench", index + 1)
}

fn open_store(dir: &Path, db: &Db, node: &str) -> anyhow::Result<PostgresStore> {
    let config = PostgresConfig {
        url: db.url.clone(),
        password_file: Some(db.password_file.clone()),
        sslmode: SslMode::Disable,
        ca_roots: None,
        node_name: node.to_owned(),
        key_file: dir.join("fleet.key"),
        lease_seconds: DEFAULT_LEASE_SECONDS,
        poll: DEFAULT_POLL,
        notify: true,
    };
    PostgresStore::open(&config).context("opening the fleet database")
}

/// The CA, rebuilt from `ca.pem`'s parameters and `ca.key` (so `swap` signs with the same CA).
fn load_ca(dir: &Path) -> anyhow::Result<BenchCa> {
    let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key"))?)?;
    let pem = std::fs::read_to_string(dir.join("ca.pem"))?;
    let issuer = Issuer::from_ca_cert_pem(&pem, key)?;
    Ok(BenchCa { issuer, pem })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen {
            dir,
            sites,
            db,
            https_a,
            http_a,
            https_b,
            http_b,
            upstream,
            threads,
        } => generate(
            &dir,
            sites,
            &db,
            [(https_a, http_a), (https_b, http_b)],
            &upstream,
            threads,
        ),
        Command::Load {
            dir,
            db,
            sites,
            per_site,
        } => load(&dir, &db, sites, per_site),
        Command::Swap {
            dir,
            db,
            site,
            addr,
            rounds,
            timeout,
        } => swap(
            &dir,
            &db,
            &site,
            addr,
            rounds,
            StdDuration::from_secs(timeout),
        ),
    }
}

fn generate(
    dir: &Path,
    sites: usize,
    db: &Db,
    nodes: [(SocketAddr, SocketAddr); 2],
    upstream: &str,
    threads: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let key_path = dir.join("fleet.key");
    std::fs::write(&key_path, rand::random::<[u8; 32]>())?;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;

    let now = OffsetDateTime::now_utc();
    let (ca, ca_key_pem) = BenchCa::generate("certd bench fleet CA", now)?;
    std::fs::write(dir.join("ca.pem"), &ca.pem)?;
    std::fs::write(dir.join("ca.key"), ca_key_pem)?;

    let store = open_store(&dir, db, "bench-gen")?;
    // Nanoseconds summed over the threads: making certificates vs the store's install (seal + SQL).
    let (make_ns, install_ns) = (AtomicU64::new(0), AtomicU64::new(0));
    for_each_site(sites, threads, |index| {
        let name = site_name(index);
        let t0 = Instant::now();
        let (pem, _) = ca.leaf(&name, now)?;
        let t1 = Instant::now();
        store
            .install(&name, &pem)
            .with_context(|| format!("installing {name}"))?;
        let nanos = |d: StdDuration| u64::try_from(d.as_nanos()).unwrap_or(0);
        make_ns.fetch_add(nanos(t1 - t0), Ordering::Relaxed);
        install_ns.fetch_add(nanos(t1.elapsed()), Ordering::Relaxed);
        Ok(())
    })?;
    let installed_s = started.elapsed().as_secs_f64();

    let mut names = String::new();
    let all: Vec<String> = (0..sites).map(site_name).collect();
    for name in &all {
        writeln!(names, "{name}")?;
    }
    std::fs::write(dir.join("names.txt"), names)?;
    let mut sample = vec![all[0].clone()];
    let middle = all.get(1..all.len().saturating_sub(1)).unwrap_or_default();
    sample.extend(middle.choose_multiple(&mut rand::rng(), 1000).cloned());
    if all.len() > 1 {
        sample.push(all[all.len() - 1].clone());
    }
    std::fs::write(dir.join("sample.txt"), sample.join("\n") + "\n")?;

    for (node, (https, http)) in ["a", "b"].iter().zip(nodes) {
        let node_dir = dir.join(node);
        std::fs::create_dir_all(&node_dir)?;
        let mut config = String::new();
        writeln!(
            config,
            "# {sites} sites made by bench_fleet; every certificate is in the database.\n\
             state_dir = \"state\"\n\n\
             [acme]\n\
             # Never contacted: every stored certificate is fresh, so nothing is due.\n\
             directory = \"https://127.0.0.1:9/dir\"\n\
             agree_tos = true\n\n\
             [http]\n\
             listen = [\"{http}\"]\n\n\
             [https]\n\
             listen = [\"{https}\"]\n\n\
             [storage]\n\
             backend = \"postgres\"\n\
             url = \"{url}\"\n\
             password_file = \"{password}\"\n\
             sslmode = \"disable\"\n\
             node_name = \"node-{node}\"\n\
             key_file = \"{key}\"\n",
            url = db.url,
            password = db.password_file.canonicalize()?.display(),
            key = key_path.display(),
        )?;
        for name in &all {
            writeln!(
                config,
                "[[site]]\nnames = [\"{name}\"]\n  [[site.route]]\n  path = \"/\"\n  proxy = \"{upstream}\"\n"
            )?;
        }
        std::fs::write(node_dir.join("certd.toml"), config)?;
    }
    println!(
        "sites={sites} threads={threads} gen_s={installed_s:.1} make_cpu_s={:.1} install_thread_s={:.1} total_s={:.1}",
        make_ns.load(Ordering::Relaxed) as f64 / 1e9,
        install_ns.load(Ordering::Relaxed) as f64 / 1e9,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn load(dir: &Path, db: &Db, sites: usize, per_site: usize) -> anyhow::Result<()> {
    let names: Vec<String> = (0..sites).map(site_name).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let node = |copy: &str| -> anyhow::Result<PostgresStore> {
        let local = certd::store::Store::open(&dir.join(copy))?;
        Ok(open_store(dir, db, &format!("bench-{copy}"))?.with_local_copy(local))
    };

    let before = node("load-per-site")?;
    let _lock = before.lock()?;
    let started = Instant::now();
    let mut found = 0usize;
    for name in names.iter().take(per_site) {
        found += usize::from(before.current(name)?.is_some());
    }
    let per_site_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        found == per_site.min(sites),
        "per site: {found} pairs found"
    );

    let after = node("load-batched")?;
    let _lock = after.lock()?;
    let started = Instant::now();
    let mut found = 0usize;
    let mut failed = 0usize;
    after.current_batches(&names, certd::storage::CURRENT_BATCH, &mut |_, pairs| {
        for pair in pairs {
            match pair {
                Ok(Some(_)) => found += 1,
                Ok(None) => {}
                Err(_) => failed += 1,
            }
        }
    });
    let batched_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        found == sites,
        "batched: {found} pairs found, {failed} failed"
    );
    let started = Instant::now();
    // Over the same sites as the per-site path (at 100,000 all of them would take the bench's
    // whole budget; node A's own pass over every site is in its log).
    let copied = names.get(..per_site.min(sites)).unwrap_or_default();
    let written = after.keep_local_copies(copied, &tokio_util::sync::CancellationToken::new())?;
    let copy_s = started.elapsed().as_secs_f64();
    println!(
        "per_site_n={} per_site_s={per_site_s:.2} per_site_ms_each={:.2} batched_n={sites} \
         batched_s={batched_s:.2} copy_written={written} copy_s={copy_s:.1} copy_ms_each={:.2}",
        per_site.min(sites),
        per_site_s * 1e3 / per_site.min(sites).max(1) as f64,
        copy_s * 1e3 / written.max(1) as f64,
    );
    Ok(())
}

fn swap(
    dir: &Path,
    db: &Db,
    site: &str,
    addr: SocketAddr,
    rounds: usize,
    timeout: StdDuration,
) -> anyhow::Result<()> {
    let ca = load_ca(dir)?;
    let store = open_store(dir, db, "bench-swap")?;
    let config = tls::client_config(tls::Trust::CaFile(&dir.join("ca.pem")), &[], false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (pem, der) = ca.leaf(site, OffsetDateTime::now_utc())?;
        let started = Instant::now();
        store.install(site, &pem).context("installing")?;
        let installed = started.elapsed();
        let served = runtime.block_on(async {
            loop {
                if let Ok(stream) = tls::connect(&config, addr, site).await {
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first());
                    if leaf.is_some_and(|cert| cert.as_ref() == der.as_slice()) {
                        return Ok(started.elapsed());
                    }
                }
                if started.elapsed() > timeout {
                    anyhow::bail!("round {round}: {addr} did not serve the new certificate of {site} within {timeout:?}");
                }
                tokio::time::sleep(StdDuration::from_millis(1)).await;
            }
        })?;
        eprintln!(
            "round {round}: install {:.1} ms, served after {:.1} ms",
            installed.as_secs_f64() * 1e3,
            served.as_secs_f64() * 1e3
        );
        times.push(served.as_secs_f64() * 1e3);
        // Apart, so one round's notification is not still in flight for the next.
        std::thread::sleep(StdDuration::from_millis(200));
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
    let max = times.last().copied().unwrap_or(0.0);
    let min = times.first().copied().unwrap_or(0.0);
    println!("rounds={rounds} min_ms={min:.1} median_ms={median:.1} max_ms={max:.1}");
    Ok(())
}
