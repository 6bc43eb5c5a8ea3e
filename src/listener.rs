//! Listening sockets, bound the way a server needs them: `SO_REUSEADDR` so a restart does not wait
//! for old connections in TIME_WAIT, `IPV6_V6ONLY` on IPv6 addresses so `[::]:80` can sit beside
//! `0.0.0.0:80` (the usual dual-stack configuration) instead of failing with "address in use", and a
//! deep accept backlog for bursts of new connections. [`bind_tcp_group`] binds one address several
//! times with `SO_REUSEPORT`, one socket per HTTPS worker, so that the kernel spreads new connections
//! over the workers. [`accept`] is the one accept step every listener loop uses.

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
    TcpListener::from_std(bind_socket(addr, false)?.into())
}

/// Binds `count` (at least one) listening sockets on `addr` that share its port with `SO_REUSEPORT`:
/// the kernel hands each new connection to one of them. They are returned unregistered (standard
/// library sockets) so that each can join the runtime that will accept on it.
///
/// `SO_REUSEPORT` would also let this group join sockets another process of the same user already
/// has on the port, and silently split its traffic; so a fixed port is first bound once without it,
/// which fails with "address in use" like [`bind_tcp`] does.
pub fn bind_tcp_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        drop(bind_socket(addr, false)?);
    }
    let first = bind_socket(addr, true)?;
    // Port 0 picked a free port: the rest of the group takes the same one.
    let addr = first.local_addr()?.as_socket().unwrap_or(addr);
    let mut group = vec![first.into()];
    for _ in 1..count {
        group.push(bind_socket(addr, true)?.into());
    }
    Ok(group)
}

fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
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

    #[test]
    fn a_group_shares_one_port_and_each_socket_accepts() {
        let group = bind_tcp_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(group
            .iter()
            .all(|socket| socket.local_addr().unwrap() == addr));
        // Connections land on the sockets of the group, whichever the kernel picks.
        let clients: Vec<_> = (0..12)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = 0;
        for socket in &group {
            while socket.accept().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
    }

    #[tokio::test]
    async fn a_group_on_a_port_in_use_is_refused() {
        let taken = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_tcp_group(taken.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Even when the holder itself uses SO_REUSEPORT, as another certd would.
        let group = bind_tcp_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let err = bind_tcp_group(group[0].local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_port_in_use_is_refused() {
        let first = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_tcp(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
