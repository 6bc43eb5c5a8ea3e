//! Loading tests: the documented example, every kind of bad input, and several problems at once.
#![allow(clippy::unwrap_used)]

use super::validate::{directory_url, email_address, DEFAULT_CONCURRENCY};
use super::*;

const PATH: &str = "/etc/certd/certd.toml";

/// The smallest valid file; tests append or swap lines to break it.
const MINIMAL: &str = r#"[acme]
directory = "letsencrypt"
agree_tos = true
[[site]]
names = ["example.org"]
"#;

fn parse(text: &str) -> Config {
    match from_toml(text, Path::new(PATH)) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match from_toml(text, Path::new(PATH)) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(err) => {
            assert_eq!(err.file, Path::new(PATH));
            assert!(!err.problems.is_empty());
            err.problems
        }
    }
}

/// Asserts that `text` has exactly one problem, on `key` at `line`, whose reason mentions `fragment`.
#[track_caller]
fn assert_problem(text: &str, key: &str, line: Option<usize>, fragment: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    assert_eq!(found[0].key, key, "{found:#?}");
    assert_eq!(found[0].line, line, "{found:#?}");
    assert!(
        found[0].reason.contains(fragment),
        "reason {:?} does not mention {fragment:?}",
        found[0].reason
    );
}

#[test]
fn the_documented_example_parses() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("pebble-root.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let text = r#"state_dir = "state"                 # default "state", relative to the config file's folder
[acme]
directory = "letsencrypt"           # "letsencrypt", "letsencrypt-staging", or a directory URL
email = "ops@example.org"           # optional contact
agree_tos = true                    # required: the CA's terms must be accepted explicitly
ca_roots = "pebble-root.pem"        # optional: extra PEM roots for the CA's own HTTPS
key_type = "ecdsa-p256"             # ecdsa-p256 (default), ecdsa-p384, rsa2048, rsa4096
[http]
listen = ["0.0.0.0:80"]
[[site]]
names = ["example.org", "www.example.org"]
"#;
    let path = folder.path().join("certd.toml");
    let config = from_toml(text, &path).unwrap();
    assert_eq!(config.source, path);
    assert_eq!(config.state_dir, folder.path().join("state"));
    assert_eq!(config.acme.directory_url, LETSENCRYPT_PRODUCTION);
    assert_eq!(config.acme.email.as_deref(), Some("ops@example.org"));
    assert_eq!(
        config.acme.ca_roots,
        Some(folder.path().join("pebble-root.pem"))
    );
    assert_eq!(config.acme.key_type, KeyType::EcdsaP256);
    assert_eq!(config.acme.concurrency, 4);
    assert_eq!(
        config.http.listen,
        vec!["0.0.0.0:80".parse::<SocketAddr>().unwrap()]
    );
    assert!((config.renewal.remaining_fraction - 1.0 / 3.0).abs() < f64::EPSILON);
    assert_eq!(
        config.sites,
        vec![SiteConfig::with_names(vec![
            "example.org".into(),
            "www.example.org".into()
        ])]
    );
    assert_eq!(config.sites[0].name(), "example.org");
}

#[test]
fn defaults_and_relative_state_dir() {
    let config = parse(MINIMAL);
    assert_eq!(config.state_dir, Path::new("/etc/certd/state"));
    assert_eq!(config.acme.email, None);
    assert_eq!(config.acme.ca_roots, None);
    assert_eq!(config.acme.key_type, KeyType::EcdsaP256);
    assert_eq!(config.acme.concurrency, DEFAULT_CONCURRENCY);
    assert_eq!(config.http.listen, ["0.0.0.0:80".parse().unwrap()]);

    let relative = format!("state_dir = \"var/certd\"\n{MINIMAL}");
    assert_eq!(
        parse(&relative).state_dir,
        Path::new("/etc/certd/var/certd")
    );

    // A bare file name has no folder: paths are relative to the working directory.
    let bare = from_toml(MINIMAL, Path::new("certd.toml")).unwrap();
    assert_eq!(bare.state_dir, Path::new("./state"));
}

#[test]
fn absolute_state_dir_is_kept() {
    let text = format!("state_dir = \"/var/lib/certd\"\n{MINIMAL}");
    assert_eq!(parse(&text).state_dir, Path::new("/var/lib/certd"));
}

