//! The one normalised request path: what routes are matched on, what static roots look files up by,
//! and what upstreams receive, so that none of them can disagree about which resource a request
//! names.
//!
//! The rules are nginx's (which normalises the URI before `location` matching) and RFC 3986's:
//!
//! 1. percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`, §2.3) are decoded, so `%2e` is a
//!    dot and `%61` is `a`; every other percent-encoding is kept exactly as written (nothing is
//!    re-encoded, so an upstream sees the bytes the client chose);
//! 2. dot segments are resolved (§5.2.4), after that decoding, so `/api/%2e%2e/admin` is `/admin`;
//! 3. repeated slashes are merged (nginx `merge_slashes on`);
//! 4. refused outright: an encoded `/` (`%2F`), which would let one segment act as two in an upstream
//!    that decodes it; an encoded NUL (`%00`); a `%` not followed by two hex digits; and any path
//!    that climbs above the root (`/..`), which has no meaning here but an attack.
//!
//! The query is not part of the path and is never touched.

use std::fmt;

/// A request path after [`normalise`]: absolute, no dot segments, no empty segments, no encoded
/// unreserved characters. Only [`normalise`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath(String);

impl NormalPath {
    /// The path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a request path is refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefused {
    /// `%2F`: a `/` inside a segment.
    #[error("the path has an encoded `/` (%2F)")]
    EncodedSlash,
    /// `%00`.
    #[error("the path has an encoded NUL (%00)")]
    EncodedNul,
    /// A `%` not followed by two hex digits.
    #[error("the path has a `%` that is not followed by two hex digits")]
    BadPercentEncoding,
    /// More `..` segments than there are segments above them.
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

/// The normalised form of `raw`, a request target's path as received (still percent-encoded, without
/// the query); see the module documentation for the rules.
///
/// A target that is not a path (the `*` of `OPTIONS *`, or an absolute-form target without one) is
/// taken as `/`, which is what an upstream is asked for then.
pub fn normalise(raw: &str) -> Result<NormalPath, PathRefused> {
    if !raw.starts_with('/') {
        return Ok(NormalPath("/".to_owned()));
    }
    // The common case, a path that is already normal, costs one scan and one copy.
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Ok(NormalPath(raw.to_owned()));
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    // Whether the result ends in `/`: the input did, or its last segment was `.` or `..` (RFC 3986
    // §5.2.4 turns `/a/b/..` into `/a/`).
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            // An empty segment is a repeated (or the final) slash: merged away.
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathRefused::AboveRoot);
                }
            }
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || path.is_empty() {
        path.push('/');
    }
    Ok(NormalPath(path))
}

/// `raw` with every `%XX` that encodes an unreserved character replaced by that character; other
/// encodings are kept as written. `%2F` and `%00` are refused here, before anything could act on
/// them.
fn decode_unreserved(raw: &str) -> Result<String, PathRefused> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte != b'%' {
            // `raw` is a `&str` and `%` is ASCII, so copying up to the next `%` keeps UTF-8 intact.
            let next = raw[i..].find('%').map_or(raw.len(), |at| i + at);
            out.push_str(&raw[i..next]);
            i = next;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathRefused::BadPercentEncoding);
        };
        let decoded = high * 16 + low;
        match decoded {
            b'/' => return Err(PathRefused::EncodedSlash),
            0 => return Err(PathRefused::EncodedNul),
            byte if is_unreserved(byte) => out.push(char::from(byte)),
            _ => out.push_str(&raw[i..i + 3]),
        }
        i += 3;
    }
    Ok(out)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// RFC 3986 §2.3 `unreserved`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        use PathRefused::*;
        let cases: [(&str, Result<&str, PathRefused>); 37] = [
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            // Dot segments, plain and encoded in either case.
            ("/api/../admin", Ok("/admin")),
            ("/api/%2e%2e/admin", Ok("/admin")),
            ("/api/%2E%2E/admin", Ok("/admin")),
            ("/api/.%2e/admin", Ok("/admin")),
            ("/x/../api/secret", Ok("/api/secret")),
            ("/a/./b/", Ok("/a/b/")),
            ("/a/%2e/b", Ok("/a/b")),
            ("/a/b/..", Ok("/a/")),
            ("/a/b/.", Ok("/a/b/")),
            ("/a/..", Ok("/")),
            ("/.", Ok("/")),
            // `...` and dots inside a segment are names, not dot segments.
            ("/a/.../b", Ok("/a/.../b")),
            ("/a/..b/.c", Ok("/a/..b/.c")),
            // Slashes merged, like nginx.
            ("//a//b", Ok("/a/b")),
            ("//", Ok("/")),
            ("/a///", Ok("/a/")),
            ("//name", Ok("/name")),
            // Unreserved characters decoded; everything else kept as written.
            ("/%61%62c", Ok("/abc")),
            ("/%7Euser/%2D%5F", Ok("/~user/-_")),
            ("/a%20b/%3F%23", Ok("/a%20b/%3F%23")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("/%5c..%5csecret", Ok("/%5c..%5csecret")),
            ("/%252e%252e/x", Ok("/%252e%252e/x")),
            ("/ünï", Ok("/ünï")),
            // Refused.
            ("/a%2Fb", Err(EncodedSlash)),
            ("/a%2fb", Err(EncodedSlash)),
            ("/%2e%2e%2fetc", Err(EncodedSlash)),
            ("/ok.txt%00/x", Err(EncodedNul)),
            ("/..", Err(AboveRoot)),
            ("/a/../..", Err(AboveRoot)),
            ("/%2e%2e/etc/passwd", Err(AboveRoot)),
            ("/a%", Err(BadPercentEncoding)),
            ("/a%2", Err(BadPercentEncoding)),
            ("/a%zz", Err(BadPercentEncoding)),
        ];
        for (raw, expected) in cases {
            let normalised = normalise(raw);
            assert_eq!(
                normalised.as_ref().map(NormalPath::as_str),
                expected.as_ref().map(|path| *path),
                "{raw}"
            );
        }
    }

    #[test]
    fn targets_that_are_not_paths_are_the_root() {
        assert_eq!(normalise("*").map(|path| path.0), Ok("/".to_owned()));
        assert_eq!(normalise("").map(|path| path.0), Ok("/".to_owned()));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in ["/api/%2e%2e/admin", "//a//b/", "/a%20b/./c/..", "/%7E/x"] {
            let once = normalise(raw).expect(raw);
            let twice = normalise(once.as_str()).expect(raw);
            assert_eq!(once, twice, "{raw}");
        }
    }
}
