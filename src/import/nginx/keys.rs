//! The nginx directives of a `server` or `location` block that become certd route or site keys:
//! response and request headers (`add_header`, `proxy_hide_header`, `proxy_set_header`), limits
//! and timeouts (`client_max_body_size`, `proxy_*_timeout`), `expires`, access control (`allow`,
//! `deny`, `auth_basic`, `auth_basic_user_file`, `satisfy`), compression (`gzip*`), `return`,
//! `rewrite`, `try_files`, `alias` and `index`.
//!
//! Each directive is checked against what certd accepts (its variables, sizes, durations, access
//! rules and regular expressions) with certd's own parsers, so a key is written only when certd
//! does what nginx does; any other form is refused with the reason, and the location is left out.
//!
//! nginx inherits each of these from `server` into a `location` that does not set it (the
//! `add_header`, `proxy_hide_header` and `proxy_set_header` lists as a whole; `gzip`,
//! `gzip_types`, `gzip_min_length` one by one). certd inherits site keys into routes the same way,
//! except for compression (one `compress` table) and the proxy timeouts (route keys only): those
//! are resolved here ([`Keys::inherit`]) and written on each route.

use std::fmt::Write as _;

use super::parse::Directive;
use super::translate::Topic;

/// What one directive became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Taken {
    /// Not one of the directives this module translates.
    NotMine,
    /// It is a key now.
    Key,
    /// certd does it by itself (the topic explains it).
    Covered(Topic),
    /// A form certd cannot do the same way.
    Refused(String),
}

/// gzip settings, each inherited on its own as in nginx.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Gzip {
    on: Option<bool>,
    types: Option<Vec<String>>,
    min_length: Option<u64>,
    level: Option<u8>,
    /// `gzip_static on`.
    static_files: Option<bool>,
}

impl Gzip {
    fn is_set(&self) -> bool {
        self.on.is_some()
            || self.types.is_some()
            || self.min_length.is_some()
            || self.level.is_some()
    }

    fn or(&self, outer: &Gzip) -> Gzip {
        Gzip {
            on: self.on.or(outer.on),
            types: self.types.clone().or_else(|| outer.types.clone()),
            min_length: self.min_length.or(outer.min_length),
            level: self.level.or(outer.level),
            static_files: self.static_files.or(outer.static_files),
        }
    }

    /// The `compress` value for these settings (nginx's defaults where unset).
    fn value(&self) -> String {
        if self.on != Some(true) {
            return "false".to_owned();
        }
        // nginx always compresses text/html, and only the listed types besides.
        let mut types = vec!["text/html".to_owned()];
        for t in self.types.iter().flatten() {
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        // nginx's mime.types calls `.js` application/javascript, certd's file server
        // text/javascript (RFC 9239): listing one JavaScript type compresses the same files.
        let javascript = ["application/javascript", "application/x-javascript"];
        let js = "text/javascript".to_owned();
        if types.iter().any(|t| javascript.contains(&t.as_str())) && !types.contains(&js) {
            types.push(js);
        }
        let types: Vec<String> = types.iter().map(|t| toml_str(t)).collect();
        format!(
            "{{ encodings = [\"gzip\"], types = [{}], min_length = {}, level = {{ gzip = {} }} }}",
            types.join(", "),
            self.min_length.unwrap_or(20),
            self.level.unwrap_or(1)
        )
    }
}

/// The keys of one block (a server or a location).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Keys {
    /// `add_header`: name, value, `always`; `has_add` when the block has any (nginx then ignores
    /// the outer block's).
    add: Vec<(String, String, bool)>,
    has_add: bool,
    /// `add_header ETag ""` / `add_header Last-Modified ""`: part of the `add_header` list (and
    /// inherited with it), an empty value for one of these clears the header nginx set itself;
    /// written into `headers.response.hide`.
    clear: Vec<String>,
    hide: Vec<String>,
    has_hide: bool,
    /// `proxy_set_header` other than those certd sets itself; `""` removes.
    set: Vec<(String, String)>,
    has_set: bool,
    max_body_size: Option<String>,
    /// connect, read, send.
    timeouts: [Option<String>; 3],
    expires: Option<String>,
    /// `etag on|off`, inherited one level at a time like `expires`.
    etag: Option<bool>,
    access: Vec<String>,
    auth_basic: Option<String>,
    auth_basic_user_file: Option<String>,
    satisfy: Option<String>,
    gzip: Gzip,
    /// The rendered `return` table.
    pub(super) answer: Option<String>,
    pub(super) try_files: Option<Vec<String>>,
    pub(super) alias: Option<String>,
    rewrite: Vec<String>,
    /// `if (…) { return …; }` blocks, rendered as entries of the route's `if` list.
    returns_if: Vec<String>,
    /// A `rewrite` without a flag was taken: nginx runs the block's later `return` on the new URI,
    /// where certd's route would be routed again first.
    flagless_rewrite: bool,
    pub(super) index: Option<Vec<String>>,
    /// `limit_except`: the listed methods and the block's `allow`/`deny` rules (a location's
    /// own only: nested locations do not inherit it).
    limit_except: Option<(Vec<String>, Vec<String>)>,
    /// `auth_request URI` (or `off`), inherited into nested locations as in nginx; and
    /// `internal` (a location's own).
    auth_request: Option<String>,
    internal: bool,
    /// `proxy_cache <zone>` (`Some(false)` for `off`) and `proxy_cache_valid`: status codes and
    /// certd duration, in file order; written as the route's `cache` table.
    cache: Option<bool>,
    cache_valid: Vec<(Vec<String>, String)>,
}