#[test]
fn optional_keys() {
    let text = r#"[acme]
directory = "https://localhost:14000/dir"
email = "mailto:Ops@Example.org"
agree_tos = true
key_type = "rsa4096"
concurrency = 64
[http]
listen = ["[::]:80", "127.0.0.1:5002"]
[renewal]
remaining_fraction = 0.5
[[site]]
names = ["WWW.Example.ORG"]
[[site]]
names = ["a.test", "b.test"]
"#;
    let config = parse(text);
    assert_eq!(config.acme.directory_url, "https://localhost:14000/dir");
    assert_eq!(config.acme.email.as_deref(), Some("Ops@Example.org"));
    assert_eq!(config.acme.key_type, KeyType::Rsa4096);
    assert_eq!(config.acme.concurrency, 64);
    assert_eq!(
        config.http.listen,
        vec![
            "[::]:80".parse::<SocketAddr>().unwrap(),
            "127.0.0.1:5002".parse().unwrap()
        ]
    );
    assert!((config.renewal.remaining_fraction - 0.5).abs() < f64::EPSILON);
    let names: Vec<&str> = config.sites.iter().map(SiteConfig::name).collect();
    assert_eq!(names, ["www.example.org", "a.test"]);
}

#[test]
fn directory_shorthands_and_urls() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("letsencrypt", Ok(LETSENCRYPT_PRODUCTION)),
        ("letsencrypt-staging", Ok(LETSENCRYPT_STAGING)),
        ("https://acme.example/dir", Ok("https://acme.example/dir")),
        ("https://[::1]:14000/dir", Ok("https://[::1]:14000/dir")),
        ("http://acme.example/dir", Err("not an https:// URL")),
        ("letsencrypt-prod", Err("not a directory")),
        ("https:///dir", Err("has no host")),
        ("https://", Err("has no host")),
        ("https://acme.example:https/dir", Err("invalid port")),
        ("https://user@acme.example/dir", Err("user name")),
        ("https://acme example/dir", Err("whitespace")),
    ];
    for (input, expected) in cases {
        let result = directory_url(input);
        match expected {
            Ok(url) => assert_eq!(result.as_deref(), Ok(*url), "{input:?}"),
            Err(fragment) => {
                let reason = result.expect_err(input);
                assert!(reason.contains(fragment), "{input:?}: {reason:?}");
            }
        }
    }
}

#[test]
fn email_addresses() {
    assert_eq!(email_address("ops@example.org").unwrap(), "ops@example.org");
    assert_eq!(
        email_address("mailto:ops@example.org").unwrap(),
        "ops@example.org"
    );
    for bad in [
        "",
        "ops",
        "@example.org",
        "ops@",
        "a@b@c",
        "ops @example.org",
        "mailto:",
    ] {
        assert!(email_address(bad).is_err(), "{bad:?} was accepted");
    }
    let text = MINIMAL.replace("agree_tos", "email = \"ops at example.org\"\nagree_tos");
    assert_problem(
        &text,
        "acme.email",
        Some(3),
        "does not look like an e-mail address",
    );
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let top = format!("{MINIMAL}colour = \"blue\"\n");
    // After [[site]], a bare key belongs to that site.
    assert_problem(&top, "site[0].colour", Some(6), "unknown field `colour`");
    let top = format!("colour = \"blue\"\n{MINIMAL}");
    assert_problem(&top, "colour", Some(1), "unknown field `colour`");

    let acme = MINIMAL.replace("agree_tos = true", "agree_tos = true\nagree = true");
    assert_problem(&acme, "acme.agree", Some(4), "unknown field `agree`");

    let site = format!("{MINIMAL}[[site]]\nnames = [\"b.test\"]\nroot = \"/srv\"\n");
    assert_problem(&site, "site[1].root", Some(8), "unknown field `root`");

    let table = format!("{MINIMAL}[tls]\ncert = \"x\"\n");
    assert_problem(&table, "tls", Some(6), "unknown field `tls`");
}

