//! The requests of the differential test, generated from a server block's own locations (never
//! listed by hand per file), and which nginx location a path lands in (nginx's precedence: exact,
//! longest prefix unless `^~`, regexes in order, nested locations first), so a difference can be
//! put down to a location the importer left out.

use std::collections::BTreeSet;

use regex::RegexBuilder;
use regex_syntax::hir::{Class, Hir, HirKind};

use super::conf::{unquote, Directive};

/// One request, sent the same way to both servers.
#[derive(Debug, Clone)]
pub struct Probe {
    /// What it is, for the table (`GET`, `gzip`, `websocket`, `body-over`, `plain-http`, …).
    pub kind: &'static str,
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body_len: usize,
    /// Sent to port 80 in plain http instead of the TLS port.
    pub plain_http: bool,
}

impl Probe {
    fn get(kind: &'static str, path: &str) -> Self {
        Self {
            kind,
            method: "GET",
            path: path.to_owned(),
            headers: Vec::new(),
            body_len: 0,
            plain_http: false,
        }
    }

    /// One line for the findings.
    pub fn describe(&self) -> String {
        let mut text = format!("{} {}", self.method, self.path);
        if self.plain_http {
            text = format!("http:// {text}");
        }
        if self.body_len > 0 {
            text += &format!(" (body {} bytes)", self.body_len);
        }
        if self.kind != "GET" {
            text += &format!(" [{}]", self.kind);
        }
        text
    }
}

/// The paths everyone probes, whatever the locations: the root tree's files, PHP, dotfiles, a
/// folder without its slash, and a miss.
const COMMON: &[&str] = &[
    "/",
    "/index.html",
    "/?q=1&page=2",
    "/assets/style.css",
    "/assets/app.js",
    "/assets/logo.png",
    "/nested/dir/",
    "/nested/dir",
    "/nested/dir/page.html",
    "/robots.txt",
    "/favicon.ico",
    "/index.php",
    "/wp-config.php",
    "/nested/dir/info.php",
    "/.env",
    "/.git/config",
    "/.htaccess",
    "/no-such-file",
];

/// nginx's `client_max_body_size` default.
const NGINX_BODY_DEFAULT: u64 = 1 << 20;

/// Larger limits are not probed with a body over them.
const LARGEST_BODY_PROBE: u64 = 16 << 20;

/// The requests for one TLS server block (`server`'s children).
pub fn probes(server: &[Directive]) -> Vec<Probe> {
    let mut paths: Vec<String> = COMMON.iter().map(|p| (*p).to_owned()).collect();
    let mut proxied: Vec<String> = Vec::new();
    let mut limits: Vec<(String, u64)> = Vec::new();
    let server_limit = body_limit(server).unwrap_or(NGINX_BODY_DEFAULT);
    limits.push(("/".to_owned(), server_limit));
    for location in locations(server) {
        let samples = samples(location);
        if samples.is_empty() {
            continue;
        }
        if has(location, "proxy_pass") || has(location, "try_files") {
            proxied.push(samples[0].clone());
        }
        if let Some(limit) = body_limit(location.children()) {
            limits.push((samples[0].clone(), limit));
        }
        paths.extend(samples);
    }
    let mut seen = BTreeSet::new();
    paths.retain(|p| seen.insert(p.clone()));
    let mut out: Vec<Probe> = paths.iter().map(|p| Probe::get("GET", p)).collect();
    for path in ["/", "/index.html", "/assets/style.css", "/assets/app.js"] {
        let mut probe = Probe::get("gzip", path);
        probe.headers.push(("accept-encoding", "gzip".to_owned()));
        out.push(probe);
    }
    let mut ws_seen = BTreeSet::new();
    for path in std::iter::once("/".to_owned()).chain(proxied) {
        if !ws_seen.insert(path.clone()) {
            continue;
        }
        let mut probe = Probe::get("websocket", &path);
        probe.headers.extend([
            ("upgrade", "websocket".to_owned()),
            ("connection", "Upgrade".to_owned()),
            ("sec-websocket-version", "13".to_owned()),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_owned()),
        ]);
        out.push(probe);
    }
    let mut body_seen = BTreeSet::new();
    for (path, limit) in limits {
        if !body_seen.insert(path.clone()) {
            continue;
        }
        let under = if limit == 0 {
            4096
        } else {
            (limit / 2).min(1 << 20)
        };
        let mut probe = Probe::get("body-under", &path);
        probe.method = "POST";
        probe.body_len = usize::try_from(under).unwrap_or(4096);
        out.push(probe);
        if limit > 0 && limit <= LARGEST_BODY_PROBE {
            let mut probe = Probe::get("body-over", &path);
            probe.method = "POST";
            probe.body_len = usize::try_from(limit + 4096).unwrap_or(4096);
            out.push(probe);
        }
    }
    for path in ["/", "/index.html"] {
        let mut probe = Probe::get("plain-http", path);
        probe.plain_http = true;
        out.push(probe);
    }
    out
}

