//! WebSocket tunnels: once an upstream has answered a handshake with `101 Switching Protocols`, the
//! client's connection and the upstream's are spliced together and bytes are copied both ways.
//!
//! certd does not parse WebSocket frames; after the handshake it is a byte pipe. Each tunnel is a task
//! owned by the [`Proxy`](super::Proxy)'s tracker and ends when either side closes or fails, or when
//! the proxy is shut down.

use std::net::SocketAddr;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, Instrument};

/// Spawns the task that waits for both upgrades to complete and then copies bytes between them.
///
/// `client` completes once hyper has written the `101` response to the client, so this must be
/// called before that response is returned, and the task waits for it.
pub(super) fn spawn_tunnel(
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    client: OnUpgrade,
    upstream: OnUpgrade,
    client_addr: SocketAddr,
    upstream_label: String,
) {
    let span = info_span!("websocket", client = %client_addr, upstream = %upstream_label);
    tracker.spawn(
        async move {
            let upgraded = tokio::select! {
                upgraded = async { tokio::try_join!(client, upstream) } => upgraded,
                () = shutdown.cancelled() => return,
            };
            let (client, upstream) = match upgraded {
                Ok(pair) => pair,
                Err(error) => {
                    debug!(%error, "websocket upgrade did not complete");
                    return;
                }
            };
            let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
            let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
            debug!("websocket tunnel open");
            // Each direction copies until its reader closes, then passes the close on (FIN). The
            // tunnel ends as soon as either direction is done: after a WebSocket close handshake the
            // side that closes first has nothing more to receive, and a side that vanished cannot.
            let to_upstream = async {
                let copied = tokio::io::copy(&mut client_read, &mut upstream_write).await?;
                upstream_write.shutdown().await?;
                Ok::<_, std::io::Error>(copied)
            };
            let to_client = async {
                let copied = tokio::io::copy(&mut upstream_read, &mut client_write).await?;
                client_write.shutdown().await?;
                Ok::<_, std::io::Error>(copied)
            };
            tokio::select! {
                copied = to_upstream => match copied {
                    Ok(bytes) => debug!(to_upstream = bytes, "websocket tunnel closed by the client"),
                    Err(error) => debug!(%error, "websocket tunnel failed"),
                },
                copied = to_client => match copied {
                    Ok(bytes) => debug!(to_client = bytes, "websocket tunnel closed by the upstream"),
                    Err(error) => debug!(%error, "websocket tunnel failed"),
                },
                () = shutdown.cancelled() => debug!("websocket tunnel closed at shutdown"),
            }
        }
        .instrument(span),
    );
}
