//! The daemon's control socket: how `certd issue` hands its request to a running daemon, which holds
//! the state lock and port 80, so that the new certificate is ordered through the daemon's own listener
//! and served at once.
//!
//! A unix socket in the state directory (the folder is 0700 and the socket 0600, so only the owner can
//! talk to it). One request per connection, as JSON lines: the client sends a [`ControlRequest`]; the
//! daemon answers with [`Reply`] lines, the last one an exit code.
//!
//! Any local process of the owner can connect, so a client is held to what a request needs: one line
//! of at most [`MAX_REQUEST_LINE`] bytes within [`IO_TIMEOUT`], and the replies taken within the same
//! time. A connection still open at shutdown is told so and closed.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::Shared;
use crate::exit::EXIT_UNUSABLE;

/// The longest request line accepted. A request names sites by their first name: 64 KiB holds a
/// thousand long names, while a client that sends no newline can make the daemon hold no more.
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// How long a client may take to send its request line, and to take the replies. `certd issue`
/// sends its line at once; only a stuck or hostile client comes near this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// [`MAX_REQUEST_LINE`] and [`IO_TIMEOUT`], smaller in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_line: usize,
    io_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: MAX_REQUEST_LINE,
            io_timeout: IO_TIMEOUT,
        }
    }
}

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
    let handler = move |request: ControlRequest| {
        let shared = shared.clone();
        async move {
            match request {
                ControlRequest::Issue { force, sites } => shared.issue(force, &sites).await,
            }
        }
    };
    serve_with(listener, handler, Limits::default(), shutdown, tasks).await;
}

/// [`serve`] with the request handled by `handler`, so tests need no daemon.
async fn serve_with<H, F>(
    listener: UnixListener,
    handler: H,
    limits: Limits,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) where
    H: Fn(ControlRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Vec<Reply>> + Send,
{
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
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(err) = answer(stream, handler, limits, &shutdown).await {
                debug!(%err, "control connection ended");
            }
        });
    }
}

/// Reads one request from `stream`, answers it, and closes. At shutdown, whatever is in progress
/// (waiting for the line, or an order: the scheduler abandons its orders the same way, and the store
/// only ever switches to a complete certificate) is abandoned and the client told so.
async fn answer<H, F>(
    stream: UnixStream,
    handler: H,
    limits: Limits,
    shutdown: &CancellationToken,
) -> io::Result<()>
where
    H: Fn(ControlRequest) -> F,
    F: Future<Output = Vec<Reply>>,
{
    let (read, mut write) = stream.into_split();
    let work = async {
        match read_request(read, limits).await {
            Ok(request) => handler(request).await,
            Err(message) => vec![Reply::Err(message), Reply::Exit(EXIT_UNUSABLE)],
        }
    };
    let replies = tokio::select! {
        replies = work => replies,
        () = shutdown.cancelled() => vec![
            Reply::Err("certd: the daemon is stopping; the request was not finished".into()),
            Reply::Exit(EXIT_UNUSABLE),
        ],
    };
    tokio::time::timeout(limits.io_timeout, write_replies(&mut write, replies))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client took no replies"))?
}

/// The client's request line, read within the deadline and the size cap; or the message for the
/// client saying why not.
async fn read_request(read: OwnedReadHalf, limits: Limits) -> Result<ControlRequest, String> {
    // One byte over the cap tells a line that is too long from one that is exactly the cap.
    let cap = u64::try_from(limits.max_line)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut reader = BufReader::new(read).take(cap);
    let mut line = Vec::new();
    match tokio::time::timeout(limits.io_timeout, reader.read_until(b'\n', &mut line)).await {
        Err(_) => {
            return Err(format!(
                "certd: no control request within {:?}",
                limits.io_timeout
            ))
        }
        Ok(Err(err)) => return Err(format!("certd: cannot read the control request: {err}")),
        Ok(Ok(_)) => {}
    }
    if line.len() > limits.max_line {
        return Err(format!(
            "certd: control request longer than {} bytes",
            limits.max_line
        ));
    }
    serde_json::from_slice::<ControlRequest>(&line)
        .map_err(|err| format!("certd: bad control request: {err}"))
}

