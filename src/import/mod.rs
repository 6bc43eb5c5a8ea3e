//! Moving in from certbot + nginx: `certd import certbot` adopts certbot's live certificates and
//! account without a new order; `certd import nginx` translates server blocks into certd.toml.

pub mod certbot;
pub mod nginx;
