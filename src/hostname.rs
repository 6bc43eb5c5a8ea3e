//! DNS host names as certd accepts them in `[[site]] names`.
//!
//! A name here ends up in three places: the ACME order (where the CA applies its own policy), the
//! certificate's subjectAltName, and the SNI lookup table. [`validate_dns_name`] checks the syntax
//! those need (RFC 1123 host names, as in RFC 5280's `dNSName`) and returns the lower-cased form, so
//! every later comparison is a plain string comparison. Anything it rejects gets a reason an operator
//! can act on, because it is shown by `certd check`.
//!
//! The request side lives here too: [`strip_port`] takes the host out of a `Host` header or URI
//! authority, and [`normalise_host`] puts it in the form the site table keys names by, so SNI, `Host`,
//! the :80 redirect, `$host` and FastCGI's `SERVER_NAME` all read a host the same way.

use std::net::IpAddr;

/// The longest name allowed, in characters, without a trailing dot (RFC 1035 §2.3.4 less the root).
const MAX_NAME_LEN: usize = 253;
/// The longest label allowed, in characters (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Checks that `name` is a DNS host name certd can obtain a certificate for over HTTP-01, and returns
/// it lower-cased.
///
/// Accepted: ASCII labels of 1 to 63 letters, digits and `-` (not at either end of a label), separated
/// by dots, at most 253 characters in all; upper case is folded to lower case. Rejected, each with its
/// own reason: an empty name, a trailing dot, IP addresses, wildcards (they need DNS-01, which certd
/// does not support yet), underscores, and any other character. Internationalized names must be given
/// in their `xn--` (punycode) form.
pub fn validate_dns_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.starts_with("*.") {
        return Err(
            "wildcard names need DNS-01 validation, which certd does not support yet; \
                    list each name instead"
                .to_owned(),
        );
    }
    if let Some(bare) = name.strip_suffix('.') {
        if bare.is_empty() {
            return Err("the name is empty (just a dot)".to_owned());
        }
        return Err(format!("trailing dot: write `{bare}`, not `{name}`"));
    }
    if looks_like_ip_address(name) {
        return Err("an IP address; certd needs a DNS name here".to_owned());
    }
    let length = name.chars().count();
    if length > MAX_NAME_LEN {
        return Err(format!(
            "the name is {length} characters long; DNS allows at most {MAX_NAME_LEN}"
        ));
    }
    for label in name.split('.') {
        check_label(label)?;
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks a `[[site]] names` entry, which may also be an IP address (RFC 8738) or a `*.` wildcard
/// (DNS-01 only; which challenge a name may use is the config's business), and returns it in the one
/// form every later comparison uses: lower case, and an IP address as `IpAddr` prints it (RFC 5952 for
/// IPv6), which is also how the resolver is asked for it.
pub fn validate_site_name(name: &str) -> Result<String, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(format!(
                "{ip} is not an address a CA can connect to; list this machine's own address"
            ));
        }
        return Ok(ip.to_string());
    }
    if let Some(ip) = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .filter(|inner| inner.parse::<IpAddr>().is_ok())
    {
        return Err(format!("write the IPv6 address without brackets: `{ip}`"));
    }
    if let Some(parent) = name.strip_prefix("*.") {
        let parent = validate_dns_name(parent).map_err(|reason| format!("after `*.`: {reason}"))?;
        if !parent.contains('.') {
            return Err(format!(
                "`*.{parent}` would cover a whole top-level domain; no CA issues that"
            ));
        }
        return Ok(format!("*.{parent}"));
    }
    validate_dns_name(name)
}

/// One label (the text between dots) of a name that has no trailing dot.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label: two dots in a row, or a leading dot".to_owned());
    }
    let length = label.chars().count();
    if length > MAX_LABEL_LEN {
        return Err(format!(
            "the label `{label}` is {length} characters long; DNS allows at most {MAX_LABEL_LEN} \
             between dots"
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(match bad {
            '_' => "underscores are not allowed in host names".to_owned(),
            '*' => "`*` is only meaningful as a leading `*.` wildcard, and certd does not \
                    support wildcards yet"
                .to_owned(),
            c if !c.is_ascii() => format!(
                "`{c}` is not allowed: write internationalized names in their ASCII `xn--` \
                 (punycode) form"
            ),
            c => format!(
                "`{}` is not allowed in a host name: use letters a-z, digits 0-9 and `-`",
                c.escape_default()
            ),
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "the label `{label}` starts or ends with `-`, which host names do not allow"
        ));
    }
    Ok(())
}

/// Whether `name` is, or would be read by resolvers as, an IP address rather than a name.
///
/// Besides what `IpAddr` parses (including a bracketed IPv6 literal), a name whose last label is all
/// digits counts: no top-level domain is numeric, and `inet_aton` reads forms like `127.1` as IPv4.
fn looks_like_ip_address(name: &str) -> bool {
    let unbracketed = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    if unbracketed.parse::<IpAddr>().is_ok() {
        return true;
    }
    name.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()))
}

