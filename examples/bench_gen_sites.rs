//! The scale setup of `bench/run.sh`: a certd configuration with many sites (10,000 by default) and a
//! certificate for each already in the state directory, so that `certd run` can be timed from start
//! to serving every name with no CA involved.
//!
//! ```text
//! cargo build --release --example bench_gen_sites
//! target/release/examples/bench_gen_sites --dir /tmp/scale --sites 10000 \
//!     --https 127.0.0.1:8443 --http 127.0.0.1:8080 --upstream http://127.0.0.1:18080
//! ```
//!
//! It writes, under `--dir`:
//! - `ca.pem`: a throwaway test CA (rcgen) that signed every site certificate, for clients to trust;
//! - `state/`: one certificate per site, installed through certd's own [`Store::install`] (so the
//!   layout is exactly what `certd issue` leaves), ECDSA P-256 leaves valid for 90 days with the CA as
//!   the chain, like a Let's Encrypt leaf and intermediate;
//! - `certd.toml`: `site-NNNNN.scale.test` for every site, each proxying `/` to `--upstream`;
//! - `names.txt`: the names, in configuration order.
//!
//! Installing fsyncs every file and folder, so it runs on several threads.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use time::OffsetDateTime;

use certd::store::Store;

#[path = "bench_common/sites.rs"]
mod sites;
use sites::{for_each_site, BenchCa};

#[derive(Parser)]
#[command(about = "Make a certd configuration with many sites and their certificates")]
struct Args {
    /// Where to write ca.pem, state/, certd.toml and names.txt (created; must not hold a state/ yet).
    #[arg(long)]
    dir: PathBuf,
    /// How many sites.
    #[arg(long, default_value_t = 10_000)]
    sites: usize,
    /// `[https] listen` of the configuration.
    #[arg(long)]
    https: SocketAddr,
    /// `[http] listen` of the configuration.
    #[arg(long)]
    http: SocketAddr,
    /// Where every site proxies `/`.
    #[arg(long)]
    upstream: String,
    /// Threads installing certificates.
    #[arg(long, default_value_t = 8)]
    threads: usize,
}

fn site_name(index: usize) -> String {
    format!("site-{index:05}.scale.test")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let state_dir = dir.join("state");
    anyhow::ensure!(
        !state_dir.exists(),
        "{} exists already; start from an empty --dir",
        state_dir.display()
    );

    let now = OffsetDateTime::now_utc();
    // Nothing signs with this CA after the run, so its key is not kept.
    let (ca, _) = BenchCa::generate("certd bench scale CA", now)?;
    std::fs::write(dir.join("ca.pem"), &ca.pem)?;

    let store = Store::open(&state_dir)?;
    let _lock = store.lock()?;
    for_each_site(args.sites, args.threads, |index| {
        let name = site_name(index);
        let (pem, _) = ca.leaf(&name, now)?;
        store
            .install(&name, &pem)
            .with_context(|| format!("installing {name}"))?;
        Ok(())
    })?;

    let mut config = String::new();
    let mut names = String::new();
    writeln!(
        config,
        "# {sites} sites made by bench_gen_sites; every certificate is already in state/.\n\
         state_dir = \"state\"\n\n\
         [acme]\n\
         # Never contacted: every stored certificate is fresh, so nothing is due.\n\
         directory = \"https://127.0.0.1:9/dir\"\n\
         agree_tos = true\n\n\
         [http]\n\
         listen = [\"{http}\"]\n\n\
         [https]\n\
         listen = [\"{https}\"]\n",
        sites = args.sites,
        http = args.http,
        https = args.https,
    )?;
    for index in 0..args.sites {
        let name = site_name(index);
        writeln!(
            config,
            "[[site]]\nnames = [\"{name}\"]\n  [[site.route]]\n  path = \"/\"\n  proxy = \"{}\"\n",
            args.upstream
        )?;
        writeln!(names, "{name}")?;
    }
    std::fs::write(dir.join("certd.toml"), config)?;
    std::fs::write(dir.join("names.txt"), names)?;
    println!(
        "sites={} dir={} seconds={:.1}",
        args.sites,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