#[test]
fn wrong_types_are_named() {
    let text = MINIMAL.replace("agree_tos = true", "agree_tos = \"yes\"");
    assert_problem(&text, "acme.agree_tos", Some(3), "expected a boolean");
    let text = MINIMAL.replace("names = [\"example.org\"]", "names = [\"a.test\", 7]");
    assert_problem(&text, "site[0].names[1]", Some(5), "expected a string");
    let text = MINIMAL.replace("[[site]]", "[site]");
    assert_problem(&text, "site", Some(4), "expected a sequence");
}

#[test]
fn syntax_errors_have_lines() {
    let text = MINIMAL.replace("agree_tos = true", "agree_tos = tru");
    assert_problem(&text, "", Some(3), "invalid boolean");

    let text = MINIMAL
        .replace("agree_tos = true", "agree_tos = tru")
        .replace("names = [\"example.org\"]", "names = [\"example.org\"");
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].line, Some(3));
    assert_eq!(found[1].line, Some(5));

    let text = format!("{MINIMAL}[acme]\nemail = \"ops@example.org\"\n");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, Some(6), "{found:#?}");
    assert!(found[0].reason.contains("duplicate"), "{found:#?}");
}

#[test]
fn missing_file_names_the_file() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("missing.toml");
    let err = load(&path).unwrap_err();
    assert_eq!(err.file, path);
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].reason.contains("cannot read the file"));
    assert!(err.to_string().contains("missing.toml"));
}

#[test]
fn load_reads_a_file() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("certd.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = load(&path).unwrap();
    assert_eq!(config.state_dir, folder.path().join("state"));
}

#[test]
fn bad_host_names() {
    let long_label = format!("{}.example.org", "a".repeat(64));
    let cases: &[(&str, &str)] = &[
        ("a..example.org", "empty label"),
        ("foo_bar.example.org", "underscores are not allowed"),
        ("example.org.", "trailing dot"),
        ("0.0.0.0", "not an address a CA can connect to"),
        ("[::1]", "without brackets"),
        (&long_label, "at most 63"),
        ("*.example.org", "challenge = \"dns-01\""),
        ("", "empty"),
    ];
    for (name, fragment) in cases {
        let text = MINIMAL.replace(
            "names = [\"example.org\"]",
            &format!("names = [\"example.org\",\n  \"{name}\"]"),
        );
        assert_problem(&text, "site[0].names[1]", Some(6), fragment);
    }
}

#[test]
fn duplicate_names_name_both_places() {
    let text = r#"[acme]
directory = "letsencrypt"
agree_tos = true
[[site]]
names = ["example.org", "www.example.org"]
[[site]]
names = ["other.example"]
[[site]]
names = ["WWW.example.org", "other.example", "x.test", "x.test"]
"#;
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0].key, "site[2].names[0]");
    assert_eq!(found[0].line, Some(9));
    assert_eq!(
        found[0].reason,
        "\"www.example.org\" is already used by site[0] (example.org)"
    );
    assert_eq!(found[1].key, "site[2].names[1]");
    assert!(found[1].reason.contains("site[1] (other.example)"));
    assert_eq!(found[2].key, "site[2].names[3]");
    assert!(found[2]
        .reason
        .contains("listed twice in this site (also site[2].names[2])"));
}

#[test]
fn terms_of_service_must_be_agreed() {
    let missing = MINIMAL.replace("agree_tos = true\n", "");
    assert_problem(&missing, "acme.agree_tos", Some(1), "agree_tos = true");
    let refused = MINIMAL.replace("agree_tos = true", "agree_tos = false");
    assert_problem(&refused, "acme.agree_tos", Some(3), "agree_tos = true");
}

#[test]
fn acme_table_and_directory_are_required() {
    assert_problem("[[site]]\nnames = [\"a.test\"]\n", "acme", None, "[acme]");
    let text = MINIMAL.replace("directory = \"letsencrypt\"\n", "");
    assert_problem(&text, "acme.directory", Some(1), "missing");
    let text = MINIMAL.replace("\"letsencrypt\"", "\"http://localhost:14000/dir\"");
    assert_problem(&text, "acme.directory", Some(2), "https://");
}

#[test]
fn bad_key_type_lists_the_allowed_ones() {
    let text = MINIMAL.replace(
        "agree_tos = true",
        "agree_tos = true\nkey_type = \"ed25519\"",
    );
    assert_problem(
        &text,
        "acme.key_type",
        Some(4),
        "`ecdsa-p256`, `ecdsa-p384`, `rsa2048`, `rsa4096`",
    );
}

