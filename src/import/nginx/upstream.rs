//! nginx `upstream NAME { server …; }` blocks as certd `[[upstream]]` groups: servers (TCP or
//! `unix:` sockets) with `weight`, `max_fails`, `fail_timeout`, `backup` and `down`, and the
//! `least_conn` / `ip_hash` balancing. `keepalive` (idle connections kept to the servers) changes
//! no answer and is left to certd's own pool, with a note; anything else (`hash`, `max_conns`,
//! `resolve`, `slow_start`, …) is refused with the reason, and routes proxying to that block are
//! left out.

use std::fmt::Write as _;

use super::keys::toml_str;
use super::parse::Directive;

/// The `[[upstream]]` table for block `block` named `name`, or why certd cannot balance like it.
pub(super) fn group(name: &str, block: &[Directive]) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name != "localhost"
        && name.parse::<u32>().is_err();
    if !valid {
        return Err(format!(
            "`{name}`: a certd group name is one label of letters, digits, `-` and `_`"
        ));
    }
    let mut balance = None;
    let mut servers = Vec::new();
    let mut any_backup = false;
    for d in block {
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        match (d.name.as_str(), args.as_slice()) {
            ("server", [address, params @ ..]) => {
                if let Some(server) = server(address, params)? {
                    any_backup |= server.contains("backup = true");
                    servers.push(server);
                }
            }
            ("least_conn", []) => balance = Some("least_conn"),
            ("ip_hash", []) => balance = Some("ip_hash"),
            ("keepalive" | "keepalive_timeout" | "keepalive_requests" | "keepalive_time", _)
            | ("zone", _) => {}
            _ => {
                return Err(format!(
                    "line {}: `{}`: certd balances round robin, least_conn or ip_hash only",
                    d.line, d.name
                ))
            }
        }
    }
    if servers.is_empty() {
        return Err("no server that is not `down`".to_owned());
    }
    if servers.len() > 64 {
        return Err("more than 64 servers".to_owned());
    }
    if any_backup && balance == Some("ip_hash") {
        return Err("`backup` with ip_hash (nginx refuses it too)".to_owned());
    }
    let mut table = format!(
        "[[upstream]]\nname = {}\nservers = [{}]\n",
        toml_str(name),
        servers.join(", ")
    );
    if let Some(balance) = balance {
        let _ = writeln!(table, "balance = {}", toml_str(balance));
    }
    Ok(table)
}

/// Notes for the parts of a block certd leaves to itself (`keepalive`): (line, text).
pub(super) fn group_notes(block: &[Directive]) -> Vec<(usize, String)> {
    block
        .iter()
        .filter(|d| d.name.starts_with("keepalive"))
        .map(|d| {
            (
                d.line,
                format!(
                    "`{}` is left to certd's own connection pool, which keeps idle connections \
                     to each server",
                    d.name
                ),
            )
        })
        .collect()
}

/// One `server ADDRESS PARAMS` line: its entry in `servers`, `None` for a `down` server (which
/// nginx never uses).
fn server(address: &str, params: &[&str]) -> Result<Option<String>, String> {
    if address.contains('$') {
        return Err(format!("`{address}`: variables in a server address"));
    }
    let address = if let Some(path) = address.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("`{address}`: a socket path must be absolute"));
        }
        address.to_owned()
    } else {
        let with_port = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok()
        }) || (address.starts_with('[') && address.contains("]:"));
        if with_port {
            address.to_owned()
        } else if address.starts_with('[') || !address.contains(':') {
            // nginx's default port.
            format!("{address}:80")
        } else {
            return Err(format!("`{address}` is not host:port"));
        }
    };
    let mut extra = Vec::new();
    for param in params {
        match param.split_once('=') {
            None if *param == "down" => return Ok(None),
            None if *param == "backup" => extra.push("backup = true".to_owned()),
            Some(("weight", n)) => match n.parse::<u32>() {
                Ok(n @ 1..=1000) => extra.push(format!("weight = {n}")),
                _ => return Err(format!("`{param}`: a weight from 1 to 1000")),
            },
            Some(("max_fails", n)) => match n.parse::<u32>() {
                Ok(n @ 0..=1000) => extra.push(format!("max_fails = {n}")),
                _ => return Err(format!("`{param}`: max_fails from 0 to 1000")),
            },
            Some(("fail_timeout", t)) => {
                let seconds = t.strip_suffix('s').unwrap_or(t);
                match seconds.parse::<u64>() {
                    Ok(n) if n > 0 => extra.push(format!("fail_timeout = \"{n}s\"")),
                    _ => match t.strip_suffix('m').map(str::parse::<u64>) {
                        Some(Ok(n)) if n > 0 => extra.push(format!("fail_timeout = \"{n}m\"")),
                        _ => return Err(format!("`{param}`: certd takes seconds or minutes")),
                    },
                }
            }
            _ => return Err(format!("`{param}`: not a server parameter certd has")),
        }
    }
    Ok(Some(if extra.is_empty() {
        toml_str(&address)
    } else {
        format!(
            "{{ address = {}, {} }}",
            toml_str(&address),
            extra.join(", ")
        )
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block(text: &str) -> Vec<Directive> {
        let parsed = super::super::parse::parse(text).unwrap();
        parsed[0].block.clone().unwrap()
    }

    #[test]
    fn upstream_blocks_become_groups() {
        let b = block(
            "upstream app { least_conn; server 127.0.0.1:8080 weight=2 max_fails=3 \
             fail_timeout=30s; server unix:/run/app.sock; server 10.0.0.9:80 backup; \
             server 10.0.0.8 down; keepalive 32; }",
        );
        let table = group("app", &b).unwrap();
        assert_eq!(
            table,
            "[[upstream]]\nname = \"app\"\nservers = [{ address = \"127.0.0.1:8080\", weight = 2, \
             max_fails = 3, fail_timeout = \"30s\" }, \"unix:/run/app.sock\", { address = \
             \"10.0.0.9:80\", backup = true }]\nbalance = \"least_conn\"\n"
        );
        assert_eq!(group_notes(&b).len(), 1);
        assert!(group("app", &block("upstream app { server backend; }"))
            .unwrap()
            .contains("\"backend:80\""));
        for bad in [
            "upstream app { hash $request_uri; server a:1; }",
            "upstream app { server a:1 max_conns=10; }",
            "upstream app { ip_hash; server a:1; server b:1 backup; }",
            "upstream app { server a:1 down; }",
        ] {
            assert!(group("app", &block(bad)).is_err(), "{bad}");
        }
        assert!(group("my.app", &block("upstream x { server a:1; }")).is_err());
    }
}
