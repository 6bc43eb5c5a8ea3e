//! Listening sockets, bound the way a server needs them: `SO_REUSEADDR` so a restart does not wait
//! for old connections in TIME_WAIT, `IPV6_V6ONLY` on IPv6 addresses so `[::]:80` can sit beside
//! `0.0.0.0:80` (the usual dual-stack configuration) instead of failing with "address in use", and a
//! deep accept backlog for bursts of new connections. [`accept`] is the one accept step every listener
//! loop uses.

use std::io;
use std::net::SocketAddr;

use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel may queue before certd accepts them.
const BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr`.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. Accept errors (out of
/// file descriptors, a connection reset before it was accepted) are transient: they are logged and
/// retried after a short pause, never fatal.
pub async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_bind_side_by_side() {
        let v4 = bind_tcp("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        // Only where the machine has IPv6 at all.
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let v6 = bind_tcp(SocketAddr::from(([0u16; 8], port))).unwrap();
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
    }

    #[tokio::test]
    async fn a_port_in_use_is_refused() {
        let first = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_tcp(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
