//! How a node hears of certificates installed anywhere in the fleet: every install NOTIFYs
//! [`CHANNEL`] with its site in the same transaction (so the notification goes out on commit, and
//! only then); one dedicated connection per node LISTENs, reconnecting with backoff; and a poll
//! every `[storage] poll` compares the live versions with the last ones seen, for notifications
//! that were missed (the listener was reconnecting, `notify = false`). Both feed the one
//! [`Change`] stream of [`StateStore::changes`](crate::storage::StateStore::changes), and both
//! record the database's reachability in [`StorageHealth`].
//!
//! The task runs on the store's own runtime and ends when the daemon's `stop` token is cancelled,
//! the daemon drops the receiver, or the store (and its runtime) is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::{reason, schema, Ctx};
use crate::storage::health::StorageHealth;
use crate::storage::Change;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The notification channel installs announce their site on.
pub const CHANNEL: &str = "certd_live";

/// First wait before connecting the listener again; it doubles up to [`LONGEST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);
/// A notification's payload is a site name; anything longer is not certd's and is ignored.
const PAYLOAD_MAX: usize = 1024;

/// Live version per site, as last seen.
pub(super) type Versions = HashMap<String, i64>;

/// What the watch task needs.
pub(super) struct Watch {
    pub ctx: Ctx,
    pub pg: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
    pub poll: Duration,
    pub notify: bool,
    pub health: Arc<StorageHealth>,
}

/// The live versions now.
pub(super) async fn live_versions(ctx: &Ctx) -> Result<Versions, crate::store::StoreError> {
    let action = "read the live versions";
    let client = ctx.client(action).await?;
    let rows = client
        .query(schema::LIVE_VERSIONS, &[])
        .await
        .map_err(ctx.pg(action))?;
    // The fleet view's "last heartbeat" of this node (the scheduler's own beat may be hours
    // apart); a node without one yet writes it with its first scheduler pass.
    client
        .execute(schema::TOUCH_HEARTBEAT, &[&ctx.node])
        .await
        .map_err(ctx.pg(action))?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The sites whose live version in `now` differs from `before` (new ones included).
pub(super) fn changed(before: &Versions, now: &Versions) -> Vec<String> {
    let mut sites: Vec<String> = now
        .iter()
        .filter(|(site, version)| before.get(*site) != Some(version))
        .map(|(site, _)| site.clone())
        .collect();
    sites.sort();
    sites
}

/// The next wait after `current` failed: doubled, at most [`LONGEST_BACKOFF`].
fn next_backoff(current: Duration) -> Duration {
    current.saturating_mul(2).min(LONGEST_BACKOFF)
}

impl Watch {
    /// Runs until `stop`, or until nobody listens to `changes`. `baseline`: the versions the
    /// daemon's initial load is reading (`None` when they could not be read: the first poll that
    /// succeeds then asks for everything).
    pub(super) async fn run(
        self,
        baseline: Option<Versions>,
        changes: mpsc::Sender<Change>,
        stop: CancellationToken,
    ) {
        let (notified, mut notifications) = mpsc::channel::<Change>(crate::storage::CHANGES_QUEUED);
        if self.notify {
            let listener = Listener {
                pg: self.pg.clone(),
                tls: self.tls.clone(),
                health: self.health.clone(),
            };
            let stop = stop.clone();
            tokio::spawn(async move { listener.run(notified, stop).await });
        } else {
            drop(notified);
        }
        let mut seen = baseline;
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await; // the first tick is now: the baseline was just read
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => return,
                () = changes.closed() => return,
                Some(change) = notifications.recv() => vec![change],
                _ = poll.tick() => self.poll_once(&mut seen).await,
            };
            for change in change {
                if changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn poll_once(&self, seen: &mut Option<Versions>) -> Vec<Change> {
        match live_versions(&self.ctx).await {
            Ok(now) => {
                let recovered = self.health.reached(OffsetDateTime::now_utc());
                let changes = match seen.as_ref() {
                    // After an outage (or without a baseline) anything may have been missed.
                    None => vec![Change::All],
                    Some(_) if recovered => vec![Change::All],
                    Some(before) => changed(before, &now)
                        .into_iter()
                        .map(Change::Site)
                        .collect(),
                };
                *seen = Some(now);
                changes
            }
            Err(err) => {
                self.health.failed(OffsetDateTime::now_utc(), &err);
                Vec::new()
            }
        }
    }
}

/// The dedicated LISTEN connection.
struct Listener {
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    health: Arc<StorageHealth>,
}

impl Listener {
    async fn run(self, changes: mpsc::Sender<Change>, stop: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        let mut connected_before = false;
        loop {
            let listened = tokio::select! {
                () = stop.cancelled() => return,
                listened = self.listen(&changes, &mut connected_before, &mut backoff) => listened,
            };
            match listened {
                // The daemon went away.
                Ok(()) => return,
                Err(why) => {
                    if self.health.failed(OffsetDateTime::now_utc(), &why) {
                        tracing::debug!(%why, "the change listener reconnects");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = next_backoff(backoff);
        }
    }

    /// Connects, LISTENs and forwards notifications until the connection fails (`Err`) or the
    /// receiver is gone (`Ok`).
    async fn listen(
        &self,
        changes: &mpsc::Sender<Change>,
        connected_before: &mut bool,
        backoff: &mut Duration,
    ) -> Result<(), String> {
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self
                    .pg
                    .connect(tls.clone())
                    .await
                    .map_err(|err| reason(&err))?;
                forward(
                    client,
                    connection,
                    changes,
                    connected_before,
                    backoff,
                    &self.health,
                )
                .await
            }
            None => {
                let (client, connection) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|err| reason(&err))?;
                forward(
                    client,
                    connection,
                    changes,
                    connected_before,
                    backoff,
                    &self.health,
                )
                .await
            }
        }
    }
}

async fn forward<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    changes: &mpsc::Sender<Change>,
    connected_before: &mut bool,
    backoff: &mut Duration,
    health: &StorageHealth,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The connection must be driven while LISTEN runs.
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            listened = &mut listen => { listened.map_err(|err| reason(&err))?; break; }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(reason(&err)),
                None => return Err("the connection closed".into()),
            },
        }
    }
    *backoff = FIRST_BACKOFF;
    health.reached(OffsetDateTime::now_utc());
    if std::mem::replace(connected_before, true) {
        // Notifications sent while this node was not listening are gone: load everything.
        tracing::info!("listening for the fleet's certificate changes again");
        if changes.send(Change::All).await.is_err() {
            return Ok(());
        }
    }
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(note))) if note.channel() == CHANNEL => {
                if note.payload().len() > PAYLOAD_MAX {
                    continue;
                }
                if changes
                    .send(Change::Site(note.payload().to_owned()))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(reason(&err)),
            None => return Err("the connection closed".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_reports_new_and_changed_sites_only() {
        let before: Versions = [("a.test".into(), 1), ("b.test".into(), 2)].into();
        let now: Versions = [
            ("a.test".into(), 1),
            ("b.test".into(), 3),
            ("c.test".into(), 1),
        ]
        .into();
        assert_eq!(changed(&before, &now), vec!["b.test", "c.test"]);
        assert!(changed(&now, &now).is_empty());
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(next_backoff(FIRST_BACKOFF), Duration::from_secs(1));
        assert_eq!(next_backoff(Duration::from_secs(20)), LONGEST_BACKOFF);
        assert_eq!(next_backoff(LONGEST_BACKOFF), LONGEST_BACKOFF);
    }
}
