//! `[[upstream]]` groups (nginx's `upstream { server ...; }` blocks): their validation into the
//! proxy's typed form ([`UpstreamConfig`], owned by `crate::proxy`), and how a route's
//! `proxy = "http://<name>"` is resolved to one of them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use super::problems::Problems;
use super::raw::RawDuration;
use super::serving::{parse_duration_at_most, LONGEST_LIMIT};
// The proxy owns what a group is; re-exported so that `crate::config::UpstreamConfig` stays the
// name every reader of a validated `Config` uses.
pub use crate::proxy::{
    Balance, NextUpstream, ServerAddress, ServerConfig, UpstreamConfig, MAX_SERVERS,
};

/// The statuses `next_upstream` may list, as nginx's `http_<status>` flags.
const RETRY_STATUSES: [u16; 6] = [500, 502, 503, 504, 403, 429];

/// `[[upstream]]` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: Option<Spanned<String>>,
    pub(super) servers: Option<Spanned<Vec<Spanned<RawServer>>>>,
    pub(super) balance: Option<Spanned<String>>,
    pub(super) next_upstream: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) next_upstream_tries: Option<Spanned<i64>>,
}

/// One entry of `servers`: `"host:port"`, `"unix:/path"`, or a table with options.
#[derive(Debug)]
pub(super) enum RawServer {
    Address(String),
    Table(RawServerTable),
}

/// `{ address = "...", weight = 2, max_fails = 3, fail_timeout = "10s", backup = true }`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTable {
    pub(super) address: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) max_fails: Option<Spanned<i64>>,
    pub(super) fail_timeout: Option<Spanned<RawDuration>>,
    pub(super) backup: Option<Spanned<bool>>,
}

// Hand-written rather than `#[serde(untagged)]`, so a typo in a server table is reported as the
// unknown key it is, not as "data did not match any variant".
impl<'de> serde::Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ServerVisitor;
        impl<'de> Visitor<'de> for ServerVisitor {
            type Value = RawServer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"host:port\", \"unix:/path\" or a table with `address`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawServer, E> {
                Ok(RawServer::Address(value.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawServer, A::Error> {
                let table =
                    serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawServer::Table(table))
            }
        }
        deserializer.deserialize_any(ServerVisitor)
    }
}

/// The `[[upstream]]` tables.
pub(super) fn upstreams(
    raw: Vec<Spanned<RawUpstream>>,
    problems: &mut Problems<'_>,
) -> Vec<UpstreamConfig> {
    let mut groups: Vec<UpstreamConfig> = Vec::with_capacity(raw.len());
    for (i, upstream) in raw.into_iter().enumerate() {
        let key = format!("upstream[{i}]");
        let table = upstream.span();
        let raw = upstream.into_inner();
        let Some(name) = raw.name else {
            problems.add(
                format!("{key}.name"),
                Some(table),
                "missing: each [[upstream]] needs `name = \"app\"` (routes say proxy = \"http://app\")",
            );
            continue;
        };
        let lower = name.get_ref().to_ascii_lowercase();
        if let Err(reason) = group_name(&lower) {
            problems.add(format!("{key}.name"), Some(name.span()), reason);
            continue;
        }
        if let Some(first) = groups.iter().position(|group| group.name == lower) {
            problems.add(
                format!("{key}.name"),
                Some(name.span()),
                format!("{lower:?} is already the name of upstream[{first}]"),
            );
            continue;
        }
        let balance = match raw.balance {
            None => Balance::RoundRobin,
            Some(balance) => match balance.get_ref().as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_conn" => Balance::LeastConn,
                "ip_hash" => Balance::IpHash,
                other => {
                    problems.add(
                        format!("{key}.balance"),
                        Some(balance.span()),
                        format!("{other:?}: write \"round_robin\", \"least_conn\" or \"ip_hash\""),
                    );
                    continue;
                }
            },
        };
        let Some(raw_servers) = raw.servers else {
            problems.add(
                format!("{key}.servers"),
                Some(table),
                "missing: list the servers, e.g. servers = [\"127.0.0.1:8080\", \"unix:/run/app.sock\"]",
            );
            continue;
        };
        let servers_span = raw_servers.span();
        let raw_servers = raw_servers.into_inner();
        if raw_servers.is_empty() || raw_servers.len() > MAX_SERVERS {
            problems.add(
                format!("{key}.servers"),
                Some(servers_span),
                format!("must list 1 to {MAX_SERVERS} servers"),
            );
            continue;
        }
        let before = problems.found.len();
        let servers: Vec<ServerConfig> = raw_servers
            .into_iter()
            .enumerate()
            .filter_map(|(j, server)| {
                let span = server.span();
                self::server(
                    &format!("{key}.servers[{j}]"),
                    span,
                    server.into_inner(),
                    problems,
                )
            })
            .collect();
        if balance == Balance::IpHash && servers.iter().any(|server| server.backup) {
            problems.add(
                format!("{key}.servers"),
                Some(servers_span.clone()),
                "`backup` servers cannot be used with balance = \"ip_hash\" (as in nginx): the \
                 hash would send clients elsewhere whenever a backup takes over",
            );
        }
        if servers.iter().all(|server| server.backup) && !servers.is_empty() {
            problems.add(
                format!("{key}.servers"),
                Some(servers_span),
                "every server is a `backup`: at least one must be a primary server",
            );
        }
        let next_upstream = match raw.next_upstream {
            None => NextUpstream::default(),
            Some(list) => match next_upstream(&key, list, problems) {
                Some(parsed) => parsed,
                None => continue,
            },
        };
        let next_upstream_tries = match raw.next_upstream_tries {
            None => 0,
            Some(tries) => match usize::try_from(*tries.get_ref()) {
                Ok(parsed) if parsed <= MAX_SERVERS => parsed,
                _ => {
                    problems.add(
                        format!("{key}.next_upstream_tries"),
                        Some(tries.span()),
                        format!(
                            "{} is out of range 0..={MAX_SERVERS} (0: each server once)",
                            tries.get_ref()
                        ),
                    );
                    continue;
                }
            },
        };
        if problems.found.len() != before {
            continue;
        }
        groups.push(UpstreamConfig {
            name: lower,
            servers,
            balance,
            next_upstream,
            next_upstream_tries,
        });
    }
    groups
}

