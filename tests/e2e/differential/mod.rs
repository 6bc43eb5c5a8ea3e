//! The differential test of issue #11: nginx itself (Debian's package) and certd, each running the
//! same corpus config, answer the same requests, and the answers are compared.
//!
//! For each file in `tests/fixtures/nginx/` (real server blocks from app repositories and docs, each
//! with its source in a comment, kept verbatim) the test writes one rewritten copy
//! ([`conf::rewrite_for_test`]: loopback ports, echo backends, the same temp roots, test
//! certificates, a real php-fpm). nginx runs that copy; certd runs what `certd import nginx` (the
//! real binary) makes of the same copy, with its certificates from Pebble. Requests are generated
//! from each server block's locations ([`probe`]), sent to both over TLS with the site's SNI and
//! Host, and compared ([`compare`]): status, which backend or file answered, `Location`, and the
//! headers nginx sets. The table goes to the test output and `$CARGO_TARGET_TMPDIR/differential.md`,
//! each difference to `differential-findings.md` beside it.
//!
//! The test asserts that not one request gets "certd served what nginx refused", and that the share
//! of identical answers (certd's on-purpose differences counted as identical and listed) does not
//! fall below [`FLOOR_PERCENT`], the level main has reached; issue #11's target is 95 %
//! ([`TARGET_PERCENT`]), printed beside the measured share until the importer gets there.
//!
//! Run: `cargo test --test e2e differential -- --nocapture`.

mod client;
mod compare;
mod conf;
mod echo;
mod probe;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::client::{Answer, Target};
use self::compare::{Kind, Row, SECRET};
use self::conf::Directive;
use crate::harness::{free_port, Certd, CertdConfig, Daemon, HttpsClient, Nginx, Pebble, PhpFpm};

/// The corpus: name and text of each file in tests/fixtures/nginx/.
const CORPUS: &[(&str, &str)] = &[
    (
        "code-server",
        include_str!("../../fixtures/nginx/code-server.conf"),
    ),
    (
        "discourse",
        include_str!("../../fixtures/nginx/discourse.conf"),
    ),
    ("gitea", include_str!("../../fixtures/nginx/gitea.conf")),
    ("gitlab", include_str!("../../fixtures/nginx/gitlab.conf")),
    ("grafana", include_str!("../../fixtures/nginx/grafana.conf")),
    (
        "home-assistant",
        include_str!("../../fixtures/nginx/home-assistant.conf"),
    ),
    ("immich", include_str!("../../fixtures/nginx/immich.conf")),
    (
        "jellyfin",
        include_str!("../../fixtures/nginx/jellyfin.conf"),
    ),
    (
        "mastodon",
        include_str!("../../fixtures/nginx/mastodon.conf"),
    ),
    ("minio", include_str!("../../fixtures/nginx/minio.conf")),
    (
        "nextcloud",
        include_str!("../../fixtures/nginx/nextcloud.conf"),
    ),
    ("odoo", include_str!("../../fixtures/nginx/odoo.conf")),
    (
        "peertube",
        include_str!("../../fixtures/nginx/peertube.conf"),
    ),
    (
        "pixelfed",
        include_str!("../../fixtures/nginx/pixelfed.conf"),
    ),
    (
        "plausible",
        include_str!("../../fixtures/nginx/plausible.conf"),
    ),
    ("synapse", include_str!("../../fixtures/nginx/synapse.conf")),
    (
        "uptime-kuma",
        include_str!("../../fixtures/nginx/uptime-kuma.conf"),
    ),
    (
        "wordpress",
        include_str!("../../fixtures/nginx/wordpress.conf"),
    ),
    (
        "wordpress-restrictions",
        include_str!("../../fixtures/nginx/wordpress-restrictions.conf"),
    ),
];

/// issue #11's target, reported beside the measured share.
const TARGET_PERCENT: f64 = 95.0;

/// The share of identical answers main has reached (measured, less a small margin): a change that
/// makes certd answer the corpus less like nginx fails here. Raise it as the importer improves.
const FLOOR_PERCENT: f64 = 98.5;