#[test]
fn ranges_are_checked() {
    for bad in ["0", "65", "-1"] {
        let text = MINIMAL.replace(
            "agree_tos = true",
            &format!("agree_tos = true\nconcurrency = {bad}"),
        );
        assert_problem(&text, "acme.concurrency", Some(4), "between 1 and 64");
    }
    for bad in ["0.0", "1.0", "1", "-0.5", "nan"] {
        let text = format!("{MINIMAL}[renewal]\nremaining_fraction = {bad}\n");
        assert_problem(&text, "renewal.remaining_fraction", Some(7), "less than 1");
    }
}

#[test]
fn ca_roots_must_exist() {
    let text = MINIMAL.replace(
        "agree_tos = true",
        "agree_tos = true\nca_roots = \"no-such-root.pem\"",
    );
    assert_problem(
        &text,
        "acme.ca_roots",
        Some(4),
        "/etc/certd/no-such-root.pem",
    );
}

#[test]
fn bad_listen_addresses() {
    let text = format!("{MINIMAL}[http]\nlisten = [\"0.0.0.0:80\", \"localhost:80\"]\n");
    assert_problem(
        &text,
        "http.listen[1]",
        Some(7),
        "not an IP address with a port",
    );
    let text = format!("{MINIMAL}[http]\nlisten = [\"0.0.0.0\"]\n");
    assert_problem(&text, "http.listen[0]", Some(7), "\"[::]:80\"");
    let text = format!("{MINIMAL}[http]\nlisten = []\n");
    assert_problem(&text, "http.listen", Some(7), "is empty");
    let text = format!("{MINIMAL}[http]\nlisten = [\"[::]:80\", \"[::]:80\"]\n");
    assert_problem(&text, "http.listen[1]", Some(7), "listed twice");
}

#[test]
fn sites_are_required_and_need_names() {
    let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n";
    assert_problem(text, "site", None, "no [[site]] tables");
    let text = MINIMAL.replace("names = [\"example.org\"]", "names = []");
    assert_problem(&text, "site[0].names", Some(5), "is empty");
    let text = MINIMAL.replace("names = [\"example.org\"]", "");
    assert_problem(&text, "site[0].names", Some(4), "missing");
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r#"state_dir = ""
[acme]
directory = "ftp://ca.example"
agree_tos = false
key_type = "dsa"
[http]
listen = ["nowhere"]
[[site]]
names = ["ok.example", "bad_name.example", "ok.example"]
[[site]]
names = []
"#;
    let err = from_toml(text, Path::new("certd.toml")).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|p| (p.key.as_str(), p.line))
        .collect();
    assert_eq!(
        found,
        [
            ("state_dir", Some(1)),
            ("acme.directory", Some(3)),
            ("acme.agree_tos", Some(4)),
            ("acme.key_type", Some(5)),
            ("http.listen[0]", Some(7)),
            ("site[0].names[1]", Some(9)),
            ("site[0].names[2]", Some(9)),
            ("site[1].names", Some(11)),
        ]
    );
    let shown = err.to_string();
    assert!(shown.starts_with("certd.toml: 8 problems in the configuration\n"));
    assert!(
        shown.contains("\n  certd.toml:9: site[0].names[1]: \"bad_name.example\": underscores"),
        "{shown}"
    );
}

#[test]
fn key_paths_are_quoted_when_not_bare() {
    let text = format!("\"odd key\" = 1\n{MINIMAL}");
    assert_problem(&text, "\"odd key\"", Some(1), "unknown field");
}

/// The `certd run` keys of the `run` issue's example, with real folders and files for `root` and the
/// error pages.
#[test]
fn the_daemon_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/404.html"), "gone").unwrap();
    std::fs::write(dir.path().join("www/50x.html"), "oops").unwrap();
    let text = r#"
[acme]
directory = "letsencrypt"
agree_tos = true

[http]
listen = ["0.0.0.0:80", "[::]:80"]
redirect = true

[https]
listen = ["0.0.0.0:443", "[::]:443"]

