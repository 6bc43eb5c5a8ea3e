//! nginx configuration text as a tree of directives (enough of nginx's own tokenizer for the corpus:
//! words, `'`/`"` strings, `${var}`, comments, blocks), written back one directive per line, and
//! [`rewrite_for_test`]: the one documented rewrite that turns a corpus file into the copy both nginx
//! and `certd import nginx` get.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One directive: `name args… ;` or `name args… { block }`.
#[derive(Debug, Clone)]
pub struct Directive {
    pub name: String,
    /// The arguments as written (quotes kept, so writing them back is exact).
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    /// 1-based line of the directive's name.
    pub line: usize,
    /// 1-based line of the closing `}` (the directive's own line without a block).
    pub end_line: usize,
}

impl Directive {
    fn new(name: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            block: None,
            line: 0,
            end_line: 0,
        }
    }

    /// The argument without its quotes.
    pub fn arg(&self, i: usize) -> Option<String> {
        self.args.get(i).map(|a| unquote(a))
    }

    /// The children (empty without a block).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// `'x'` / `"x"` → `x`; anything else as it is.
pub fn unquote(arg: &str) -> String {
    let bytes = arg.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        arg[1..arg.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\'", "'")
    } else {
        arg.to_owned()
    }
}

/// Parses nginx configuration text. `Err` names the line of the first problem.
pub fn parse(text: &str) -> Result<Vec<Directive>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let mut line = 1;
    let (tree, closed) = parse_block(&chars, &mut pos, &mut line)?;
    if closed {
        return Err(format!("line {line}: unexpected `}}`"));
    }
    Ok(tree)
}

fn parse_block(
    chars: &[char],
    pos: &mut usize,
    line: &mut usize,
) -> Result<(Vec<Directive>, bool), String> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    loop {
        // Whitespace and comments.
        while *pos < chars.len() {
            match chars[*pos] {
                '\n' => {
                    *line += 1;
                    *pos += 1;
                }
                c if c.is_whitespace() => *pos += 1,
                '#' => {
                    while *pos < chars.len() && chars[*pos] != '\n' {
                        *pos += 1;
                    }
                }
                _ => break,
            }
        }
        if *pos >= chars.len() {
            if !words.is_empty() {
                return Err(format!("line {line}: directive without `;` at the end"));
            }
            return Ok((out, false));
        }
        match chars[*pos] {
            ';' | '{' => {
                let open = chars[*pos] == '{';
                *pos += 1;
                if words.is_empty() {
                    return Err(format!("line {line}: `;` or `{{` without a directive"));
                }
                let name = words.remove(0);
                let mut directive = Directive {
                    name,
                    args: std::mem::take(&mut words),
                    block: None,
                    line: first_line,
                    end_line: *line,
                };
                if open {
                    let (block, closed) = parse_block(chars, pos, line)?;
                    if !closed {
                        return Err(format!("line {first_line}: `{{` never closed"));
                    }
                    directive.block = Some(block);
                    directive.end_line = *line;
                }
                out.push(directive);
            }
            '}' => {
                *pos += 1;
                if !words.is_empty() {
                    return Err(format!("line {line}: directive without `;` before `}}`"));
                }
                return Ok((out, true));
            }
            quote @ ('"' | '\'') => {
                let start = *pos;
                *pos += 1;
                while *pos < chars.len() && chars[*pos] != quote {
                    if chars[*pos] == '\\' {
                        *pos += 1;
                    }
                    if chars.get(*pos) == Some(&'\n') {
                        *line += 1;
                    }
                    *pos += 1;
                }
                *pos += 1;
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(chars[start..(*pos).min(chars.len())].iter().collect());
            }
            _ => {
                let start = *pos;
                while *pos < chars.len() {
                    let c = chars[*pos];
                    if c == '$' && chars.get(*pos + 1) == Some(&'{') {
                        while *pos < chars.len() && chars[*pos] != '}' {
                            *pos += 1;
                        }
                        *pos += 1;
                        continue;
                    }
                    if c.is_whitespace() || c == ';' || c == '{' || c == '}' {
                        break;
                    }
                    if c == '\\' {
                        *pos += 1;
                    }
                    *pos += 1;
                }
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(chars[start..(*pos).min(chars.len())].iter().collect());
            }
        }
    }
}

