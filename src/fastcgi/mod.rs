//! FastCGI routes: PHP behind php-fpm, like Caddy's `php_fastcgi` and nginx's `fastcgi_pass` with
//! `snippets/fastcgi-php.conf`.
//!
//! A route with `fastcgi = "unix:/run/php/php8.2-fpm.sock"` (or `"127.0.0.1:9000"`) and a document
//! `root` decides per request ([`script`]) whether to run a PHP script, serve a static file or answer
//! 404, then speaks FastCGI to the server: one connection per request, `BEGIN_REQUEST`, the CGI
//! environment ([`params`]), the body as `STDIN`, and the script's `STDOUT` read back as a CGI
//! response ([`response`]) whose body is streamed to the client. `STDERR` lines are logged.
//!
//! The client is hand-written ([`record`]): the protocol is six record types, and the crates
//! available either buffer the whole response or want the body as an `AsyncRead`, and none caps the
//! size of the CGI head or lets certd put its own deadline on each read.
//!
//! Deadlines: connecting has `[limits] upstream_connect_timeout` (504 past it; 502 when nothing
//! listens), and every read from the server has `[limits] upstream_response_timeout` (504 before the
//! head; a cut response after). The head is at most 64 KiB (502 past it).

pub mod params;
pub mod record;
pub mod response;
pub mod script;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Body, Frame};
use hyper::header::CONTENT_LENGTH;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::response::{empty_body, status_response, ProxyBody};
use crate::static_files;

use self::script::{Decision, Script};

/// The most a script's CGI head (status and headers) may take.
const HEAD_LIMIT: usize = 64 * 1024;
/// The most of a request body without `Content-Length` (chunked HTTP/1.1, HTTP/2 without the
/// header) that is buffered to learn its length, which PHP needs (`CONTENT_LENGTH`), as nginx
/// buffers it. Past it: 413.
const UNSIZED_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Where the FastCGI server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastcgiAddress {
    /// `unix:/run/php/php-fpm.sock`.
    Unix(PathBuf),
    /// `127.0.0.1:9000` (a host name is resolved at each connect).
    Tcp(String),
}

impl FastcgiAddress {
    /// Parses `unix:PATH` (an absolute path) or `HOST:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{text:?}: the socket path after `unix:` must be absolute"
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let port = text
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok())
            .filter(|port| *port != 0);
        match port {
            Some(_) if !text.contains('/') => Ok(Self::Tcp(text.to_owned())),
            _ => Err(format!(
                "{text:?} is not `unix:/path/to/php-fpm.sock` or `host:port` (e.g. `127.0.0.1:9000`)"
            )),
        }
    }
}

impl std::fmt::Display for FastcgiAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(address) => f.write_str(address),
        }
    }
}

/// A FastCGI route: where the server listens and the document root it runs scripts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastcgiTarget {
    /// The FastCGI server.
    pub address: FastcgiAddress,
    /// The document root (`root`), shared with php-fpm: `SCRIPT_FILENAME` is a path below it.
    pub root: PathBuf,
    /// The script that answers for a folder (`fastcgi_index`, default `index.php`).
    pub index: String,
    /// The script for paths that name nothing (`front_controller`, default `/index.php`); `None`
    /// answers them 404.
    pub front_controller: Option<String>,
    /// Extra parameters (nginx `fastcgi_param NAME VALUE` with a literal value), in order; never
    /// one certd sets itself (see [`params::is_own`]).
    pub params: Vec<(String, String)>,
}

/// certd's own address on a request's connection (`SERVER_ADDR`, `SERVER_PORT`), put in the
/// request's extensions by the HTTPS listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerAddr(pub SocketAddr);

/// Deadlines for talking to the FastCGI server.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For connecting.
    pub connect: Duration,
    /// For each read (and each write of the body).
    pub read: Duration,
}

