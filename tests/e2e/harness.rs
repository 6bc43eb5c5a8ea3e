//! The end-to-end harness shared by every test in this binary: Pebble and challtestsrv on free loopback
//! ports ([`Pebble`]), the real `certd` binary run in a folder of its own ([`Certd`]), and checks on what
//! it stored (chain verification against Pebble's root, exact SANs, key/certificate match).
//!
//! Each test starts its own Pebble, so tests run in parallel. Child processes are killed on drop; their
//! logs are printed when a test panics.

mod certd;
mod pebble;
mod pki;
mod selftest;

pub use certd::{
    mode, parse_issue_stdout, parse_time, status_site, toml_str, walk, Certd, CertdConfig,
    IssueOutcome,
};
pub use pebble::{free_port, Pebble, CONNECTION_PROBLEM, REFUSED_DETAIL};
pub use pki::{key_matches, normalize_serial, not_after, sans, serial_hex, verify_chain, TestPki};