/// Configs run at once (each has its own Pebble, nginx, certd and echoes).
const PARALLEL: usize = 4;

/// How long the daemon may take to get a site's certificate from Pebble.
const CERT_WAIT: Duration = Duration::from_secs(40);

/// What every config's run shares.
struct Shared {
    work: PathBuf,
    php_socket: PathBuf,
    ca: TestCa,
}

/// One difference, for the findings file.
struct Finding {
    config: String,
    kind: Kind,
    request: String,
    nginx: String,
    certd: String,
    detail: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certd_answers_the_nginx_corpus_like_nginx() {
    let started = Instant::now();
    let php = PhpFpm::start().await;
    let work = tempfile::Builder::new()
        .prefix("certd-differential-")
        .tempdir()
        .expect("tempdir");
    let shared = Arc::new(Shared {
        work: work.path().to_owned(),
        php_socket: php.socket(),
        ca: TestCa::new(),
    });
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut runs = JoinSet::new();
    for (index, (stem, text)) in CORPUS.iter().enumerate() {
        let (shared, gate) = (shared.clone(), gate.clone());
        runs.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            (index, run_config(stem, text, &shared).await)
        });
    }
    let mut results = Vec::new();
    while let Some(result) = runs.join_next().await {
        results.push(result.expect("a config's run panicked"));
    }
    results.sort_by_key(|(index, _)| *index);
    let (rows, findings): (Vec<Row>, Vec<Vec<Finding>>) =
        results.into_iter().map(|(_, r)| r).unzip();
    let findings: Vec<Finding> = findings.into_iter().flatten().collect();

    let table = compare::table(&rows);
    let (requests, same, refused) = compare::totals(&rows);
    let percent = same as f64 * 100.0 / requests.max(1) as f64;
    let mut by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for row in &rows {
        for (kind, n) in &row.kinds {
            *by_kind.entry(*kind).or_default() += n;
        }
    }
    let mut summary = format!(
        "{} configs, {requests} requests, {same} identical ({percent:.1} %; on-purpose \
         differences counted as identical), {refused} served what nginx refused; took {:.0?}\n",
        rows.len(),
        started.elapsed()
    );
    for (kind, n) in &by_kind {
        let _ = writeln!(summary, "- {}: {n}", kind.label());
    }
    let report = format!("{summary}\n{table}");
    println!("\n===== differential: certd vs nginx =====\n{report}");
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(out_dir.join("differential.md"), &report).expect("write differential.md");
    std::fs::write(
        out_dir.join("differential-findings.md"),
        findings_text(&findings),
    )
    .expect("write differential-findings.md");
    println!(
        "table: {}\nevery difference: {}",
        out_dir.join("differential.md").display(),
        out_dir.join("differential-findings.md").display()
    );
    drop(php);

    assert_eq!(
        refused, 0,
        "certd served what nginx refused ({refused} requests; see differential-findings.md)"
    );
    println!(
        "{percent:.1} % of requests identical (issue #11's target: {TARGET_PERCENT} %; floor: \
         {FLOOR_PERCENT} %)"
    );
    assert!(
        percent >= FLOOR_PERCENT,
        "{percent:.1} % of requests identical, below the floor of {FLOOR_PERCENT} % main had \
         reached:\n{report}"
    );
}

fn findings_text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for kind in Kind::ALL {
        let of_kind: Vec<&Finding> = findings.iter().filter(|f| f.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {} ({})\n", kind.label(), of_kind.len());
        for f in of_kind {
            let _ = writeln!(
                out,
                "- {}: `{}` — nginx {} / certd {}{}",
                f.config,
                f.request,
                f.nginx,
                f.certd,
                if f.detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", f.detail)
                }
            );
        }
    }
    out
}

/// What `certd import nginx` said about the copy.
struct Import {
    code: Option<i32>,
    /// Line of the copy → the importer's words, for each `# untranslated (FILE:LINE)`.
    left_out: BTreeMap<usize, String>,
    /// Lines of the copy with a `# differs` note that nginx's `auth_request` subrequest carries
    /// the client's Content-Length ([`AUTH_KEEPS_LENGTH`]).
    auth_keeps_length: BTreeSet<usize>,
}

