//! Response compression (nginx `gzip`/`brotli`, Caddy `encode`): which responses a route compresses,
//! with which encoding, and the streaming encoder; plus the negotiation that precompressed static
//! files (`file.br`, `file.zst`, `file.gz`) share.
//!
//! [`Policy`] is a route's `compress` setting. For each request, [`Policy::negotiate`] looks at the
//! request (`Accept-Encoding`, `HEAD`, `Range`) before it is forwarded; [`Policy::apply`] looks at
//! the response and, when every rule allows it, wraps the body in a streaming encoder. Never
//! compressed: responses that already have a `Content-Encoding`, `Cache-Control: no-transform`,
//! 1xx (so 101 upgrades), 204, 206 and 304, answers to `HEAD` or `Range` requests, types not
//! listed, and bodies known to be shorter than `min_length`.
//!
//! A compressed response loses `Content-Length` (it is streamed) and `Accept-Ranges`, and its
//! strong `ETag` becomes weak (`W/"…"`), as nginx does: the bytes differ from the identity
//! representation's, but the content is the same. Every response the route would compress for a
//! client that asked gets `Vary: Accept-Encoding`, whether or not this client asked.

mod encoder;
mod negotiate;
#[cfg(test)]
mod tests;

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    ETAG, RANGE, VARY,
};
use hyper::{HeaderMap, Method, Response, StatusCode};

pub use negotiate::rank;

use crate::response::ProxyBody;

/// A content coding certd can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Zstandard (RFC 8878), `zstd`.
    Zstd,
    /// Brotli (RFC 7932), `br`.
    Brotli,
    /// gzip (RFC 1952), `gzip`.
    Gzip,
}

impl Encoding {
    /// Every encoding, in the default order of preference.
    pub const ALL: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

    /// The token in `Accept-Encoding`, `Content-Encoding` and the config: `zstd`, `br`, `gzip`.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The encoding a config token names.
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|encoding| encoding.token() == token)
    }

    /// The extension of a precompressed file next to the original: `zst`, `br`, `gz`.
    pub fn extension(self) -> &'static str {
        match self {
            Encoding::Zstd => "zst",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gz",
        }
    }

    /// Whether an `Accept-Encoding` coding names this encoding (case-insensitive; `x-gzip` is
    /// gzip, RFC 9110 §8.4.1.3).
    fn is_named(self, coding: &str) -> bool {
        coding.eq_ignore_ascii_case(self.token())
            || (self == Encoding::Gzip && coding.eq_ignore_ascii_case("x-gzip"))
    }
}

/// Compression levels, one per encoding (their scales differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// gzip, 1 (fastest) to 9 (smallest); default 5, like Caddy's `encode gzip`.
    pub gzip: u8,
    /// Brotli quality, 0 to 11; default 4, a level meant for compressing on the fly (11 is for
    /// precompressing files).
    pub brotli: u8,
    /// zstd, 1 to 19; default 3, zstd's own default.
    pub zstd: u8,
}

impl Default for Levels {
    fn default() -> Self {
        Self {
            gzip: 5,
            brotli: 4,
            zstd: 3,
        }
    }
}

/// The media types compressed by default: text and the text-like formats of the web (Caddy's
/// `encode` list, plus fonts that are not already compressed). Images other than SVG, audio,
/// video, archives, `woff`/`woff2` and PDFs are compressed already and are left alone.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/*",
    "application/javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/atom+xml",
    "application/rss+xml",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

/// The default `min_length`: shorter bodies gain too little to be worth a codec (Caddy's 512).
pub const DEFAULT_MIN_LENGTH: u64 = 512;

/// A route's `compress` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The encodings offered, in the server's order of preference (at most one of each).
    pub encodings: Vec<Encoding>,
    /// Media types compressed, lower-case: `type/subtype`, or `type/*` for the whole type.
    pub types: Vec<String>,
    /// Bodies whose `Content-Length` is below this are sent as they are.
    pub min_length: u64,
    /// The level of each encoding.
    pub levels: Levels,
}

impl Default for Policy {
    /// `encode zstd br gzip` on [`DEFAULT_TYPES`], from [`DEFAULT_MIN_LENGTH`] bytes.
    fn default() -> Self {
        Self {
            encodings: Encoding::ALL.to_vec(),
            types: DEFAULT_TYPES.iter().map(|&t| t.to_owned()).collect(),
            min_length: DEFAULT_MIN_LENGTH,
            levels: Levels::default(),
        }
    }
}

/// What the request allows, decided before it is forwarded (the request is consumed then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// `HEAD` or `Range`: the response is passed on untouched.
    Untouched,
    /// The client accepts none of the offered encodings: sent as it is, with `Vary`.
    Identity,
    /// Compress with this encoding, if the response allows it.
    Encode(Encoding),
}

impl Policy {
    /// What `method` and `headers` of a request allow.
    pub fn negotiate(&self, method: &Method, headers: &HeaderMap) -> Negotiated {
        // A HEAD answer has no body to compress; a range is of the identity representation.
        if method == Method::HEAD || headers.contains_key(RANGE) {
            return Negotiated::Untouched;
        }
        match rank(headers, &self.encodings).best() {
            Some(encoding) => Negotiated::Encode(encoding),
            None => Negotiated::Identity,
        }
    }

    /// `response`, compressed if `negotiated` and the response allow it (see the module docs).
    pub fn apply(
        &self,
        negotiated: Negotiated,
        mut response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        if negotiated == Negotiated::Untouched
            || response.body().is_end_stream()
            || !self.compressible(response.status(), response.headers())
        {
            return response;
        }
        add_vary(response.headers_mut());
        let Negotiated::Encode(encoding) = negotiated else {
            return response;
        };
        let headers = response.headers_mut();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
        headers.remove(CONTENT_LENGTH);
        headers.remove(ACCEPT_RANGES);
        weaken_etag(headers);
        let codec = encoder::codec(encoding, self.levels);
        response.map(|body| encoder::CompressedBody::new(body, codec).boxed())
    }

    /// Whether a response with `status` and `headers` may be compressed by this policy.
    pub fn compressible(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return false;
        }
        if headers.contains_key(CONTENT_ENCODING) || has_no_transform(headers) {
            return false;
        }
        let length = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if length.is_some_and(|length| length < self.min_length.max(1)) {
            return false;
        }
        headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|content_type| self.type_listed(content_type))
    }

    /// Whether the media type of a `Content-Type` value is one of [`Policy::types`].
    fn type_listed(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        self.types
            .iter()
            .any(|listed| match listed.strip_suffix('*') {
                Some(family) => media
                    .get(..family.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(family)),
                None => media.eq_ignore_ascii_case(listed),
            })
    }
}

/// Whether `Cache-Control` forbids changing the body (`no-transform`, RFC 9111 §5.2.2.6).
fn has_no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
}

/// Adds `Vary: Accept-Encoding` unless `Vary` already says so (or is `*`).
pub fn add_vary(headers: &mut HeaderMap) {
    let covered = headers
        .get_all(VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|field| field == "*" || field.eq_ignore_ascii_case("accept-encoding"));
    if !covered {
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Makes a strong `ETag` weak: the compressed bytes are not the identity representation's.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = Vec::with_capacity(etag.len() + 2);
    weak.extend_from_slice(b"W/");
    weak.extend_from_slice(etag.as_bytes());
    match HeaderValue::from_bytes(&weak) {
        Ok(weak) => {
            headers.insert(ETAG, weak);
        }
        Err(_) => {
            headers.remove(ETAG);
        }
    }
}
