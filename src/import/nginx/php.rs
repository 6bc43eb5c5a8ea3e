//! The PHP idiom of WordPress-style server blocks as certd's FastCGI route: `location ~ \.php$ {
//! include fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
//! fastcgi_pass …; }` beside `location / { try_files $uri $uri/ /index.php?$args; }` becomes one
//! route `path = "/"` with `root`, `fastcgi` and `front_controller = "/index.php"` (certd runs an
//! existing `.php` file with the standard parameters, serves other files, runs a folder's
//! `index.php`, and sends everything else to the front controller).
//!
//! Only the usual lines are taken (the parameter files Debian ships, the standard parameters
//! with their standard values, `fastcgi_split_path_info` for `PATH_INFO`, `fastcgi_index`,
//! `try_files $uri =404`, buffers); any other line means the location is not this idiom and it
//! is left out as before.
//!
//! A PHP location that checks its script itself (`try_files $fastcgi_script_name =404`) may also
//! hold `rewrite`s, extra parameters with literal values (`fastcgi_param front_controller_active
//! true`) and Nextcloud's `set $path_info $fastcgi_path_info` for `PATH_INFO`. When it cannot
//! become part of the `/` route (its rewrites or parameters are its own, or `location /` falls
//! back to a URI such as `/index.php$request_uri`), it is a FastCGI route of its own with the
//! same regex and `front_controller = false`: certd then runs the existing scripts it matches, as
//! nginx does, and the other locations stay routes of their own.

use std::collections::BTreeMap;

use super::keys::{toml_str, Keys, Taken};
use super::location::{certd_sets, Scope};
use super::parse::{directive_text, Directive};
use super::safety::{LeftOut, Matcher};
use super::server::ServerPart;
use super::translate::{cover, Covered, Loc, Route, RouteKind, Target, Topic, Upstream};

/// A PHP location certd's FastCGI route does the same as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Php {
    pub(super) at: Loc,
    /// Its regular expression.
    pub(super) re: String,
    /// The `fastcgi` address.
    pub(super) pass: String,
    /// `fastcgi_index`, when not `index.php`.
    pub(super) index: Option<String>,
    /// `fastcgi_intercept_errors on`.
    pub(super) intercept: bool,
    /// `try_files $fastcgi_script_name =404` (or `$uri`): nginx runs existing scripts only.
    pub(super) checks_script: bool,
    /// Its `rewrite` lines, in order (taken as route keys).
    pub(super) rewrites: Vec<Directive>,
    /// `fastcgi_param NAME VALUE` with a literal value for a name certd does not send itself.
    pub(super) params: Vec<(String, String)>,
}

/// The patterns nginx guides and Debian use for "a path ending in .php" (optionally followed by
/// PATH_INFO).
const PATTERNS: [&str; 6] = [
    "\\.php$",
    "\\.php(/|$)",
    "\\.php(?:$|/)",
    "[^/]\\.php(/|$)",
    "\\.php(/.*)?$",
    "^(.+\\.php)(.*)$",
];

/// Whether `d` is a `location ~ <php pattern> { … fastcgi_pass … }`: `None` when it has no
/// `fastcgi_pass`, else the idiom or why it is not one.
pub(super) fn php_location(
    d: &Directive,
    at: Loc,
    upstreams: &BTreeMap<String, Upstream>,
) -> Option<Result<Php, String>> {
    let body: &[Directive] = d.block.as_deref().unwrap_or_default();
    let pass = body.iter().find(|i| i.name == "fastcgi_pass")?;
    Some(idiom(d, at, body, pass, upstreams))
}