/// The tree as text, one directive per line (so the importer's `FILE:LINE` points at one directive).
pub fn write(tree: &[Directive]) -> String {
    let mut out = String::new();
    write_into(&mut out, tree, 0);
    out
}

fn write_into(out: &mut String, tree: &[Directive], depth: usize) {
    for d in tree {
        let indent = "    ".repeat(depth);
        let mut head = d.name.clone();
        for arg in &d.args {
            head.push(' ');
            head.push_str(arg);
        }
        match &d.block {
            Some(block) => {
                let _ = writeln!(out, "{indent}{head} {{");
                write_into(out, block, depth + 1);
                let _ = writeln!(out, "{indent}}}");
            }
            None => {
                let _ = writeln!(out, "{indent}{head};");
            }
        }
    }
}

/// Where the rewritten copy points things, chosen by the test before the rewrite.
#[derive(Debug, Clone)]
pub struct Env {
    /// The file's short name (`gitlab`): test names are `<stem>.test`, `name2.<stem>.test`, …
    pub stem: String,
    /// nginx's plain http port (`listen 80`).
    pub http_port: u16,
    /// nginx's TLS port (`listen 443 ssl`).
    pub https_port: u16,
    /// Test certificate and key for nginx's TLS listeners.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where roots, caches and logs of the copy live.
    pub dir: PathBuf,
    /// php-fpm's unix socket (every `fastcgi_pass`).
    pub php_socket: PathBuf,
}

/// What the rewrite did, for the test to set up and report.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// The copy, as text.
    pub text: String,
    /// Original server name → test name.
    pub names: BTreeMap<String, String>,
    /// Echo backends to start: (id reported, loopback port). The id is the upstream group's name or
    /// the `proxy_pass` address as the original file wrote it.
    pub backends: Vec<(String, u16)>,
    /// Folders that stand for the file's roots and aliases (to fill with the test tree).
    pub roots: BTreeSet<PathBuf>,
    /// Other ports nginx listens on (e.g. Synapse's 8448), original → test.
    pub extra_ports: BTreeMap<u16, u16>,
}

/// Files of Debian's nginx package an `include` may name relatively.
const DEBIAN_NGINX: &str = "/etc/nginx";

/// Rewrites a corpus file into the copy both servers run, so they meet the same test world:
///
/// - an enclosing `http { … }` is unwrapped (the copy is the content of `http`, like a file in
///   `sites-enabled/`); the test's own nginx.conf includes it with nginx's defaults;
/// - `listen` → `127.0.0.1:<test port>` (80 → the http port, 443 → the TLS port, others → a port of
///   their own), keeping `ssl`, `http2`, `default_server`; `ipv6only=` is dropped and a second
///   `listen` that maps to the same address is dropped; `listen 443` without `ssl` (the old
///   `ssl on;` form, which stays) gets `ssl`; a server block without `listen` gets nginx's
///   default (`:80`, made explicit);
/// - a server block that answers content on plain http only (no `ssl` listen and not just a
///   redirect to https) also gets `listen <TLS port> ssl`, as `certbot --nginx` does when it adds
///   the certificate; every TLS server block gets the test certificate (`ssl_certificate(_key)`
///   replaced or added), and `ssl_dhparam`, `ssl_trusted_certificate`, `ssl_stapling*` are dropped
///   (files and OCSP that do not exist here);
/// - `server_name` → `<stem>.test` (then `name2.<stem>.test`, …), `_` and regex names kept; the old
///   names are replaced in `return`, `rewrite`, `if`, `add_header`, `proxy_redirect` and `set`;
/// - `proxy_pass` to an address → `http://127.0.0.1:<echo port>` with the URI part kept (one echo
///   backend per address, reporting the address as written); `proxy_pass` to an `upstream` keeps the
///   group, whose servers become echo backends reporting the group's name; `https://` upstreams
///   become `http://` (the echoes speak plain http);
/// - `fastcgi_pass` (and the servers of an `upstream` used by one) → php-fpm's unix socket;
/// - `root`, `alias`, `set $var /path` → a folder under the test dir standing for that path (the
///   part before the first `$`), the same folder for both servers; `proxy_cache_path` and log files
///   → the test dir; relative `include`s → Debian's `/etc/nginx/<file>` (an include of a file
///   that does not exist is left out); `resolver` → 127.0.0.1.
pub fn rewrite_for_test(tree: Vec<Directive>, env: &Env) -> Rewritten {
    let mut r = Rewriter {
        env,
        out: Rewritten::default(),
        fastcgi_upstreams: BTreeSet::new(),
        upstreams: BTreeSet::new(),
        backend_ports: BTreeMap::new(),
    };
    let mut tree = unwrap_http(tree);
    collect_upstreams(&tree, &mut r.upstreams, &mut r.fastcgi_upstreams);
    collect_names(&tree, &mut r.out.names, &env.stem);
    r.block(&mut tree, Ctx::Http);
    r.out.text = write(&tree);
    r.out
}