[limits]
header_read_timeout = "5s"
max_connections = 500
grace_period = 3

[[site]]
names = ["terrax9.se", "www.terrax9.se"]

  [[site.route]]
  path = "/"
  proxy = "http://127.0.0.1:8080"

  [[site.route]]
  path = "/ws"
  proxy = "http://127.0.0.1:8081"

  [[site.route]]
  path = "/static/"
  root = "www"

  [site.error_pages]
  404 = "www/404.html"
  502 = "www/50x.html"
"#;
    let config = from_toml(text, &dir.path().join("certd.toml")).unwrap();
    assert_eq!(config.https.listen.len(), 2);
    assert!(config.http.redirect);
    assert_eq!(
        config.limits.header_read_timeout,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(config.limits.max_connections, 500);
    assert_eq!(
        config.limits.grace_period,
        std::time::Duration::from_secs(3)
    );
    let site = &config.sites[0];
    assert_eq!(site.routes.len(), 3);
    assert_eq!(site.routes[1].path, "/ws");
    assert_eq!(
        site.routes[1].target,
        RouteTargetConfig::Proxy("http://127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(
        site.routes[2].target,
        RouteTargetConfig::Root(dir.path().join("www"))
    );
    assert_eq!(
        site.error_pages.get(&502),
        Some(&dir.path().join("www/50x.html"))
    );
}

#[test]
fn bad_routes_and_limits_are_each_named() {
    let text = format!(
        "{MINIMAL}\n[[site.route]]\npath = \"nope\"\nproxy = \"http://127.0.0.1:1\"\n\
         [[site.route]]\npath = \"/a\"\n\
         [[site.route]]\npath = \"/b\"\nproxy = \"ftp://x\"\n\
         [site.error_pages]\n200 = \"/nonexistent\"\n\
         [limits]\nidle_timeout = \"soon\"\n"
    );
    let err = from_toml(&text, Path::new(PATH)).unwrap_err();
    let keys: Vec<&str> = err
        .problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    for expected in [
        "site[0].route[0].path",
        "site[0].route[1]",
        "site[0].route[2].proxy",
        "site[0].error_pages.200",
        "limits.idle_timeout",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} not in {keys:?}\n{err}"
        );
    }
    assert!(
        err.problems.iter().all(|problem| problem.line.is_some()),
        "{err}"
    );
}

#[test]
fn sites_are_selected_by_first_name() {
    let config = parse(&format!(
        "{MINIMAL}[[site]]\nnames = [\"b.org\", \"www.b.org\"]\n"
    ));
    assert_eq!(config.select_sites(&[]).unwrap().len(), 2);
    let picked = config.select_sites(&["B.org".into()]).unwrap();
    assert_eq!(picked[0].names[1], "www.b.org");
    let err = config.select_sites(&["www.b.org".into()]).unwrap_err();
    assert!(err.contains("example.org, b.org"), "{err}");
}