/// How the importer's `# differs` note on such an `auth_request` line begins.
const AUTH_KEEPS_LENGTH: &str =
    "for a request with a body, nginx's subrequest carries the client's";

/// The lines of `file` that the import's `# differs (FILE:LINE): <text>` notes starting with
/// `text` point at.
fn noted(stdout: &str, file: &Path, text: &str) -> BTreeSet<usize> {
    let prefix = format!("differs ({}:", file.display());
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = stdout.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(at) = line.find(&prefix) else {
            continue;
        };
        let rest = &line[at + prefix.len()..];
        let Some((number, first)) = rest.split_once("): ") else {
            continue;
        };
        // The note goes on over the `#   ` lines that follow.
        let mut note = first.to_owned();
        for more in lines[index + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with("#   "))
        {
            note.push(' ');
            note.push_str(more.trim_start().trim_start_matches('#').trim());
        }
        if note.starts_with(text) {
            out.extend(number.trim().parse::<usize>().ok());
        }
    }
    out
}

/// Whether the location nginx answers `path` from holds an `auth_request` line the importer
/// noted as carrying the client's Content-Length.
fn auth_keeps_length(server: &Directive, path: &str, import: &Import) -> bool {
    probe::nginx_location(server.children(), path)
        .iter()
        .any(|location| {
            import
                .auth_keeps_length
                .range(location.line..=location.end_line)
                .next()
                .is_some()
        })
}