/// A group name: one label of letters, digits, `-` and `_`, so `http://<name>` is a URL whose host
/// can never be mistaken for a real host name (which has a dot, or is `localhost`).
fn group_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "{name:?}: a group name is one label of letters, digits, `-` and `_` (e.g. \"app\")"
        ));
    }
    if name == "localhost" || name.parse::<u32>().is_ok() {
        return Err(format!("{name:?} would read as a host, not a group name"));
    }
    Ok(())
}

fn server(
    key: &str,
    span: std::ops::Range<usize>,
    raw: RawServer,
    problems: &mut Problems<'_>,
) -> Option<ServerConfig> {
    let mut server = ServerConfig {
        address: ServerAddress::Tcp(String::new()),
        weight: 1,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
    };
    let (address, address_key, address_span) = match raw {
        RawServer::Address(address) => (address, key.to_owned(), span),
        RawServer::Table(table) => {
            let Some(address) = table.address else {
                problems.add(
                    format!("{key}.address"),
                    Some(span),
                    "missing: a server table needs `address = \"host:port\"` or \"unix:/path\"",
                );
                return None;
            };
            let mut ok = true;
            let mut count = |name: &str, value: Option<Spanned<i64>>, min: i64, into: &mut u32| {
                if let Some(value) = value {
                    match u32::try_from(*value.get_ref()) {
                        Ok(parsed) if (min..=1000).contains(value.get_ref()) => *into = parsed,
                        _ => {
                            ok = false;
                            problems.add(
                                format!("{key}.{name}"),
                                Some(value.span()),
                                format!("{} is out of range {min}..=1000", value.get_ref()),
                            );
                        }
                    }
                }
            };
            count("weight", table.weight, 1, &mut server.weight);
            count("max_fails", table.max_fails, 0, &mut server.max_fails);
            if let Some(timeout) = table.fail_timeout {
                match parse_duration_at_most(timeout.get_ref(), LONGEST_LIMIT) {
                    Ok(parsed) if !parsed.is_zero() => server.fail_timeout = parsed,
                    Ok(_) => {
                        ok = false;
                        problems.add(
                            format!("{key}.fail_timeout"),
                            Some(timeout.span()),
                            "must be more than zero",
                        );
                    }
                    Err(reason) => {
                        ok = false;
                        problems.add(format!("{key}.fail_timeout"), Some(timeout.span()), reason);
                    }
                }
            }
            server.backup = table.backup.is_some_and(|backup| *backup.get_ref());
            if !ok {
                return None;
            }
            let address_span = address.span();
            (address.into_inner(), format!("{key}.address"), address_span)
        }
    };
    match server_address(&address) {
        Ok(parsed) => server.address = parsed,
        Err(reason) => {
            problems.add(address_key, Some(address_span), reason);
            return None;
        }
    }
    Some(server)
}