/// A FastCGI route's answer.
pub enum Answer {
    /// The script's own response (its 404 is its own, not replaced by error pages).
    Script(Response<ProxyBody>),
    /// An answer certd made itself (a static file, 404, 502, …), which error pages may replace.
    Local(Response<ProxyBody>),
}

/// The bodies a request to a FastCGI route can have (hyper's `Incoming`; others in tests).
pub trait RequestBodyStream: Body<Data = Bytes, Error = Self::E> + Send + Unpin + 'static {
    /// The body's error.
    type E: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<B> RequestBodyStream for B
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type E = B::Error;
}

/// The names a folder request tries, in order: the route's `index` (nginx's index module), with
/// the FastCGI index script (`fastcgi_index`) first when none of them is a script, so a route left
/// at the default `index.html` still runs `wp-admin/index.php`.
fn folder_index<'a>(target: &'a FastcgiTarget, route_index: &'a [String]) -> Vec<&'a str> {
    // A URI entry (`/index.php$request_uri`) names no file in the folder.
    let mut names: Vec<&str> = route_index
        .iter()
        .map(String::as_str)
        .filter(|name| !name.starts_with('/'))
        .collect();
    let has_script = names
        .iter()
        .any(|name| script::split_php(&format!("/{name}")).is_some());
    if !has_script {
        names.insert(0, target.index.as_str());
    }
    names
}

/// Answers `request` (its path already normalised) for the route `target`, whose `index` names
/// are `route_index`.
pub async fn serve<B: RequestBodyStream>(
    target: &FastcgiTarget,
    route_index: &[String],
    request: Request<B>,
    connection: params::Connection,
    deadlines: Deadlines,
) -> Answer {
    let decision = script::decide(
        &target.root,
        request.uri().path(),
        &folder_index(target, route_index),
        target.front_controller.as_deref(),
    )
    .await;
    let script = match decision {
        Decision::Script(script) => script,
        Decision::Static => {
            let (parts, _body) = request.into_parts();
            return Answer::Local(static_files::serve(&target.root, &parts, false).await);
        }
        Decision::StaticAt(path) => {
            let (mut parts, _body) = request.into_parts();
            let Ok(uri) = hyper::Uri::builder().path_and_query(path.as_str()).build() else {
                return Answer::Local(status_response(StatusCode::BAD_REQUEST));
            };
            parts.uri = uri;
            return Answer::Local(static_files::serve(&target.root, &parts, false).await);
        }
        Decision::Forbidden => return Answer::Local(status_response(StatusCode::FORBIDDEN)),
        Decision::NotFound => return Answer::Local(status_response(StatusCode::NOT_FOUND)),
        Decision::BadRequest => return Answer::Local(status_response(StatusCode::BAD_REQUEST)),
    };
    match run(target, &script, request, connection, deadlines).await {
        Ok(response) => Answer::Script(response),
        Err(status) => Answer::Local(status_response(status)),
    }
}