fn unwrap_http(tree: Vec<Directive>) -> Vec<Directive> {
    let mut out = Vec::new();
    for d in tree {
        if d.name == "http" {
            out.extend(d.block.unwrap_or_default());
        } else {
            out.push(d);
        }
    }
    out
}

/// The `upstream` names, and the `fastcgi_pass` targets (which may name an upstream).
fn collect_upstreams(
    tree: &[Directive],
    upstreams: &mut BTreeSet<String>,
    fastcgi: &mut BTreeSet<String>,
) {
    for d in tree {
        if d.name == "upstream" {
            if let Some(name) = d.arg(0) {
                upstreams.insert(name);
            }
        }
        if d.name == "fastcgi_pass" {
            if let Some(target) = d.arg(0) {
                fastcgi.insert(target);
            }
        }
        collect_upstreams(d.children(), upstreams, fastcgi);
    }
}

fn collect_names(tree: &[Directive], names: &mut BTreeMap<String, String>, stem: &str) {
    for d in tree {
        if d.name == "server_name" {
            for name in d.args.iter().map(|a| unquote(a)) {
                if name == "_" || name.starts_with('~') || names.contains_key(&name) {
                    continue;
                }
                let test = if names.is_empty() {
                    format!("{stem}.test")
                } else {
                    format!("name{}.{stem}.test", names.len() + 1)
                };
                names.insert(name, test);
            }
        }
        collect_names(d.children(), names, stem);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Http,
    Upstream,
    FastcgiUpstream,
    Server,
    Inner,
}

struct Rewriter<'a> {
    env: &'a Env,
    out: Rewritten,
    upstreams: BTreeSet<String>,
    fastcgi_upstreams: BTreeSet<String>,
    /// Backend address as written → echo port.
    backend_ports: BTreeMap<String, u16>,
}