/// The examples in deploy/examples stay valid: each parses once its folders exist (here, in a
/// temporary folder standing in for /srv).
#[test]
fn the_deploy_examples_parse() {
    let srv = tempfile::tempdir().unwrap();
    let www = srv.path().join("togetherers/www");
    std::fs::create_dir_all(&www).unwrap();
    for page in ["404.html", "50x.html"] {
        std::fs::write(www.join(page), "page").unwrap();
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    for name in ["terrax9.toml", "togetherers.toml"] {
        let text = std::fs::read_to_string(examples.join(name)).unwrap();
        let text = text.replace("/srv/", &format!("{}/", srv.path().display()));
        let config = match from_toml(&text, &examples.join(name)) {
            Ok(config) => config,
            Err(err) => panic!("{name}:\n{err}"),
        };
        assert_eq!(config.https.listen.len(), 2, "{name}");
        assert!(!config.sites[0].routes.is_empty(), "{name}");
    }
}

#[test]
fn status_metrics_and_hook_are_read_and_checked() {
    let config = parse(&format!(
        "{MINIMAL}[status]\nwarn_days = 20\ncritical_days = 5\n[metrics]\nlisten = \"127.0.0.1:9443\"\n\
         [hook]\ncommand = [\"/bin/true\", \"x\"]\n"
    ));
    assert_eq!(config.operations.warn_days, 20);
    assert_eq!(config.operations.critical_days, 5);
    assert_eq!(
        config.operations.metrics_listen,
        Some("127.0.0.1:9443".parse().unwrap())
    );
    assert_eq!(
        config.operations.hook,
        Some(vec!["/bin/true".to_string(), "x".to_string()])
    );

    let err = from_toml(
        &format!(
            "{MINIMAL}[status]\nwarn_days = 3\ncritical_days = 5\n[metrics]\nlisten = \"nine\"\n\
             [hook]\ncommand = []\n"
        ),
        Path::new(PATH),
    )
    .unwrap_err();
    let keys: Vec<&str> = err
        .problems
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    assert_eq!(
        keys,
        ["status.critical_days", "metrics.listen", "hook.command"],
        "{err}"
    );
}

#[test]
fn tunnel_timeouts_and_dotfiles_are_read_for_their_kind_of_route() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let text = format!(
        "{MINIMAL}[[site.route]]\npath = \"/ws\"\nproxy = \"http://127.0.0.1:1\"\n\
         tunnel_idle_timeout = \"10m\"\n\
         [[site.route]]\npath = \"/\"\nroot = \"www\"\nallow_dotfiles = true\n\
         [limits]\ntunnel_idle_timeout = \"2h\"\n"
    );
    let config = from_toml(&text, &dir.path().join("certd.toml")).unwrap();
    assert_eq!(
        config.limits.tunnel_idle_timeout,
        std::time::Duration::from_secs(7200)
    );
    let routes = &config.sites[0].routes;
    assert_eq!(
        routes[0].tunnel_idle_timeout,
        Some(std::time::Duration::from_secs(600))
    );
    assert!(!routes[0].allow_dotfiles);
    assert_eq!(routes[1].tunnel_idle_timeout, None);
    assert!(routes[1].allow_dotfiles);
    assert_eq!(
        parse(MINIMAL).limits.tunnel_idle_timeout,
        DEFAULT_TUNNEL_IDLE_TIMEOUT
    );
}

#[test]
fn tunnel_timeouts_and_dotfiles_on_the_wrong_route_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    let text = format!(
        "{MINIMAL}[[site.route]]\npath = \"/ws\"\nproxy = \"http://127.0.0.1:1\"\n\
         allow_dotfiles = true\n\
         [[site.route]]\npath = \"/\"\nroot = \"www\"\ntunnel_idle_timeout = \"1m\"\n\
         [[site.route]]\npath = \"/long\"\nproxy = \"http://127.0.0.1:1\"\n\
         tunnel_idle_timeout = \"1000h\"\n\
         [limits]\ntunnel_idle_timeout = \"0s\"\n"
    );
    let err = from_toml(&text, &dir.path().join("certd.toml")).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err
        .problems
        .iter()
        .map(|problem| (problem.key.as_str(), problem.line))
        .collect();
    for expected in [
        ("site[0].route[0].allow_dotfiles", Some(9)),
        ("site[0].route[1].tunnel_idle_timeout", Some(13)),
        ("site[0].route[2].tunnel_idle_timeout", Some(17)),
        ("limits.tunnel_idle_timeout", Some(19)),
    ] {
        assert!(
            found.contains(&expected),
            "{expected:?} not in {found:?}\n{err}"
        );
    }
    assert!(
        err.to_string().contains("only applies to `root` routes"),
        "{err}"
    );
    assert!(err.to_string().contains("at most 168h"), "{err}");
}

#[test]
fn the_default_site_is_a_first_name_of_a_site() {
    let with = |value: &str| {
        format!(
            "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n[https]\ndefault_site = \
             \"{value}\"\n[[site]]\nnames = [\"a.example\", \"www.a.example\"]\n[[site]]\nnames = \
             [\"b.example\"]\n"
        )
    };
    assert_eq!(parse(MINIMAL).https.default_site, None);
    assert_eq!(
        parse(&with("b.example")).https.default_site.as_deref(),
        Some("b.example")
    );
    assert_eq!(
        parse(&with("A.Example")).https.default_site.as_deref(),
        Some("a.example")
    );
    assert_problem(
        &with("www.a.example"),
        "https.default_site",
        Some(5),
        "write the site's first name, `a.example`",
    );
    assert_problem(
        &with("c.example"),
        "https.default_site",
        Some(5),
        "not the first name of any [[site]]; the sites are: `a.example`, `b.example`",
    );
}

