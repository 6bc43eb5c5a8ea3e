//! Comparing nginx's and certd's answers to one probe: the status, what answered (echo backend and
//! path, PHP script, or which file by content hash), `Location`, and the response headers nginx sets
//! (those the config adds, Content-Encoding, Cache-Control, …) plus the request headers the config
//! has nginx forward; each difference gets one [`Kind`]. And the table the test prints.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use sha2::Digest as _;

use super::client::Answer;
use super::probe::Probe;

/// Marker in every file whose content must never be sent (PHP source, dotfiles).
pub const SECRET: &str = "SECRET-SOURCE-TEXT";

/// The kinds of difference, in the order a difference is put down to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// nginx refused (4xx/5xx, or no answer) and certd answered 2xx with content, or certd sent
    /// text nginx never sends (PHP source, dotfiles).
    ServedRefused,
    /// certd differs on purpose (the reason is in the detail).
    OnPurpose,
    /// The location nginx answered from (or a directive of it) was left out by the importer.
    LeftOut,
    Status,
    /// Another echo backend or path, another PHP script, another file.
    Backend,
    Location,
    Encoding,
    Header,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::ServedRefused,
        Kind::Status,
        Kind::Backend,
        Kind::Location,
        Kind::Header,
        Kind::Encoding,
        Kind::LeftOut,
        Kind::OnPurpose,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::ServedRefused => "served-what-nginx-refused",
            Kind::OnPurpose => "on-purpose",
            Kind::LeftOut => "left-out-by-importer",
            Kind::Status => "status",
            Kind::Backend => "backend/path",
            Kind::Location => "location",
            Kind::Encoding => "encoding",
            Kind::Header => "header",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Kind::ServedRefused => "refused→served",
            Kind::OnPurpose => "on purpose",
            Kind::LeftOut => "left out",
            Kind::Status => "status",
            Kind::Backend => "backend/path",
            Kind::Location => "Location",
            Kind::Encoding => "encoding",
            Kind::Header => "header",
        }
    }
}

/// What one config's comparison needs to know beyond the answers.
pub struct Context<'a> {
    /// Content hash → which test file it is (`<root>/<path>`).
    pub files: &'a HashMap<String, String>,
    /// The test ports of this config (both servers), dropped from `Location` before comparing.
    pub ports: &'a [u16],
    /// Response headers compared by value (lower case).
    pub headers: &'a [String],
    /// Request headers the config has nginx set for the upstream, compared as the echo saw them.
    pub forwarded: &'a [String],
    /// The Host the probes send: a relative `Location` is resolved against it, as a browser does.
    pub host: &'a str,
}

/// What the importer said about the location nginx answered a probe from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blame<'a> {
    /// A directive it left out there (or in the server block), and why.
    pub left_out: Option<(&'a str, &'a str)>,
    /// It noted that nginx's `auth_request` subrequest there carries the client's
    /// `Content-Length` without the body, which certd's does not (see [`compare`]).
    pub auth_keeps_length: bool,
}

pub fn hash(body: &[u8]) -> String {
    let digest = sha2::Sha256::digest(body);
    digest.iter().take(6).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What answered: `echo <id> <METHOD> <uri>`, `php <script> <uri>`, `file <root>/<path>`, or
/// `body <hash>`; empty for answers without content (not 2xx, or empty).
pub fn what(answer: &Answer, ctx: &Context<'_>) -> String {
    if let Some(id) = answer.header("x-echo-backend") {
        return format!(
            "echo {id} {} {}",
            answer.header("x-echo-method").unwrap_or_default(),
            answer.header("x-echo-uri").unwrap_or_default()
        );
    }
    if let Some(script) = answer.header("x-php-script") {
        return format!(
            "php {script} {}",
            answer.header("x-php-uri").unwrap_or_default()
        );
    }
    if !(200..300).contains(&answer.status) || answer.body.is_empty() {
        return String::new();
    }
    let hash = hash(&answer.body);
    match ctx.files.get(&hash) {
        Some(file) => format!("file {file}"),
        None => format!("body {hash}"),
    }
}

/// `status what [Location]`, for the findings.
pub fn summary(answer: &Answer, ctx: &Context<'_>, plain_http: bool) -> String {
    if let Some(error) = &answer.error {
        return format!("no answer ({error})");
    }
    let mut text = format!("{}", answer.status);
    let what = what(answer, ctx);
    if !what.is_empty() {
        text += &format!(" {what}");
    }
    if let Some(location) = location(answer, ctx, plain_http) {
        text += &format!(" → {location}");
    }
    text
}

/// `Location` as a browser follows it: a relative one resolved against the request's URL (certd
/// answers `/dir/` where nginx names `https://host/dir/`: the same place), test ports dropped.
fn location(answer: &Answer, ctx: &Context<'_>, plain_http: bool) -> Option<String> {
    let mut location = answer.header("location")?;
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = if plain_http { "http" } else { "https" };
        location = format!("{scheme}://{}{location}", ctx.host);
    }
    for port in ctx.ports {
        location = location.replace(&format!(":{port}/"), "/");
        if location.ends_with(&format!(":{port}")) {
            location.truncate(location.len() - format!(":{port}").len());
        }
    }
    Some(location)
}

