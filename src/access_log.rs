//! The access log of `certd run`: one line per request, as a certd log line (`access_format = "text"`,
//! the default), in nginx's `combined` format, or as JSON, on stderr or in `[log] access_file`.
//!
//! Combined and JSON lines are written like the rest of the log: through a bounded queue to a thread of
//! their own ([`crate::logging::queue`]), so no request waits for a write and a stalled disk drops
//! (and counts) lines instead. The file is opened for appending at start and opened again on SIGUSR1
//! ([`reopen`]), the signal logrotate's `postrotate` sends, as nginx does (`kill -USR1`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper::{Method, Request, Version};
use time::OffsetDateTime;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};

use crate::config::{AccessFormat, LogConfig};

/// What one access-log line says about a request.
#[derive(Debug)]
pub struct Entry<'a> {
    /// The client (after trusted proxies).
    pub client: IpAddr,
    /// The site's first name, `-` when the request was refused before a site was found.
    pub site: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The path and query as received.
    pub path: &'a str,
    /// The request's HTTP version.
    pub version: Version,
    /// The request's `Host` (or `:authority`), `Referer` and `User-Agent`, as received.
    pub request: &'a RequestHeaders,
    /// The response status.
    pub status: u16,
    /// The response's `Content-Length`, when it has one.
    pub bytes: Option<u64>,
    /// How long the request took until its response head.
    pub elapsed: Duration,
    /// The upstream that answered, `-` for none.
    pub upstream: &'a str,
}

/// The request headers an access line names, taken before the request is handed on.
#[derive(Debug, Default)]
pub struct RequestHeaders {
    host: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
}

impl RequestHeaders {
    /// Copies them out of `request`, only when a format that names them is in use.
    pub fn of<B>(request: &Request<B>) -> Self {
        if installed().is_none() {
            return Self::default();
        }
        let header = |name: hyper::header::HeaderName| {
            request
                .headers()
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        Self {
            host: header(hyper::header::HOST)
                .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned())),
            referer: header(hyper::header::REFERER),
            user_agent: header(hyper::header::USER_AGENT),
        }
    }
}

/// Logs one request in the configured format.
pub fn record(entry: &Entry<'_>) {
    match installed() {
        None => tracing::info!(
            target: "certd::access",
            client = %entry.client,
            site = entry.site,
            method = %entry.method,
            path = entry.path,
            status = entry.status,
            bytes = entry.bytes.map_or_else(|| "-".to_owned(), |bytes| bytes.to_string()),
            ms = entry.elapsed.as_millis() as u64,
            upstream = entry.upstream,
            "request"
        ),
        Some(log) => {
            let now = OffsetDateTime::now_utc();
            let mut line = match log.format {
                AccessFormat::Json => json_line(entry, now),
                _ => combined_line(entry, now),
            };
            line.push('\n');
            // One write is one queued line; a full queue drops it (counted), it never blocks.
            let _ = log.writer.clone().write_all(line.as_bytes());
        }
    }
}

/// The line in nginx's `combined` format:
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent"`, with the time in UTC and text escaped as nginx does (`"`, `\`, control and
/// non-ASCII bytes as `\xHH`), so a hostile header cannot forge a line or a field.
pub fn combined_line(entry: &Entry<'_>, at: OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = at.to_offset(time::UtcOffset::UTC);
    let month = MONTHS[usize::from(u8::from(at.month())).saturating_sub(1) % 12];
    let time = format!(
        "{:02}/{month}/{}:{:02}:{:02}:{:02} +0000",
        at.day(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    );
    format!(
        "{} - - [{time}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
        entry.client,
        escape(entry.method.as_str()),
        escape(entry.path),
        protocol(entry.version),
        entry.status,
        entry
            .bytes
            .map_or_else(|| "-".to_owned(), |bytes| bytes.to_string()),
        escape(entry.request.referer.as_deref().unwrap_or("-")),
        escape(entry.request.user_agent.as_deref().unwrap_or("-")),
    )
}

/// The line as one JSON object (without the newline).
pub fn json_line(entry: &Entry<'_>, at: OffsetDateTime) -> String {
    serde_json::json!({
        "time": crate::time_format::rfc3339(at),
        "client": entry.client.to_string(),
        "site": entry.site,
        "host": entry.request.host,
        "method": entry.method.as_str(),
        "path": entry.path,
        "protocol": protocol(entry.version),
        "status": entry.status,
        "bytes": entry.bytes,
        "ms": u64::try_from(entry.elapsed.as_millis()).unwrap_or(u64::MAX),
        "upstream": entry.upstream,
        "referer": entry.request.referer,
        "user_agent": entry.request.user_agent,
    })
    .to_string()
}

/// The version as a request line writes it (nginx writes `HTTP/2.0` for HTTP/2).
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// nginx's access-log escaping: `"`, `\`, and bytes below 0x20 or above 0x7e as `\xHH`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            out.push_str(&format!("\\x{byte:02X}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out
}

/// The access log in use, when its format is not `text`.
struct Installed {
    format: AccessFormat,
    writer: NonBlocking,
    counter: ErrorCounter,
    file: Option<Reopenable>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn installed() -> Option<&'static Installed> {
    INSTALLED.get()
}