#[test]
fn durations_have_an_upper_bound_named_in_the_error() {
    // Every [limits] duration: at most a day.
    for key in [
        "header_read_timeout",
        "idle_timeout",
        "grace_period",
        "upstream_connect_timeout",
        "upstream_response_timeout",
    ] {
        let text = format!("{MINIMAL}[limits]\n{key} = \"1000000000h\"\n");
        assert_problem(
            &text,
            &format!("limits.{key}"),
            Some(7),
            "\"1000000000h\" is more than the longest allowed, 24h",
        );
        let text = format!("{MINIMAL}[limits]\n{key} = \"24h\"\n");
        parse(&text);
    }
    let err = from_toml(
        &format!("{MINIMAL}[limits]\nidle_timeout = \"1000000000h\"\n"),
        Path::new(PATH),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(PATH) && err.contains("line 7") || err.contains(&format!("{PATH}:7")),
        "the file and line are named: {err}"
    );
    assert!(
        err.contains("limits.idle_timeout") && err.contains("the longest allowed, 24h"),
        "{err}"
    );
    // Overflowing u64 milliseconds is refused rather than saturated.
    assert_problem(
        &format!("{MINIMAL}[limits]\nidle_timeout = \"18446744073709551615h\"\n"),
        "limits.idle_timeout",
        Some(7),
        "too long",
    );

    // [renewal] delays: at most 30 days, as seconds or text.
    for (key, value) in [
        ("first_retry", "\"1000000000h\""),
        ("longest_retry", "\"721h\""),
        ("longest_retry", "9223372036854775807"),
    ] {
        assert_problem(
            &format!("{MINIMAL}[renewal]\n{key} = {value}\n"),
            &format!("renewal.{key}"),
            Some(7),
            "is more than the longest allowed, 720h (30 days)",
        );
    }
    let config = parse(&format!(
        "{MINIMAL}[renewal]\nfirst_retry = \"720h\"\nlongest_retry = \"720h\"\n"
    ));
    assert_eq!(
        config.renewal.longest_retry,
        std::time::Duration::from_secs(30 * 86_400)
    );
}

#[test]
fn the_longest_retry_is_not_shorter_than_the_first() {
    assert_problem(
        &format!("{MINIMAL}[renewal]\nfirst_retry = \"2h\"\nlongest_retry = \"1h\"\n"),
        "renewal.longest_retry",
        Some(8),
        "1h is shorter than renewal.first_retry (2h)",
    );
    // Against the default longest_retry (6h), the first_retry is at fault.
    assert_problem(
        &format!("{MINIMAL}[renewal]\nfirst_retry = \"12h\"\n"),
        "renewal.first_retry",
        Some(7),
        "12h is longer than renewal.longest_retry (6h, the default)",
    );
    let config = parse(&format!(
        "{MINIMAL}[renewal]\nfirst_retry = \"30m\"\nlongest_retry = \"30m\"\n"
    ));
    assert_eq!(
        config.renewal.first_retry,
        std::time::Duration::from_secs(1800)
    );
}

#[test]
fn trusted_proxies_and_proxy_protocol() {
    let config = parse(&format!(
        "{MINIMAL}[https]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"::1\"]\n\
         proxy_protocol = true\n[http]\nproxy_protocol = true\n"
    ));
    let ranges: Vec<String> = config
        .https
        .trusted_proxies
        .ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ranges, ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]);
    assert!(config.https.proxy_protocol);
    assert!(config.http.proxy_protocol);

    let defaults = parse(MINIMAL);
    assert!(defaults.https.trusted_proxies.is_empty());
    assert!(!defaults.https.proxy_protocol);
    assert!(!defaults.http.proxy_protocol);
}

