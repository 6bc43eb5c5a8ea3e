//! Static files for `root` routes: mapping a request path to a file under the root without ever
//! leaving it, content types, validators (`ETag`, `Last-Modified`, 304), single byte ranges (206,
//! 416), and streaming the file from disk.
//!
//! Paths follow nginx's `root` directive: the request's whole path is appended to the root, so with a
//! route `/static/` and root `/srv/www`, `/static/a.css` is `/srv/www/static/a.css`. A directory is
//! answered with the first of its route's `index` names it holds (nginx `index`, default
//! `index.html`) and is 403 when it holds none (nginx without `autoindex`), and a directory named
//! without its trailing slash is redirected (301) to the slashed path, as nginx does. Routes with
//! `precompressed = true` send `file.br`, `file.zst` or `file.gz` in place of `file` to clients
//! that accept it.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{
    HeaderValue, ACCEPT_RANGES, ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE,
};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};
use tracing::{debug, warn};

use crate::response::{empty_body, status_response, ProxyBody};

/// How much of a file is read per body chunk.
const CHUNK: usize = 64 * 1024;

/// Answers a `GET` or `HEAD` request for a file under `root` (nginx `root` semantics).
///
/// The file is found from the request's full, still percent-encoded path (`request.uri.path()`, not
/// stripped of the route's prefix). Requests that try to leave `root` are refused: `..` or `.`
/// segments (also percent-encoded), encoded `/` or `\`, NUL bytes and invalid UTF-8 get 400, and a
/// symlink that resolves outside `root` gets 404, as does anything missing or not a regular file.
/// Unless `allow_dotfiles`, a path with a segment starting with `.` (`/.env`, `/.git/config`) gets
/// 404 too, except the `/.well-known/` folder itself. Other methods get 405. The file is streamed,
/// never read whole.
pub async fn serve(root: &Path, request: &Parts, allow_dotfiles: bool) -> Response<ProxyBody> {
    serve_with(root, request, allow_dotfiles, false).await
}

/// [`serve`], and with `precompressed` a `file.br` / `file.zst` / `file.gz` next to the file is
/// sent in its place to clients that accept that encoding (not for `Range` requests, which get
/// the file itself), with `Vary: Accept-Encoding` on every answer about a file.
pub async fn serve_with(
    root: &Path,
    request: &Parts,
    allow_dotfiles: bool,
    precompressed: bool,
) -> Response<ProxyBody> {
    serve_indexed(root, request, allow_dotfiles, precompressed, DEFAULT_INDEX).await
}

/// The index names of a route that does not set `index` (nginx's default).
pub const DEFAULT_INDEX: &[&str] = &["index.html"];

