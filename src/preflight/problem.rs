//! What preflight finds wrong with a name, and the one-line messages that say what to do about it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::dns::RESOLV_CONF;

/// What certd's own responder answers for a token it does not know.
const CERTD_UNKNOWN_TOKEN: &str = "unknown challenge token";

/// Which kind of address record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// An IPv4 address record.
    A,
    /// An IPv6 address record.
    Aaaa,
}

impl RecordType {
    /// The kind of record an address comes from.
    pub fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() {
            Self::A
        } else {
            Self::Aaaa
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
        })
    }
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    /// The resolver answered with this error code (`SERVFAIL`, `REFUSED`, …).
    Answered(String),
    /// No answer came within this long (all attempts together).
    TimedOut(Duration),
    /// The resolver could not be asked (no route, a socket error, a malformed answer).
    Other(String),
}

/// One thing that stands between a name and a successful HTTP-01 validation. Each displays as one line
/// that starts with the name and says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name has neither an A nor an AAAA record.
    NoAddress {
        /// The name.
        name: String,
        /// The resolver asked, as messages name it.
        resolver: String,
        /// Whether it answered NXDOMAIN (the name does not exist) rather than NOERROR without records.
        nxdomain: bool,
    },
    /// Looking up one kind of record failed (the resolver erred or did not answer).
    Resolve {
        /// The name.
        name: String,
        /// The record type that could not be looked up.
        record: RecordType,
        /// The resolver asked, as messages name it.
        resolver: String,
        /// What went wrong.
        failure: DnsFailure,
    },
    /// Nothing accepted a connection on the address.
    Unreachable {
        /// The name.
        name: String,
        /// The address (from an A or AAAA record) and the port the CA validates on.
        addr: SocketAddr,
        /// Why: "connection refused", "no answer within 5s", …
        reason: String,
        /// Set when the address is this machine's own but no `[http].listen` address covers it: the
        /// `[http].listen` entry to add.
        listen_hint: Option<SocketAddr>,
    },
    /// Something accepted the connection but did not answer HTTP.
    NoHttpAnswer {
        /// The name.
        name: String,
        /// The address and port.
        addr: SocketAddr,
        /// What the HTTP client saw.
        reason: String,
    },
    /// Something answered HTTP, but not with this process's self-test token.
    ForeignAnswer {
        /// The name.
        name: String,
        /// The address and port.
        addr: SocketAddr,
        /// The status it answered.
        status: u16,
        /// Its `Server` header, if any.
        server: Option<String>,
        /// Its `Location` header, if any (a redirect).
        location: Option<String>,
        /// The start of its body, whitespace collapsed.
        body_snippet: String,
    },
    /// The checks of the name did not finish in time.
    TimedOut {
        /// The name.
        name: String,
        /// The bound that was exceeded.
        after: Duration,
    },
}

impl NameProblem {
    /// The name the problem is about.
    pub fn name(&self) -> &str {
        match self {
            Self::NoAddress { name, .. }
            | Self::Resolve { name, .. }
            | Self::Unreachable { name, .. }
            | Self::NoHttpAnswer { name, .. }
            | Self::ForeignAnswer { name, .. }
            | Self::TimedOut { name, .. } => name,
        }
    }
}