/// The headers an empty `add_header` value removes (see [`Keys::take`]).
const CLEARED_BY_EMPTY: [&str; 2] = ["ETag", "Last-Modified"];

/// nginx's `client_max_body_size` when no block sets it.
pub(super) const NGINX_BODY_SIZE: &str = "1m";

impl Keys {
    /// Takes directive `d` if it is one of this module's (see [`Taken`]). `proxy_header` says
    /// whether certd sets a request header itself.
    pub(super) fn take(&mut self, d: &Directive, certd_sets: fn(&str, &str) -> bool) -> Taken {
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        let refused = |why: &str| Taken::Refused(why.to_owned());
        match (d.name.as_str(), args.as_slice()) {
            ("add_header", [name, value] | [name, value, "always"]) => {
                self.has_add = true;
                let always = args.len() == 3;
                if let Err(why) = header_name(name) {
                    return Taken::Refused(why);
                }
                if value.is_empty() {
                    // nginx's headers filter replaces these two (ngx_http_set_response_header):
                    // an empty value removes the one the static module or the upstream set.
                    // Cache-Control and Link are added to instead, so an empty one does nothing.
                    if CLEARED_BY_EMPTY
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case(name))
                    {
                        if !self.clear.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                            self.clear.push((*name).to_owned());
                        }
                        return Taken::Key;
                    }
                    return refused("an empty value: nginx adds no header then");
                }
                if let Err(why) = template(value, false) {
                    return Taken::Refused(why);
                }
                if self.add.iter().any(|(n, ..)| n.eq_ignore_ascii_case(name)) {
                    return refused(
                        "a second add_header for the same name: certd adds one value per name",
                    );
                }
                self.add
                    .push(((*name).to_owned(), (*value).to_owned(), always));
                Taken::Key
            }
            ("proxy_hide_header", [name]) => {
                self.has_hide = true;
                if let Err(why) = header_name(name) {
                    return Taken::Refused(why);
                }
                self.hide.push((*name).to_owned());
                Taken::Key
            }
            ("proxy_set_header", [name, value]) => {
                self.has_set = true;
                if certd_sets(name, value) {
                    return Taken::Covered(Topic::ProxyHeaders);
                }
                if let Err(why) = header_name(name) {
                    return Taken::Refused(why);
                }
                if let Err(why) = template(value, false) {
                    return Taken::Refused(why);
                }
                self.set.push(((*name).to_owned(), (*value).to_owned()));
                Taken::Key
            }
            ("client_max_body_size", [size]) => match body_size(size) {
                Ok(size) => {
                    self.max_body_size = Some(size);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            ("proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout", [time]) => {
                let slot = match d.name.as_str() {
                    "proxy_connect_timeout" => 0,
                    "proxy_read_timeout" => 1,
                    _ => 2,
                };
                match duration(time) {
                    Ok(time) => {
                        self.timeouts[slot] = Some(time);
                        Taken::Key
                    }
                    Err(why) => Taken::Refused(why),
                }
            }
            ("expires", [when]) => match crate::proxy::response_headers::parse_expires(when) {
                Ok(_) if when.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    self.expires = Some((*when).to_owned());
                    Taken::Key
                }
                Ok(_) => refused("certd takes a plain expiry (30d, 12h, epoch, max)"),
                Err(why) => Taken::Refused(why),
            },
            ("etag", [on @ ("on" | "off")]) => {
                self.etag = Some(*on == "on");
                Taken::Key
            }
            ("allow" | "deny", [what]) => {
                let rule = format!("{} {what}", d.name);
                match crate::access::Rule::parse(&rule) {
                    Ok(_) => {
                        self.access.push(rule);
                        Taken::Key
                    }
                    Err(why) => Taken::Refused(why),
                }
            }
            ("auth_basic", [realm]) => {
                if realm.contains('$') {
                    return refused("the realm uses variables");
                }
                self.auth_basic = Some((*realm).to_owned());
                Taken::Key
            }
            ("auth_basic_user_file", [file]) if !file.contains('$') => {
                self.auth_basic_user_file = Some((*file).to_owned());
                Taken::Key
            }
            ("satisfy", [how @ ("any" | "all")]) => {
                self.satisfy = Some((*how).to_owned());
                Taken::Key
            }
            ("gzip", [on @ ("on" | "off")]) => {
                self.gzip.on = Some(*on == "on");
                Taken::Key
            }
            ("gzip_types", types) if !types.is_empty() => {
                if types.contains(&"*") {
                    return refused("`gzip_types *`: certd compresses listed media types only");
                }
                self.gzip.types = Some(types.iter().map(|t| t.to_ascii_lowercase()).collect());
                Taken::Key
            }
            ("gzip_min_length", [n]) => match n.parse::<u64>() {
                Ok(n) if n <= 1 << 20 => {
                    self.gzip.min_length = Some(n);
                    Taken::Key
                }
                _ => refused("certd takes a length in bytes up to 1 MiB"),
            },
            ("gzip_comp_level", [n]) => match n.parse::<u8>() {
                Ok(n @ 1..=9) => {
                    self.gzip.level = Some(n);
                    Taken::Key
                }
                _ => refused("a level from 1 to 9"),
            },
            ("gzip_static", [on @ ("on" | "off")]) => {
                self.gzip.static_files = Some(*on == "on");
                Taken::Key
            }
            // They change which clients get gzip or only add `Vary` (which certd always sends).
            ("gzip_vary" | "gzip_proxied" | "gzip_buffers" | "gzip_http_version", _) => {
                Taken::Covered(Topic::NoEffect)
            }
            ("if", _) if d.block.is_some() => {
                if !self.rewrite.is_empty() || self.answer.is_some() {
                    return refused(
                        "`if` after a rewrite or return: certd checks its conditions before them",
                    );
                }
                match if_return(d) {
                    Ok(entry) => {
                        self.returns_if.push(entry);
                        Taken::Key
                    }
                    Err(why) => Taken::Refused(why),
                }
            }
            ("return", _) if self.flagless_rewrite => Taken::Refused(
                "after a rewrite without a flag: nginx answers on the rewritten URI, certd \
                 routes it again first"
                    .to_owned(),
            ),
            ("return", _) => match answer(&args) {
                Ok(table) => {
                    self.answer = Some(table);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            ("rewrite", [_, _]) if self.answer.is_some() => Taken::Refused(
                "a rewrite without a flag after `return`: nginx answers before it".to_owned(),
            ),
            ("rewrite", _) => match rewrite(&args) {
                Ok(entry) => {
                    self.flagless_rewrite |= args.len() == 2;
                    self.rewrite.push(entry);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            ("try_files", _) => match try_files(&args) {
                Ok(items) => {
                    self.try_files = Some(items);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            ("alias", [dir]) if !dir.contains('$') => {
                self.alias = Some((*dir).to_owned());
                Taken::Key
            }
            ("index", names) if !names.is_empty() => {
                // nginx's last name may be a URI (`/index.php$request_uri`): certd's index takes
                // one as its last entry, with `$uri` and `$request_uri`.
                let (last, files) = names.split_last().unwrap_or((&"", &[]));
                let plain = |n: &str| !(n.contains('/') || n.starts_with('.') || n.contains('$'));
                let uri = last.starts_with('/')
                    && !last
                        .replace("$request_uri", "")
                        .replace("$uri", "")
                        .contains(['$', '?'])
                    && !last.split('/').any(|s| s == "." || s == "..");
                if !files.iter().all(|n| plain(n)) || !(plain(last) || uri) {
                    return refused(
                        "certd's index names are plain file names, and a last URI with `$uri` \
                         or `$request_uri`",
                    );
                }
                self.index = Some(names.iter().map(|n| (*n).to_owned()).collect());
                Taken::Key
            }
            (
                "add_header"
                | "proxy_hide_header"
                | "proxy_set_header"
                | "client_max_body_size"
                | "proxy_connect_timeout"
                | "proxy_read_timeout"
                | "proxy_send_timeout"
                | "expires"
                | "etag"
                | "allow"
                | "deny"
                | "auth_basic"
                | "auth_basic_user_file"
                | "satisfy"
                | "gzip"
                | "gzip_min_length"
                | "gzip_comp_level"
                | "gzip_static"
                | "alias",
                _,
            ) => refused("not a form of this directive certd reads"),
            ("proxy_cache", ["off"]) => {
                self.cache = Some(false);
                Taken::Key
            }
            ("proxy_cache", [zone]) if !zone.contains('$') => {
                self.cache = Some(true);
                Taken::Key
            }
            ("proxy_cache_valid", [times @ .., time]) => match cache_valid(times, time) {
                Ok(valid) => {
                    self.cache_valid.push(valid);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            ("proxy_cache" | "proxy_cache_valid", _) => {
                refused("not a form of this directive certd reads")
            }
            ("auth_request", [uri]) => {
                if *uri != "off" && (!uri.starts_with('/') || uri.contains(['$', '?', '#'])) {
                    return refused("certd asks a fixed path of the same site (no variables)");
                }
                if *uri != "off" && crate::proxy::normalise_path(uri).ok().as_deref() != Some(*uri)
                {
                    return refused("not a normalised path");
                }
                self.auth_request = Some((*uri).to_owned());
                Taken::Key
            }
            ("internal", []) => {
                self.internal = true;
                Taken::Key
            }
            ("limit_except", methods) => match limit_except(methods, d.block.as_deref()) {
                Ok(limit) => {
                    self.limit_except = Some(limit);
                    Taken::Key
                }
                Err(why) => Taken::Refused(why),
            },
            _ => Taken::NotMine,
        }
    }

    /// Whether the block has a `limit_except`.
    pub(super) fn has_limit_except(&self) -> bool {
        self.limit_except.is_some()
    }

    /// The site keys of a server block. `body_size` is the http-level `client_max_body_size`, if
    /// any: nginx's 1m applies where no block sets one, so it is written out.
    pub(super) fn site_keys(&self, body_size: Option<&str>) -> Vec<(String, String)> {
        let mut keys = self.common(true);
        if self.max_body_size.is_none() {
            keys.push((
                "max_body_size".to_owned(),
                toml_str(body_size.unwrap_or(NGINX_BODY_SIZE)),
            ));
        }
        if self.gzip.is_set() {
            keys.push(("compress".to_owned(), self.gzip.value()));
        }
        keys
    }

    /// This nested location's keys over those of the location `outer` it is in, as nginx
    /// inherits them (lists as a whole, the rest one by one; `return`, `rewrite`, `try_files`
    /// and `alias` are never inherited), so a nested route can say all of them itself.
    pub(super) fn or(&self, outer: &Keys) -> Keys {
        let mut keys = self.clone();
        if !self.has_add {
            (keys.add, keys.has_add) = (outer.add.clone(), outer.has_add);
            keys.clear = outer.clear.clone();
        }
        if !self.has_hide {
            (keys.hide, keys.has_hide) = (outer.hide.clone(), outer.has_hide);
        }
        if !self.has_set {
            (keys.set, keys.has_set) = (outer.set.clone(), outer.has_set);
        }
        if self.access.is_empty() {
            keys.access = outer.access.clone();
        }
        let or = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        keys.max_body_size = or(&self.max_body_size, &outer.max_body_size);
        keys.expires = or(&self.expires, &outer.expires);
        keys.etag = self.etag.or(outer.etag);
        keys.auth_basic = or(&self.auth_basic, &outer.auth_basic);
        keys.auth_basic_user_file = or(&self.auth_basic_user_file, &outer.auth_basic_user_file);
        keys.satisfy = or(&self.satisfy, &outer.satisfy);
        keys.auth_request = or(&self.auth_request, &outer.auth_request);
        for slot in 0..3 {
            keys.timeouts[slot] = or(&self.timeouts[slot], &outer.timeouts[slot]);
        }
        keys.gzip = self.gzip.or(&outer.gzip);
        keys.index = self.index.clone().or_else(|| outer.index.clone());
        // nginx inherits proxy_cache and the proxy_cache_valid list (as a whole) alike.
        keys.cache = self.cache.or(outer.cache);
        if self.cache_valid.is_empty() {
            keys.cache_valid = outer.cache_valid.clone();
        }
        keys
    }

    /// The route keys of a location whose server block has `server`; `proxies` and `static_root`
    /// say what the route does (timeouts only for proxies, `precompressed` only for roots).
    pub(super) fn route_keys(
        &self,
        server: &Keys,
        proxies: bool,
        static_root: bool,
    ) -> Vec<(String, String)> {
        let mut keys = self.common(false);
        // An own list, even if empty, stops nginx inheriting the server's. Request headers and
        // hidden upstream headers only mean something when the route proxies.
        keys.retain(|(k, _)| k != "headers");
        if let Some(headers) = self.headers(Some(server), proxies) {
            keys.push(("headers".to_owned(), headers));
        }
        if self.gzip.is_set() {
            keys.push(("compress".to_owned(), self.gzip.or(&server.gzip).value()));
        }
        if static_root && self.gzip.or(&server.gzip).static_files == Some(true) {
            keys.push(("precompressed".to_owned(), "true".to_owned()));
        }
        if proxies {
            for (slot, name) in ["connect_timeout", "read_timeout", "send_timeout"]
                .iter()
                .enumerate()
            {
                if let Some(time) = self.timeouts[slot]
                    .as_ref()
                    .or(server.timeouts[slot].as_ref())
                {
                    keys.push(((*name).to_owned(), toml_str(time)));
                }
            }
            if let Some(cache) = self.cache_table(server) {
                keys.push(("cache".to_owned(), cache));
            }
        }
        keys
    }

    /// The `cache` table of a proxy route: `proxy_cache` with the `proxy_cache_valid` list of
    /// the location, else the server's. The store's caps are certd's defaults (nginx's
    /// `proxy_cache_path` sizes a disk cache; the memory one has its own).
    fn cache_table(&self, server: &Keys) -> Option<String> {
        if self.cache.or(server.cache) != Some(true) {
            return None;
        }
        let valid = match self.cache_valid.is_empty() {
            true => &server.cache_valid,
            false => &self.cache_valid,
        };
        let mut table = Vec::new();
        for (codes, time) in valid {
            // The first `proxy_cache_valid` naming a status wins in nginx; certd's table has one
            // entry per status list, and the lookup takes the first match in the same order.
            table.push(format!(
                "{} = {}",
                toml_str(&codes.join(" ")),
                toml_str(time)
            ));
        }
        Some(format!("{{ valid = {{ {} }} }}", table.join(", ")))
    }

    /// The keys sites and routes have alike.
    fn common(&self, site: bool) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        let mut push = |k: &str, v: String| keys.push((k.to_owned(), v));
        if !site {
            if let Some(alias) = &self.alias {
                push("alias", toml_str(alias));
            }
            if let Some(items) = &self.try_files {
                push("try_files", array(items));
            }
            if !self.rewrite.is_empty() {
                push("rewrite", format!("[{}]", self.rewrite.join(", ")));
            }
            if let Some(answer) = &self.answer {
                push("return", answer.clone());
            }
            if let Some(uri) = &self.auth_request {
                push("auth_request", toml_str(uri));
            }
            if self.internal {
                push("internal", "true".to_owned());
            }
            if !self.returns_if.is_empty() {
                push("if", format!("[{}]", self.returns_if.join(", ")));
            }
            if let Some((methods, access)) = &self.limit_except {
                push(
                    "limit_except",
                    format!(
                        "{{ methods = {}, access = {} }}",
                        array(methods),
                        array(access)
                    ),
                );
            }
        }
        if let Some(index) = &self.index {
            push("index", array(index));
        }
        if let Some(headers) = self.headers(None, true) {
            push("headers", headers);
        }
        if let Some(size) = &self.max_body_size {
            push("max_body_size", toml_str(size));
        }
        if let Some(expires) = &self.expires {
            push("expires", toml_str(expires));
        }
        if let Some(etag) = self.etag {
            push("etag", etag.to_string());
        }
        if !self.access.is_empty() {
            push("access", array(&self.access));
        }
        if let Some(realm) = &self.auth_basic {
            push("auth_basic", toml_str(realm));
        }
        if let Some(file) = &self.auth_basic_user_file {
            push("auth_basic_user_file", toml_str(file));
        }
        if let Some(how) = &self.satisfy {
            push("satisfy", toml_str(how));
        }
        keys
    }

    /// The `headers` table: this block's lists; with `outer`, an empty list is written where
    /// this block has the directive and the outer block has entries (so none are inherited).
    fn headers(&self, outer: Option<&Keys>, proxies: bool) -> Option<String> {
        let own = |has: bool, empty: bool, outer_has: bool| !empty || (has && outer_has);
        let (o_add, o_hide, o_set) = outer.map_or((false, false, false), |o| {
            (!o.add.is_empty(), !o.hide.is_empty(), !o.set.is_empty())
        });
        let mut request = Vec::new();
        if proxies && own(self.has_set, self.set.is_empty(), o_set) {
            let set: Vec<String> = self
                .set
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(n, v)| format!("{} = {}", toml_str(n), toml_str(v)))
                .collect();
            let remove: Vec<String> = self
                .set
                .iter()
                .filter(|(_, v)| v.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            request.push(format!("set = {{ {} }}", set.join(", ")).replace("{  }", "{}"));
            if !remove.is_empty() {
                request.push(format!("remove = {}", array(&remove)));
            }
        }
        let mut response = Vec::new();
        if own(self.has_add, self.add.is_empty(), o_add) {
            let add: Vec<String> = self
                .add
                .iter()
                .map(|(n, v, always)| {
                    if *always {
                        format!(
                            "{} = {{ value = {}, always = true }}",
                            toml_str(n),
                            toml_str(v)
                        )
                    } else {
                        format!("{} = {}", toml_str(n), toml_str(v))
                    }
                })
                .collect();
            response.push(format!("add = {{ {} }}", add.join(", ")).replace("{  }", "{}"));
        }
        // `hide` also carries the cleared headers, which follow the `add_header` list: written
        // whole (with the inherited `proxy_hide_header` names) where this block's list differs.
        let o_clear = outer.is_some_and(|o| !o.clear.is_empty());
        let clears = !self.clear.is_empty() || (self.has_add && o_clear);
        if (proxies && own(self.has_hide, self.hide.is_empty(), o_hide)) || clears {
            let mut hide: Vec<String> = match (proxies, self.has_hide, outer) {
                (false, ..) => Vec::new(),
                (true, false, Some(outer)) => outer.hide.clone(),
                (true, ..) => self.hide.clone(),
            };
            let clear = match (self.has_add, outer) {
                (false, Some(outer)) => &outer.clear,
                _ => &self.clear,
            };
            for name in clear {
                if !hide.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    hide.push(name.clone());
                }
            }
            response.push(format!("hide = {}", array(&hide)));
        }
        let mut parts = Vec::new();
        if !request.is_empty() {
            parts.push(format!("request = {{ {} }}", request.join(", ")));
        }
        if !response.is_empty() {
            parts.push(format!("response = {{ {} }}", response.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("{{ {} }}", parts.join(", ")))
    }
}

/// A TOML basic string.
/// `limit_except METHOD ... { allow ...; deny ...; }`: the methods (upper case, as certd takes
/// them) and the rules, when the block holds `allow`/`deny` rules only (certd's `limit_except`
/// has no basic auth or other directives of its own).
fn limit_except(
    methods: &[&str],
    block: Option<&[Directive]>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let Some(block) = block else {
        return Err("limit_except without a block".to_owned());
    };
    if methods.is_empty() {
        return Err("limit_except names no method".to_owned());
    }
    let mut names = Vec::new();
    for method in methods {
        // nginx compares the names without regard to case.
        let upper = method.to_ascii_uppercase();
        crate::access::limit_except::parse_method(&upper)?;
        names.push(upper);
    }
    let mut rules = Vec::new();
    for inner in block {
        let rule = match (inner.name.as_str(), inner.args.as_slice()) {
            ("allow" | "deny", [what]) if inner.block.is_none() => format!("{} {what}", inner.name),
            _ => {
                return Err(format!(
                    "`{}` inside limit_except: certd's limit_except takes allow/deny rules only",
                    inner.name
                ))
            }
        };
        crate::access::Rule::parse(&rule)?;
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err("an empty limit_except block".to_owned());
    }
    Ok((names, rules))
}

pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| toml_str(i)).collect();
    format!("[{}]", items.join(", "))
}

/// A header name certd lets a rule change.
fn header_name(name: &str) -> Result<(), String> {
    const MANAGED: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",
    ];
    if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not a header name"));
    }
    if MANAGED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("certd manages `{name}` itself"));
    }
    Ok(())
}

/// `value` with variables certd knows (`captures`: `$1`… of a rewrite).
fn template(value: &str, captures: bool) -> Result<(), String> {
    crate::proxy::variables::Template::parse(value, captures).map(|_| ())
}

/// An nginx size (`10m`, `512k`, `1g`, bytes) as certd's `max_body_size`.
fn body_size(size: &str) -> Result<String, String> {
    let split = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let valid = !number.is_empty()
        && number.parse::<u64>().is_ok()
        && matches!(unit, "" | "k" | "K" | "m" | "M" | "g" | "G");
    if valid {
        Ok(size.to_owned())
    } else {
        Err(format!(
            "{size:?} is not a size certd reads (k, m, g or bytes)"
        ))
    }
}

/// An nginx time (`60s`, `1h`, `500ms`, `2d`, seconds) as a certd duration.
/// `proxy_cache_valid [code ...] time`: without codes nginx means 200, 301 and 302; `any` is
/// every status not listed with its own time.
fn cache_valid(codes: &[&str], time: &str) -> Result<(Vec<String>, String), String> {
    let time = duration(time)?;
    if codes.is_empty() {
        return Ok((vec!["200".into(), "301".into(), "302".into()], time));
    }
    let mut out = Vec::new();
    for code in codes {
        match code.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => out.push((*code).to_owned()),
            _ if *code == "any" => out.push((*code).to_owned()),
            _ => return Err(format!("{code:?} is not a status code")),
        }
    }
    Ok((out, time))
}

