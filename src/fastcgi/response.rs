//! The CGI response head a script writes on `STDOUT` (RFC 3875 section 6): header lines up to a
//! blank line, with `Status:` giving the status and `Location:` alone meaning a redirect.

use hyper::header::{HeaderName, HeaderValue, LOCATION};
use hyper::{HeaderMap, StatusCode};

/// Why a script's response head cannot become an HTTP response (certd answers 502).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// A line without `:`.
    #[error("CGI header line without a colon: {0:?}")]
    NoColon(String),
    /// A name or value HTTP cannot carry.
    #[error("invalid CGI header {0:?}")]
    Invalid(String),
    /// `Status:` that is not a three-digit code.
    #[error("invalid CGI Status {0:?}")]
    Status(String),
}

/// Headers that describe certd's connection to the client, not the script's answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
];

/// Where the head ends in `buffer`: `(end of head, start of body)`, for a blank line written as
/// `\r\n\r\n` or `\n\n` (PHP writes the former; CGI allows both).
pub fn find_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, at + 4));
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, at + 2));
    match (crlf, lf) {
        (Some(crlf), Some(lf)) => Some(if crlf.0 <= lf.0 { crlf } else { lf }),
        (crlf, lf) => crlf.or(lf),
    }
}

/// The status and headers of a response head (without its blank line).
pub fn parse(head: &[u8]) -> Result<(StatusCode, HeaderMap), HeadError> {
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(HeadError::NoColon(
                String::from_utf8_lossy(line).into_owned(),
            ));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let invalid = || HeadError::Invalid(String::from_utf8_lossy(line).into_owned());
        if name.eq_ignore_ascii_case(b"status") {
            let code = value.get(..3).ok_or_else(|| status_error(value))?;
            let code = std::str::from_utf8(code).map_err(|_| status_error(value))?;
            let code = code.parse::<u16>().map_err(|_| status_error(value))?;
            status = Some(StatusCode::from_u16(code).map_err(|_| status_error(value))?);
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| invalid())?;
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_bytes(value).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    // RFC 3875 6.2.3: a redirect without a status is a 302 (as nginx answers it).
    let status = status.unwrap_or(if headers.contains_key(LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok((status, headers))
}

fn status_error(value: &[u8]) -> HeadError {
    HeadError::Status(String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end(b"A: b\r\n\r\nbody\n\n"), Some((4, 8)));
        assert_eq!(find_end(b"A: b\n\nbody\r\n\r\n"), Some((4, 6)));
        assert_eq!(find_end(b"A: b\r\n"), None);
    }

    #[test]
    fn status_location_and_headers_are_read() {
        let (status, headers) =
            parse(b"Status: 404 Not Found\r\nX-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2")
                .expect("parses");
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-a"], "1");
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);

        let (status, headers) = parse(b"Location: /x\nContent-type: text/html").expect("parses");
        assert_eq!(status, StatusCode::FOUND);
        assert_eq!(headers[LOCATION], "/x");

        let (status, headers) =
            parse(b"Content-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: close")
                .expect("parses");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn broken_heads_are_errors() {
        assert!(matches!(parse(b"garbage"), Err(HeadError::NoColon(_))));
        assert!(matches!(parse(b"Status: abc"), Err(HeadError::Status(_))));
        assert!(matches!(parse(b"Status: 99"), Err(HeadError::Status(_))));
        assert!(matches!(parse(b"Bad Name: x"), Err(HeadError::Invalid(_))));
        assert!(matches!(parse(b"X: a\x01b"), Err(HeadError::Invalid(_))));
    }
}
