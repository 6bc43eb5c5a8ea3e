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

use std::collections::BTreeMap;

use super::parse::Directive;
use super::translate::{Loc, Upstream};

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
    for i in body {
        let args: Vec<&str> = i.args.iter().map(String::as_str).collect();
        let ok = match (i.name.as_str(), args.as_slice()) {
            ("fastcgi_pass", [_]) => true,
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
            ("try_files", ["$uri" | "$fastcgi_script_name", "=404"]) => true,
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
    })
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
