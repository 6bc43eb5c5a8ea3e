//! The daemon's control socket: how `certd issue` hands its request to a running daemon, which holds
//! the state lock and port 80, so that the new certificate is ordered through the daemon's own listener
//! and served at once.
//!
//! A unix socket in the state directory (the folder is 0700 and the socket 0600, so only the owner can
//! talk to it). One request per connection, as JSON lines: the client sends a [`ControlRequest`]; the
//! daemon answers with [`Reply`] lines, the last one an exit code.

use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::Shared;

/// What a client asks the daemon to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlRequest {
    /// `certd issue [--force] [SITE…]`.
    Issue {
        /// Renew even when not due.
        force: bool,
        /// Sites by first name; all when empty.
        sites: Vec<String>,
    },
}

/// One line of the daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A line for the client's stdout.
    Out(String),
    /// A line for the client's stderr.
    Err(String),
    /// The exit code; the last line.
    Exit(u8),
}

/// Binds the control socket at `path`, replacing a stale one (the caller holds the state lock, so no
/// other daemon can be using it).
pub(super) fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answers control requests until `shutdown`.
pub(super) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(%err, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            if let Err(err) = answer(stream, &shared).await {
                debug!(%err, "control connection ended");
            }
        });
    }
}

async fn answer(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let replies = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(ControlRequest::Issue { force, sites }) => shared.issue(force, &sites).await,
        Err(err) => vec![
            Reply::Err(format!("certd: bad control request: {err}")),
            Reply::Exit(crate::commands::EXIT_UNUSABLE),
        ],
    };
    for reply in replies {
        let mut text = serde_json::to_string(&reply).map_err(io::Error::other)?;
        text.push('\n');
        write.write_all(text.as_bytes()).await?;
    }
    write.shutdown().await
}

/// Sends `request` to the daemon listening at `path`, prints its answer (stdout and stderr lines as the
/// daemon says) and returns its exit code. Fails when no daemon answers there.
pub async fn send(path: &Path, request: &ControlRequest) -> io::Result<u8> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Reply>(&line).map_err(io::Error::other)? {
            Reply::Out(text) => println!("{text}"),
            Reply::Err(text) => eprintln!("{text}"),
            Reply::Exit(code) => return Ok(code),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the daemon closed the control connection without an exit code",
    ))
}