/// Something certd can read FastCGI records from and write them to.
trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// Runs `script`; `Err` is the status certd answers with itself.
async fn run<B: RequestBodyStream>(
    target: &FastcgiTarget,
    script: &Script,
    request: Request<B>,
    connection: params::Connection,
    deadlines: Deadlines,
) -> Result<Response<ProxyBody>, StatusCode> {
    let (parts, body) = request.into_parts();
    let head_only = parts.method == Method::HEAD;
    let (body, content_length) = request_body(&parts, body).await?;
    let address = &target.address;

    let mut stream = match tokio::time::timeout(deadlines.connect, connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            warn!(fastcgi = %address, %error, "cannot connect to the FastCGI server");
            return Err(StatusCode::BAD_GATEWAY);
        }
        Err(_) => {
            warn!(fastcgi = %address, "FastCGI connect timed out");
            return Err(StatusCode::GATEWAY_TIMEOUT);
        }
    };

    let mut out = BytesMut::with_capacity(4096);
    record::begin_request(&mut out);
    let environment = params::encode(
        &parts,
        script,
        &target.root,
        connection,
        content_length,
        &target.params,
    );
    record::encode_stream(&mut out, record::kind::PARAMS, &environment);
    record::encode(&mut out, record::kind::PARAMS, b"");
    // A failed write is not fatal yet: the server may have answered (and closed) before reading
    // the whole body, e.g. PHP over `post_max_size`; its answer is read below.
    if let Err(error) = send_stdin(&mut stream, out, body, deadlines.read).await {
        debug!(fastcgi = %address, script = %script.name, %error, "request not sent in full");
    }

    let mut head = Vec::new();
    let (status, headers, rest) = loop {
        let record = match read_record(&mut stream, deadlines.read).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                warn!(fastcgi = %address, script = %script.name, "FastCGI server closed before a response head");
                return Err(StatusCode::BAD_GATEWAY);
            }
            Err(ReadError::TimedOut) => {
                warn!(fastcgi = %address, script = %script.name, "FastCGI server did not answer in time");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
            Err(ReadError::Io(error)) => {
                warn!(fastcgi = %address, script = %script.name, %error, "FastCGI read failed");
                return Err(StatusCode::BAD_GATEWAY);
            }
        };
        match record.kind {
            record::kind::STDOUT => {
                head.extend_from_slice(&record.content);
                if let Some((end, body_start)) = response::find_end(&head) {
                    let (status, headers) = response::parse(&head[..end]).map_err(|error| {
                        warn!(script = %script.name, %error, "bad CGI response head");
                        StatusCode::BAD_GATEWAY
                    })?;
                    break (status, headers, Bytes::copy_from_slice(&head[body_start..]));
                }
                if head.len() > HEAD_LIMIT {
                    warn!(script = %script.name, limit = HEAD_LIMIT, "CGI response head too large");
                    return Err(StatusCode::BAD_GATEWAY);
                }
            }
            record::kind::STDERR => log_stderr(&script.name, &record.content),
            record::kind::END_REQUEST => {
                warn!(script = %script.name, status = ?record.protocol_status(), "FastCGI request ended without a response head");
                return Err(
                    if record.protocol_status() == Some(record::REQUEST_COMPLETE) {
                        StatusCode::BAD_GATEWAY
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    },
                );
            }
            _ => {}
        }
    };

    let mut response = Response::new(if head_only {
        empty_body()
    } else {
        response_body(stream, rest, script.name.clone(), deadlines.read)
    });
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The request body, and its length for `CONTENT_LENGTH`: from the header when it has one (the body
/// is then streamed), otherwise buffered up to [`UNSIZED_BODY_LIMIT`].
async fn request_body<B: RequestBodyStream>(
    parts: &Parts,
    body: B,
) -> Result<(RequestBody<B>, Option<u64>), StatusCode> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared {
        return Ok((RequestBody::Stream(body), Some(length)));
    }
    if body.is_end_stream() {
        return Ok((RequestBody::Whole(Bytes::new()), None));
    }
    match Limited::new(body, UNSIZED_BODY_LIMIT).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let length = u64::try_from(bytes.len()).ok();
            Ok((RequestBody::Whole(bytes), length))
        }
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Err(error) => {
            debug!(%error, "request body not received");
            Err(StatusCode::BAD_REQUEST)
        }
    }
}

enum RequestBody<B> {
    Stream(B),
    Whole(Bytes),
}

async fn connect(address: &FastcgiAddress) -> std::io::Result<Box<dyn Io>> {
    Ok(match address {
        FastcgiAddress::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        FastcgiAddress::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address.as_str()).await?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
    })
}

