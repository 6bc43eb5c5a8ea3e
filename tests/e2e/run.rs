//! `certd run` end to end: the real daemon against a real Pebble (HTTP-01 validated on the daemon's own
//! port 80 listener), with test upstreams behind it and a TLS client that trusts only Pebble's root.
//!
//! Covered: ordering at start while serving, the reverse proxy over HTTP/1.1 and HTTP/2, websockets,
//! static files with ranges, error pages and upstream failures, the port 80 redirect, refusing unknown
//! or missing SNI, renewal through the daemon (`certd issue`) and on its own schedule, SIGHUP reload,
//! SIGTERM draining, a CA that is down during a renewal, and `certd status` while the daemon runs.
//!
//! Each test starts its own Pebble, upstreams and daemon on free ports, so they run in parallel. The
//! tests are grouped by what they exercise: [`proxy`], [`identity`] (who the client is: trusted
//! proxies, the PROXY protocol), [`renewal`] and [`signals`].

mod access;
mod cache;
mod compression;
mod error_pages;
mod fastcgi;
mod front_controller;
mod headers;
mod identity;
mod locations;
mod proxy;
mod renewal;
mod requests;
mod signals;
mod static_roots;
mod tunnels;
mod upstreams;

use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    normalize_serial, status_site, Certd, Daemon, HttpsClient, Pebble, RunConfig, Site,
};

/// How long a test waits for the daemon to obtain a certificate (an order against Pebble takes a
/// second or two; CI machines are slow and run tests in parallel).
pub const CERT_WAIT: Duration = Duration::from_secs(30);

/// One test's daemon: Pebble, a certd folder with a `certd run` configuration, the daemon, and a
/// client for its HTTPS port trusting Pebble's root. Fields drop in order: the daemon first.
pub struct World {
    pub daemon: Daemon,
    pub client: HttpsClient,
    pub config: RunConfig,
    pub certd: Certd,
    pub pebble: Pebble,
}

impl World {
    /// Writes `config` into `certd`'s folder and starts the daemon on it.
    pub async fn serve(pebble: Pebble, certd: Certd, config: RunConfig) -> Self {
        let text = config.to_toml();
        Self::serve_text(pebble, certd, config, &text).await
    }

    /// [`World::serve`] with the configuration file `text` (`config`'s TOML with what its builder
    /// has no words for); `config` still tells where the daemon listens.
    pub async fn serve_text(pebble: Pebble, certd: Certd, config: RunConfig, text: &str) -> Self {
        certd.write_config_text(text);
        let daemon = Daemon::start(&certd, config.https_addr()).await;
        let client = HttpsClient::new(config.https_addr(), &pebble.root_pem().await);
        Self {
            daemon,
            client,
            config,
            certd,
            pebble,
        }
    }

    /// One site `name` from a fresh Pebble and certd folder, once its certificate is served: `site`
    /// is TOML written after the site's `names` (its routes and keys), and `files` (path under the
    /// config folder, contents) are written before the daemon starts.
    pub async fn one_site(name: &str, site: &str, files: &[(&str, &str)]) -> Self {
        let pebble = Pebble::start().await;
        let certd = Certd::new();
        for (path, contents) in files {
            let path = certd.dir().join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the folder");
            std::fs::write(&path, contents).expect("write the file");
        }
        let config = RunConfig::for_pebble(&pebble, vec![Site::new(&[name])]);
        let text = format!("{}{site}", config.to_toml());
        let world = Self::serve_text(pebble, certd, config, &text).await;
        world.client.wait_for_certificate(name, CERT_WAIT).await;
        world
    }

    /// `<name>:<https port>`, the Host a browser sends.
    pub fn authority(&self, name: &str) -> String {
        format!("{name}:{}", self.config.https_port)
    }

    /// The serial `certd status --json` reports for `site`.
    pub async fn status_serial(&self, site: &str) -> String {
        let status = self.certd.status().await;
        let entry = status_site(&status, site);
        normalize_serial(
            entry["serial"]
                .as_str()
                .unwrap_or_else(|| panic!("no serial for {site}: {entry:#}")),
        )
    }
}

/// The next websocket message, within 10 s.
pub async fn next_message<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("a message")
}