/// [`serve_with`], a directory (`/dir/`) answered with the first of `index` that it holds.
pub async fn serve_indexed<S: AsRef<str>>(
    root: &Path,
    request: &Parts,
    allow_dotfiles: bool,
    precompressed: bool,
    index: &[S],
) -> Response<ProxyBody> {
    let head = request.method == Method::HEAD;
    if request.method != Method::GET && !head {
        let mut response = status_response(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let raw_path = request.uri.path();
    let relative = match relative_path(raw_path) {
        Ok(relative) => relative,
        Err(reason) => {
            debug!(path = raw_path, reason, "static path refused");
            return status_response(StatusCode::BAD_REQUEST);
        }
    };
    if !allow_dotfiles && is_hidden(&relative) {
        debug!(path = raw_path, "dotfile refused");
        return status_response(StatusCode::NOT_FOUND);
    }
    let file = match resolve(root, &relative, raw_path.ends_with('/'), index).await {
        Ok(Found::File(path)) => path,
        Ok(Found::Directory) => {
            let location = folder_location(raw_path, request.uri.query());
            let mut response = status_response(StatusCode::MOVED_PERMANENTLY);
            match HeaderValue::from_str(&location) {
                Ok(location) => {
                    response.headers_mut().insert(LOCATION, location);
                }
                Err(error) => {
                    debug!(path = raw_path, %error, "no Location for the folder redirect");
                }
            }
            return response;
        }
        Err(status) => return status_response(status),
    };
    let sidecar = match precompressed {
        true => precompressed::find(root, &file, &request.headers).await,
        false => None,
    };
    let sent = sidecar.as_ref().map_or(file.as_path(), |(path, _)| path);
    match send_file(sent, &request.headers, head).await {
        Ok(mut response) => {
            if precompressed {
                let encoding = sidecar.as_ref().map(|(_, encoding)| *encoding);
                precompressed::mark(&mut response, &file, encoding);
            }
            response
        }
        Err(error) => {
            warn!(path = %file.display(), %error, "cannot read static file");
            status_response(match error.kind() {
                io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            })
        }
    }
}

/// The content type for a file, from its extension (mime_guess's table, with `OVERRIDES` first);
/// `application/octet-stream` when unknown. Text types say `charset=utf-8`, as nginx does with
/// `charset utf-8`: without it browsers guess, and guess Latin-1 for most of the web's UTF-8.
pub fn content_type(path: &Path) -> HeaderValue {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    let Some(extension) = extension else {
        return HeaderValue::from_static(OCTET_STREAM);
    };
    let essence = OVERRIDES
        .iter()
        .find(|(known, _)| *known == extension)
        .map(|(_, essence)| *essence)
        .or_else(|| mime_guess::from_ext(&extension).first_raw())
        .unwrap_or(OCTET_STREAM);
    if !essence.starts_with("text/") {
        return HeaderValue::from_str(essence)
            .unwrap_or_else(|_| HeaderValue::from_static(OCTET_STREAM));
    }
    HeaderValue::from_str(&format!("{essence}; charset=utf-8"))
        .unwrap_or_else(|_| HeaderValue::from_static(OCTET_STREAM))
}

/// What a file of unknown type is sent as: browsers download it rather than render it.
const OCTET_STREAM: &str = "application/octet-stream";

/// Extensions where mime_guess's table (2.0) lags the registered type that browsers and nginx's
/// `mime.types` use; looked up before it.
const OVERRIDES: &[(&str, &str)] = &[
    // RFC 9239: JavaScript is text/javascript, modules (.mjs) included; mime_guess says
    // application/javascript for .mjs, which the HTML spec calls legacy.
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    // Source maps are JSON (mime_guess: text/plain).
    ("map", "application/json"),
    // RFC 7303 prefers application/xml; text/xml with a charset would override the document's own
    // encoding declaration.
    ("xml", "application/xml"),
    // RFC 8081 font types (mime_guess: application/font-woff, application/font-sfnt), as nginx.
    ("woff", "font/woff"),
    ("otf", "font/otf"),
];

/// The request path as a relative file path: percent-decoded, one normal component per segment.
/// Empty segments (`//`) are skipped; `.` and `..` segments and segments that decode to a separator,
/// NUL or anything but a single normal path component are refused.
pub(crate) fn relative_path(raw: &str) -> Result<PathBuf, &'static str> {
    if !raw.starts_with('/') {
        return Err("not an absolute path");
    }
    let mut relative = PathBuf::new();
    for segment in raw.split('/').filter(|segment| !segment.is_empty()) {
        let decoded = percent_decode(segment).ok_or("invalid percent-encoding")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "not UTF-8")?;
        if decoded.contains(['/', '\\', '\0']) {
            return Err("separator or NUL in a segment");
        }
        let mut components = Path::new(&decoded).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(_)), None) => relative.push(&decoded),
            _ => return Err("dot segment or special component"),
        }
    }
    Ok(relative)
}

/// Whether a (decoded, relative) path names a dotfile or goes through a dot-folder: any component
/// starting with `.`, except a first component `.well-known` (RFC 8615), which sites publish on
/// purpose (`security.txt`, ACME challenges served from disk, app links).
pub(crate) fn is_hidden(relative: &Path) -> bool {
    relative.components().enumerate().any(|(index, component)| {
        let name = component.as_os_str().as_encoded_bytes();
        name.starts_with(b".") && !(index == 0 && name == b".well-known")
    })
}

/// The `Location` of the redirect from a folder to its slashed path: the request's path with empty
/// segments merged (so it always starts with exactly one `/`: `//evil.test` must not become the
/// protocol-relative `//evil.test/`, another host), a trailing `/`, and the query.
///
/// Root-relative, so it stays on the scheme and host the client used. `raw_path` is the request's
/// path as received; its segments were already checked by [`relative_path`] (no `\`, no dot
/// segments), so nothing in it can make a browser leave the site.
fn folder_location(raw_path: &str, query: Option<&str>) -> String {
    let mut location = String::with_capacity(raw_path.len() + 2);
    for segment in raw_path.split('/').filter(|segment| !segment.is_empty()) {
        location.push('/');
        location.push_str(segment);
    }
    location.push('/');
    if let Some(query) = query {
        location.push('?');
        location.push_str(query);
    }
    location
}

/// `segment` percent-decoded (by the percent-encoding crate), or `None` when a `%` is not followed by
/// two hex digits: that crate passes such text through as it is, but a path certd cannot read the
/// same way as every other server is refused rather than guessed at.
fn percent_decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &byte)| {
        byte != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| percent_encoding::percent_decode(bytes).collect())
}

enum Found {
    /// The regular file to send (canonical path, inside the root).
    File(PathBuf),
    /// A directory requested without its trailing slash.
    Directory,
}