/// Writes `start` (the begin and params records), then the body as `STDIN` records and the empty
/// one that ends it; each write has `deadline`.
async fn send_stdin<B: RequestBodyStream>(
    stream: &mut Box<dyn Io>,
    start: BytesMut,
    body: RequestBody<B>,
    deadline: Duration,
) -> std::io::Result<()> {
    write(stream, start, deadline).await?;
    match body {
        RequestBody::Whole(bytes) => {
            let mut out = BytesMut::with_capacity(bytes.len() + 64);
            record::encode_stream(&mut out, record::kind::STDIN, &bytes);
            write(stream, out, deadline).await?;
        }
        RequestBody::Stream(mut body) => {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| std::io::Error::other(error.into()))?;
                if let Ok(data) = frame.into_data() {
                    let mut out = BytesMut::with_capacity(data.len() + 64);
                    record::encode_stream(&mut out, record::kind::STDIN, &data);
                    write(stream, out, deadline).await?;
                }
            }
        }
    }
    let mut end = BytesMut::with_capacity(8);
    record::encode(&mut end, record::kind::STDIN, b"");
    write(stream, end, deadline).await?;
    stream.flush().await
}

async fn write(
    stream: &mut Box<dyn Io>,
    data: BytesMut,
    deadline: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(deadline, stream.write_all(&data)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

enum ReadError {
    TimedOut,
    Io(std::io::Error),
}

async fn read_record(
    stream: &mut Box<dyn Io>,
    deadline: Duration,
) -> Result<Option<record::Record>, ReadError> {
    match tokio::time::timeout(deadline, record::read(stream)).await {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(error)) => Err(ReadError::Io(error)),
        Err(_) => Err(ReadError::TimedOut),
    }
}

/// Logs a script's error output, one warning per line, as nginx's error log does.
fn log_stderr(script: &str, content: &[u8]) {
    for line in String::from_utf8_lossy(content).lines() {
        let line = line.trim_end();
        if !line.is_empty() {
            warn!(script, stderr = line, "PHP wrote to stderr");
        }
    }
}

/// The rest of the script's `STDOUT` as a body: `first` (what came with the head), then each
/// `STDOUT` record until `END_REQUEST`. A server that stops answering or closes without
/// `END_REQUEST` cuts the body with an error, so the client sees a broken response, not a short one.
fn response_body(
    stream: Box<dyn Io>,
    first: Bytes,
    script: String,
    deadline: Duration,
) -> ProxyBody {
    struct State {
        stream: Box<dyn Io>,
        first: Option<Bytes>,
        script: String,
        deadline: Duration,
        done: bool,
    }
    let state = State {
        stream,
        first: (!first.is_empty()).then_some(first),
        script,
        deadline,
        done: false,
    };
    let frames = futures_util::stream::unfold(state, |mut state| async move {
        if let Some(first) = state.first.take() {
            return Some((Ok(Frame::data(first)), state));
        }
        if state.done {
            return None;
        }
        loop {
            let cut = |reason: &str| std::io::Error::other(format!("FastCGI response {reason}"));
            let record = match read_record(&mut state.stream, state.deadline).await {
                Ok(Some(record)) => record,
                Ok(None) => {
                    warn!(script = %state.script, "FastCGI server closed mid-response");
                    state.done = true;
                    return Some((Err(cut("cut short")), state));
                }
                Err(ReadError::TimedOut) => {
                    warn!(script = %state.script, "FastCGI server stalled mid-response");
                    state.done = true;
                    return Some((Err(cut("timed out")), state));
                }
                Err(ReadError::Io(error)) => {
                    warn!(script = %state.script, %error, "FastCGI read failed mid-response");
                    state.done = true;
                    return Some((Err(error), state));
                }
            };
            match record.kind {
                record::kind::STDOUT if !record.content.is_empty() => {
                    return Some((Ok(Frame::data(Bytes::from(record.content))), state));
                }
                record::kind::STDERR => log_stderr(&state.script, &record.content),
                record::kind::END_REQUEST => return None,
                _ => {}
            }
        }
    });
    StreamBody::new(frames).boxed()
}

#[cfg(test)]
mod tests;
