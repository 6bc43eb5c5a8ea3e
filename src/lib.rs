//! certd: one binary that replaces nginx + certbot.
//!
//! It obtains certificates from an ACME CA over HTTP-01, keeps them safely in a state directory, and
//! (in `certd run`) terminates TLS and reverse-proxies to the configured upstreams. Each module owns one
//! domain concept; start with [`config`] (what the operator asked for), [`acme`] (talking to the CA),
//! [`challenge`] (answering HTTP-01), [`store`] (the state directory), [`renewal`] (when and how a
//! site's certificate is renewed) and [`commands`] (what each CLI verb does).
#![warn(missing_docs)]

pub(crate) mod access;
pub(crate) mod access_log;
pub mod acme;
pub mod answers;
pub mod certificate;
pub(crate) mod challenge;
pub mod cli;
pub mod commands;
pub(crate) mod compression;
pub mod config;
pub mod daemon;
pub(crate) mod dns01;
pub mod exit;
pub(crate) mod fastcgi;
pub(crate) mod fleet_answers;
pub(crate) mod hook;
pub(crate) mod hostname;
pub(crate) mod http_server;
pub mod import;
pub(crate) mod ledger;
pub(crate) mod listener;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod plain_http;
pub mod preflight;
pub mod proxy;
pub(crate) mod proxy_protocol;
pub(crate) mod renewal;
pub(crate) mod request_uri;
pub(crate) mod resolver;
pub(crate) mod response;
pub mod sealing;
pub(crate) mod static_files;
pub mod storage;
pub mod store;
pub(crate) mod time_format;
pub mod tls_alpn;
pub mod tls_verifier;
pub(crate) mod trusted_proxies;