fn forwarded(answer: &Answer, name: &str) -> Option<String> {
    answer.header("x-echo-backend")?;
    let json: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    json["headers"][name].as_str().map(str::to_owned)
}

/// The difference between the two answers, if any: its kind and what differs.
pub fn compare(
    probe: &Probe,
    nginx: &Answer,
    certd: &Answer,
    ctx: &Context<'_>,
    blame: Blame<'_>,
) -> Option<(Kind, String)> {
    let left_out = blame.left_out;
    let (nw, cw) = (what(nginx, ctx), what(certd, ctx));
    // nginx's `auth_request` subrequest carries the client's Content-Length without the body
    // where the location proxying it does not clear the header (the importer notes it): the
    // echo backend, which reads request bodies, waits for one that never comes, and nginx with
    // it (until proxy_read_timeout, then 500). certd's subrequest has no Content-Length. Only a
    // probe with a body that nginx left unanswered in time is put down to this.
    if blame.auth_keeps_length
        && probe.body_len > 0
        && nginx
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("no answer within"))
    {
        return Some((
            Kind::OnPurpose,
            "nginx's auth_request subrequest carries the client's Content-Length without the \
             body (the location proxying it does not clear it), so the auth backend waits for a \
             body that never comes; certd's subrequest has no Content-Length"
                .to_owned(),
        ));
    }
    let leaked = String::from_utf8_lossy(&certd.body).contains(SECRET)
        && !String::from_utf8_lossy(&nginx.body).contains(SECRET);
    let refused = nginx.status == 0 || nginx.status >= 400;
    if leaked || (refused && (200..300).contains(&certd.status) && !cw.is_empty()) {
        return Some((Kind::ServedRefused, String::new()));
    }
    let mut differs: Vec<(Kind, String)> = Vec::new();
    if nginx.status != certd.status {
        differs.push((Kind::Status, "status".to_owned()));
    }
    if nw != cw {
        differs.push((Kind::Backend, "what answered".to_owned()));
    }
    if location(nginx, ctx, probe.plain_http) != location(certd, ctx, probe.plain_http) {
        differs.push((Kind::Location, "Location".to_owned()));
    }
    if nginx.header("content-encoding") != certd.header("content-encoding") {
        differs.push((
            Kind::Encoding,
            format!(
                "Content-Encoding {:?} vs {:?}",
                nginx.header("content-encoding"),
                certd.header("content-encoding")
            ),
        ));
    }
    // An error answer neither server took from a backend or a file is each server's own page:
    // its Content-Type (nginx's HTML page, certd's text) says nothing about the config, which
    // names Content-Type only where add_header applies (2xx and 3xx without `always`).
    let own_error_pages = nw.is_empty()
        && cw.is_empty()
        && nginx.status >= 400
        && certd.status >= 400
        && nginx.header("x-echo-backend").is_none()
        && certd.header("x-echo-backend").is_none();
    for name in ctx.headers {
        if own_error_pages && name == "content-type" {
            continue;
        }
        let (n, c) = (nginx.header(name), certd.header(name));
        let same = if name == "expires" {
            n.is_some() == c.is_some()
        } else {
            n == c
        };
        if !same {
            differs.push((Kind::Header, format!("{name}: {n:?} vs {c:?}")));
        }
    }
    // Hop-by-hop headers are each proxy's own: certd opens the upgrade itself (compared by status).
    for name in ctx
        .forwarded
        .iter()
        .filter(|n| !matches!(n.as_str(), "connection" | "upgrade" | "keep-alive"))
    {
        let (n, c) = (forwarded(nginx, name), forwarded(certd, name));
        if nw == cw && n != c {
            differs.push((Kind::Header, format!("upstream saw {name}: {n:?} vs {c:?}")));
        }
    }
    let (kind, detail) = differs.first().cloned()?;
    let detail = differs
        .iter()
        .filter(|(k, _)| *k == Kind::Header)
        .map(|(_, d)| d.clone())
        .next()
        .filter(|_| kind == Kind::Header)
        .unwrap_or(detail);
    if probe.plain_http
        && matches!(certd.status, 301 | 308)
        && certd
            .header("location")
            .is_some_and(|l| l.starts_with("https://"))
    {
        return Some((
            Kind::OnPurpose,
            "certd's :80 redirects every request to https (it serves content only over TLS)"
                .to_owned(),
        ));
    }
    if probe.kind == "websocket"
        && certd.status == 101
        && nginx.status != 101
        && nginx.header("x-echo-backend").is_some()
        && nginx.header("x-echo-backend") == certd.header("x-echo-backend")
    {
        return Some((
            Kind::OnPurpose,
            "certd passes websocket upgrades through on every proxy route; nginx only where the \
             config sets Upgrade/Connection for the upstream"
                .to_owned(),
        ));
    }
    if nw.starts_with("file ")
        && nw.split('/').skip(1).any(|part| part.starts_with('.'))
        && nw != cw
    {
        return Some((
            Kind::OnPurpose,
            "certd never serves dotfiles (.env, .git/, .htaccess) from a root; nginx does unless \
             the config denies them"
                .to_owned(),
        ));
    }
    if let Some((directive, reason)) = left_out {
        // A left-out server-level directive explains only the differences it can make.
        let explains = match directive {
            "client_max_body_size" => probe.kind.starts_with("body"),
            name if name.starts_with("gzip") => kind == Kind::Encoding,
            "add_header" | "expires" | "proxy_hide_header" | "more_set_headers" => {
                kind == Kind::Header
            }
            _ => true,
        };
        if explains {
            return Some((Kind::LeftOut, format!("{detail}; {reason}")));
        }
    }
    Some((kind, detail))
}