async fn write_replies(write: &mut OwnedWriteHalf, replies: Vec<Reply>) -> io::Result<()> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A control socket in a temporary folder served with `limits`, answering every request with
    /// exit code 0 (or never, with `hang`).
    struct Server {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        serve: tokio::task::JoinHandle<()>,
    }

    impl Server {
        fn start(limits: Limits, hang: bool) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("control.sock");
            let listener = bind(&path).unwrap();
            let shutdown = CancellationToken::new();
            let tasks = TaskTracker::new();
            let handler = move |_request: ControlRequest| async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                vec![Reply::Out("done".into()), Reply::Exit(0)]
            };
            let serve = tokio::spawn(serve_with(
                listener,
                handler,
                limits,
                shutdown.clone(),
                tasks.clone(),
            ));
            Self {
                _dir: dir,
                path,
                shutdown,
                tasks,
                serve,
            }
        }

        /// Everything the daemon sends on `stream` until it closes, bounded by 5 s.
        async fn replies(stream: &mut OwnedReadHalf) -> Vec<Reply> {
            let mut text = String::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
                .await
                .expect("the daemon must close the connection by itself")
                .unwrap();
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn issue_line() -> Vec<u8> {
        let mut line = serde_json::to_vec(&ControlRequest::Issue {
            force: false,
            sites: vec![],
        })
        .unwrap();
        line.push(b'\n');
        line
    }

    #[tokio::test]
    async fn a_request_is_answered() {
        let server = Server::start(Limits::default(), false);
        let request = ControlRequest::Issue {
            force: true,
            sites: vec!["a.test".into()],
        };
        assert_eq!(send(&server.path, &request).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_off_at_the_cap() {
        let server = Server::start(Limits::default(), false);
        let (mut read, mut write) = UnixStream::connect(&server.path)
            .await
            .unwrap()
            .into_split();
        // Writes until the daemon closes the connection; 64 MiB would mean it never did.
        let writer = tokio::spawn(async move {
            let chunk = vec![b'a'; 16 * 1024];
            let mut sent = 0usize;
            while sent < 64 * 1024 * 1024 {
                if write.write_all(&chunk).await.is_err() {
                    return sent;
                }
                sent += chunk.len();
            }
            sent
        });
        // The daemon closes with the client's bytes unread, so the client may see a reset instead
        // of the reply (unix sockets discard the reply then); either way the connection is over.
        let mut text = String::new();
        match tokio::time::timeout(Duration::from_secs(5), read.read_to_string(&mut text))
            .await
            .expect("the daemon must close the connection by itself")
        {
            Ok(_) => assert!(
                text.contains("certd: control request longer than 65536 bytes"),
                "{text}"
            ),
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}"),
        }
        drop(read);
        let sent = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the daemon must stop reading")
            .unwrap();
        assert!(sent < 64 * 1024 * 1024, "the daemon read {sent} bytes");
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_after_the_deadline() {
        let limits = Limits {
            io_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = Server::start(limits, false);
        let stream = UnixStream::connect(&server.path).await.unwrap();
        let started = Instant::now();
        let (mut read, _write) = stream.into_split();
        let replies = Server::replies(&mut read).await;
        assert!(
            matches!(&replies[..], [Reply::Err(message), Reply::Exit(EXIT_UNUSABLE)]
                if message == "certd: no control request within 200ms"),
            "{replies:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn shutdown_ends_connections_in_flight() {
        let server = Server::start(Limits::default(), true);
        // One client that says nothing, one whose request is being worked on.
        let silent = UnixStream::connect(&server.path).await.unwrap();
        let busy = UnixStream::connect(&server.path).await.unwrap();
        let (mut busy_read, mut busy_write) = busy.into_split();
        busy_write.write_all(&issue_line()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        let started = Instant::now();
        server.shutdown.cancel();
        server.tasks.close();
        tokio::time::timeout(Duration::from_secs(2), async {
            server.serve.await.unwrap();
            server.tasks.wait().await;
        })
        .await
        .expect("serve and every connection must end promptly at shutdown");
        assert!(started.elapsed() < Duration::from_secs(2));
        let replies = Server::replies(&mut busy_read).await;
        assert!(
            matches!(&replies[..], [Reply::Err(message), Reply::Exit(EXIT_UNUSABLE)]
                if message.contains("the daemon is stopping")),
            "{replies:?}"
        );
        let (mut silent_read, _silent_write) = silent.into_split();
        let replies = Server::replies(&mut silent_read).await;
        assert!(
            matches!(&replies[..], [_, Reply::Exit(EXIT_UNUSABLE)]),
            "{replies:?}"
        );
    }
}