impl Rewriter<'_> {
    fn backend(&mut self, key: &str, id: &str) -> u16 {
        if let Some(port) = self.backend_ports.get(key) {
            return *port;
        }
        let port = crate::harness::free_port();
        self.backend_ports.insert(key.to_owned(), port);
        self.out.backends.push((id.to_owned(), port));
        port
    }

    /// A folder standing for `path` (its part before the first `$`); the rest is kept.
    fn root(&mut self, path: &str) -> String {
        let (literal, rest) = match path.find('$') {
            Some(at) => path.split_at(at),
            None => (path, ""),
        };
        if !literal.starts_with('/') {
            return path.to_owned();
        }
        let slash = literal.ends_with('/');
        let name: String = literal
            .trim_matches('/')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = if name.is_empty() {
            "_".to_owned()
        } else {
            name
        };
        let dir = self.env.dir.join("roots").join(name);
        self.out.roots.insert(dir.clone());
        format!("{}{}{rest}", dir.display(), if slash { "/" } else { "" })
    }

    fn replace_names(&self, arg: &str) -> String {
        let mut names: Vec<(&String, &String)> = self.out.names.iter().collect();
        names.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
        let mut arg = arg.to_owned();
        for (old, new) in names {
            if old.len() > 2 {
                arg = arg.replace(old.as_str(), new);
            }
        }
        arg
    }

    fn block(&mut self, tree: &mut Vec<Directive>, ctx: Ctx) {
        let mut out = Vec::with_capacity(tree.len());
        for mut d in std::mem::take(tree) {
            let child_ctx = match d.name.as_str() {
                "server" if ctx == Ctx::Http => Ctx::Server,
                "upstream" => {
                    if d.arg(0)
                        .is_some_and(|name| self.fastcgi_upstreams.contains(&name))
                    {
                        Ctx::FastcgiUpstream
                    } else {
                        Ctx::Upstream
                    }
                }
                _ => Ctx::Inner,
            };
            if let Some(mut block) = d.block.take() {
                if d.name == "upstream" {
                    let name = d.arg(0).unwrap_or_default();
                    self.upstream(&mut block, &name, child_ctx);
                } else {
                    self.block(&mut block, child_ctx);
                }
                if child_ctx == Ctx::Server {
                    self.server(&mut block);
                }
                d.block = Some(block);
                if d.name == "if" {
                    d.args = d.args.iter().map(|a| self.replace_names(a)).collect();
                }
                out.push(d);
                continue;
            }
            if let Some(d) = self.directive(d) {
                out.push(d);
            }
        }
        *tree = out;
    }

    fn upstream(&mut self, block: &mut [Directive], name: &str, ctx: Ctx) {
        for (i, d) in block.iter_mut().enumerate() {
            if d.name != "server" {
                continue;
            }
            let params: Vec<String> = d.args.iter().skip(1).cloned().collect();
            let address = if ctx == Ctx::FastcgiUpstream {
                format!("unix:{}", self.env.php_socket.display())
            } else {
                let key = format!("{name}#{i}");
                format!("127.0.0.1:{}", self.backend(&key, name))
            };
            d.args = std::iter::once(address).chain(params).collect();
        }
    }

    /// One directive without a block: rewritten, or `None` to drop it.
    fn directive(&mut self, mut d: Directive) -> Option<Directive> {
        let env = self.env;
        match d.name.as_str() {
            "listen" => return Some(self.listen(d)),
            "server_name" => {
                d.args = d
                    .args
                    .iter()
                    .map(|a| {
                        self.out
                            .names
                            .get(&unquote(a))
                            .cloned()
                            .unwrap_or_else(|| a.clone())
                    })
                    .collect();
            }
            "ssl_dhparam"
            | "ssl_trusted_certificate"
            | "ssl_stapling"
            | "ssl_stapling_verify"
            | "ssl_certificate"
            | "ssl_certificate_key" => return None,
            "proxy_pass" => {
                let url = d.arg(0).unwrap_or_default();
                d.args = vec![self.proxy_url(&url)];
            }
            "fastcgi_pass" => {
                let target = d.arg(0).unwrap_or_default();
                if !self.upstreams.contains(&target) {
                    d.args = vec![format!("unix:{}", env.php_socket.display())];
                }
            }
            "root" | "alias" => {
                let path = d.arg(0).unwrap_or_default();
                d.args = vec![self.root(&path)];
            }
            "set" => {
                if let Some(value) = d.arg(1).filter(|v| v.starts_with('/')) {
                    d.args[1] = self.root(&value);
                } else {
                    d.args = d.args.iter().map(|a| self.replace_names(a)).collect();
                }
            }
            "return" | "rewrite" | "add_header" | "proxy_redirect" => {
                d.args = d.args.iter().map(|a| self.replace_names(a)).collect();
            }
            "proxy_cache_path" | "fastcgi_cache_path" => {
                let dir = env
                    .dir
                    .join("cache")
                    .join(d.arg(0).unwrap_or_default().replace('/', "_"));
                d.args[0] = dir.display().to_string();
            }
            "access_log" | "error_log" if d.arg(0).is_some_and(|path| path.starts_with('/')) => {
                let log = env.dir.join("logs").join(format!("{}.log", d.name));
                d.args[0] = log.display().to_string();
            }
            "include" => {
                let file = d.arg(0).unwrap_or_default();
                // A file Debian's nginx does not ship (Matomo's `ssl.conf` of TLS settings) is
                // left out for both servers, as an absolute include of a missing file is.
                let file = match file.starts_with('/') {
                    true => file,
                    false => format!("{DEBIAN_NGINX}/{file}"),
                };
                if !Path::new(&file).exists() {
                    return None;
                }
                d.args = vec![file];
            }
            "resolver" => d.args = vec!["127.0.0.1".to_owned()],
            _ => {}
        }
        Some(d)
    }

    fn proxy_url(&mut self, url: &str) -> String {
        // Any scheme becomes `http://`: the echoes speak plain http.
        let Some((_scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.contains('$') {
            return url.to_owned();
        }
        if self.upstreams.contains(authority) {
            return format!("http://{authority}{path}");
        }
        let port = self.backend(authority, authority);
        format!("http://127.0.0.1:{port}{path}")
    }

    fn listen(&mut self, mut d: Directive) -> Directive {
        let address = d.arg(0).unwrap_or_default();
        let port: u16 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(80);
        // `listen 443` with `ssl on;` (before nginx 1.15) is TLS too: the copy says `ssl`.
        if port == 443 && !d.args.iter().any(|a| a == "ssl") {
            d.args.insert(1, "ssl".to_owned());
        }
        let ssl = d.args.iter().any(|a| a == "ssl");
        let test_port = match port {
            80 if !ssl => self.env.http_port,
            443 => self.env.https_port,
            other => *self
                .out
                .extra_ports
                .entry(other)
                .or_insert_with(crate::harness::free_port),
        };
        let params = d
            .args
            .iter()
            .skip(1)
            .filter(|a| !a.starts_with("ipv6only="))
            .cloned();
        d.args = std::iter::once(format!("127.0.0.1:{test_port}"))
            .chain(params)
            .collect();
        d
    }

    /// A server block's listens and certificates (see [`rewrite_for_test`]).
    fn server(&mut self, block: &mut Vec<Directive>) {
        // Deduplicate listens that now share an address.
        let mut seen = BTreeSet::new();
        block.retain(|d| d.name != "listen" || seen.insert(d.args[0].clone()));
        let listens: Vec<&Directive> = block.iter().filter(|d| d.name == "listen").collect();
        let mut ssl = listens.iter().any(|d| d.args.iter().any(|a| a == "ssl"));
        if listens.is_empty() {
            block.insert(
                0,
                Directive::new("listen", &[&format!("127.0.0.1:{}", self.env.http_port)]),
            );
        }
        if !ssl && !redirects_only(block) {
            block.insert(
                0,
                Directive::new(
                    "listen",
                    &[&format!("127.0.0.1:{}", self.env.https_port), "ssl"],
                ),
            );
            ssl = true;
        }
        if ssl {
            let at = block
                .iter()
                .position(|d| d.name == "server_name")
                .map_or(0, |i| i + 1);
            let cert = self.env.cert.display().to_string();
            let key = self.env.key.display().to_string();
            block.insert(at, Directive::new("ssl_certificate_key", &[&key]));
            block.insert(at, Directive::new("ssl_certificate", &[&cert]));
        }
    }
}

/// A block whose answers are all `return …`/`rewrite …` to `https://…` (plus an ACME webroot):
/// certd's own :80.
fn redirects_only(block: &[Directive]) -> bool {
    fn any(tree: &[Directive], f: &dyn Fn(&Directive) -> bool) -> bool {
        tree.iter().any(|d| f(d) || any(d.children(), f))
    }
    let redirects = any(block, &|d| {
        let to_https = d.args.iter().any(|a| unquote(a).starts_with("https://"));
        match d.name.as_str() {
            "return" => to_https,
            // `rewrite ^(.*) https://$host$1 permanent;` (Odoo's :80 block).
            "rewrite" => to_https && d.args.len() >= 2,
            _ => false,
        }
    });
    let serves = any(block, &|d| {
        matches!(d.name.as_str(), "proxy_pass" | "fastcgi_pass" | "try_files")
    });
    redirects && !serves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_back() {
        let tree = parse("a b 'c d';\nserver {\n  # x\n  location ~ \\.php$ { x; }\n}\nu ${H};\n")
            .expect("parses");
        assert_eq!(tree.len(), 3);
        assert_eq!(tree[0].args, ["b", "'c d'"]);
        assert_eq!(tree[1].children()[0].args, ["~", "\\.php$"]);
        assert_eq!(tree[1].children()[0].line, 4);
        assert_eq!(tree[2].args, ["${H}"]);
        let again = parse(&write(&tree)).expect("parses again");
        assert_eq!(write(&again), write(&tree));
    }
}