/// Runs one corpus file through both servers and compares every probe.
async fn run_config(stem: &str, text: &str, shared: &Shared) -> (Row, Vec<Finding>) {
    let dir = shared.work.join(stem);
    for sub in ["cache", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create the config's folders");
    }
    let env = conf::Env {
        stem: stem.to_owned(),
        http_port: free_port(),
        https_port: free_port(),
        cert: dir.join("nginx-cert.pem"),
        key: dir.join("nginx-key.pem"),
        dir: dir.clone(),
        php_socket: shared.php_socket.clone(),
    };
    let tree = conf::parse(text).unwrap_or_else(|err| panic!("{stem}: {err}"));
    let rewritten = conf::rewrite_for_test(tree, &env);
    let site_path = dir.join(format!("{stem}.conf"));
    std::fs::write(&site_path, &rewritten.text).expect("write the copy");
    let copy = conf::parse(&rewritten.text).expect("the copy parses");

    let mut files = HashMap::new();
    let pages = error_pages(&copy);
    for root in &rewritten.roots {
        fill_root(root, &pages, &mut files);
    }
    let mut names: Vec<String> = rewritten.names.values().cloned().collect();
    names.push(format!("{stem}.test"));
    shared.ca.leaf(&names, &env.cert, &env.key);

    let mut echoes = Vec::new();
    for (id, port) in &rewritten.backends {
        echoes.push(echo::Echo::start(id, *port).await);
    }
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("create nginx's folder");
    let nginx_conf = nginx_dir.join("nginx.conf");
    std::fs::write(&nginx_conf, Nginx::main_conf(&nginx_dir, &site_path)).expect("nginx.conf");
    // nginx resolves a relative include inside an included file against the main file's folder:
    // Debian's `snippets/fastcgi-php.conf` includes `fastcgi.conf`, found next to Debian's own
    // nginx.conf, so the test's nginx.conf gets Debian's standard files beside it.
    for file in [
        "fastcgi.conf",
        "fastcgi_params",
        "proxy_params",
        "mime.types",
    ] {
        let from = Path::new("/etc/nginx").join(file);
        if from.exists() {
            std::os::unix::fs::symlink(&from, nginx_dir.join(file)).expect("link Debian's file");
        }
    }
    if let Err(refused) = Nginx::test_config(&nginx_dir, &nginx_conf) {
        panic!(
            "{stem}: nginx refuses the rewritten copy:\n{refused}\n{}",
            rewritten.text
        );
    }
    let nginx = Nginx::start(&nginx_dir, &nginx_conf, &[env.https_port]).await;

    // certd: the same copy, imported by the real binary.
    let pebble = Pebble::start().await;
    let certd = Certd::new();
    let run = certd
        .run(
            "import",
            &[
                "nginx",
                &site_path.display().to_string(),
                "--default-name",
                &format!("{stem}.test"),
            ],
        )
        .await;
    let import = Import {
        code: run.code,
        left_out: left_out(&run.stdout, &site_path),
        auth_keeps_length: noted(&run.stdout, &site_path, AUTH_KEEPS_LENGTH),
    };
    let certd_https = free_port();
    let base = CertdConfig::for_pebble(&pebble, &[]);
    let mut refusal: Option<String> = None;
    let mut sites: Vec<Vec<String>> = Vec::new();
    match merge_config(&base.to_toml(), &run.stdout, certd_https) {
        Ok((toml, names)) => {
            sites = names;
            certd.write_config_text(&toml);
            let check = certd.check().await;
            if check.code != Some(0) {
                refusal = Some(format!(
                    "`certd check` refused the imported config (exit {:?}): {}",
                    check.code,
                    check.stderr.lines().take(3).collect::<Vec<_>>().join(" / ")
                ));
            }
        }
        Err(err) => refusal = Some(format!("the import is not a usable certd.toml: {err}")),
    }
    let daemon = if refusal.is_none() {
        let daemon = Daemon::start(&certd, ([127, 0, 0, 1], certd_https).into()).await;
        let client = HttpsClient::new(
            ([127, 0, 0, 1], certd_https).into(),
            &pebble.root_pem().await,
        );
        for names in &sites {
            if let Some(name) = names.first() {
                client.wait_for_certificate(name, CERT_WAIT).await;
            }
        }
        Some(daemon)
    } else {
        None
    };

    let nginx_target = Target::new(env.https_port, env.http_port, &shared.ca.pem);
    let certd_target = Target::new(certd_https, pebble.http_port, &pebble.root_pem().await);
    let mut ports: Vec<u16> = vec![env.https_port, env.http_port, certd_https, pebble.http_port];
    ports.extend(rewritten.extra_ports.values());
    let (headers, forwarded) = compared_headers(&copy);

    let mut row = Row {
        config: stem.to_owned(),
        import: format!(
            "exit {}, {} left out",
            import.code.map_or("signal".to_owned(), |c| c.to_string()),
            import.left_out.len()
        ),
        ..Row::default()
    };
    if refusal.is_some() {
        row.import += " (not run)";
    }
    let mut findings = Vec::new();
    for (server, name) in tls_servers(&copy, stem, env.https_port) {
        let ctx = compare::Context {
            files: &files,
            ports: &ports,
            headers: &headers,
            forwarded: &forwarded,
            host: &name,
        };
        for probe in probe::probes(server.children()) {
            let nginx_answer = nginx_target.send(&name, &probe).await;
            let certd_answer = if daemon.is_some() {
                certd_target.send(&name, &probe).await
            } else {
                Answer {
                    status: 0,
                    error: Some("certd not run".to_owned()),
                    headers: hyper::HeaderMap::new(),
                    body: bytes::Bytes::new(),
                }
            };
            let path = probe.path.split('?').next().unwrap_or("/");
            let blame = match &refusal {
                Some(refusal) => Some(("certd", refusal.clone())),
                None => blame(server, path, &import, &site_path),
            };
            row.requests += 1;
            let blame = compare::Blame {
                left_out: blame
                    .as_ref()
                    .map(|(name, reason)| (*name, reason.as_str())),
                auth_keeps_length: auth_keeps_length(server, path, &import),
            };
            match compare::compare(&probe, &nginx_answer, &certd_answer, &ctx, blame) {
                None => row.identical += 1,
                Some((kind, detail)) => {
                    *row.kinds.entry(kind).or_default() += 1;
                    findings.push(Finding {
                        config: stem.to_owned(),
                        kind,
                        request: format!("{name} {}", probe.describe()),
                        nginx: compare::summary(&nginx_answer, &ctx, probe.plain_http),
                        certd: compare::summary(&certd_answer, &ctx, probe.plain_http),
                        detail,
                    });
                }
            }
        }
    }
    drop(daemon);
    drop(nginx);
    drop(echoes);
    (row, findings)
}

