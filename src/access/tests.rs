//! Unit tests of access lists, `satisfy`, credentials parsing and the guard.

use std::path::Path;

use hyper::header::HeaderValue;

use super::*;

fn list(rules: &[&str]) -> AccessList {
    AccessList::new(
        rules
            .iter()
            .map(|rule| Rule::parse(rule).unwrap())
            .collect(),
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn rules_parse_like_nginx_allow_and_deny() {
    let cases = [
        ("allow 10.0.0.0/8", Some((true, Some("10.0.0.0/8")))),
        ("deny all", Some((false, None))),
        ("allow   192.0.2.1", Some((true, Some("192.0.2.1/32")))),
        ("deny 2001:db8::/32", Some((false, Some("2001:db8::/32")))),
        ("allow 10.1.2.3/8", Some((true, Some("10.0.0.0/8")))),
        ("allow ::ffff:10.0.0.1", Some((true, Some("10.0.0.1/32")))),
        ("permit 10.0.0.0/8", None),
        ("allow", None),
        ("allow 10.0.0.0/8 extra", None),
        ("deny 10.0.0.0/33", None),
        ("deny example.org", None),
        ("allow unix:", None),
        ("", None),
    ];
    for (text, expected) in cases {
        let parsed = Rule::parse(text)
            .ok()
            .map(|rule| (rule.allow, rule.range.map(|range| range.to_string())));
        let expected = expected.map(|(allow, range)| (allow, range.map(str::to_owned)));
        assert_eq!(parsed, expected, "{text:?}");
    }
}

#[test]
fn the_first_matching_rule_decides() {
    // The example of nginx's documentation.
    let rules = list(&[
        "deny 192.168.1.1",
        "allow 192.168.1.0/24",
        "allow 10.1.1.0/16",
        "allow 2001:0db8::/32",
        "deny all",
    ]);
    let cases = [
        ("192.168.1.1", Verdict::Denied),
        ("192.168.1.2", Verdict::Allowed),
        ("10.1.200.3", Verdict::Allowed),
        ("10.2.0.1", Verdict::Denied),
        ("2001:db8::1", Verdict::Allowed),
        ("2001:db9::1", Verdict::Denied),
        ("::1", Verdict::Denied),
        // What a dual-stack socket reports for IPv4 clients counts as the IPv4 address.
        ("::ffff:192.168.1.1", Verdict::Denied),
        ("::ffff:192.168.1.7", Verdict::Allowed),
    ];
    for (address, expected) in cases {
        assert_eq!(rules.verdict(ip(address)), expected, "{address}");
    }
    // Order matters: the same rules the other way round let 192.168.1.1 in.
    let swapped = list(&["allow 192.168.1.0/24", "deny 192.168.1.1"]);
    assert_eq!(swapped.verdict(ip("192.168.1.1")), Verdict::Allowed);
    // No match is neither.
    assert_eq!(
        list(&["deny 10.0.0.0/8"]).verdict(ip("127.0.0.1")),
        Verdict::NoMatch
    );
    assert_eq!(
        AccessList::default().verdict(ip("127.0.0.1")),
        Verdict::NoMatch
    );
    // An IPv4 rule does not match an IPv6 address that merely embeds it the other way.
    assert_eq!(
        list(&["deny 10.0.0.0/8"]).verdict(ip("::10.0.0.1")),
        Verdict::NoMatch
    );
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
    );
    headers
}

#[test]
fn credentials_are_read_from_basic_authorization_only() {
    let (user, password) = credentials(&basic("alice", "pa:ss")).unwrap();
    assert_eq!(user, "alice");
    assert_eq!(password.as_slice(), b"pa:ss");
    let mut headers = basic("alice", "pw");
    let value = headers.get(AUTHORIZATION).unwrap().to_str().unwrap();
    let lower = value.replacen("Basic", "bAsIc", 1);
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&lower).unwrap());
    assert!(credentials(&headers).is_some());
    for bad in ["Bearer abc", "Basic", "Basic !!!", "Basic YWxpY2U="] {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static(bad));
        assert!(credentials(&headers).is_none(), "{bad}");
    }
    assert!(credentials(&HeaderMap::new()).is_none());
}