fn has(location: &Directive, name: &str) -> bool {
    location.children().iter().any(|d| d.name == name)
}

/// `client_max_body_size` among `block`'s own directives, in bytes.
fn body_limit(block: &[Directive]) -> Option<u64> {
    let d = block.iter().find(|d| d.name == "client_max_body_size")?;
    let value = d.arg(0)?.to_ascii_lowercase();
    let (digits, unit) = match value.chars().last()? {
        'k' => (&value[..value.len() - 1], 1u64 << 10),
        'm' => (&value[..value.len() - 1], 1 << 20),
        'g' => (&value[..value.len() - 1], 1 << 30),
        _ => (&value[..], 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Every location in `block`, nested ones included (named ones too; they have no samples).
pub fn locations(block: &[Directive]) -> Vec<&Directive> {
    let mut out = Vec::new();
    for d in block {
        if d.name == "location" {
            out.push(d);
            out.extend(locations(d.children()));
        } else if d.name == "if" {
            out.extend(locations(d.children()));
        }
    }
    out
}

/// A location's modifier and pattern.
fn pattern(location: &Directive) -> (String, String) {
    match location.args.len() {
        0 => (String::new(), String::new()),
        1 => {
            let arg = unquote(&location.args[0]);
            // `location =/x` and `location ~\.php` are written without a space sometimes.
            for m in ["^~", "~*", "=", "~"] {
                if let Some(rest) = arg.strip_prefix(m) {
                    if m != "~" || !rest.is_empty() {
                        return (m.to_owned(), rest.to_owned());
                    }
                }
            }
            (String::new(), arg)
        }
        _ => (unquote(&location.args[0]), unquote(&location.args[1])),
    }
}

/// Paths that land in `location`: the prefix itself and something under it, the exact path, or a
/// path made from the regex (checked to match it).
fn samples(location: &Directive) -> Vec<String> {
    let (modifier, pattern) = pattern(location);
    match modifier.as_str() {
        "=" => vec![pattern],
        "~" | "~*" => regex_sample(&pattern, modifier == "~*")
            .into_iter()
            .collect(),
        _ if pattern.starts_with('@') => Vec::new(),
        _ => {
            let deeper = if pattern.ends_with('/') {
                format!("{pattern}sub/deeper.html")
            } else {
                format!("{pattern}/sub/deeper.html")
            };
            vec![pattern, deeper]
        }
    }
}

/// A path the regex matches, built from its syntax tree (first alternative, smallest repetition of
/// at least one, a letter or digit from each class), with a leading `/`.
pub fn regex_sample(pattern: &str, case_insensitive: bool) -> Option<String> {
    // Built from the pattern as written (so `~*` samples keep its lower case), matched as nginx would.
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    let mut text = String::new();
    build(&hir, &mut text);
    let path = if text.starts_with('/') {
        text
    } else {
        format!("/x/{text}")
    };
    let regex = RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .build()
        .ok()?;
    regex.is_match(&path).then_some(path)
}

fn build(hir: &Hir, out: &mut String) {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(literal) => out.push_str(&String::from_utf8_lossy(&literal.0)),
        HirKind::Class(class) => out.push(class_char(class)),
        HirKind::Repetition(rep) => {
            for _ in 0..rep.min.max(1) {
                build(&rep.sub, out);
            }
        }
        HirKind::Capture(capture) => build(&capture.sub, out),
        HirKind::Concat(parts) => parts.iter().for_each(|p| build(p, out)),
        HirKind::Alternation(alternatives) => {
            // Prefer a non-empty alternative (`/_?emoji` style groups).
            if let Some(first) = alternatives.first() {
                build(first, out);
            }
        }
    }
}

fn class_char(class: &Class) -> char {
    let wanted = |c: char| c.is_ascii_alphanumeric();
    match class {
        Class::Unicode(class) => {
            for range in class.iter() {
                let (start, end) = (range.start(), range.end());
                if let Some(c) = ('a'..='z')
                    .chain('0'..='9')
                    .find(|c| *c >= start && *c <= end)
                {
                    return c;
                }
                if wanted(start) || start > ' ' && start != '/' && start != '?' {
                    return start;
                }
            }
            'x'
        }
        Class::Bytes(class) => class
            .iter()
            .map(|r| char::from(r.start()))
            .find(|c| *c > ' ')
            .unwrap_or('x'),
    }
}

/// The location nginx picks for `path` among `block`'s locations (innermost), and the chain of
/// locations it is nested in (outermost first, the pick last).
pub fn nginx_location<'a>(block: &'a [Directive], path: &str) -> Vec<&'a Directive> {
    let mut chain = Vec::new();
    pick(block, path, &mut chain);
    chain
}

