//! Headers certd puts on (or takes off) responses: nginx `add_header` (with its status rule and
//! `always`), `proxy_hide_header`, `expires`, and the `hsts` shorthand.
//!
//! nginx's `add_header` applies only to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 unless
//! marked `always`; `expires` follows the same list. `hsts` is always sent, on every answer
//! (every answer certd gives on its HTTPS listener is HTTPS).

use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, EXPIRES, STRICT_TRANSPORT_SECURITY};
use hyper::{HeaderMap, StatusCode};

use super::variables::{RequestFacts, Template};

/// One `add_header name value [always]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHeader {
    /// The header.
    pub name: HeaderName,
    /// Its value, with variables.
    pub value: Template,
    /// Also on error answers (nginx `always`).
    pub always: bool,
}

/// nginx `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    /// `expires 30d`: `Cache-Control: max-age=N` and `Expires` N from now.
    After(Duration),
    /// `expires epoch`: `Cache-Control: no-cache`, `Expires` in 1970.
    Epoch,
    /// `expires max`: ten years, as nginx does.
    Max,
}

/// The response rules in effect for one answer (a route's own, or the site's).
#[derive(Debug, Clone, Copy)]
pub struct ResponseRules<'a> {
    /// `proxy_hide_header`.
    pub hide: &'a [HeaderName],
    /// `expires`.
    pub expires: Option<Expires>,
    /// `add_header`.
    pub add: &'a [AddHeader],
    /// `hsts`.
    pub hsts: Option<&'a HeaderValue>,
}

/// Whether nginx's `add_header` (without `always`) and `expires` apply to an answer with `status`.
pub fn applies(status: StatusCode, always: bool) -> bool {
    always
        || matches!(
            status.as_u16(),
            200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
        )
}

/// Applies the response header rules to one answer, in nginx's order: hidden upstream headers go
/// first (so a re-added header is certd's), then `expires`, then `add_header` values (appended, as
/// nginx does, so an upstream's own header of the same name stays), then `hsts` (which replaces any
/// upstream value: one policy per site).
pub fn apply(
    headers: &mut HeaderMap,
    status: StatusCode,
    rules: &ResponseRules<'_>,
    facts: &RequestFacts,
    now: SystemTime,
) {
    let ResponseRules {
        hide,
        expires,
        add,
        hsts,
    } = *rules;
    for name in hide {
        headers.remove(name);
    }
    if let Some(expires) = expires.filter(|_| applies(status, false)) {
        set_expires(headers, expires, now);
    }
    for header in add.iter().filter(|header| applies(status, header.always)) {
        let value = header.value.expand(facts, &[]);
        // nginx sends nothing for a value that expands to "".
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header.name.clone(), value);
        }
    }
    if let Some(hsts) = hsts {
        headers.insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
}

/// Ten years, nginx's `expires max`.
const MAX_AGE_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn set_expires(headers: &mut HeaderMap, expires: Expires, now: SystemTime) {
    let (cache_control, at) = match expires {
        Expires::Epoch => ("no-cache".to_owned(), SystemTime::UNIX_EPOCH),
        Expires::Max => (
            format!("max-age={}", MAX_AGE_MAX.as_secs()),
            now.checked_add(MAX_AGE_MAX).unwrap_or(now),
        ),
        Expires::After(after) => (
            format!("max-age={}", after.as_secs()),
            // Checked: the duration comes from the config; an absurd one keeps `now`.
            now.checked_add(after).unwrap_or(now),
        ),
    };
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        headers.insert(CACHE_CONTROL, value);
    }
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
        headers.insert(EXPIRES, value);
    }
}