/// Finds the file for `relative` under `root`, following symlinks only while they stay inside it.
async fn resolve<S: AsRef<str>>(
    root: &Path,
    relative: &Path,
    trailing_slash: bool,
    index: &[S],
) -> Result<Found, StatusCode> {
    let canonical_root = tokio::fs::canonicalize(root).await.map_err(|error| {
        warn!(root = %root.display(), %error, "static root is not accessible");
        StatusCode::NOT_FOUND
    })?;
    let target = inside(&canonical_root, &root.join(relative)).await?;
    let metadata = tokio::fs::metadata(&target).await.map_err(io_status)?;
    if metadata.is_dir() {
        if !trailing_slash {
            return Ok(Found::Directory);
        }
        // nginx's `index`: the first name that is there. A folder with none of them is 403, as
        // nginx answers a folder it may not list (`autoindex off`).
        for name in index {
            // A URI entry (`/index.php$request_uri`) is no file: the index hand-off takes it.
            if name.as_ref().starts_with('/') {
                continue;
            }
            match inside(&canonical_root, &target.join(name.as_ref())).await {
                Ok(file) if tokio::fs::metadata(&file).await.is_ok_and(|m| m.is_file()) => {
                    return Ok(Found::File(file));
                }
                Ok(_) | Err(StatusCode::NOT_FOUND) => {}
                Err(status) => return Err(status),
            }
        }
        return Err(StatusCode::FORBIDDEN);
    }
    if trailing_slash {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Found::File(target))
}

/// `path` with every symlink resolved, if that is still inside `canonical_root`; 404 otherwise.
///
/// The file is opened by this canonical path, so only someone able to write inside the root could
/// swap a component for a symlink in between; that is outside what certd defends against.
async fn inside(canonical_root: &Path, path: &Path) -> Result<PathBuf, StatusCode> {
    let canonical = tokio::fs::canonicalize(path).await.map_err(io_status)?;
    if !canonical.starts_with(canonical_root) {
        warn!(path = %path.display(), resolved = %canonical.display(), "symlink leaves the static root");
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(canonical)
}

fn io_status(error: io::Error) -> StatusCode {
    match error.kind() {
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::NOT_FOUND,
    }
}

/// Sends the regular file at `path`: 200, 206, 304 or 416 depending on the request's validators and
/// range.
async fn send_file(
    path: &Path,
    headers: &HeaderMap,
    head: bool,
) -> io::Result<Response<ProxyBody>> {
    let mut file = tokio::fs::File::open(path).await?;
    // Metadata of the open file, not the path, so the validators describe what is sent.
    let metadata = file.metadata().await?;
    if !metadata.is_file() {
        return Ok(status_response(StatusCode::NOT_FOUND));
    }
    let size = metadata.len();
    let modified = metadata.modified().ok();
    let validators = Validators::new(size, modified);

    let mut response = Response::new(empty_body());
    let response_headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&validators.etag) {
        response_headers.insert(ETAG, etag);
    }
    if let Some(last_modified) = validators.last_modified_header() {
        response_headers.insert(LAST_MODIFIED, last_modified);
    }
    if validators.not_modified(headers) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(CONTENT_TYPE, content_type(path));

    let range = match headers.get(RANGE).and_then(|value| value.to_str().ok()) {
        Some(range) if !head && validators.if_range_allows(headers) => parse_range(range, size),
        _ => ByteRange::Full,
    };
    let (start, length) = match range {
        ByteRange::Full => (0, size),
        ByteRange::Partial { start, end } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let content_range = format!("bytes {start}-{end}/{size}");
            if let Ok(content_range) = HeaderValue::from_str(&content_range) {
                response.headers_mut().insert(CONTENT_RANGE, content_range);
            }
            (start, end - start + 1)
        }
        ByteRange::Unsatisfiable => {
            let mut response = status_response(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(content_range) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(CONTENT_RANGE, content_range);
            }
            return Ok(response);
        }
    };
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    if !head && length > 0 {
        file.seek(io::SeekFrom::Start(start)).await?;
        *response.body_mut() = FileBody::new(file.take(length)).boxed();
    }
    Ok(response)
}

/// A file's `ETag` and `Last-Modified`, and the conditional-request checks against them.
struct Validators {
    /// Strong: `"<size hex>-<mtime nanoseconds hex>"`.
    etag: String,
    /// Seconds since the epoch, the precision of HTTP dates.
    modified_secs: Option<u64>,
}

