//! Reading the live pairs of many sites at once, for a node that loads thousands of them at start or
//! after an outage: one query per batch ([`schema::CURRENT_MANY`]) instead of one per site, the
//! node's local copy answering for the database while it is unreachable (as
//! [`StateStore::current`](crate::storage::StateStore::current) does), and that copy brought up to
//! date afterwards ([`PostgresStore::keep_local_copies_of`]), so that its fsyncs never hold up
//! serving.

use std::collections::HashMap;

use tokio_util::sync::CancellationToken;

use super::{schema, stored_cert, unreachable, PostgresStore};
use crate::storage::CURRENT_BATCH;
use crate::store::{StoreError, StoredCert};

/// What one site of a batch reads as: [`StateStore::current`](crate::storage::StateStore::current).
type Pair = Result<Option<StoredCert>, StoreError>;

impl PostgresStore {
    /// The pairs of `sites`, in order, for [`StateStore::current_batches`](crate::storage::StateStore::current_batches):
    /// from the database in one query, else (unreachable) from the local copy where it has them.
    /// Nothing is written to the local copy here.
    pub(super) fn current_batch(&self, sites: &[&str]) -> Vec<Pair> {
        let Some(local) = &self.local else {
            return match self.current_many_in_database(sites) {
                Ok(pairs) => pairs,
                Err(err) => sites.iter().map(|_| Err(self.copy_of(&err))).collect(),
            };
        };
        let mut pairs: Vec<Option<Pair>> = sites.iter().map(|_| None).collect();
        // Known to be down: the local copy at once (the change watch loads everything again once
        // the database is back), rather than a connection attempt per batch.
        if !self.health.state().reachable {
            for (pair, site) in pairs.iter_mut().zip(sites) {
                if let Ok(Some(copy)) = local.current(site) {
                    *pair = Some(Ok(Some(copy)));
                }
            }
        }
        let asked: Vec<usize> = (0..sites.len())
            .filter(|&index| pairs.get(index).is_some_and(Option::is_none))
            .collect();
        let names: Vec<&str> = asked
            .iter()
            .filter_map(|&i| sites.get(i).copied())
            .collect();
        if !names.is_empty() {
            let answered: Vec<Pair> = match self.current_many_in_database(&names) {
                Ok(found) => found,
                Err(err) if unreachable(&err) => names
                    .iter()
                    .map(|site| match local.current(site) {
                        Ok(Some(copy)) => Ok(Some(copy)),
                        _ => Err(self.copy_of(&err)),
                    })
                    .collect(),
                Err(err) => names.iter().map(|_| Err(self.copy_of(&err))).collect(),
            };
            for (index, pair) in asked.into_iter().zip(answered) {
                if let Some(slot) = pairs.get_mut(index) {
                    *slot = Some(pair);
                }
            }
        }
        pairs
            .into_iter()
            .map(|pair| pair.unwrap_or(Ok(None)))
            .collect()
    }

    /// Writes into the local copy every live pair of `sites` it does not hold yet, [`CURRENT_BATCH`]
    /// sites per query, until `stop`; returns how many were written. An unreachable database ends
    /// it (the change watch loads everything again when it is back, and asks for this again).
    pub(super) fn keep_local_copies_of(
        &self,
        sites: &[&str],
        stop: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let Some(local) = &self.local else {
            return Ok(0);
        };
        let mut written = 0usize;
        for chunk in sites.chunks(CURRENT_BATCH) {
            if stop.is_cancelled() {
                break;
            }
            let pairs = self.current_many_in_database(chunk)?;
            for (site, pair) in chunk.iter().zip(pairs) {
                if stop.is_cancelled() {
                    return Ok(written);
                }
                match pair {
                    Ok(Some(stored)) => {
                        if self.keep_local_copy(local, site, &stored) {
                            written = written.saturating_add(1);
                        }
                    }
                    Ok(None) => {}
                    Err(err) => {
                        tracing::warn!(site, %err, "cannot read the live certificate to keep its local copy");
                    }
                }
            }
        }
        Ok(written)
    }

    /// The live pairs of `sites` as the database has them, in order, in one query; a pair whose
    /// key does not open is that site's error.
    fn current_many_in_database(&self, sites: &[&str]) -> Result<Vec<Pair>, StoreError> {
        let names: Vec<String> = sites.iter().map(|&site| site.to_owned()).collect();
        self.call(move |ctx| async move {
            let action = "read the live certificates";
            let client = ctx.client(action).await?;
            let rows = client
                .query(schema::CURRENT_MANY, &[&names])
                .await
                .map_err(ctx.pg(action))?;
            let mut found: HashMap<String, Result<StoredCert, StoreError>> =
                HashMap::with_capacity(rows.len());
            for row in rows {
                let site: String = row.get(0);
                let pair = stored_cert(
                    &ctx,
                    &site,
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    row.get(4),
                    row.get(5),
                );
                found.insert(site, pair);
            }
            Ok(names
                .iter()
                .map(|site| found.remove(site).transpose())
                .collect())
        })
    }

    /// `err` (the failure of a whole batch) once more, for each of its sites.
    fn copy_of(&self, err: &StoreError) -> StoreError {
        match err {
            StoreError::Database {
                store,
                action,
                reason,
            } => StoreError::Database {
                store: store.clone(),
                action,
                reason: reason.clone(),
            },
            other => StoreError::Database {
                store: self.described.clone(),
                action: "read the live certificates",
                reason: other.to_string(),
            },
        }
    }
}