fn duration(time: &str) -> Result<String, String> {
    let split = time
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(time.len());
    let (number, unit) = time.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{time:?}: certd takes one number and unit (500ms, 60s, 2m, 1h)"))?;
    match unit {
        "" => Ok(format!("{number}s")),
        "ms" | "s" | "m" | "h" => Ok(time.to_owned()),
        "d" => number
            .checked_mul(24)
            .map(|hours| format!("{hours}h"))
            .ok_or_else(|| format!("{time:?} is too long")),
        _ => Err(format!(
            "{time:?}: certd takes one number and unit (500ms, 60s, 2m, 1h)"
        )),
    }
}

/// `return CODE [TEXT|URL]` or `return URL`, as a certd `return` table.
fn answer(args: &[&str]) -> Result<String, String> {
    let (code, rest) = match args {
        [url]
            if url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("$scheme://") =>
        {
            ("302", Some(*url))
        }
        [code] => (*code, None),
        [code, rest] => (*code, Some(*rest)),
        _ => return Err("expected `return CODE [TEXT|URL]`".to_owned()),
    };
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (200..=599).contains(c) && *c != 444)
        .ok_or_else(|| format!("`return {code}`: certd answers statuses 200 to 599 (not 444)"))?;
    let redirect = matches!(code, 301 | 302 | 303 | 307 | 308);
    let mut table = format!("{{ status = {code}");
    match rest {
        Some(url) if redirect => {
            let absolute = url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("$scheme://");
            // nginx makes a relative redirect absolute with the scheme and the Host the client
            // sent (absolute_redirect on, server_name_in_redirect off); certd's listeners are
            // on the standard ports, which nginx leaves out of it too.
            let url = if absolute {
                (*url).to_owned()
            } else if url.starts_with('/') {
                format!("$scheme://$host{url}")
            } else {
                return Err(format!("`{url}` is neither a URL nor a path"));
            };
            template(&url, false)?;
            let _ = write!(table, ", location = {}", toml_str(&url));
        }
        None if redirect => return Err("a redirect without a URL".to_owned()),
        Some(text) => {
            template(text, false)?;
            let _ = write!(table, ", body = {}", toml_str(text));
        }
        None => {}
    }
    table.push_str(" }");
    Ok(table)
}