/// The `# untranslated (FILE:LINE): …` lines of the import that point into `file`.
fn left_out(stdout: &str, file: &Path) -> BTreeMap<usize, String> {
    let prefix = format!("untranslated ({}:", file.display());
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = stdout.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(at) = line.find(&prefix) else {
            continue;
        };
        // The reason is on the `#   why:` lines that follow.
        let why: Vec<&str> = lines[index + 1..]
            .iter()
            .take_while(|l| l.starts_with("#   "))
            .map(|l| l.trim_start_matches('#').trim())
            .collect();
        let why = why.join(" ");
        let rest = &line[at + prefix.len()..];
        let Some((lines, reason)) = rest.split_once(')') else {
            continue;
        };
        for number in lines.split(',') {
            if let Ok(number) = number.trim().parse::<usize>() {
                let what = reason.trim_start_matches(':').trim();
                out.insert(number, format!("`{what}` {why}"));
            }
        }
    }
    out
}

/// Directives of a server block that do not change an answer (their being left out is no excuse).
const NO_EFFECT: &[&str] = &[
    "listen",
    "server_name",
    "access_log",
    "error_log",
    "log_not_found",
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_ecdh_curve",
    "http2",
    "resolver",
    "resolver_timeout",
    "keepalive_timeout",
    "server_tokens",
    "sendfile",
    "tcp_nopush",
    "tcp_nodelay",
    "etag",
    "client_body_timeout",
    "client_header_timeout",
    "client_body_buffer_size",
    "send_timeout",
    "large_client_header_buffers",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_dhparam",
];

/// Server-level directives whose being left out explains only some differences (see
/// [`compare::compare`]); any other counts for every difference.
const SERVER_LEVEL: &[&str] = &[
    "client_max_body_size",
    "gzip",
    "gzip_types",
    "gzip_vary",
    "gzip_min_length",
    "gzip_comp_level",
    "gzip_proxied",
    "gzip_static",
    "add_header",
    "expires",
    "proxy_hide_header",
];

/// Why a difference on `path` is the importer's: a line it left out in the location nginx answered
/// from (or one it nests in, or the named location its `try_files` falls back to), or in the
/// server block itself.
/// Returns the directive's name (`location` for a location) and the reason.
fn blame(
    server: &Directive,
    path: &str,
    import: &Import,
    file: &Path,
) -> Option<(&'static str, String)> {
    let chain = probe::nginx_location(server.children(), path);
    let mut spans: Vec<&Directive> = chain.clone();
    for location in &chain {
        for d in location.children() {
            if d.name == "try_files" {
                if let Some(named) = d.args.last().filter(|a| a.starts_with('@')) {
                    spans.extend(
                        probe::locations(server.children())
                            .into_iter()
                            .filter(|l| l.args.first() == Some(named)),
                    );
                }
            }
        }
    }
    for location in spans {
        if let Some((line, reason)) = import
            .left_out
            .range(location.line..=location.end_line)
            .next()
        {
            return Some((
                "location",
                format!(
                    "nginx answered from `location {}` ({}:{}); the importer left out line {line}: {reason}",
                    location.args.join(" "),
                    file.display(),
                    location.line,
                ),
            ));
        }
    }
    for d in server.children() {
        if d.block.is_none() && !NO_EFFECT.contains(&d.name.as_str()) {
            if let Some(reason) = import.left_out.get(&d.line) {
                let name = SERVER_LEVEL
                    .iter()
                    .find(|n| **n == d.name)
                    .copied()
                    .unwrap_or("server");
                return Some((
                    name,
                    format!(
                        "the importer left out the server's `{}` (line {}): {reason}",
                        d.name, d.line
                    ),
                ));
            }
        }
    }
    None
}

