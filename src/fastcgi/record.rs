//! The FastCGI record layer (FastCGI 1.0 spec, section 3): the 8-byte record header, the
//! `BEGIN_REQUEST` and `END_REQUEST` bodies, name-value pairs for `PARAMS`, and reading one record
//! off a stream.
//!
//! Only what a web server (the client side of a `RESPONDER`) needs: it writes `BEGIN_REQUEST`,
//! `PARAMS` and `STDIN`, and reads `STDOUT`, `STDERR` and `END_REQUEST`.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// FastCGI protocol version 1, the only one.
const VERSION: u8 = 1;
/// Every request on a connection uses id 1: certd opens one connection per request and never
/// multiplexes (php-fpm does not either).
pub const REQUEST_ID: u16 = 1;
/// The most content one record can carry (its length is a u16).
pub const MAX_CONTENT: usize = u16::MAX as usize;

/// Record types (spec 8).
pub mod kind {
    /// Starts a request.
    pub const BEGIN_REQUEST: u8 = 1;
    /// The application's last record for a request.
    pub const END_REQUEST: u8 = 3;
    /// CGI/1.1 environment name-value pairs; an empty one ends them.
    pub const PARAMS: u8 = 4;
    /// The request body; an empty one ends it.
    pub const STDIN: u8 = 5;
    /// The CGI response: headers, a blank line, the body.
    pub const STDOUT: u8 = 6;
    /// The application's error output.
    pub const STDERR: u8 = 7;
}

/// `protocolStatus` of `END_REQUEST`: the request completed normally.
pub const REQUEST_COMPLETE: u8 = 0;

/// Appends one record of `kind` with `content` (at most [`MAX_CONTENT`] bytes) to `out`.
pub fn encode(out: &mut BytesMut, kind: u8, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT);
    let length = u16::try_from(content.len()).unwrap_or(u16::MAX);
    // Pad to a multiple of 8, as the spec recommends and as nginx does.
    let padding = (8 - (content.len() % 8)) % 8;
    out.reserve(8 + content.len() + padding);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u16(REQUEST_ID);
    out.put_u16(length);
    out.put_u8(padding as u8);
    out.put_u8(0);
    out.put_slice(&content[..usize::from(length)]);
    out.put_bytes(0, padding);
}

/// Appends `data` as records of `kind`, split at [`MAX_CONTENT`] bytes. Nothing for empty `data`
/// (the empty record that ends a stream is written with [`encode`]).
pub fn encode_stream(out: &mut BytesMut, kind: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        encode(out, kind, chunk);
    }
}

/// Appends the `BEGIN_REQUEST` record of a `RESPONDER` request that closes the connection when it
/// ends (`FCGI_KEEP_CONN` not set).
pub fn begin_request(out: &mut BytesMut) {
    const RESPONDER: u16 = 1;
    let mut body = [0u8; 8];
    body[..2].copy_from_slice(&RESPONDER.to_be_bytes());
    encode(out, kind::BEGIN_REQUEST, &body);
}

/// Appends one name-value pair in the `PARAMS` encoding (spec 3.4): each length in one byte below
/// 128, otherwise in four with the top bit set. `None` when a part is too long to encode.
pub fn name_value(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Option<()> {
    fn length(out: &mut Vec<u8>, len: usize) -> Option<()> {
        if len < 128 {
            out.push(len as u8);
        } else {
            let len = u32::try_from(len).ok().filter(|len| *len < 0x8000_0000)?;
            out.extend_from_slice(&(len | 0x8000_0000).to_be_bytes());
        }
        Some(())
    }
    length(out, name.len())?;
    length(out, value.len())?;
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    Some(())
}

/// One record read from the application.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// Its type ([`kind`]).
    pub kind: u8,
    /// Its content, without padding.
    pub content: Vec<u8>,
}

impl Record {
    /// The `protocolStatus` of an `END_REQUEST` record (`None` when its body is too short).
    pub fn protocol_status(&self) -> Option<u8> {
        self.content.get(4).copied()
    }
}

/// Reads the next record; `None` at a clean end of stream between records. A record is at most
/// 64 KiB + 255 bytes of padding, so one read is bounded by the format itself.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Record>> {
    let mut header = [0u8; 8];
    // The first byte tells a clean close (0 bytes) from a truncated header.
    let first = reader.read(&mut header[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut header[1..]).await?;
    if header[0] != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("FastCGI record of version {} (expected 1)", header[0]),
        ));
    }
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let padding = usize::from(header[6]);
    let mut content = vec![0u8; length + padding];
    reader.read_exact(&mut content).await?;
    content.truncate(length);
    Ok(Some(Record {
        kind: header[1],
        content,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_to_eight_bytes() {
        let mut out = BytesMut::new();
        encode(&mut out, kind::STDIN, b"hello");
        assert_eq!(&out[..8], &[1, 5, 0, 1, 0, 5, 3, 0]);
        assert_eq!(&out[8..13], b"hello");
        assert_eq!(out.len(), 16);
    }

    #[test]
    fn streams_are_split_at_the_record_limit() {
        let mut out = BytesMut::new();
        encode_stream(&mut out, kind::STDIN, &vec![7u8; MAX_CONTENT + 10]);
        // 65535 bytes + 1 byte of padding, then 10 bytes + 6 of padding, each with a header.
        assert_eq!(out.len(), 8 + MAX_CONTENT + 1 + 8 + 10 + 6);
        let mut empty = BytesMut::new();
        encode_stream(&mut empty, kind::STDIN, b"");
        assert!(empty.is_empty());
    }

    #[test]
    fn name_value_lengths_use_one_or_four_bytes() {
        let mut out = Vec::new();
        name_value(&mut out, b"A", b"bc").expect("encodes");
        assert_eq!(out, b"\x01\x02Abc");
        let mut out = Vec::new();
        let long = vec![b'x'; 200];
        name_value(&mut out, b"N", &long).expect("encodes");
        assert_eq!(&out[..5], &[1, 0x80, 0, 0, 200]);
        assert_eq!(out.len(), 5 + 1 + 200);
    }

    #[tokio::test]
    async fn reads_records_and_a_clean_end() {
        let mut out = BytesMut::new();
        encode(&mut out, kind::STDOUT, b"Status: 200\r\n\r\nhi");
        encode(&mut out, kind::END_REQUEST, &[0, 0, 0, 0, 0, 0, 0, 0]);
        let mut reader = &out[..];
        let record = read(&mut reader).await.expect("reads").expect("a record");
        assert_eq!(record.kind, kind::STDOUT);
        assert_eq!(record.content, b"Status: 200\r\n\r\nhi");
        let end = read(&mut reader).await.expect("reads").expect("a record");
        assert_eq!(end.protocol_status(), Some(REQUEST_COMPLETE));
        assert!(read(&mut reader).await.expect("reads").is_none());
    }

    #[tokio::test]
    async fn truncated_and_foreign_records_are_errors() {
        let mut reader: &[u8] = &[1, 6, 0, 1, 0, 9];
        assert!(read(&mut reader).await.is_err());
        let mut reader: &[u8] = b"HTTP/1.1 200 OK\r\n";
        assert!(read(&mut reader).await.is_err());
    }
}
