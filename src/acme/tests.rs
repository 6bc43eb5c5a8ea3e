//! Unit tests for the pure parts: Retry-After, problem descriptions, rate-limit recognition.
#![allow(clippy::unwrap_used)]

use super::error::is_rate_limit;
use super::http::parse_retry_after;
use super::*;
use instant_acme::Problem;
use std::time::{Duration, SystemTime};

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
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
