//! Unit tests for the pure parts: Retry-After, problem descriptions, rate-limit recognition.
#![allow(clippy::unwrap_used)]

use super::error::is_rate_limit;
use super::http::{bound_retry_after_header, parse_retry_after, MAX_RETRY_AFTER};
use super::*;
use instant_acme::Problem;
use std::time::{Duration, SystemTime};

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    // A day and a half before the date below.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_000_000);
    assert_eq!(
        parse_retry_after("120", now),
        Some(OffsetDateTime::from(now + Duration::from_secs(120)))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now).map(|at| at.unix_timestamp()),
        Some(784_111_777)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn retry_after_is_at_most_a_week_whatever_the_ca_says() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let week_later = OffsetDateTime::from(now + MAX_RETRY_AFTER);
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(604_800));
    for absurd in [
        "300000000000",
        "9223372036854775807",  // i64::MAX
        "18446744073709551615", // u64::MAX
        "99999999999999999999999999",
        "604801",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ] {
        assert_eq!(parse_retry_after(absurd, now), Some(week_later), "{absurd}");
    }
    assert_eq!(
        parse_retry_after(" 604800 ", now),
        Some(week_later),
        "exactly a week stays"
    );
    // Not delay-seconds (RFC 9110: digits only) nor a date.
    for bad in ["-5", "", "1e9", "+5"] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
    }
    // Even a clock at the end of time does not panic.
    assert_eq!(
        parse_retry_after(
            "300000000000",
            SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_000)
        ),
        None
    );
}

#[test]
fn the_retry_after_instant_acme_sees_is_bounded_too() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let rewritten = |value: &str| {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_str(value).unwrap(),
        );
        bound_retry_after_header(&mut headers, now);
        headers[hyper::header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(rewritten("18446744073709551615"), "604800");
    assert_eq!(rewritten("300000000000"), "604800");
    assert_eq!(rewritten("120"), "120");
    assert_eq!(
        rewritten("Thu, 01 Jan 1970 00:00:00 GMT"),
        "0",
        "a date already past"
    );
    assert_eq!(rewritten("soon"), "soon", "left for instant-acme to ignore");
}

#[test]
fn a_problem_is_described_with_its_subproblems() {
    let problem: Problem = serde_json::from_str(
            r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","detail":"Error creating new order","status":400,
                "subproblems":[{"type":"urn:ietf:params:acme:error:malformed","detail":"bad name","identifier":{"type":"dns","value":"x_y.test"}}]}"#,
        )
        .unwrap();
    let text = Described(&problem).to_string();
    assert_eq!(
        text,
        "urn:ietf:params:acme:error:rejectedIdentifier: Error creating new order (HTTP 400); \
             x_y.test: urn:ietf:params:acme:error:malformed: bad name"
    );
}

#[test]
fn rate_limits_are_recognised_by_problem_type() {
    let problem: Problem = serde_json::from_str(
        r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many"}"#,
    )
    .unwrap();
    assert!(is_rate_limit(&problem));
    let problem: Problem =
        serde_json::from_str(r#"{"type":"urn:ietf:params:acme:error:malformed"}"#).unwrap();
    assert!(!is_rate_limit(&problem));
}