/// One config's result.
#[derive(Debug, Default)]
pub struct Row {
    pub config: String,
    pub requests: usize,
    pub identical: usize,
    pub kinds: BTreeMap<Kind, usize>,
    /// `certd import nginx` exit code and left-out (untranslated) count.
    pub import: String,
}

impl Row {
    fn percent(same: usize, total: usize) -> String {
        if total == 0 {
            return "-".to_owned();
        }
        format!("{:.1} %", same as f64 * 100.0 / total as f64)
    }
}

/// The markdown table: one row per config and the total. "identical" counts on-purpose
/// differences as identical (they are listed in their own column).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let kinds: Vec<Kind> = Kind::ALL.to_vec();
    let _ = write!(out, "| config | import | requests | identical |");
    for kind in &kinds {
        let _ = write!(out, " {} |", kind.short());
    }
    out.push('\n');
    out.push_str(&"|---".repeat(4 + kinds.len()));
    out.push_str("|\n");
    let total = total_of(rows);
    for row in rows.iter().chain(std::iter::once(&total)) {
        let same = row.identical + row.kinds.get(&Kind::OnPurpose).copied().unwrap_or(0);
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            row.config,
            row.import,
            row.requests,
            Row::percent(same, row.requests)
        );
        for kind in &kinds {
            let _ = write!(out, " {} |", row.kinds.get(kind).copied().unwrap_or(0));
        }
        out.push('\n');
    }
    out
}

fn total_of(rows: &[Row]) -> Row {
    let mut sum = Row {
        config: "**all**".to_owned(),
        ..Row::default()
    };
    for row in rows {
        sum.requests += row.requests;
        sum.identical += row.identical;
        for (kind, n) in &row.kinds {
            *sum.kinds.entry(*kind).or_default() += n;
        }
    }
    sum.import = format!("{} configs", rows.len());
    sum
}

/// Identical (on-purpose included) and served-what-nginx-refused over all rows.
pub fn totals(rows: &[Row]) -> (usize, usize, usize) {
    let requests = rows.iter().map(|r| r.requests).sum();
    let same = rows
        .iter()
        .map(|r| r.identical + r.kinds.get(&Kind::OnPurpose).copied().unwrap_or(0))
        .sum();
    let refused = rows
        .iter()
        .map(|r| r.kinds.get(&Kind::ServedRefused).copied().unwrap_or(0))
        .sum();
    (requests, same, refused)
}