fn idiom(
    d: &Directive,
    at: Loc,
    body: &[Directive],
    pass: &Directive,
    upstreams: &BTreeMap<String, Upstream>,
) -> Result<Php, String> {
    let re = match d.args.as_slice() {
        [m, re] if m == "~" && PATTERNS.contains(&re.as_str()) => re.clone(),
        _ => {
            return Err(format!(
                "`location {}`: certd's FastCGI route takes the paths ending in .php \
                 (`location ~ \\.php$`)",
                d.args.join(" ")
            ))
        }
    };
    let mut index = None;
    let mut intercept = false;
    let mut checks_script = false;
    let mut rewrites = Vec::new();
    let mut params = Vec::new();
    // Nextcloud's `set $path_info $fastcgi_path_info;` … `fastcgi_param PATH_INFO $path_info;`
    // (the variable outlives `try_files`, which resets $fastcgi_path_info): the standard value.
    let path_info = body
        .iter()
        .find_map(|i| match (i.name.as_str(), i.args.as_slice()) {
            ("set", [var, value]) if value == "$fastcgi_path_info" => Some(var.as_str()),
            _ => None,
        });
    for i in body {
        let args: Vec<&str> = i.args.iter().map(String::as_str).collect();
        let ok = match (i.name.as_str(), args.as_slice()) {
            ("fastcgi_pass", [_]) => true,
            ("rewrite", _) => {
                rewrites.push(i.clone());
                true
            }
            ("set", [var, "$fastcgi_path_info"]) => Some(*var) == path_info,
            ("fastcgi_param", ["PATH_INFO", var]) if Some(*var) == path_info => true,
            ("fastcgi_param", [name, value]) if extra_param(name, value) => {
                params.push(((*name).to_owned(), (*value).to_owned()));
                true
            }
            ("include", [file]) => [
                "fastcgi_params",
                "fastcgi.conf",
                "snippets/fastcgi-php.conf",
                "/etc/nginx/fastcgi_params",
                "/etc/nginx/fastcgi.conf",
                "/etc/nginx/snippets/fastcgi-php.conf",
            ]
            .contains(file),
            ("fastcgi_param", [name, value]) => standard_param(name, value),
            ("fastcgi_split_path_info", [re]) => {
                matches!(
                    *re,
                    "^(.+\\.php)(/.+)$" | "^(.+?\\.php)(/.*)$" | "^(.+\\.php)(/.*)$"
                )
            }
            ("fastcgi_index", [name]) => {
                if *name != "index.php" {
                    index = Some((*name).to_owned());
                }
                name.ends_with(".php") && !name.contains('/')
            }
            ("try_files", ["$uri" | "$fastcgi_script_name", "=404"]) => {
                checks_script = true;
                true
            }
            ("fastcgi_intercept_errors", [on @ ("on" | "off")]) => {
                intercept = *on == "on";
                true
            }
            (
                "fastcgi_buffers"
                | "fastcgi_buffer_size"
                | "fastcgi_busy_buffers_size"
                | "fastcgi_read_timeout"
                | "fastcgi_send_timeout"
                | "fastcgi_connect_timeout"
                | "fastcgi_request_buffering"
                | "fastcgi_max_temp_file_size"
                | "access_log"
                | "log_not_found",
                _,
            ) => true,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "line {}: `{}`: not part of the PHP idiom certd's FastCGI route does",
                i.line,
                super::parse::directive_text(i)
            ));
        }
    }
    let address = &pass.args[0];
    let address = match upstreams.get(address.as_str()) {
        Some(Upstream {
            single: Some(one), ..
        }) => one.clone(),
        // A group whose servers are all one address (the same socket written twice) is that
        // address; a real group cannot be one FastCGI address.
        Some(Upstream {
            group: Ok(table), ..
        }) if same_server(table).is_some() => same_server(table).unwrap_or_default(),
        Some(_) => {
            return Err(format!(
                "`fastcgi_pass {address}`: an upstream group; certd's FastCGI route has one address"
            ))
        }
        None => address.clone(),
    };
    crate::fastcgi::FastcgiAddress::parse(&address)?;
    Ok(Php {
        at,
        re,
        pass: address,
        index,
        intercept,
        checks_script,
        rewrites,
        params,
    })
}

