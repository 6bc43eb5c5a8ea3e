//! `Accept-Encoding` (RFC 9110 §12.5.3): which of the encodings certd offers a client accepts, and
//! in which order to try them.
//!
//! The client's q-values rank the encodings; among equal q-values the server's order wins (so a
//! browser's plain `gzip, deflate, br, zstd` gets the encoding the route lists first). `q=0` refuses
//! an encoding, `*` stands for every encoding not named, and `identity` needs no handling: sending
//! the body unencoded is always allowed here (no 406), as every server in practice does.

use hyper::header::ACCEPT_ENCODING;
use hyper::HeaderMap;

use super::Encoding;

/// The encodings a client accepts, best first, out of those offered (at most one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked {
    items: [Option<Encoding>; Encoding::ALL.len()],
}

impl Ranked {
    /// The best accepted encoding, if any.
    pub fn best(&self) -> Option<Encoding> {
        self.items[0]
    }

    /// Every accepted encoding, best first.
    pub fn iter(&self) -> impl Iterator<Item = Encoding> + '_ {
        self.items.iter().map_while(|item| *item)
    }
}

/// Ranks `offered` (in the server's order of preference) by the request's `Accept-Encoding`:
/// highest q-value first, ties in the server's order, refused and unlisted encodings left out.
/// Without an `Accept-Encoding` header nothing is accepted: RFC 9110 allows any coding then, but
/// old clients that send none are the ones that cannot decode.
pub fn rank(headers: &HeaderMap, offered: &[Encoding]) -> Ranked {
    // (q in thousandths, position in `offered`) for each offered encoding the client accepts.
    let mut accepted: [Option<(u16, usize, Encoding)>; Encoding::ALL.len()] =
        [None; Encoding::ALL.len()];
    for (position, encoding) in offered.iter().enumerate().take(accepted.len()) {
        let q = qvalue_for(headers, *encoding);
        if q > 0 {
            accepted[position] = Some((q, position, *encoding));
        }
    }
    // Highest q first, then the server's order. Three items: no allocation.
    accepted.sort_by_key(|item| match item {
        Some((q, position, _)) => (0, u16::MAX - q, *position),
        None => (1, 0, 0),
    });
    Ranked {
        items: accepted.map(|item| item.map(|(_, _, encoding)| encoding)),
    }
}

/// The q-value (0 to 1000) the request gives `encoding`: its own entry, else `*`'s, else 0.
fn qvalue_for(headers: &HeaderMap, encoding: Encoding) -> u16 {
    let mut own = None;
    let mut any = None;
    let entries = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for entry in entries {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        if coding.is_empty() {
            continue;
        }
        let Some(q) = entry_qvalue(parts) else {
            // A malformed q-value: the entry is ignored rather than guessed at.
            continue;
        };
        if coding == "*" {
            any = Some(any.map_or(q, |seen: u16| seen.max(q)));
        } else if encoding.is_named(coding) {
            own = Some(own.map_or(q, |seen: u16| seen.max(q)));
        }
    }
    own.or(any).unwrap_or(0)
}

/// The `q` parameter among an entry's parameters (1000 when absent); `None` when malformed.
fn entry_qvalue<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    for parameter in parameters {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return parse_qvalue(value.trim());
        }
    }
    Some(1000)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, digit) in fraction.bytes().enumerate() {
        let scale = [100, 10, 1][i];
        thousandths += u16::from(digit - b'0') * scale;
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use Encoding::{Brotli, Gzip, Zstd};

    fn ranked(accept: Option<&str>, offered: &[Encoding]) -> Vec<Encoding> {
        let mut headers = HeaderMap::new();
        if let Some(accept) = accept {
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(accept).unwrap());
        }
        rank(&headers, offered).iter().collect()
    }

    #[test]
    fn accept_encoding_is_negotiated_by_q_value_then_server_order() {
        let all = [Zstd, Brotli, Gzip];
        let cases: &[(Option<&str>, &[Encoding], &[Encoding])] = &[
            // No header, or an empty one: nothing but identity.
            (None, &all, &[]),
            (Some(""), &all, &[]),
            (Some("identity"), &all, &[]),
            // A browser: every encoding at q=1, the server's order decides.
            (Some("gzip, deflate, br, zstd"), &all, &[Zstd, Brotli, Gzip]),
            (Some("gzip, br"), &all, &[Brotli, Gzip]),
            (Some("gzip, br"), &[Gzip, Brotli], &[Gzip, Brotli]),
            // q-values rank before the server's order.
            (Some("gzip;q=1, br;q=0.5"), &all, &[Gzip, Brotli]),
            (
                Some("br;q=0.2, gzip;q=0.8, zstd;q=0.5"),
                &all,
                &[Gzip, Zstd, Brotli],
            ),
            // q=0 refuses, in any spelling.
            (Some("gzip;q=0, br"), &all, &[Brotli]),
            (Some("gzip; q=0.000, br"), &all, &[Brotli]),
            (Some("gzip;Q=0"), &all, &[]),
            // `*` covers what is not named; a named q=0 still refuses.
            (Some("*"), &all, &[Zstd, Brotli, Gzip]),
            (Some("*;q=0.5, gzip"), &all, &[Gzip, Zstd, Brotli]),
            (Some("*, br;q=0"), &all, &[Zstd, Gzip]),
            (Some("*;q=0"), &all, &[]),
            (Some("identity;q=0, *;q=0"), &all, &[]),
            // Case, aliases and whitespace.
            (Some("GZIP"), &all, &[Gzip]),
            (Some("x-gzip"), &all, &[Gzip]),
            (Some("  br ;  q=1.0 "), &all, &[Brotli]),
            // Only what the route offers.
            (Some("zstd, br"), &[Gzip], &[]),
            // Malformed q-values ignore their entry.
            (Some("gzip;q=2, br;q=abc, zstd;q=0.5555"), &all, &[]),
            (Some("gzip;q=1.5, br"), &all, &[Brotli]),
        ];
        for (accept, offered, expected) in cases {
            assert_eq!(
                ranked(*accept, offered),
                *expected,
                "{accept:?} of {offered:?}"
            );
        }
    }

    #[test]
    fn several_accept_encoding_headers_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0.5"));
        headers.append(ACCEPT_ENCODING, HeaderValue::from_static("br"));
        let ranked = rank(&headers, &[Zstd, Brotli, Gzip]);
        assert_eq!(ranked.best(), Some(Brotli));
        assert_eq!(ranked.iter().collect::<Vec<_>>(), [Brotli, Gzip]);
    }

    #[test]
    fn qvalues_parse_per_rfc_9110() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.001"), Some(1));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("0.0001"), None);
        assert_eq!(parse_qvalue("-1"), None);
        assert_eq!(parse_qvalue(""), None);
    }
}
