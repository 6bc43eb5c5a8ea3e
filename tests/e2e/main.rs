//! certd's end-to-end tests: one test binary that runs the real `certd` binary against a real Pebble.
//!
//! Needs `pebble` and `pebble-challtestsrv` on `PATH` (`scripts/test.sh` installs them). Run with
//! `cargo test --test e2e`; `cargo test --test e2e harness` runs only the harness's own checks.

mod ari;
mod challenges;
mod check;
mod deploy;
mod differential;
mod dns01;
mod eab;
mod fallback;
mod fleet;
mod fleet_ops;
mod fleet_sync;
mod harness;
mod import_certbot;
mod import_nginx;
mod issue;
mod ledger;
mod lock;
mod logs;
mod monitoring;
mod operations;
mod package;
mod preflight;
mod reliability;
mod run;
mod scheduler;
mod storage;