impl Validators {
    fn new(size: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |duration| duration.as_nanos());
        Self {
            etag: format!("\"{size:x}-{nanos:x}\""),
            modified_secs: since_epoch.map(|duration| duration.as_secs()),
        }
    }

    fn last_modified_header(&self) -> Option<HeaderValue> {
        let time = UNIX_EPOCH + std::time::Duration::from_secs(self.modified_secs?);
        HeaderValue::from_str(&httpdate::fmt_http_date(time)).ok()
    }

    /// Whether a `GET`/`HEAD` is answered with 304 (RFC 9110 §13.2.2): `If-None-Match` (weak
    /// comparison) decides if present, else `If-Modified-Since`.
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        if headers.contains_key(IF_NONE_MATCH) {
            return headers
                .get_all(IF_NONE_MATCH)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .map(str::trim)
                .any(|tag| tag == "*" || tag.trim_start_matches("W/") == self.etag);
        }
        let since = headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| httpdate::parse_http_date(value).ok())
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        matches!((self.modified_secs, since), (Some(modified), Some(since)) if modified <= since.as_secs())
    }

    /// Whether `If-Range`, if present, still matches (strong `ETag` comparison or exact date), so
    /// that a range of the current file may be sent.
    fn if_range_allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(IF_RANGE).and_then(|value| value.to_str().ok()) else {
            return !headers.contains_key(IF_RANGE);
        };
        let value = value.trim();
        if value.starts_with('"') || value.starts_with("W/") {
            return value == self.etag;
        }
        let date = httpdate::parse_http_date(value)
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        matches!((self.modified_secs, date), (Some(modified), Some(date)) if modified == date.as_secs())
    }
}

/// What to send of a file, given a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// The whole file: no usable range. Invalid syntax, overlapping ranges and several
    /// satisfiable ranges (certd sends no `multipart/byteranges`) are ignored, as RFC 9110 §14.2
    /// allows and nginx does for ranges it will not serve.
    Full,
    /// The bytes `start..=end`, within the file.
    Partial { start: u64, end: u64 },
    /// A valid range set of which no range overlaps the file: 416.
    Unsatisfiable,
}

/// Parses a `Range` header value (`bytes=a-b`, `bytes=a-`, `bytes=-n`, or a list of them) against a
/// file of `size` bytes, with http-range-header's strict RFC 9110 parser.
///
/// Of a list, ranges beyond the end of the file are dropped (as nginx does); when exactly one is
/// left it is sent as a single part, when none is left the answer is 416.
fn parse_range(value: &str, size: u64) -> ByteRange {
    use http_range_header::RangeUnsatisfiableError;
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return ByteRange::Full;
    };
    match parsed.validate(size).as_deref() {
        Ok([single]) => ByteRange::Partial {
            start: *single.start(),
            end: *single.end(),
        },
        // An empty file asked for a suffix (`bytes=-5`): no byte can be sent; 416, as before.
        Ok([]) => ByteRange::Unsatisfiable,
        Ok(_) => ByteRange::Full,
        Err(RangeUnsatisfiableError::Unsatisfiable) => ByteRange::Unsatisfiable,
        Err(_) => ByteRange::Full,
    }
}

/// A response body that streams a (limited) file in chunks of up to [`CHUNK`] bytes.
struct FileBody {
    file: tokio::io::Take<tokio::fs::File>,
    buffer: Box<[u8]>,
}

impl FileBody {
    fn new(file: tokio::io::Take<tokio::fs::File>) -> Self {
        let size = usize::try_from(file.limit()).unwrap_or(CHUNK).min(CHUNK);
        Self {
            file,
            buffer: vec![0; size].into_boxed_slice(),
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.file.limit() == 0 {
            return Poll::Ready(None);
        }
        let mut buffer = ReadBuf::new(&mut this.buffer);
        match Pin::new(&mut this.file).poll_read(cx, &mut buffer) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            // The file shrank while being sent: the promised Content-Length cannot be met.
            Poll::Ready(Ok(())) if buffer.filled().is_empty() => Poll::Ready(Some(Err(
                io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent"),
            ))),
            Poll::Ready(Ok(())) => {
                let chunk = Bytes::copy_from_slice(buffer.filled());
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.file.limit() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.file.limit())
    }
}

/// Whether [`serve`] would find a file for `raw_path` under `root` (for `try_files`): the same
/// refusals apply (bad segments, dotfiles unless `allow_dotfiles`, symlinks out of the root), and a
/// path ending in `/` is there when its folder's `index.html` is.
pub async fn exists(root: &Path, raw_path: &str, allow_dotfiles: bool) -> bool {
    exists_indexed(root, raw_path, allow_dotfiles, DEFAULT_INDEX).await
}

/// [`exists`], a path ending in `/` being there when its folder holds one of `index`.
pub async fn exists_indexed<S: AsRef<str>>(
    root: &Path,
    raw_path: &str,
    allow_dotfiles: bool,
    index: &[S],
) -> bool {
    let Ok(relative) = relative_path(raw_path) else {
        return false;
    };
    if !allow_dotfiles && is_hidden(&relative) {
        return false;
    }
    matches!(
        resolve(root, &relative, raw_path.ends_with('/'), index).await,
        Ok(Found::File(_))
    )
}

mod precompressed;
#[cfg(test)]
mod tests;