/// `if (CONDITION) { return …; }` as one entry of certd's `if` list; anything else in the block
/// (a `rewrite`, `set`, headers, a file test such as `-f`) is refused.
fn if_return(d: &Directive) -> Result<String, String> {
    let inner: &[Directive] = d.block.as_deref().unwrap_or_default();
    let [only] = inner else {
        return Err("certd's `if` holds exactly one `return`".to_owned());
    };
    if only.name != "return" {
        return Err(format!(
            "certd's `if` holds exactly one `return`, not `{}`",
            only.name
        ));
    }
    let text = d.args.join(" ");
    let test = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("`if {text}`: expected a condition in parentheses"))?
        .trim();
    crate::proxy::condition::Condition::parse(test)?;
    let args: Vec<&str> = only.args.iter().map(String::as_str).collect();
    let table = answer(&args)?;
    Ok(format!("{{ test = {}, return = {table} }}", toml_str(test)))
}

/// `rewrite REGEX REPLACEMENT [FLAG]` as one certd `rewrite` entry (without a flag: the next
/// rewrite sees the new URI, then the request is routed again, as certd does without one).
fn rewrite(args: &[&str]) -> Result<String, String> {
    let (regex, replacement, flag) = match args {
        [regex, replacement] => (regex, replacement, None),
        [regex, replacement, flag] => (regex, replacement, Some(*flag)),
        _ => return Err("expected `rewrite REGEX REPLACEMENT [FLAG]`".to_owned()),
    };
    if let Some(flag) = flag.filter(|f| !matches!(*f, "last" | "break" | "redirect" | "permanent"))
    {
        return Err(format!("`{flag}` is not a rewrite flag certd has"));
    }
    let absolute = replacement.starts_with("http://")
        || replacement.starts_with("https://")
        || replacement.starts_with("$scheme://");
    if absolute != matches!(flag, Some("redirect" | "permanent")) {
        return Err(
            "nginx redirects whenever the replacement is a URL, whatever the flag".to_owned(),
        );
    }
    if replacement.contains('?') {
        return Err("a query in the replacement: nginx's query rules are not certd's".to_owned());
    }
    // Look-around and back-references are read too (by a backtracking engine with a step limit).
    crate::proxy::pattern::Pattern::new(regex)
        .map_err(|err| format!("not a regular expression certd reads: {err}"))?;
    template(replacement, true)?;
    let mut entry = format!(
        "{{ regex = {}, replacement = {}",
        toml_str(regex),
        toml_str(replacement)
    );
    if let Some(flag) = flag {
        let _ = write!(entry, ", flag = {}", toml_str(flag));
    }
    entry.push_str(" }");
    Ok(entry)
}