/// A `fastcgi_param` certd can add as it is: a name of letters, digits and `_` that certd does
/// not send itself (nor as `HTTP_*`), with a value without variables.
fn extra_param(name: &str, value: &str) -> bool {
    let own = crate::fastcgi::params::is_own(name);
    !own && crate::fastcgi::params::valid_extra(name, value)
}

/// Whether `php` must be a FastCGI route of its own rather than part of the `/` route (see the
/// module docs): it checks its script itself, and either has rewrites or parameters of its own,
/// or `location /` in `body` does not fall back to the front controller in the WordPress way.
pub(super) fn own_route_needed(php: &Php, body: &[Directive]) -> bool {
    if !php.checks_script {
        return false;
    }
    if !php.rewrites.is_empty() || !php.params.is_empty() {
        return true;
    }
    let slash = body
        .iter()
        .filter(|d| d.name == "location" && d.args == ["/"])
        .flat_map(|d| d.block.as_deref().unwrap_or_default())
        .find(|i| i.name == "try_files");
    let Some(try_files) = slash else {
        return false;
    };
    let mut args: Vec<&str> = try_files.args.iter().map(String::as_str).collect();
    if let Some(last) = args.last_mut() {
        *last = last
            .strip_suffix("?$args")
            .or_else(|| last.strip_suffix("?$query_string"))
            .unwrap_or(last);
    }
    !matches!(
        args.as_slice(),
        ["$uri", "$uri/", "/index.php"] | ["$uri", "$uri/", "=404"] | ["$uri", "=404"]
    )
}

/// The PHP location `d` (the idiom `php`) as a FastCGI route of its own, matched by its regex,
/// running the existing scripts it matches (`front_controller = false`), with its rewrites and
/// parameters; or left out with the reason. Returns whether it uses the server's root.
pub(super) fn own_route(
    scope: &Scope<'_>,
    d: &Directive,
    php: &Php,
    part: &mut ServerPart,
) -> bool {
    let body: &[Directive] = d.block.as_deref().unwrap_or_default();
    let mut keys = Keys::default();
    let mut why = Vec::new();
    for rewrite in &php.rewrites {
        if let Taken::Refused(reason) = keys.take(rewrite, certd_sets) {
            why.push(format!(
                "line {}: `{}`: {reason}",
                rewrite.line,
                directive_text(rewrite)
            ));
        }
    }
    let own_root = body
        .iter()
        .find_map(|i| match (i.name.as_str(), i.args.as_slice()) {
            ("root", [dir]) if !dir.contains('$') => Some(dir.as_str()),
            _ => None,
        });
    let uses_server_root = own_root.is_none();
    let root = own_root.or(scope.root.map(|(root, _)| root));
    if root.is_none() {
        why.push("no root for php-fpm's scripts".to_owned());
    }
    let source = format!("location {}", d.args.join(" "));
    let (Some(root), true) = (root, why.is_empty()) else {
        part.left_out.push(LeftOut {
            at: php.at,
            matcher: Matcher::Regex(php.re.clone()),
            answer: None,
            refuses_dotfiles_only: false,
            source,
            pending: Some((
                directive_text(d),
                why.join("; "),
                Vec::new(),
                Covered::new(),
            )),
            preferred: false,
            // No 502 stand-in: the routes that would answer its paths are left out instead.
            stand_in: None,
        });
        return false;
    };
    let mut route_keys = vec![("fastcgi".to_owned(), toml_str(&php.pass))];
    if let Some(index) = &php.index {
        route_keys.push(("fastcgi_index".to_owned(), toml_str(index)));
    }
    route_keys.push(("front_controller".to_owned(), "false".to_owned()));
    if php.intercept {
        route_keys.push(("intercept_errors".to_owned(), "true".to_owned()));
    }
    if !php.params.is_empty() {
        let table: Vec<String> = php
            .params
            .iter()
            .map(|(name, value)| format!("{} = {}", toml_str(name), toml_str(value)))
            .collect();
        route_keys.push((
            "fastcgi_param".to_owned(),
            format!("{{ {} }}", table.join(", ")),
        ));
    }
    route_keys.extend(keys.route_keys(&scope.keys, false, true));
    cover(&mut part.covered, Topic::Fastcgi, php.at);
    part.routes.push(Route {
        path: php.re.clone(),
        target: Target::Root(root.to_owned()),
        at: php.at,
        source: format!("{source}: certd's FastCGI route (existing scripts only)"),
        text: directive_text(d),
        covered: Covered::new(),
        notes: Vec::new(),
        preferred: false,
        kind: RouteKind::Regex(php.re.clone()),
        keys: route_keys,
        nested: Vec::new(),
    });
    uses_server_root
}