/// Parses an `expires` value: `"30d"`, `"12h"`, `"1w"`, `"1y"`, `"90s"`, `"15m"`, whole seconds,
/// `"epoch"` or `"max"`.
pub fn parse_expires(text: &str) -> Result<Expires, String> {
    let text = text.trim();
    match text {
        "epoch" => return Ok(Expires::Epoch),
        "max" => return Ok(Expires::Max),
        _ => {}
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!(
            "{text:?} is not an expiry: write e.g. \"30d\", \"12h\", \"1y\", \"epoch\" or \"max\""
        )
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let per_unit: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "M" => 30 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(bad()),
    };
    let seconds = number
        .checked_mul(per_unit)
        .filter(|seconds| *seconds <= MAX_AGE_MAX.as_secs())
        .ok_or_else(|| format!("{text:?} is more than ten years (write \"max\")"))?;
    Ok(Expires::After(Duration::from_secs(seconds)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn add_header_applies_to_nginx_statuses_unless_always() {
        let cases = [
            (200, false, true),
            (201, false, true),
            (204, false, true),
            (206, false, true),
            (301, false, true),
            (302, false, true),
            (303, false, true),
            (304, false, true),
            (307, false, true),
            (308, false, true),
            (202, false, false),
            (400, false, false),
            (404, false, false),
            (413, false, false),
            (500, false, false),
            (502, false, false),
            (404, true, true),
            (502, true, true),
        ];
        for (status, always, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                applies(status, always),
                expected,
                "{status} always={always}"
            );
        }
    }

    fn header(name: &'static str, value: &str, always: bool) -> AddHeader {
        AddHeader {
            name: HeaderName::from_static(name),
            value: Template::parse(value, false).unwrap(),
            always,
        }
    }

    #[test]
    fn rules_hide_then_add_then_hsts() {
        let facts = RequestFacts {
            host: "a.test".into(),
            ..RequestFacts::default()
        };
        let add = [
            header("x-frame-options", "DENY", false),
            header("x-served-for", "$host", true),
            header("x-empty", "$http_x_none", true),
        ];
        let hsts = HeaderValue::from_static("max-age=63072000");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for (status, frame) in [(StatusCode::OK, true), (StatusCode::NOT_FOUND, false)] {
            let mut headers = HeaderMap::new();
            headers.insert("x-powered-by", HeaderValue::from_static("php"));
            headers.insert(
                STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=1"),
            );
            let hide = [HeaderName::from_static("x-powered-by")];
            let expires = Some(Expires::After(Duration::from_secs(2_592_000)));
            let rules = ResponseRules {
                hide: &hide,
                expires,
                add: &add,
                hsts: Some(&hsts),
            };
            apply(&mut headers, status, &rules, &facts, now);
            assert!(!headers.contains_key("x-powered-by"));
            assert_eq!(headers.contains_key("x-frame-options"), frame, "{status}");
            assert_eq!(headers["x-served-for"], "a.test");
            assert!(!headers.contains_key("x-empty"));
            assert_eq!(headers[STRICT_TRANSPORT_SECURITY], "max-age=63072000");
            if frame {
                assert_eq!(headers[CACHE_CONTROL], "max-age=2592000");
                assert_eq!(headers[EXPIRES], "Tue, 09 Oct 2001 01:46:40 GMT");
            } else {
                assert!(!headers.contains_key(EXPIRES));
            }
        }
    }

    #[test]
    fn expiries_read_nginx_units() {
        let day = 86_400;
        let cases = [
            ("30d", Ok(Expires::After(Duration::from_secs(30 * day)))),
            ("12h", Ok(Expires::After(Duration::from_secs(12 * 3600)))),
            ("1y", Ok(Expires::After(Duration::from_secs(365 * day)))),
            ("90", Ok(Expires::After(Duration::from_secs(90)))),
            ("epoch", Ok(Expires::Epoch)),
            ("max", Ok(Expires::Max)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_expires(text), expected, "{text}");
        }
        assert!(parse_expires("30 parsecs").is_err());
        assert!(parse_expires("-1").is_err());
        assert!(parse_expires("99999999999999999999y").is_err());
        assert!(parse_expires("11y").is_err());
    }
}