/// Said after every problem with an AAAA address.
const IPV6_FIRST: &str = " (the CA tries IPv6 first: fix or remove the AAAA record)";

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ipv6_tail = |addr: &SocketAddr| {
            if addr.is_ipv6() {
                IPV6_FIRST
            } else {
                ""
            }
        };
        match self {
            Self::NoAddress {
                name,
                resolver,
                nxdomain,
            } => {
                let answer = if *nxdomain {
                    "NXDOMAIN: the name does not exist"
                } else {
                    "NOERROR with no address records"
                };
                write!(
                    f,
                    "{name}: no A or AAAA record (the resolver {resolver} answered {answer}); \
                     add a record pointing at this server"
                )
            }
            Self::Resolve {
                name,
                record,
                resolver,
                failure,
            } => match failure {
                DnsFailure::Answered(code) if code == "REFUSED" => write!(
                    f,
                    "{name}: cannot look up its {record} record: the resolver {resolver} answered \
                     REFUSED; it does not answer this machine: set [preflight] resolver to one that \
                     does (or fix {RESOLV_CONF})"
                ),
                DnsFailure::Answered(code) => write!(
                    f,
                    "{name}: cannot look up its {record} record: the resolver {resolver} answered \
                     {code}; fix the domain's DNS servers (or its DNSSEC): the CA's lookup will \
                     fail the same way"
                ),
                DnsFailure::TimedOut(after) => write!(
                    f,
                    "{name}: cannot look up its {record} record: no answer from the resolver \
                     {resolver} within {}; check that it is reachable ([preflight] resolver, or \
                     {RESOLV_CONF}) and that the domain's DNS servers answer",
                    duration(*after)
                ),
                DnsFailure::Other(reason) => write!(
                    f,
                    "{name}: cannot look up its {record} record from the resolver {resolver}: \
                     {reason}; check [preflight] resolver (or {RESOLV_CONF})"
                ),
            },
            Self::Unreachable {
                name,
                addr,
                reason,
                listen_hint,
            } => {
                let record = RecordType::of(addr);
                write!(f, "{name}: {addr} ({record} record) cannot be reached: {reason}")?;
                if let Some(hint) = listen_hint {
                    write!(
                        f,
                        "; it is this machine's address but [http].listen does not include it: \
                         add \"{hint}\""
                    )?;
                } else if addr.is_ipv4() {
                    write!(
                        f,
                        "; make sure the record points at this server and port {} is open to the \
                         internet (behind a NAT that cannot reach its own public address, set \
                         [preflight] enabled = false)",
                        addr.port()
                    )?;
                }
                f.write_str(ipv6_tail(addr))
            }
            Self::NoHttpAnswer { name, addr, reason } => write!(
                f,
                "{name}: {addr} ({} record) accepted the connection but gave no HTTP answer \
                 ({reason}): another program is listening on port {}, or the record points \
                 elsewhere{}",
                RecordType::of(addr),
                addr.port(),
                ipv6_tail(addr)
            ),
            Self::ForeignAnswer {
                name,
                addr,
                status,
                server,
                location,
                body_snippet,
            } => {
                write!(
                    f,
                    "{name}: {addr} ({} record) answered {status}",
                    RecordType::of(addr)
                )?;
                if let Some(server) = server {
                    write!(f, " (Server: {server})")?;
                }
                if let Some(location) = location {
                    write!(f, " redirecting to {location}")?;
                }
                if body_snippet.is_empty() {
                    f.write_str(" with an empty body")?;
                } else {
                    write!(f, " {body_snippet:?}")?;
                }
                f.write_str(" instead of certd's self-test token: ")?;
                if body_snippet == CERTD_UNKNOWN_TOKEN {
                    write!(
                        f,
                        "another certd answered (not this one): the record points at another \
                         server, or another certd holds port {}",
                        addr.port()
                    )?;
                } else {
                    write!(
                        f,
                        "another server is listening on port {}, or the record points elsewhere",
                        addr.port()
                    )?;
                }
                f.write_str(ipv6_tail(addr))
            }
            Self::TimedOut { name, after } => write!(
                f,
                "{name}: the preflight checks did not finish within {} (slow DNS or addresses \
                 that accept but never answer); retry, or set [preflight] enabled = false",
                duration(*after)
            ),
        }
    }
}

/// Why a site failed its preflight: every problem found with its names.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PreflightError {
    /// The site (its first name).
    pub site: String,
    /// Each problem, in the order of the names checked; never empty.
    pub problems: Vec<NameProblem>,
}

impl fmt::Display for PreflightError {
    /// One line per problem; each line starts with the name it is about.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A timeout as messages write it: "5s", or "500ms" below a second.
pub(super) fn duration(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 {
        format!("{}s", timeout.as_secs())
    } else {
        format!("{}ms", timeout.as_millis())
    }
}