/// Response headers compared (those the file adds or hides, and the caching/HSTS ones) and the
/// request headers it sets for upstreams.
fn compared_headers(copy: &[Directive]) -> (Vec<String>, Vec<String>) {
    fn walk(tree: &[Directive], headers: &mut BTreeSet<String>, forwarded: &mut BTreeSet<String>) {
        for d in tree {
            match d.name.as_str() {
                "add_header" | "proxy_hide_header" | "fastcgi_hide_header" => {
                    if let Some(name) = d.arg(0) {
                        headers.insert(name.to_ascii_lowercase());
                    }
                }
                "proxy_set_header" => {
                    if let Some(name) = d.arg(0) {
                        forwarded.insert(name.to_ascii_lowercase());
                    }
                }
                _ => {}
            }
            walk(d.children(), headers, forwarded);
        }
    }
    let mut headers: BTreeSet<String> = ["cache-control", "expires", "strict-transport-security"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut forwarded = BTreeSet::new();
    walk(copy, &mut headers, &mut forwarded);
    // Hop-by-hop and framing headers are the proxy's own business.
    for name in [
        "content-length",
        "connection",
        "upgrade",
        "transfer-encoding",
    ] {
        headers.remove(name);
    }
    (
        headers.into_iter().collect(),
        forwarded.into_iter().collect(),
    )
}

/// The copy's server blocks that listen on the TLS port, with the Host to send: their first name,
/// or `<stem>.test` for a block without one (nginx's default server takes it). Blocks named only
/// `_` are left to the default-server probes of the others.
fn tls_servers<'a>(copy: &'a [Directive], stem: &str, port: u16) -> Vec<(&'a Directive, String)> {
    let listen = format!("127.0.0.1:{port}");
    let mut out: Vec<(&Directive, String)> = Vec::new();
    for server in copy.iter().filter(|d| d.name == "server") {
        if !server
            .children()
            .iter()
            .any(|d| d.name == "listen" && d.args.first() == Some(&listen))
        {
            continue;
        }
        let names: Vec<String> = server
            .children()
            .iter()
            .filter(|d| d.name == "server_name")
            .flat_map(|d| d.args.iter().map(|a| conf::unquote(a)))
            .collect();
        let name = match names.iter().find(|n| n.ends_with(".test")) {
            Some(name) => name.clone(),
            None if names.is_empty() => format!("{stem}.test"),
            None => continue,
        };
        if out.iter().all(|(_, n)| *n != name) {
            out.push((server, name));
        }
    }
    out
}

