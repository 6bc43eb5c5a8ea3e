//! `certd storage migrate` and `certd storage export`: open the two stores the command line names
//! (the state directory, the config's `[storage]` database), take both writer locks and copy with
//! [`crate::storage::transfer`]. The CA is never contacted.

use std::path::Path;

use crate::cli::Backend;
use crate::config::{self, Config, StorageConfig};
use crate::exit::{EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};
use crate::storage::postgres::PostgresStore;
use crate::storage::transfer::{transfer, TransferOptions};
use crate::storage::{SharedStore, StoreLock};
use crate::store::{Store, StoreError};

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::State => "state",
        Backend::Postgres => "postgres",
    }
}

/// Copies the state from `from` into `to` for the config at `config_path`; returns the exit code.
pub fn migrate(
    config_path: &Path,
    from: Backend,
    to: Backend,
    state_dir: Option<&Path>,
    overwrite: bool,
) -> u8 {
    if from == to {
        eprintln!(
            "certd storage: --from and --to both name {}: nothing to move",
            name(from)
        );
        return EXIT_UNUSABLE;
    }
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return EXIT_UNUSABLE;
        }
    };
    let state_dir = state_dir.unwrap_or(&config.state_dir);
    let opened = open(&config, from, state_dir, true).and_then(|source| {
        let dest = open(&config, to, state_dir, false)?;
        Ok((source, dest))
    });
    let (source, dest) = match opened {
        Ok(stores) => stores,
        Err(message) => {
            eprintln!("{message}");
            return EXIT_UNUSABLE;
        }
    };
    let _locks: (StoreLock, StoreLock) = match (lock(&source), lock(&dest)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(message), _) | (_, Err(message)) => {
            eprintln!("{message}");
            return EXIT_UNUSABLE;
        }
    };
    let mut urls = vec![config.acme.directory_url.clone()];
    urls.extend(
        config
            .acme
            .fallback
            .iter()
            .map(|ca| ca.directory_url.clone()),
    );
    let report = match transfer(&*source, &*dest, &urls, &TransferOptions { overwrite }) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("{}: {err}", source.describe());
            return EXIT_UNUSABLE;
        }
    };
    println!("from {} into {}:", source.describe(), dest.describe());
    for line in report.lines() {
        println!("{line}");
    }
    if report.sites.is_empty() {
        println!("no sites in {}", source.describe());
    }
    if report.has_problems() {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

/// Opens `backend`; `source` refuses a state directory that does not exist (it would be created
/// empty and "migrate" nothing).
fn open(
    config: &Config,
    backend: Backend,
    state_dir: &Path,
    source: bool,
) -> Result<SharedStore, String> {
    match backend {
        Backend::State => {
            if source && !state_dir.is_dir() {
                return Err(format!(
                    "{}: no state directory to migrate from (state_dir, or --state-dir)",
                    state_dir.display()
                ));
            }
            Store::open(state_dir)
                .map(|store| std::sync::Arc::new(store) as SharedStore)
                .map_err(|err| err.to_string())
        }
        Backend::Postgres => match &config.storage {
            StorageConfig::Postgres(pg) => PostgresStore::open(pg)
                .map(|store| std::sync::Arc::new(store) as SharedStore)
                .map_err(|err| err.to_string()),
            StorageConfig::Filesystem => Err(format!(
                "{}: [storage] names no database: set backend = \"postgres\" with its url and \
                 key_file (see \"Running several nodes\"), then run this again",
                config.source.display()
            )),
        },
    }
}

fn lock(store: &SharedStore) -> Result<StoreLock, String> {
    store.lock().map_err(|err| match err {
        StoreError::Locked { .. } => format!(
            "{err}; stop `certd run` on this node while the state is moved, then start it again"
        ),
        other => other.to_string(),
    })
}