#[test]
fn bad_trusted_proxies_and_proxy_protocol_without_them_are_refused() {
    assert_problem(
        &format!("{MINIMAL}[https]\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]\n"),
        "https.trusted_proxies[1]",
        Some(7),
        "`lb.internal` is not an IP address or a CIDR range",
    );
    assert_problem(
        &format!("{MINIMAL}[https]\ntrusted_proxies = [\"10.0.0.0/40\"]\n"),
        "https.trusted_proxies[0]",
        Some(7),
        "10.0.0.0/40",
    );
    assert_problem(
        &format!("{MINIMAL}[https]\nproxy_protocol = true\n"),
        "https.proxy_protocol",
        Some(7),
        "needs `[https] trusted_proxies`",
    );
    assert_problem(
        &format!("{MINIMAL}[http]\nproxy_protocol = true\n"),
        "http.proxy_protocol",
        Some(7),
        "needs `[https] trusted_proxies`",
    );
    assert_problem(
        &format!("{MINIMAL}[https]\ntrusted_proxies = []\nproxy_protocol = true\n"),
        "https.proxy_protocol",
        Some(8),
        "needs `[https] trusted_proxies`",
    );
}

#[test]
fn challenges_per_site_with_an_acme_default_and_automatic_without() {
    let config = parse(
        r#"[acme]
directory = "letsencrypt"
agree_tos = true
challenge = "tls-alpn-01"
[[site]]
names = ["a.test"]
[[site]]
names = ["b.test", "192.0.2.7", "2001:DB8::1"]
challenge = "http-01"
"#,
    );
    assert_eq!(config.acme.challenge, Some(ChallengeKind::TlsAlpn01));
    assert_eq!(config.sites[0].challenge, Some(ChallengeKind::TlsAlpn01));
    assert_eq!(config.sites[1].challenge, Some(ChallengeKind::Http01));
    assert_eq!(
        config.sites[1].names,
        ["b.test", "192.0.2.7", "2001:db8::1"]
    );
    assert_eq!(parse(MINIMAL).sites[0].challenge, None, "automatic");

    let site = |extra: &str| MINIMAL.replace("[[site]]", &format!("[[site]]\n{extra}"));
    assert_problem(
        &site("challenge = \"dns-01\""),
        "site[0].challenge",
        Some(5),
        "needs a DNS method",
    );
    assert_problem(
        &site("challenge = \"tls-alpn\""),
        "site[0].challenge",
        Some(5),
        "\"tls-alpn-01\"",
    );
    assert_problem(
        &MINIMAL.replace(
            "agree_tos = true",
            "agree_tos = true\nchallenge = \"dns-01\"",
        ),
        "acme.challenge",
        Some(4),
        "needs a DNS method",
    );
    // A wildcard with an explicit non-DNS challenge names it.
    assert_problem(
        &site("challenge = \"http-01\"")
            .replace("names = [\"example.org\"]", "names = [\"*.example.org\"]"),
        "site[0].names[0]",
        Some(6),
        "the site uses \"http-01\"; set `challenge = \"dns-01\"`",
    );
}

#[test]
fn external_account_binding_keys_and_the_shorthands_that_need_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("eab.key");
    std::fs::write(
        &key,
        "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with = |directory: &str, extra: &str| {
        MINIMAL
            .replace("\"letsencrypt\"", &format!("\"{directory}\""))
            .replace("agree_tos = true", &format!("agree_tos = true\n{extra}"))
    };
    let keys = format!(
        "eab_kid = \"kid-1\"\neab_hmac_key_file = \"{}\"",
        key.display()
    );

    let config = parse(&with("zerossl", &keys));
    assert_eq!(config.acme.directory_url, ZEROSSL);
    let eab = config.acme.eab.unwrap();
    assert_eq!(
        (eab.kid.as_str(), eab.hmac_key_file.as_path()),
        ("kid-1", key.as_path())
    );
    assert_eq!(parse(&with("google", &keys)).acme.directory_url, GOOGLE);
    assert_eq!(parse(MINIMAL).acme.eab, None);

    assert_problem(
        &with("zerossl", ""),
        "acme.eab_kid",
        Some(1),
        "only creates accounts with external account binding",
    );
    assert_problem(
        &with("google", "eab_kid = \"kid-1\""),
        "acme.eab_hmac_key_file",
        Some(4),
        "missing",
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_problem(
        &with("zerossl", &keys),
        "acme.eab_hmac_key_file",
        Some(5),
        "readable by every user",
    );
}