/// The fragment appended to the test's `[acme]`/`[http]`, with `[https] listen` set (keys the
/// fragment has for `[http]`/`[https]` are kept). Returns the TOML and each site's names.
fn merge_config(
    base: &str,
    fragment: &str,
    https_port: u16,
) -> Result<(String, Vec<Vec<String>>), String> {
    let mut table: toml::Table = toml::from_str(base).map_err(|err| err.to_string())?;
    let fragment: toml::Table = toml::from_str(fragment).map_err(|err| err.to_string())?;
    for (key, value) in fragment {
        match (table.get_mut(&key), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(more)) => {
                for (k, v) in more {
                    have.entry(k).or_insert(v);
                }
            }
            (_, value) => {
                table.insert(key, value);
            }
        }
    }
    let https = table
        .entry("https")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(https) = https {
        https.insert(
            "listen".to_owned(),
            toml::Value::Array(vec![toml::Value::String(format!("127.0.0.1:{https_port}"))]),
        );
    }
    let sites = table
        .get("site")
        .and_then(toml::Value::as_array)
        .map(|sites| {
            sites
                .iter()
                .map(|site| {
                    site.get("names")
                        .and_then(toml::Value::as_array)
                        .map(|names| {
                            names
                                .iter()
                                .filter_map(|n| n.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let text = toml::to_string(&table).map_err(|err| err.to_string())?;
    Ok((text, sites))
}

/// The test tree in a root folder: pages, assets, PHP (whose source must never be sent), dotfiles
/// and a nested folder. Each file names its root and path, so its content hash tells which file of
/// which root answered; `files` gets hash → `<root>/<path>`.
/// The pages the file's `error_page` lines name (`/502.html`), which its roots are expected to have.
fn error_pages(copy: &[Directive]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in copy {
        if d.name == "error_page" {
            if let Some(target) = d.args.last().map(|a| conf::unquote(a)) {
                if target.starts_with('/') && !target.contains('$') && !target.contains("..") {
                    out.insert(target.trim_start_matches('/').to_owned());
                }
            }
        }
        out.extend(error_pages(d.children()));
    }
    out
}

fn fill_root(root: &Path, pages: &BTreeSet<String>, files: &mut HashMap<String, String>) {
    let id = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(40);
    let php = |script: &str| {
        format!(
            "<?php /* {SECRET} {id}/{script} */\nheader('X-Php-Script: ' . $_SERVER['SCRIPT_NAME']);\n\
             header('X-Php-Uri: ' . $_SERVER['REQUEST_URI']);\necho 'php ran ' . $_SERVER['SCRIPT_NAME'];\n"
        )
    };
    let entries: Vec<(&str, Vec<u8>)> = vec![
        (
            "index.html",
            format!("<!doctype html><title>{id}/index.html</title><p>{filler}</p>\n").into_bytes(),
        ),
        (
            "assets/style.css",
            format!("/* {id}/assets/style.css */ body {{ color: #333; }} /* {filler} */\n")
                .into_bytes(),
        ),
        (
            "assets/app.js",
            format!("// {id}/assets/app.js\nconsole.log({filler:?});\n").into_bytes(),
        ),
        (
            "assets/logo.png",
            [
                &b"\x89PNG\r\n\x1a\n"[..],
                format!("{id}/assets/logo.png").as_bytes(),
            ]
            .concat(),
        ),
        (
            "nested/dir/index.html",
            format!("<!doctype html><title>{id}/nested/dir/index.html</title><p>{filler}</p>\n")
                .into_bytes(),
        ),
        (
            "nested/dir/page.html",
            format!("<!doctype html><title>{id}/nested/dir/page.html</title><p>{filler}</p>\n")
                .into_bytes(),
        ),
        (
            "robots.txt",
            format!("# {id}/robots.txt\nUser-agent: *\n").into_bytes(),
        ),
        ("favicon.ico", format!("{id}/favicon.ico").into_bytes()),
        ("index.php", php("index.php").into_bytes()),
        ("wp-config.php", php("wp-config.php").into_bytes()),
        (
            "nested/dir/info.php",
            php("nested/dir/info.php").into_bytes(),
        ),
        (
            ".env",
            format!("DB_PASSWORD={SECRET} {id}/.env\n").into_bytes(),
        ),
        (
            ".git/config",
            format!("[core]\n# {SECRET} {id}/.git/config\n").into_bytes(),
        ),
        (
            ".htaccess",
            format!("# {SECRET} {id}/.htaccess\n").into_bytes(),
        ),
    ];
    let mut entries = entries;
    for page in pages {
        let content = format!("<!doctype html><title>{id}/{page}</title><p>error page</p>\n");
        entries.push((page.as_str(), content.into_bytes()));
    }
    for (path, content) in entries {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create a root folder");
        }
        std::fs::write(&file, &content).expect("write a root file");
        files.insert(compare::hash(&content), format!("{id}/{path}"));
    }
}

/// The CA behind nginx's test certificates (generated at test time with rcgen).
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "certd differential test CA");
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        let pem = issuer.pem();
        Self { issuer, pem }
    }

    /// Writes a leaf for `names` (cert and key PEM).
    fn leaf(&self, names: &[String], cert: &Path, key: &Path) {
        let mut params = CertificateParams::new(names.to_vec()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("test", String::as_str),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = params
            .signed_by(&leaf_key, &self.issuer)
            .expect("sign the leaf");
        std::fs::write(cert, leaf.pem()).expect("write the leaf");
        std::fs::write(key, leaf_key.serialize_pem()).expect("write the key");
    }
}