/// `"host:port"` or `"unix:/absolute/path"`.
pub(crate) fn server_address(text: &str) -> Result<ServerAddress, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!("{text:?}: a unix socket path must be absolute"));
        }
        return Ok(ServerAddress::Unix(path));
    }
    let bad = || {
        format!(
            "{text:?} is not an upstream address: write \"host:port\" or \"unix:/path/app.sock\""
        )
    };
    let authority: hyper::http::uri::Authority = text.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.as_str() != text || text.contains('@') {
        return Err(bad());
    }
    // Unix sockets are reached through synthetic `*.invalid` hosts (see the proxy's connector);
    // a real one there could never resolve anyway.
    if authority.host().to_ascii_lowercase().ends_with(".invalid") {
        return Err(format!("{text:?}: `.invalid` hosts never resolve"));
    }
    Ok(ServerAddress::Tcp(text.to_owned()))
}

fn next_upstream(
    key: &str,
    raw: Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> Option<NextUpstream> {
    let span = raw.span();
    let list = raw.into_inner();
    let mut parsed = NextUpstream {
        error: false,
        timeout: false,
        statuses: Vec::new(),
        non_idempotent: false,
    };
    let mut seen = HashSet::new();
    let mut ok = true;
    for (j, entry) in list.iter().enumerate() {
        let word = entry.get_ref().as_str();
        let status = word
            .strip_prefix("http_")
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|code| RETRY_STATUSES.contains(code));
        match (word, status) {
            (_, Some(code)) => parsed.statuses.push(code),
            ("error", _) => parsed.error = true,
            ("timeout", _) => parsed.timeout = true,
            ("non_idempotent", _) => parsed.non_idempotent = true,
            ("off", _) if list.len() == 1 => {}
            ("off", _) => {
                ok = false;
                problems.add(
                    format!("{key}.next_upstream[{j}]"),
                    Some(entry.span()),
                    "\"off\" must be the only entry",
                );
            }
            (other, None) => {
                ok = false;
                problems.add(
                    format!("{key}.next_upstream[{j}]"),
                    Some(entry.span()),
                    format!(
                        "{other:?}: write \"error\", \"timeout\", \"http_500\", \"http_502\", \
                         \"http_503\", \"http_504\", \"http_403\", \"http_429\", \
                         \"non_idempotent\" or \"off\""
                    ),
                );
            }
        }
        if !seen.insert(word) {
            ok = false;
            problems.add(
                format!("{key}.next_upstream[{j}]"),
                Some(entry.span()),
                format!("{word:?} is listed twice"),
            );
        }
    }
    if list.is_empty() {
        ok = false;
        problems.add(
            format!("{key}.next_upstream"),
            Some(span),
            "is empty: write [\"off\"] to never retry",
        );
    }
    ok.then_some(parsed)
}