/// The one address of an `[[upstream]]` table whose servers are all that address, without
/// parameters.
fn same_server(table: &str) -> Option<String> {
    let value: toml::Value = toml::from_str(table).ok()?;
    let servers = value.get("upstream")?.get(0)?.get("servers")?.as_array()?;
    let first = servers.first()?.as_str()?;
    servers
        .iter()
        .all(|s| s.as_str() == Some(first))
        .then(|| first.to_owned())
}

/// A `fastcgi_param` that certd sends with the same value anyway.
fn standard_param(name: &str, value: &str) -> bool {
    matches!(
        (name, value),
        (
            "SCRIPT_FILENAME",
            "$document_root$fastcgi_script_name" | "$request_filename"
        ) | ("PATH_INFO", "$fastcgi_path_info")
            | ("PATH_TRANSLATED", "$document_root$fastcgi_path_info")
            | ("QUERY_STRING", "$query_string")
            | ("SCRIPT_NAME", "$fastcgi_script_name")
            | ("HTTPS", "on" | "$https")
            | ("HTTP_PROXY", "")
            | ("REQUEST_METHOD", "$request_method")
            | ("DOCUMENT_ROOT", "$document_root")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn location(text: &str) -> Option<Result<Php, String>> {
        let parsed = super::super::parse::parse(text).unwrap();
        php_location(&parsed[0], Loc { file: 0, line: 1 }, &BTreeMap::new())
    }

    #[test]
    fn the_wordpress_php_location_is_the_idiom() {
        let php = location(
            "location ~ \\.php$ { include fastcgi_params; fastcgi_param SCRIPT_FILENAME \
             $document_root$fastcgi_script_name; fastcgi_pass unix:/run/php/php8.2-fpm.sock; }",
        )
        .unwrap()
        .unwrap();
        assert_eq!(php.pass, "unix:/run/php/php8.2-fpm.sock");
        let same = "[[upstream]]\nname = \"php\"\nservers = [\"unix:/run/a.sock\", \"unix:/run/a.sock\"]\n";
        assert_eq!(same_server(same).as_deref(), Some("unix:/run/a.sock"));
        let two =
            "[[upstream]]\nname = \"php\"\nservers = [\"unix:/run/a.sock\", \"127.0.0.1:9000\"]\n";
        assert_eq!(same_server(two), None);
        assert!(location("location / { root /srv; }").is_none());
        // Another script parameter, another pattern, an address certd cannot reach: not it.
        for bad in [
            "location ~ \\.php$ { fastcgi_param SCRIPT_FILENAME /srv/x.php; fastcgi_pass 127.0.0.1:9000; }",
            "location ~ ^/admin/.*\\.php$ { fastcgi_pass 127.0.0.1:9000; }",
            "location ~ \\.php$ { fastcgi_pass php; }",
            "location ~ \\.php$ { fastcgi_pass 127.0.0.1:9000; deny 10.0.0.1; }",
        ] {
            assert!(location(bad).unwrap().is_err(), "{bad}");
        }
    }
}
