//! The PostgreSQL backend of [`StateStore`](super::StateStore), for a fleet of certd nodes sharing
//! one database.
//!
//! What is here so far: the schema and its versioned migrations, and the statements the backend runs
//! ([`schema`]), with the fleet's safety rules enforced by the database itself: leases per site with
//! a fencing token from one sequence, and a trigger that refuses an install whose token is not the
//! site's live lease. Private keys and account credentials are stored sealed
//! ([`super::sealing`]). The client side (connection pool, `sslmode`, `[storage]` config) is not
//! written yet.

pub mod schema;
