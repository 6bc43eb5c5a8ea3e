//! Who the client is, across all files: nginx's realip module (`set_real_ip_from`,
//! `real_ip_header`, `real_ip_recursive`) and `listen … proxy_protocol`, translated into certd's
//! `[https] trusted_proxies` and the `proxy_protocol` keys of `[https]` and `[http]`.
//!
//! nginx scopes these per `http`, `server` or `location` block, and per `listen`; certd has them
//! once, for every site. So the ranges of every block are joined, and `proxy_protocol` is set only
//! when every TLS (or every plain) `listen` in the files has it; a mix is listed as untranslated.
//! What certd cannot do the same way is listed too: a `real_ip_header` other than
//! `X-Forwarded-For` or `proxy_protocol` (nginx's default is `X-Real-IP`), a PROXY listener without
//! any `set_real_ip_from` (certd accepts PROXY headers only from `trusted_proxies`; nginx from
//! anyone).

use super::parse::{directive_text, Directive};
use super::server;
use super::translate::{cover, Covered, Loc, Note, Topic};
use crate::trusted_proxies;

/// The client-address keys of a translation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Edge {
    /// `[https] trusted_proxies`, as CIDR text, in the order first seen, without repeats.
    pub(super) trusted_proxies: Vec<String>,
    /// `[https] proxy_protocol = true`.
    pub(super) https_proxy_protocol: bool,
    /// `[http] proxy_protocol = true`.
    pub(super) http_proxy_protocol: bool,
    pub(super) covered: Covered,
    pub(super) notes: Vec<Note>,
}

impl Edge {
    /// Whether the fragment gets an `[https]` or `[http]` table for these keys.
    pub(super) fn has_tables(&self) -> bool {
        !self.trusted_proxies.is_empty() || self.https_proxy_protocol || self.http_proxy_protocol
    }
}

/// Whether `d` is one of the realip directives this module translates (the block walkers skip
/// them).
pub(super) fn is_edge_directive(d: &Directive) -> bool {
    d.block.is_none()
        && matches!(
            d.name.as_str(),
            "set_real_ip_from" | "real_ip_header" | "real_ip_recursive"
        )
}

/// What the walk over the files found.
#[derive(Default)]
struct Found {
    edge: Edge,
    /// Whether a `real_ip_header` was seen at all (nginx's default is `X-Real-IP`).
    header_set: bool,
    /// The first `set_real_ip_from`, with its text.
    first_range: Option<(Loc, String)>,
    /// `real_ip_header proxy_protocol` lines.
    from_proxy_protocol: Vec<(Loc, String)>,
    /// `listen` lines: (where, its text, TLS, has `proxy_protocol`).
    listens: Vec<(Loc, String, bool, bool)>,
}

/// Translates the realip and `proxy_protocol` lines of `files` (each file's name and directives).
pub(super) fn edge(files: &[(String, Vec<Directive>)]) -> Edge {
    let mut found = Found::default();
    for (file, (_, directives)) in files.iter().enumerate() {
        walk(directives, file, 0, &mut found);
    }
    let name = |at: Loc| {
        let file = files.get(at.file).map_or("?", |(name, _)| name.as_str());
        format!("{file}:{}", at.line)
    };
    let mut edge = found.edge;

    if let (false, Some((at, text))) = (found.header_set, &found.first_range) {
        edge.notes.push(Note::Untranslated {
            at: *at,
            text: format!("{text} (with nginx's default `real_ip_header X-Real-IP`)"),
            why: Some(
                "certd takes the client's address from these proxies' X-Forwarded-For, not from \
                 X-Real-IP: the ranges are in trusted_proxies below, but make sure the proxies \
                 send X-Forwarded-For"
                    .to_owned(),
            ),
        });
    }

    for tls in [true, false] {
        let listens: Vec<&(Loc, String, bool, bool)> =
            found.listens.iter().filter(|l| l.2 == tls).collect();
        let with: Vec<&&(Loc, String, bool, bool)> = listens.iter().filter(|l| l.3).collect();
        let Some(without) = listens.iter().find(|l| !l.3) else {
            if with.is_empty() {
                continue;
            }
            if edge.trusted_proxies.is_empty() {
                for (at, text, ..) in with.iter().map(|l| **l) {
                    edge.notes.push(Note::Untranslated {
                        at: *at,
                        text: text.clone(),
                        why: Some(
                            "certd accepts PROXY headers only from [https] trusted_proxies (nginx \
                             from anyone), and these files have no set_real_ip_from: list your \
                             load balancers there, then set proxy_protocol = true"
                                .to_owned(),
                        ),
                    });
                }
                continue;
            }
            for (at, ..) in with.iter().map(|l| **l) {
                cover(&mut edge.covered, Topic::ProxyProtocol, *at);
            }
            if tls {
                edge.https_proxy_protocol = true;
            } else {
                edge.http_proxy_protocol = true;
            }
            continue;
        };
        let table = if tls { "[https]" } else { "[http]" };
        for (at, text, ..) in with.iter().map(|l| **l) {
            edge.notes.push(Note::Untranslated {
                at: *at,
                text: text.clone(),
                why: Some(format!(
                    "certd's {table} listeners all speak the PROXY protocol or none does, and {} \
                     listens without it",
                    name(without.0)
                )),
            });
        }
    }

    let proxied = edge.https_proxy_protocol || edge.http_proxy_protocol;
    for (at, text) in found.from_proxy_protocol {
        if proxied {
            cover(&mut edge.covered, Topic::ProxyProtocol, at);
        } else {
            edge.notes.push(Note::Untranslated {
                at,
                text,
                why: Some(
                    "no `listen … proxy_protocol` became certd's proxy_protocol = true, so there \
                     is no PROXY header to take the address from"
                        .to_owned(),
                ),
            });
        }
    }
    edge
}

