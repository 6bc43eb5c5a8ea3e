//! The PROXY protocol (HAProxy's, versions 1 and 2) on certd's listeners, for certd behind a TCP
//! load balancer (HAProxy, AWS NLB, …) that would otherwise hide every client behind its own address.
//!
//! With `proxy_protocol = true` on a listener, every connection must come from `[https]
//! trusted_proxies` and start with a PROXY header; the header's source address then stands for the
//! client. Anything else (an untrusted peer, a missing, slow, oversized or malformed header) closes
//! the connection: a listener that accepted both would let any client that reaches it directly
//! claim any address. The header is read before TLS (or HTTP on :80), byte-exact, so that not one
//! byte of what follows is consumed; parsing is `ppp`'s.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::trusted_proxies::TrustedProxies;

/// The v2 signature (proxy-protocol.txt §2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, `\r\n` included (§2.1).
const V1_MAX: usize = 107;
/// The most address and TLV bytes accepted after a v2 header's 16 fixed bytes. The protocol allows
/// 65,535; load balancers send the addresses (at most 216 bytes, for Unix sockets) and a few short
/// TLVs (an AWS endpoint ID, HAProxy's TLS details).
const V2_MAX_PAYLOAD: usize = 4096;
/// Bytes read before knowing the version: no valid v1 header is shorter (`PROXY UNKNOWN\r\n` has 15),
/// so this never reads past one.
const PREFIX: usize = 12;

/// Which listeners' connections must start with a PROXY header, and from where one is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Connections start with TLS (or HTTP): the TCP peer is the client.
    #[default]
    Off,
    /// Every connection must come from one of these and start with a PROXY header.
    Required(TrustedProxies),
}

impl ProxyProtocol {
    /// `Required(trusted)` when `enabled`, else `Off`.
    pub fn new(enabled: bool, trusted: &TrustedProxies) -> Self {
        if enabled {
            Self::Required(trusted.clone())
        } else {
            Self::Off
        }
    }

    /// The client's address for a connection from `peer`: `peer` itself when the protocol is off,
    /// else the source address of the PROXY header read from `stream` within `timeout`.
    pub async fn client_address<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, ProxyHeaderError> {
        let Self::Required(trusted) = self else {
            return Ok(peer);
        };
        if !trusted.contains(peer.ip()) {
            return Err(ProxyHeaderError::Untrusted);
        }
        match tokio::time::timeout(timeout, read_header(stream, peer)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyHeaderError::TimedOut(timeout)),
        }
    }
}

/// Why a connection that had to start with a PROXY header was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The peer is not in `[https] trusted_proxies`.
    #[error("the peer is not in [https] trusted_proxies, so it may not send a PROXY header")]
    Untrusted,
    /// The header did not arrive in time.
    #[error("no complete PROXY header within {0:?}")]
    TimedOut(Duration),
    /// The connection does not start with `PROXY ` or the v2 signature.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// The header is longer than certd accepts.
    #[error("the PROXY header is longer than {0} bytes")]
    TooLong(usize),
    /// The header is not well-formed.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    /// Reading failed (the peer closed or reset).
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY header (v1 or v2) from `stream`, no further, and returns the client address it
/// names: its source for a proxied TCP connection, `peer` for v1 `UNKNOWN`, a v2 `LOCAL` command
/// (the balancer's own health check) or an address family other than IP.
async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    let mut header = vec![0; PREFIX];
    stream.read_exact(&mut header).await?;
    if header == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream.read_exact(&mut fixed).await?;
        header.extend_from_slice(&fixed);
        let length = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if length > V2_MAX_PAYLOAD {
            return Err(ProxyHeaderError::TooLong(PREFIX + 4 + V2_MAX_PAYLOAD));
        }
        let start = header.len();
        header.resize(start + length, 0);
        stream.read_exact(&mut header[start..]).await?;
        v2_client(&header, peer)
    } else if header.starts_with(b"PROXY ") {
        // A v1 header ends at its `\r\n`, and the TLS or HTTP bytes follow at once: read one byte at
        // a time so as to take nothing of theirs (at most 95 reads, once per connection).
        while !header.ends_with(b"\r\n") {
            if header.len() >= V1_MAX {
                return Err(ProxyHeaderError::TooLong(V1_MAX));
            }
            header.push(stream.read_u8().await?);
        }
        v1_client(&header, peer)
    } else {
        Err(ProxyHeaderError::Missing)
    }
}

/// The client address of a complete v1 header.
fn v1_client(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    use ppp::v1::{Addresses, Header};
    let parsed =
        Header::try_from(header).map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    Ok(match parsed.addresses {
        Addresses::Tcp4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::Tcp6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::Unknown => peer,
    })
}