/// For a route's `proxy` URL: the group it names, if any. A host of one label without a port
/// (`http://app`) must name an `[[upstream]]`, as nginx's `proxy_pass http://app` does; any other
/// host is a plain upstream (a group of one).
pub(super) fn group_of(
    uri: &hyper::Uri,
    groups: &[UpstreamConfig],
) -> Result<Option<String>, String> {
    let Some(authority) = uri.authority() else {
        return Ok(None);
    };
    let host = authority.host().to_ascii_lowercase();
    if authority.port().is_some() || host.contains('.') || host.contains(':') || host == "localhost"
    {
        return Ok(None);
    }
    if groups.iter().any(|group| group.name == host) {
        return Ok(Some(host));
    }
    let known = if groups.is_empty() {
        "there are no [[upstream]] tables".to_owned()
    } else {
        let names: Vec<String> = groups.iter().map(|g| format!("`{}`", g.name)).collect();
        format!("the upstreams are: {}", names.join(", "))
    };
    Err(format!(
        "no [[upstream]] named `{host}` ({known}); a plain upstream needs a port, e.g. \"http://{host}:8080\""
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{from_toml, ConfigProblem, ProxyTimeouts, RouteTargetConfig};

    const HEAD: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n";

    fn load(text: &str) -> Result<crate::config::Config, Vec<ConfigProblem>> {
        from_toml(
            &format!("{HEAD}{text}"),
            std::path::Path::new("/etc/certd/certd.toml"),
        )
        .map_err(|error| error.problems)
    }

    /// The one problem of `text`: its key, its line (counting the 3 lines of HEAD) and reason.
    #[track_caller]
    fn problem(text: &str) -> (String, Option<usize>, String) {
        let found = load(text).unwrap_err();
        assert_eq!(found.len(), 1, "{found:#?}");
        let problem = found.into_iter().next().unwrap();
        (problem.key, problem.line, problem.reason)
    }

    const SITE: &str = "[[site]]\nnames = [\"a.test\"]\n[[site.route]]\npath = \"/\"\n";

    #[test]
    fn groups_parse_with_every_server_form_and_routes_name_them() {
        let config = load(&format!(
            "{SITE}proxy = \"http://app/base\"\nconnect_timeout = \"2s\"\nread_timeout = \"2h\"\n\
             [[upstream]]\nname = \"App\"\nbalance = \"least_conn\"\n\
             next_upstream = [\"error\", \"timeout\", \"http_503\"]\nnext_upstream_tries = 2\n\
             servers = [\"127.0.0.1:8080\", \"unix:/run/app.sock\", \
             {{ address = \"[::1]:9000\", weight = 3, max_fails = 2, fail_timeout = \"30s\", backup = true }}]\n"
        ))
        .unwrap();
        let group = &config.upstreams[0];
        assert_eq!(group.name, "app");
        assert_eq!(group.balance, Balance::LeastConn);
        assert_eq!(group.next_upstream_tries, 2);
        assert_eq!(group.next_upstream.statuses, [503]);
        assert_eq!(
            group
                .servers
                .iter()
                .map(|s| s.address.clone())
                .collect::<Vec<_>>(),
            [
                ServerAddress::Tcp("127.0.0.1:8080".into()),
                ServerAddress::Unix("/run/app.sock".into()),
                ServerAddress::Tcp("[::1]:9000".into()),
            ]
        );
        let last = &group.servers[2];
        assert_eq!(
            (last.weight, last.max_fails, last.fail_timeout, last.backup),
            (3, 2, Duration::from_secs(30), true)
        );
        assert_eq!(
            (group.servers[0].weight, group.servers[0].max_fails),
            (1, 1)
        );
        let route = &config.sites[0].routes[0];
        assert_eq!(route.upstream.as_deref(), Some("app"));
        assert!(matches!(&route.target, RouteTargetConfig::Proxy(uri) if uri.path() == "/base"));
        assert_eq!(
            route.timeouts,
            ProxyTimeouts {
                connect: Some(Duration::from_secs(2)),
                read: Some(Duration::from_secs(7200)),
                send: None,
            }
        );
    }

    #[test]
    fn a_plain_upstream_is_not_a_group() {
        let config = load(&format!("{SITE}proxy = \"http://127.0.0.1:8080\"\n")).unwrap();
        assert_eq!(config.sites[0].routes[0].upstream, None);
        assert!(config.upstreams.is_empty());
    }

    #[test]
    fn an_unknown_group_names_the_route_key_and_line() {
        let (key, line, reason) = problem(&format!(
            "{SITE}proxy = \"http://api\"\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\n"
        ));
        assert_eq!((key.as_str(), line), ("site[0].route[0].proxy", Some(8)));
        assert!(reason.contains("no [[upstream]] named `api`"), "{reason}");
        assert!(reason.contains("`app`"), "{reason}");
    }

    #[test]
    fn bad_groups_are_refused_with_key_and_line() {
        let group = |body: &str| format!("[[site]]\nnames = [\"a.test\"]\n[[upstream]]\n{body}");
        let cases = [
            ("servers = [\"127.0.0.1:1\"]\n", "upstream[0].name", 6, "missing"),
            ("name = \"a.b\"\nservers = [\"127.0.0.1:1\"]\n", "upstream[0].name", 7, "one label"),
            ("name = \"app\"\n", "upstream[0].servers", 6, "missing"),
            ("name = \"app\"\nservers = []\n", "upstream[0].servers", 8, "1 to 64"),
            ("name = \"app\"\nservers = [\"127.0.0.1\"]\n", "upstream[0].servers[0]", 8, "host:port"),
            ("name = \"app\"\nservers = [\"unix:app.sock\"]\n", "upstream[0].servers[0]", 8, "absolute"),
            (
                "name = \"app\"\nservers = [{ address = \"127.0.0.1:1\", weight = 0 }]\n",
                "upstream[0].servers[0].weight",
                8,
                "out of range 1..=1000",
            ),
            (
                "name = \"app\"\nservers = [{ weight = 2 }]\n",
                "upstream[0].servers[0].address",
                8,
                "missing",
            ),
            (
                "name = \"app\"\nbalance = \"random\"\nservers = [\"127.0.0.1:1\"]\n",
                "upstream[0].balance",
                8,
                "least_conn",
            ),
            (
                "name = \"app\"\nbalance = \"ip_hash\"\n\
                 servers = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", backup = true }]\n",
                "upstream[0].servers",
                9,
                "ip_hash",
            ),
            (
                "name = \"app\"\nservers = [{ address = \"127.0.0.1:2\", backup = true }]\n",
                "upstream[0].servers",
                8,
                "primary",
            ),
            (
                "name = \"app\"\nservers = [\"127.0.0.1:1\"]\nnext_upstream = [\"error\", \"http_404\"]\n",
                "upstream[0].next_upstream[1]",
                9,
                "http_502",
            ),
            (
                "name = \"app\"\nservers = [\"127.0.0.1:1\"]\nnext_upstream = [\"off\", \"error\"]\n",
                "upstream[0].next_upstream[0]",
                9,
                "only entry",
            ),
            (
                "name = \"app\"\nservers = [\"127.0.0.1:1\"]\nnext_upstream_tries = 65\n",
                "upstream[0].next_upstream_tries",
                9,
                "0..=64",
            ),
        ];
        for (body, key, line, fragment) in cases {
            let (found_key, found_line, reason) = problem(&group(body));
            assert_eq!(
                (found_key.as_str(), found_line),
                (key, Some(line)),
                "{body}: {reason}"
            );
            assert!(reason.contains(fragment), "{body}: {reason}");
        }
    }

    #[test]
    fn duplicate_groups_unknown_server_keys_and_misplaced_timeouts_are_refused() {
        let (key, line, reason) = problem(
            "[[site]]\nnames = [\"a.test\"]\n[[upstream]]\nname = \"app\"\nservers = [\"127.0.0.1:1\"]\n\
             [[upstream]]\nname = \"APP\"\nservers = [\"127.0.0.1:2\"]\n",
        );
        assert_eq!((key.as_str(), line), ("upstream[1].name", Some(10)));
        assert!(reason.contains("upstream[0]"), "{reason}");

        let (key, _, reason) = problem(
            "[[site]]\nnames = [\"a.test\"]\n[[upstream]]\nname = \"app\"\n\
             servers = [{ address = \"127.0.0.1:1\", wieght = 2 }]\n",
        );
        assert!(key.starts_with("upstream[0].servers[0]"), "{key}");
        assert!(reason.contains("wieght"), "{reason}");

        let folder = tempfile::tempdir().unwrap();
        let (key, line, reason) = problem(&format!(
            "[[site]]\nnames = [\"a.test\"]\n[[site.route]]\npath = \"/\"\nroot = {:?}\nread_timeout = \"5s\"\n",
            folder.path().display().to_string()
        ));
        assert_eq!(
            (key.as_str(), line),
            ("site[0].route[0].read_timeout", Some(9))
        );
        assert!(
            reason.contains("only applies to `proxy` routes"),
            "{reason}"
        );

        let (key, _, reason) = problem(&format!(
            "{SITE}proxy = \"http://127.0.0.1:1\"\nconnect_timeout = 0\n"
        ));
        assert_eq!(key, "site[0].route[0].connect_timeout");
        assert!(reason.contains("more than zero"), "{reason}");
    }

    #[test]
    fn server_addresses_are_tcp_with_a_port_or_absolute_unix_paths() {
        assert_eq!(
            server_address("127.0.0.1:8080"),
            Ok(ServerAddress::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            server_address("[::1]:8080"),
            Ok(ServerAddress::Tcp("[::1]:8080".into()))
        );
        assert_eq!(
            server_address("unix:/run/app.sock"),
            Ok(ServerAddress::Unix("/run/app.sock".into()))
        );
        for bad in [
            "127.0.0.1",
            "unix:run/app.sock",
            "http://a:1",
            "a:1/x",
            "u@a:1",
            "x.invalid:80",
        ] {
            assert!(server_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_single_label_hosts_without_a_port_name_groups() {
        let groups = vec![UpstreamConfig {
            name: "app".into(),
            servers: Vec::new(),
            balance: Balance::RoundRobin,
            next_upstream: NextUpstream::default(),
            next_upstream_tries: 0,
        }];
        let of = |text: &str| group_of(&text.parse().unwrap(), &groups);
        assert_eq!(of("http://app"), Ok(Some("app".into())));
        assert_eq!(of("http://APP/base"), Ok(Some("app".into())));
        assert_eq!(of("http://app:8080"), Ok(None));
        assert_eq!(of("http://127.0.0.1:8080"), Ok(None));
        assert_eq!(of("http://localhost"), Ok(None));
        assert_eq!(of("http://example.org"), Ok(None));
        assert!(of("http://apps")
            .unwrap_err()
            .contains("the upstreams are: `app`"));
    }
}