/// Why the access log could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log {}: {source}", path.display())]
pub struct AccessLogError {
    /// `[log] access_file`.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// Keeps the access log's thread running; dropping it flushes what is queued.
#[must_use = "the access log stops when the guard is dropped"]
pub struct AccessLogGuard {
    _worker: Option<WorkerGuard>,
}

/// Sets up the access log `config` asks for (once per process; `certd run` calls it first).
pub fn install(config: &LogConfig) -> Result<AccessLogGuard, AccessLogError> {
    if config.access_format == AccessFormat::Text || INSTALLED.get().is_some() {
        return Ok(AccessLogGuard { _worker: None });
    }
    let (file, writer, worker) = match &config.access_file {
        Some(path) => {
            let file = Reopenable::open(path)?;
            let (writer, worker) = crate::logging::queue(file.clone(), crate::logging::QUEUE_LINES);
            (Some(file), writer, worker)
        }
        None => {
            let (writer, worker) = crate::logging::queue(io::stderr(), crate::logging::QUEUE_LINES);
            (None, writer, worker)
        }
    };
    let counter = writer.error_counter();
    let _ = INSTALLED.set(Installed {
        format: config.access_format,
        writer,
        counter,
        file,
    });
    Ok(AccessLogGuard {
        _worker: Some(worker),
    })
}

/// Opens the access-log file again (after logrotate moved it away); nothing for stderr. On failure
/// the old file stays in use and the reason is logged.
pub fn reopen() {
    let Some(file) = installed().and_then(|log| log.file.as_ref()) else {
        return;
    };
    match file.reopen() {
        Ok(()) => tracing::info!(file = %file.path.display(), "access log reopened"),
        Err(err) => tracing::error!(
            file = %file.path.display(),
            %err,
            "cannot reopen the access log; writing on to the old file"
        ),
    }
}

/// Access-log lines dropped because its queue was full (0 without a combined or JSON access log).
pub fn dropped_lines() -> u64 {
    installed().map_or(0, |log| log.counter.dropped_lines() as u64)
}

/// A file opened for appending that can be opened again under the same name; only the log thread
/// writes, so the lock is not contended.
#[derive(Clone)]
struct Reopenable {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl Reopenable {
    fn open(path: &Path) -> Result<Self, AccessLogError> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(append(path)?)),
        })
    }

    fn reopen(&self) -> Result<(), AccessLogError> {
        let next = append(&self.path)?;
        *self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = next;
        Ok(())
    }
}

fn append(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError {
            path: path.to_path_buf(),
            source,
        })
}

impl Write for Reopenable {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry<'a>(headers: &'a RequestHeaders, method: &'a Method, path: &'a str) -> Entry<'a> {
        Entry {
            client: "192.0.2.7".parse().unwrap(),
            site: "a.test",
            method,
            path,
            version: Version::HTTP_2,
            request: headers,
            status: 200,
            bytes: Some(612),
            elapsed: Duration::from_millis(3),
            upstream: "http://127.0.0.1:8080",
        }
    }

    const AT: i64 = 1_780_000_000; // 2026-05-28T20:26:40Z

    #[test]
    fn combined_lines_are_what_nginx_writes() {
        let headers = RequestHeaders {
            host: Some("a.test".into()),
            referer: Some("https://b.test/".into()),
            user_agent: Some("curl/8.5.0".into()),
        };
        let at = OffsetDateTime::from_unix_timestamp(AT).unwrap();
        assert_eq!(
            combined_line(&entry(&headers, &Method::GET, "/x?y=1"), at),
            "192.0.2.7 - - [28/May/2026:20:26:40 +0000] \"GET /x?y=1 HTTP/2.0\" 200 612 \
             \"https://b.test/\" \"curl/8.5.0\""
        );
        let none = RequestHeaders::default();
        let mut unknown = entry(&none, &Method::POST, "/");
        unknown.bytes = None;
        unknown.version = Version::HTTP_11;
        assert_eq!(
            combined_line(&unknown, at),
            "192.0.2.7 - - [28/May/2026:20:26:40 +0000] \"POST / HTTP/1.1\" 200 - \"-\" \"-\""
        );
    }

    #[test]
    fn a_hostile_header_cannot_forge_a_field_or_a_line() {
        let headers = RequestHeaders {
            host: None,
            referer: None,
            user_agent: Some("x\" 500 0 \"-\"\n1.2.3.4 - - [forged]\\ é".into()),
        };
        let at = OffsetDateTime::from_unix_timestamp(AT).unwrap();
        let line = combined_line(&entry(&headers, &Method::GET, "/"), at);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.ends_with("\"x\\x22 500 0 \\x22-\\x22\\x0A1.2.3.4 - - [forged]\\x5C \\xC3\\xA9\""),
            "{line}"
        );
        // Exactly the six quotes of the three quoted fields.
        assert_eq!(line.matches('"').count(), 6, "{line}");
    }

    #[test]
    fn json_lines_keep_every_field() {
        let headers = RequestHeaders {
            host: Some("a.test".into()),
            referer: None,
            user_agent: Some("curl/8.5.0\n".into()),
        };
        let at = OffsetDateTime::from_unix_timestamp(AT).unwrap();
        let line = json_line(&entry(&headers, &Method::GET, "/x"), at);
        assert!(!line.contains('\n'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-05-28T20:26:40Z");
        assert_eq!(value["client"], "192.0.2.7");
        assert_eq!(value["site"], "a.test");
        assert_eq!(value["host"], "a.test");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["path"], "/x");
        assert_eq!(value["protocol"], "HTTP/2.0");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 612);
        assert_eq!(value["ms"], 3);
        assert_eq!(value["upstream"], "http://127.0.0.1:8080");
        assert!(value["referer"].is_null());
        assert_eq!(value["user_agent"], "curl/8.5.0\n");
    }

    #[test]
    fn a_reopened_file_is_the_one_now_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut file = Reopenable::open(&path).unwrap();
        file.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        file.write_all(b"two\n").unwrap();
        file.reopen().unwrap();
        file.write_all(b"three\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("access.log.1")).unwrap(),
            "one\ntwo\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }
}
