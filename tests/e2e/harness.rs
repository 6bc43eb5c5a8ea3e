//! The end-to-end harness shared by every test in this binary: Pebble and challtestsrv on free loopback
//! ports ([`Pebble`]), the real `certd` binary run in a folder of its own ([`Certd`]), and checks on what
//! it stored (chain verification against Pebble's root, exact SANs, key/certificate match). For
//! `certd run`: the daemon process ([`Daemon`], configured with [`RunConfig`]), a verifying TLS client
//! ([`HttpsClient`]) and test upstreams ([`Upstream`]).
//!
//! Each test starts its own Pebble, so tests run in parallel. Child processes are killed on drop; their
//! logs are printed when a test panics.

mod acme_proxy;
mod certd;
mod daemon;
mod dns;
mod fleet;
mod haproxy;
mod net;
mod nginx;
mod pebble;
mod php;
mod pki;
mod postgres;
mod process;
mod selftest;

pub use acme_proxy::{
    cert_id, AcmeProxy, ProxyOptions, SeenOrder, Window, ALREADY_REPLACED, INVALID_PROFILE,
    RATE_LIMITED,
};
pub use certd::{
    assert_offset, mode, parse_issue_stdout, parse_time, record_time, status_site, toml_str, walk,
    Certd, CertdConfig, IssueOutcome, Run,
};
pub use daemon::{Daemon, RunConfig, Site};
pub use dns::{Bind, TSIG_KEY};
pub use fleet::{Fleet, Layout, Node, TLS_ALPN_PATH};
pub use haproxy::Haproxy;
pub use net::{
    der_serial, dns, http_get, Alpn, Handshake, HttpsClient, Refused, TlsVersions, Upstream,
};
pub use net::{Http1, Reply};
pub use nginx::Nginx;
pub use pebble::{free_port, Pebble, PebbleOptions, CONNECTION_PROBLEM, REFUSED_DETAIL};
pub use php::PhpFpm;
pub use pki::{key_matches, normalize_serial, not_after, sans, serial_hex, verify_chain, TestPki};
pub use postgres::Postgres;