/// The client address of a complete v2 header.
fn v2_client(header: &[u8], peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let parsed =
        Header::try_from(header).map_err(|err| ProxyHeaderError::Malformed(err.to_string()))?;
    if parsed.command == Command::Local {
        return Ok(peer);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::IPv6(ip) => SocketAddr::from((ip.source_address, ip.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => peer,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::trusted_proxies::parse_range;

    const PEER: &str = "127.0.0.1:40000";

    fn required() -> ProxyProtocol {
        ProxyProtocol::Required(TrustedProxies::new(vec![parse_range("127.0.0.1").unwrap()]))
    }

    /// A v2 header: version 2, `command` (0 LOCAL, 1 PROXY), `family` (0x11 TCP over IPv4, 0x21
    /// over IPv6), then `payload` (the addresses and any TLVs).
    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        bytes.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn v2_tcp4() -> Vec<u8> {
        // 203.0.113.7:5555 → 192.0.2.1:443
        v2(
            1,
            0x11,
            &[203, 0, 113, 7, 192, 0, 2, 1, 0x15, 0xb3, 0x01, 0xbb],
        )
    }

    /// Runs `client_address` on `input` followed by `rest`; returns its answer and what is left.
    async fn read(
        protocol: &ProxyProtocol,
        peer: &str,
        input: &[u8],
    ) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let mut bytes = input.to_vec();
        bytes.extend_from_slice(b"\x16\x03\x01rest");
        let mut stream = &bytes[..];
        let result = protocol
            .client_address(&mut stream, peer.parse().unwrap(), Duration::from_secs(1))
            .await;
        (result, stream.to_vec())
    }

    #[tokio::test]
    async fn headers_give_the_client_address_and_leave_what_follows() {
        let mut v2_ipv6 = vec![0u8; 36];
        v2_ipv6[15] = 1; // ::1
        v2_ipv6[16..18].copy_from_slice(&[0x20, 0x01]); // 2001::
        v2_ipv6[32..34].copy_from_slice(&[0x04, 0xd2]); // port 1234
        let mut v2_tlv = v2_tcp4();
        v2_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x2a]); // a NOOP TLV ...
        let length = (v2_tlv.len() - 16) as u16;
        v2_tlv[14..16].copy_from_slice(&length.to_be_bytes()); // ... counted in the length
        let cases: [(&str, Vec<u8>, &str); 7] = [
            (
                "v1 tcp4",
                b"PROXY TCP4 198.51.100.9 192.0.2.1 4321 443\r\n".to_vec(),
                "198.51.100.9:4321",
            ),
            (
                "v1 tcp6",
                b"PROXY TCP6 2001:db8::7 2001:db8::1 4321 443\r\n".to_vec(),
                "[2001:db8::7]:4321",
            ),
            ("v1 unknown", b"PROXY UNKNOWN\r\n".to_vec(), PEER),
            ("v2 tcp4", v2_tcp4(), "203.0.113.7:5555"),
            ("v2 tcp6", v2(1, 0x21, &v2_ipv6), "[::1]:1234"),
            ("v2 local", v2(0, 0x00, &[]), PEER),
            ("v2 with a tlv", v2_tlv, "203.0.113.7:5555"),
        ];
        for (name, header, expected) in cases {
            let (result, rest) = read(&required(), PEER, &header).await;
            assert_eq!(result.unwrap().to_string(), expected, "{name}");
            assert_eq!(rest, b"\x16\x03\x01rest", "{name}");
        }
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let mut huge = v2(1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        let long_v1 = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        let cases: [(&str, &str, Vec<u8>); 6] = [
            (
                "untrusted peer",
                "192.0.2.50:1",
                b"PROXY UNKNOWN\r\n".to_vec(),
            ),
            (
                "tls at once",
                PEER,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00".to_vec(),
            ),
            ("bad v1", PEER, b"PROXY TCP4 nonsense here 1 2\r\n".to_vec()),
            ("long v1", PEER, long_v1.into_bytes()),
            ("huge v2", PEER, huge),
            ("bad v2 family", PEER, v2(1, 0x11, &[1, 2, 3])),
        ];
        for (name, peer, input) in cases {
            let (result, _) = read(&required(), peer, &input).await;
            assert!(result.is_err(), "{name}: {result:?}");
        }
    }

    #[tokio::test]
    async fn a_header_that_stalls_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"PROXY TCP4 ")
            .await
            .unwrap();
        let result = required()
            .client_address(
                &mut server,
                PEER.parse().unwrap(),
                Duration::from_millis(50),
            )
            .await;
        assert!(
            matches!(result, Err(ProxyHeaderError::TimedOut(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn off_reads_nothing() {
        let (result, rest) = read(&ProxyProtocol::Off, "192.0.2.50:1", b"").await;
        assert_eq!(result.unwrap().to_string(), "192.0.2.50:1");
        assert_eq!(rest, b"\x16\x03\x01rest");
    }
}