fn pick<'a>(block: &'a [Directive], path: &str, chain: &mut Vec<&'a Directive>) -> bool {
    let here: Vec<&Directive> = block.iter().filter(|d| d.name == "location").collect();
    for location in &here {
        let (modifier, pattern) = pattern(location);
        if modifier == "=" && pattern == path {
            chain.push(location);
            return true;
        }
    }
    let mut best: Option<(&Directive, bool, usize)> = None;
    for location in &here {
        let (modifier, pattern) = pattern(location);
        if (modifier.is_empty() || modifier == "^~")
            && !pattern.starts_with('@')
            && path.starts_with(&pattern)
            && best.is_none_or(|(_, _, len)| pattern.len() > len)
        {
            best = Some((location, modifier == "^~", pattern.len()));
        }
    }
    if let Some((location, priority, _)) = best {
        chain.push(location);
        if pick(location.children(), path, chain) {
            return true;
        }
        if priority {
            return true;
        }
        chain.pop();
    }
    for location in &here {
        let (modifier, pattern) = pattern(location);
        if modifier != "~" && modifier != "~*" {
            continue;
        }
        let Ok(regex) = RegexBuilder::new(&pattern)
            .case_insensitive(modifier == "~*")
            .build()
        else {
            continue;
        };
        if regex.is_match(path) {
            chain.push(location);
            pick(location.children(), path, chain);
            return true;
        }
    }
    if let Some((location, _, _)) = best {
        chain.push(location);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::differential::conf::parse;

    #[test]
    fn regex_samples_match_their_regex() {
        for (pattern, ci) in [
            (r"\.php$", false),
            (r"\.(js|css|png|jpg|jpeg|gif|ico)$", true),
            (r"^/assets/(?<asset_path>.+)$", false),
            (r"/_?emoji.*\.(png|gif|jpg|jpeg)$/", false),
            (
                r"^/(?:build|tests|config|lib|3rdparty|templates|data)(?:$|/)",
                false,
            ),
        ] {
            let sample = regex_sample(pattern, ci);
            if pattern.ends_with("$/") {
                // Can never match a path: nginx never picks it either.
                assert_eq!(sample, None, "{pattern}");
            } else {
                assert!(sample.is_some(), "{pattern}");
            }
        }
    }

    #[test]
    fn picks_like_nginx() {
        let tree = parse(
            "location / { location ~ \\.css$ {} }\nlocation = /x {}\nlocation ^~ /a/ {}\n\
             location ~ \\.php$ {}\nlocation /b/ {}\n",
        )
        .expect("parses");
        let line = |path: &str| nginx_location(&tree, path).last().map(|d| d.line);
        assert_eq!(line("/x"), Some(2));
        assert_eq!(line("/a/b.php"), Some(3));
        assert_eq!(line("/b/c.php"), Some(4));
        assert_eq!(line("/y.css"), Some(1));
        assert_eq!(nginx_location(&tree, "/y.css").len(), 2);
        assert_eq!(line("/b/c"), Some(5));
    }
}