/// Collects from `directives` (at block `depth`: 0 for a file's top level and `http { }`).
fn walk(directives: &[Directive], file: usize, depth: usize, found: &mut Found) {
    for d in directives {
        let at = Loc { file, line: d.line };
        match (d.name.as_str(), &d.block) {
            ("http", Some(inner)) => walk(inner, file, depth, found),
            ("server", Some(inner)) => {
                for (listen, parsed, tls) in server::listens(inner) {
                    let at = Loc {
                        file,
                        line: listen.line,
                    };
                    let text = directive_text(listen);
                    found.listens.push((at, text, tls, parsed.proxy_protocol));
                }
                walk(inner, file, depth + 1, found);
            }
            (_, Some(inner)) => walk(inner, file, depth + 1, found),
            _ if is_edge_directive(d) => directive(d, at, depth, found),
            _ => {}
        }
    }
}

/// One realip directive.
fn directive(d: &Directive, at: Loc, depth: usize, found: &mut Found) {
    let edge = &mut found.edge;
    let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
    let untranslated = |why: &str| Note::untranslated(at, d, Some(why.to_owned()));
    match (d.name.as_str(), args.as_slice()) {
        ("set_real_ip_from", [range]) if range.starts_with("unix:") => edge.notes.push(
            untranslated("certd listens on TCP only: no connection reaches it over a Unix socket"),
        ),
        ("set_real_ip_from", [range]) => match trusted_proxies::parse_range(range) {
            Ok(range) => {
                let range = range.to_string();
                if !edge.trusted_proxies.contains(&range) {
                    edge.trusted_proxies.push(range);
                }
                cover(&mut edge.covered, Topic::TrustedProxies, at);
                found.first_range.get_or_insert((at, directive_text(d)));
                if depth > 0 {
                    edge.notes.push(Note::Differs {
                        at,
                        text: "nginx trusts this range in its block only; certd's \
                               trusted_proxies apply to every site"
                            .to_owned(),
                    });
                }
            }
            Err(why) => edge.notes.push(untranslated(&why)),
        },
        ("real_ip_header", [header]) => {
            found.header_set = true;
            if header.eq_ignore_ascii_case("x-forwarded-for") {
                cover(&mut edge.covered, Topic::TrustedProxies, at);
            } else if *header == "proxy_protocol" {
                found.from_proxy_protocol.push((at, directive_text(d)));
            } else {
                edge.notes.push(untranslated(&format!(
                    "certd takes the client's address from X-Forwarded-For (past [https] \
                     trusted_proxies) or from the PROXY header, never from {header}"
                )));
            }
        }
        ("real_ip_recursive", ["on"]) => cover(&mut edge.covered, Topic::TrustedProxies, at),
        ("real_ip_recursive", ["off"]) => {
            cover(&mut edge.covered, Topic::TrustedProxies, at);
            edge.notes.push(Note::Differs {
                at,
                text: "nginx takes the last address of X-Forwarded-For; certd skips every \
                       trusted address from the right, as with real_ip_recursive on"
                    .to_owned(),
            });
        }
        _ => edge
            .notes
            .push(untranslated("not a form of this directive certd knows")),
    }
}