/// `host:port` → `host`, leaving bracketed IPv6 literals whole (`[::1]:443` → `[::1]`). The one place
/// a request's `Host` or authority loses its port; an unclosed `[` comes back as it was (it then
/// matches no site) rather than being cut.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(v6, _)| &host[..=v6.len()]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// `host` as the site table keys it: lower-case, without a trailing dot; an IP address (IPv6 in
/// brackets, as in `Host: [::1]`) in the form site names use. Borrowed when it already is (every
/// request looks up two names, and clients send them lower-case).
pub fn normalise_host(host: &str) -> std::borrow::Cow<'_, str> {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
        return std::borrow::Cow::Owned(ip.to_string());
    }
    let host = host.trim_end_matches('.');
    if host.bytes().any(|byte| byte.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{normalise_host, strip_port, validate_dns_name, validate_site_name};

    #[test]
    fn site_names_may_be_ip_addresses_and_wildcards() {
        assert_eq!(validate_site_name("127.0.0.1").as_deref(), Ok("127.0.0.1"));
        assert_eq!(
            validate_site_name("2001:DB8:0::1").as_deref(),
            Ok("2001:db8::1")
        );
        assert_eq!(
            validate_site_name("*.Example.ORG").as_deref(),
            Ok("*.example.org")
        );
        assert_eq!(
            validate_site_name("WWW.a.test").as_deref(),
            Ok("www.a.test")
        );
        for (input, fragment) in [
            ("0.0.0.0", "not an address a CA can connect to"),
            ("[::1]", "without brackets: `::1`"),
            ("*.org", "top-level domain"),
            ("*.*.a.test", "after `*.`"),
            ("a.*.test", "`*`"),
            ("127.1", "an IP address"),
        ] {
            let reason = validate_site_name(input).unwrap_err();
            assert!(reason.contains(fragment), "{input:?}: {reason}");
        }
    }

    #[test]
    fn accepts_and_lower_cases_host_names() {
        let long_label = "a".repeat(63);
        let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        assert_eq!(long_name.len(), 253);
        let cases: &[(&str, &str)] = &[
            ("example.org", "example.org"),
            ("WWW.Example.ORG", "www.example.org"),
            ("localhost", "localhost"),
            ("a-b.c-d.example", "a-b.c-d.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("123.example.org", "123.example.org"),
            ("1x", "1x"),
            (&long_label, &long_label),
            (&long_name, &long_name),
        ];
        for (input, expected) in cases {
            assert_eq!(
                validate_dns_name(input).as_deref(),
                Ok(*expected),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejects_with_a_specific_reason() {
        let long_label = format!("{}.example.org", "a".repeat(64));
        let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
        // (input, a fragment the reason must contain)
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (".", "empty"),
            ("a..b", "empty label"),
            (".example.org", "empty label"),
            (
                "example.org.",
                "trailing dot: write `example.org`, not `example.org.`",
            ),
            (
                "foo_bar.example.org",
                "underscores are not allowed in host names",
            ),
            ("_acme-challenge.example.org", "underscores"),
            ("192.0.2.1", "an IP address; certd needs a DNS name here"),
            ("2001:db8::1", "an IP address"),
            ("[2001:db8::1]", "an IP address"),
            ("::1", "an IP address"),
            ("127.1", "an IP address"),
            ("example.123", "an IP address"),
            ("*.example.org", "wildcard names need DNS-01 validation"),
            ("www.*.example.org", "`*`"),
            (&long_label, "at most 63"),
            (&long_name, "at most 253"),
            ("-example.org", "starts or ends with `-`"),
            ("example-.org", "starts or ends with `-`"),
            ("exa mple.org", "` ` is not allowed"),
            ("example.org:443", "`:` is not allowed"),
            ("https://example.org", "`:` is not allowed"),
            ("bücher.example", "xn--"),
        ];
        for (input, fragment) in cases {
            match validate_dns_name(input) {
                Ok(name) => panic!("{input:?} was accepted as {name:?}"),
                Err(reason) => assert!(
                    reason.contains(fragment),
                    "{input:?}: reason {reason:?} does not mention {fragment:?}"
                ),
            }
        }
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.test:8443"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("A.Test.:80"), "A.Test.");
        assert_eq!(strip_port("192.0.2.1:8080"), "192.0.2.1");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port(""), "");
        assert_eq!(strip_port(":80"), "");
    }

    #[test]
    fn an_unclosed_bracket_is_returned_whole() {
        // Reached from a `Host` header on :80; the copy in daemon/https.rs sliced past the end here.
        assert_eq!(strip_port("[::1"), "[::1");
        assert_eq!(strip_port("["), "[");
    }

    #[test]
    fn hosts_are_normalised_as_the_site_table_keys_them() {
        use std::borrow::Cow;
        assert!(matches!(normalise_host("a.test"), Cow::Borrowed("a.test")));
        assert!(matches!(normalise_host("a.test."), Cow::Borrowed("a.test")));
        assert_eq!(normalise_host("WWW.A.Test."), "www.a.test");
        assert_eq!(normalise_host("[::1]"), "::1");
        assert_eq!(normalise_host("[0:0::1]"), "::1");
        assert_eq!(normalise_host("::1"), "::1");
        assert_eq!(normalise_host("192.0.2.1"), "192.0.2.1");
        assert_eq!(normalise_host(strip_port("[::1]:8443")), "::1");
        assert_eq!(normalise_host(strip_port("A.TEST.:8443")), "a.test");
        // Not a name a site can have: left for the lookup to miss, never cut or panicked on.
        assert_eq!(normalise_host("[::1"), "[::1");
        assert_eq!(normalise_host(""), "");
    }
}