#[test]
fn the_challenge_quotes_the_realm() {
    assert_eq!(challenge("Admin area"), "Basic realm=\"Admin area\"");
    assert_eq!(challenge(r#"a "b" \c"#), r#"Basic realm="a \"b\" \\c""#);
}

fn policy(rules: &[&str], satisfy: Satisfy) -> Policy {
    let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
    let text = format!("alice:{bcrypt}\nbob:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    let users = Htpasswd::parse(Path::new("users"), text.as_bytes()).unwrap();
    Policy {
        rules: list(rules),
        auth: Some(BasicAuth {
            realm: "Staff".into(),
            users: Arc::new(users),
        }),
        satisfy,
    }
}

#[tokio::test]
async fn satisfy_all_needs_both_and_any_needs_either() {
    let guard = Guard::default();
    let unauthorized = Outcome::Unauthorized("Staff".into());
    let rules = ["allow 10.0.0.0/8", "deny all"];
    let inside = ip("10.0.0.5");
    let outside = ip("192.0.2.9");
    let right = basic("alice", "s3cret");
    let wrong = basic("alice", "nope");
    let none = HeaderMap::new();

    let all = policy(&rules, Satisfy::All);
    let cases = [
        (inside, &right, Outcome::Allowed),
        (inside, &wrong, unauthorized.clone()),
        (inside, &none, unauthorized.clone()),
        (outside, &right, Outcome::Forbidden),
        (outside, &none, Outcome::Forbidden),
    ];
    for (client, headers, expected) in &cases {
        assert_eq!(
            &guard.check(&all, headers, *client).await,
            expected,
            "all {client}"
        );
    }

    let any = policy(&rules, Satisfy::Any);
    let cases = [
        (inside, &none, Outcome::Allowed),
        (inside, &wrong, Outcome::Allowed),
        (outside, &right, Outcome::Allowed),
        (outside, &wrong, unauthorized.clone()),
        (outside, &none, unauthorized.clone()),
    ];
    for (client, headers, expected) in &cases {
        assert_eq!(
            &guard.check(&any, headers, *client).await,
            expected,
            "any {client}"
        );
    }

    // Without auth, `any` still refuses a denied address.
    let mut rules_only = policy(&rules, Satisfy::Any);
    rules_only.auth = None;
    assert_eq!(
        guard.check(&rules_only, &none, outside).await,
        Outcome::Forbidden
    );
    assert_eq!(
        guard.check(&rules_only, &none, inside).await,
        Outcome::Allowed
    );
}

#[tokio::test]
async fn users_are_checked_by_name_and_bcrypt_successes_are_cached() {
    let guard = Guard::default();
    let auth = policy(&[], Satisfy::All);
    let client = ip("127.0.0.1");
    let unauthorized = Outcome::Unauthorized("Staff".into());
    assert_eq!(
        guard.check(&auth, &basic("bob", "password"), client).await,
        Outcome::Allowed
    );
    assert_eq!(
        guard
            .check(&auth, &basic("carol", "password"), client)
            .await,
        unauthorized
    );
    // bcrypt: failures are not cached, the success is, once.
    assert_eq!(
        guard.check(&auth, &basic("alice", "wrong"), client).await,
        unauthorized
    );
    assert_eq!(guard.cache.len(), 0);
    for _ in 0..3 {
        assert_eq!(
            guard.check(&auth, &basic("alice", "s3cret"), client).await,
            Outcome::Allowed
        );
    }
    assert_eq!(guard.cache.len(), 1);
    // The cached success does not let another password in.
    assert_eq!(
        guard.check(&auth, &basic("alice", "s3cret2"), client).await,
        unauthorized
    );
    // SHA-1 is fast and never cached.
    assert_eq!(guard.cache.len(), 1);
}