/// `try_files FILE... FALLBACK` as certd's list (`?$args` is dropped: certd keeps the query).
fn try_files(args: &[&str]) -> Result<Vec<String>, String> {
    let Some((last, files)) = args.split_last().filter(|(_, files)| !files.is_empty()) else {
        return Err("expected `try_files FILE... FALLBACK`".to_owned());
    };
    // The fallback may also append `$request_uri` (Nextcloud's `/index.php$request_uri`): nginx
    // splits the query off it, as certd does.
    let uri = |text: &str, fallback: bool| -> Result<String, String> {
        let path = text
            .strip_suffix("?$args")
            .or_else(|| text.strip_suffix("?$query_string"))
            .unwrap_or(text);
        let mut rest = match fallback {
            true => path.replace("$request_uri", "").replace("$uri", ""),
            false => path.replace("$uri", ""),
        };
        // `$1`…`$9`: a regex location's groups (the caller refuses them elsewhere).
        for n in 1..=9 {
            rest = rest.replace(&format!("${n}"), "");
        }
        let ok = (path.starts_with('/') || path.starts_with("$uri"))
            && !path.contains('?')
            && !rest.contains('$');
        match (ok, fallback) {
            (true, _) => Ok(path.to_owned()),
            (false, true) => Err(format!(
                "`{text}`: certd's try_files falls back to paths with `$uri` and `$request_uri` \
                 (and a regex location's `$1`…`$9`) only"
            )),
            (false, false) => Err(format!(
                "`{text}`: certd's try_files takes paths with `$uri` (and a regex location's \
                 `$1`…`$9`) only"
            )),
        }
    };
    let mut items = files
        .iter()
        .map(|f| uri(f, false))
        .collect::<Result<Vec<_>, _>>()?;
    let fallback = if let Some(code) = last.strip_prefix('=') {
        match code.parse::<u16>() {
            Ok(200..=599) => (*last).to_owned(),
            _ => return Err(format!("`{last}`: a status from 200 to 599")),
        }
    } else if last.starts_with('@') {
        (*last).to_owned()
    } else {
        uri(last, true)?
    };
    items.push(fallback);
    Ok(items)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(text: &str) -> Directive {
        let mut parsed = super::super::parse::parse(text).unwrap();
        parsed.remove(0)
    }

    fn never(_: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn proxy_cache_becomes_the_cache_table() {
        let mut k = Keys::default();
        for ok in [
            "proxy_cache CACHE;",
            "proxy_cache_valid 200 7d;",
            "proxy_cache_valid 410 24h;",
            "add_header X-Cached $upstream_cache_status;",
        ] {
            assert_eq!(k.take(&d(ok), never), Taken::Key, "{ok}");
        }
        for bad in [
            "proxy_cache_valid 2x0 1m;",
            "proxy_cache $zone;",
            "proxy_cache_valid 200 1y;",
        ] {
            assert!(
                matches!(Keys::default().take(&d(bad), never), Taken::Refused(_)),
                "{bad}"
            );
        }
        let cache = |k: &Keys, server: &Keys| {
            k.route_keys(server, true, false)
                .into_iter()
                .find(|(key, _)| key == "cache")
                .map(|(_, value)| value)
        };
        let table = "{ valid = { \"200\" = \"168h\", \"410\" = \"24h\" } }";
        assert_eq!(cache(&k, &Keys::default()).as_deref(), Some(table));
        // Not for static routes; inherited from the server; `off` stops it.
        assert!(k
            .route_keys(&Keys::default(), false, true)
            .iter()
            .all(|(key, _)| key != "cache"));
        assert_eq!(cache(&Keys::default(), &k).as_deref(), Some(table));
        let mut off = Keys::default();
        assert_eq!(off.take(&d("proxy_cache off;"), never), Taken::Key);
        assert_eq!(cache(&off, &k), None);
        // Without codes nginx means 200 301 302.
        let mut bare = Keys::default();
        bare.take(&d("proxy_cache C;"), never);
        bare.take(&d("proxy_cache_valid 10m;"), never);
        bare.take(&d("proxy_cache_valid any 1m;"), never);
        let table = "{ valid = { \"200 301 302\" = \"10m\", \"any\" = \"1m\" } }";
        assert_eq!(cache(&bare, &Keys::default()).as_deref(), Some(table));
    }

    #[test]
    fn directives_become_keys_or_are_refused() {
        let mut k = Keys::default();
        for ok in [
            "add_header X-Frame-Options DENY;",
            "add_header Strict-Transport-Security \"max-age=63072000\" always;",
            "proxy_hide_header X-Powered-By;",
            "proxy_set_header X-Client $remote_addr;",
            "client_max_body_size 10m;",
            "proxy_read_timeout 1d;",
            "expires 30d;",
            "allow 10.0.0.0/8;",
            "deny all;",
            "auth_basic \"Staff\";",
            "gzip on;",
            "gzip_types text/css application/json;",
            "return 301 https://$host$request_uri;",
            "try_files $uri $uri/ /index.html;",
        ] {
            assert_eq!(k.take(&d(ok), never), Taken::Key, "{ok}");
        }
        for bad in [
            "add_header X $nope;",
            "add_header Content-Length 1;",
            "client_max_body_size 1t;",
            "proxy_read_timeout 1h30m;",
            "expires modified +1h;",
            "allow unix:;",
            "return 444;",
            "return 301 relative;",
            "rewrite ^/a http://x/ last;",
            "rewrite ^/a /b foo;",
            "gzip_types *;",
            "try_files $uri $foo @app;",
        ] {
            assert!(
                matches!(Keys::default().take(&d(bad), never), Taken::Refused(_)),
                "{bad}"
            );
        }
        assert_eq!(k.timeouts[1].as_deref(), Some("24h"));
        let site = Keys::default().site_keys(None);
        assert_eq!(site, [("max_body_size".to_owned(), "\"1m\"".to_owned())]);
        let keys = k.route_keys(&Keys::default(), true, false);
        let text: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let text = text.join("\n");
        assert!(
            text.contains("return = { status = 301, location = \"https://$host$request_uri\" }"),
            "{text}"
        );
        assert!(
            text.contains(
                "\"Strict-Transport-Security\" = { value = \"max-age=63072000\", always = true }"
            ),
            "{text}"
        );
        assert!(
            text.contains("access = [\"allow 10.0.0.0/8\", \"deny all\"]"),
            "{text}"
        );
        assert!(
            text.contains(
                "types = [\"text/html\", \"text/css\", \"application/json\"], min_length = 20"
            ),
            "{text}"
        );
        assert!(text.contains("read_timeout = \"24h\""), "{text}");
        assert!(
            text.contains("set = { \"X-Client\" = \"$remote_addr\" }"),
            "{text}"
        );
    }

    #[test]
    fn etag_off_is_a_key_inherited_like_expires() {
        let mut server = Keys::default();
        assert_eq!(server.take(&d("etag off;"), never), Taken::Key);
        assert!(matches!(
            server.take(&d("etag maybe;"), never),
            Taken::Refused(_)
        ));
        let site = server.site_keys(None);
        assert!(
            site.contains(&("etag".to_owned(), "false".to_owned())),
            "{site:?}"
        );
        let mut outer = Keys::default();
        outer.take(&d("etag on;"), never);
        let nested = Keys::default().or(&outer);
        let keys = nested.route_keys(&server, false, true);
        assert!(
            keys.contains(&("etag".to_owned(), "true".to_owned())),
            "{keys:?}"
        );
    }

    #[test]
    fn javascript_in_gzip_types_covers_the_file_servers_js_type() {
        let mut server = Keys::default();
        server.take(&d("gzip on;"), never);
        server.take(&d("gzip_types text/css application/javascript;"), never);
        let site = server.site_keys(None);
        let compress = &site.iter().find(|(k, _)| k == "compress").unwrap().1;
        assert!(compress.contains("\"text/javascript\""), "{compress}");
    }

    #[test]
    fn an_empty_etag_or_last_modified_add_header_hides_the_header() {
        let mut server = Keys::default();
        server.take(&d("proxy_hide_header X-Powered-By;"), never);
        let mut location = Keys::default();
        for directive in ["add_header ETag \"\";", "add_header last-modified \"\";"] {
            assert_eq!(
                location.take(&d(directive), never),
                Taken::Key,
                "{directive}"
            );
        }
        // Cache-Control is added to, not replaced: an empty value does nothing in nginx.
        assert!(matches!(
            location.take(&d("add_header Cache-Control \"\";"), never),
            Taken::Refused(_)
        ));
        let text = |keys: Vec<(String, String)>| {
            let text: Vec<String> = keys.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            text.join("\n")
        };
        // A static route: only the cleared headers; a proxy route keeps the inherited list too.
        let static_route = text(location.route_keys(&server, false, false));
        assert!(
            static_route.contains("hide = [\"ETag\", \"last-modified\"]"),
            "{static_route}"
        );
        let proxy_route = text(location.route_keys(&server, true, false));
        assert!(
            proxy_route.contains("hide = [\"X-Powered-By\", \"ETag\", \"last-modified\"]"),
            "{proxy_route}"
        );
        // A location with its own add_header list does not inherit the server's clearing.
        let mut server = Keys::default();
        server.take(&d("add_header ETag \"\";"), never);
        let mut own = Keys::default();
        own.take(&d("add_header X-A b;"), never);
        let own = text(own.route_keys(&server, false, false));
        assert!(own.contains("hide = []"), "{own}");
        let inherits = text(Keys::default().route_keys(&server, false, false));
        assert!(!inherits.contains("hide"), "{inherits}");
    }

    #[test]
    fn an_own_list_stops_inheritance_even_when_empty() {
        let mut server = Keys::default();
        server.take(&d("add_header X-Frame-Options DENY;"), never);
        server.take(&d("proxy_set_header X-A b;"), never);
        let mut location = Keys::default();
        // Covered by certd itself, but in nginx it still replaces the server's list.
        location.take(&d("proxy_set_header Host $host;"), |_, _| true);
        let keys = location.route_keys(&server, true, false);
        assert_eq!(
            keys,
            [(
                "headers".to_owned(),
                "{ request = { set = {} } }".to_owned()
            )]
        );
        // gzip settings are inherited one by one.
        server.take(&d("gzip on;"), never);
        let mut location = Keys::default();
        location.take(&d("gzip_min_length 1000;"), never);
        let keys = location.route_keys(&server, false, false);
        assert!(keys[0].1.contains("min_length = 1000"), "{keys:?}");
        // A static route gets no request headers (certd refuses them there; nginx ignores them).
        let mut location = Keys::default();
        location.take(&d("proxy_set_header X-B c;"), never);
        location.take(&d("proxy_hide_header X-Powered-By;"), never);
        assert!(location.route_keys(&server, false, true).is_empty());
    }
}
