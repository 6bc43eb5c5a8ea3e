//! The CGI/1.1 environment a FastCGI request carries: the set of Debian's `/etc/nginx/fastcgi.conf`
//! (plus `PATH_INFO` from the path split, `HTTPS=on`, and an `HTTP_*` variable per request header).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hyper::http::request::Parts;

use super::record;
use super::script::Script;
use crate::hostname::strip_port;

/// The connection facts a request's parameters need.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    /// The real client (`REMOTE_ADDR`): the peer, or who a trusted proxy forwarded for.
    pub client: IpAddr,
    /// The peer's port (`REMOTE_PORT`), when the client is the peer itself.
    pub client_port: Option<u16>,
    /// certd's own address on the connection (`SERVER_ADDR`, `SERVER_PORT`), when known.
    pub server: Option<SocketAddr>,
}

/// Request headers that are not passed as `HTTP_*`: `Proxy` because PHP would take `HTTP_PROXY`
/// as its outgoing proxy (httpoxy, CVE-2016-5385); the body's type and length, which have their
/// own variables.
const NOT_PASSED: &[&str] = &["proxy", "content-type", "content-length"];

/// The `PARAMS` stream for `script` (name-value pairs, not yet cut into records).
/// `content_length` is the body's length when it is known up front.
pub fn encode(
    parts: &Parts,
    script: &Script,
    root: &Path,
    connection: Connection,
    content_length: Option<u64>,
    extra: &[(String, String)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    let mut put = |name: &[u8], value: &[u8]| {
        // A part too long to encode (over 2 GiB) cannot arrive: hyper caps header sizes far below.
        let _ = record::name_value(&mut out, name, value);
    };
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let query = parts.uri.query().unwrap_or("");
    // What the client sent, as nginx's `$request_uri`: a rewrite or `try_files` fallback to the
    // script (Nextcloud's `/index.php$request_uri`) leaves the app the URI to route on.
    let request_uri = crate::request_uri::original(&parts.extensions, &parts.uri);
    let host = host(parts);
    let server_name = host
        .as_deref()
        .map(strip_port)
        .unwrap_or_default()
        .to_owned();

    put(b"GATEWAY_INTERFACE", b"CGI/1.1");
    put(
        b"SERVER_SOFTWARE",
        concat!("certd/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    put(b"SERVER_PROTOCOL", protocol(parts.version).as_bytes());
    put(b"REQUEST_SCHEME", b"https");
    put(b"HTTPS", b"on");
    put(b"REQUEST_METHOD", parts.method.as_str().as_bytes());
    put(b"REQUEST_URI", request_uri.as_bytes());
    put(b"DOCUMENT_URI", script.name.as_bytes());
    put(b"QUERY_STRING", query.as_bytes());
    put(b"DOCUMENT_ROOT", root.as_bytes());
    put(
        b"SCRIPT_FILENAME",
        script.filename.to_string_lossy().as_bytes(),
    );
    put(b"SCRIPT_NAME", script.name.as_bytes());
    put(b"PATH_INFO", script.path_info.as_bytes());
    if !script.path_info.is_empty() {
        put(
            b"PATH_TRANSLATED",
            format!("{root}{}", script.path_info).as_bytes(),
        );
    }
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    put(b"CONTENT_TYPE", content_type);
    let length = content_length.map(|length| length.to_string());
    put(
        b"CONTENT_LENGTH",
        length.as_deref().unwrap_or_default().as_bytes(),
    );
    put(b"REMOTE_ADDR", connection.client.to_string().as_bytes());
    if let Some(port) = connection.client_port {
        put(b"REMOTE_PORT", port.to_string().as_bytes());
    }
    if let Some(server) = connection.server {
        put(b"SERVER_ADDR", server.ip().to_string().as_bytes());
        put(b"SERVER_PORT", server.port().to_string().as_bytes());
    } else {
        put(b"SERVER_PORT", b"443");
    }
    put(b"SERVER_NAME", server_name.as_bytes());
    // php-cgi built with force-cgi-redirect refuses to run without it.
    put(b"REDIRECT_STATUS", b"200");

    let mut saw_host = false;
    for name in parts.headers.keys() {
        let lower = name.as_str();
        if NOT_PASSED.contains(&lower) {
            continue;
        }
        saw_host |= lower == "host";
        // Repeated headers are joined as one variable, as nginx does; cookies with `; `.
        let separator: &[u8] = if lower == "cookie" { b"; " } else { b", " };
        let mut value = Vec::new();
        for (i, part) in parts.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(separator);
            }
            value.extend_from_slice(part.as_bytes());
        }
        put(cgi_name(lower).as_bytes(), &value);
    }
    // HTTP/2 carries the host as `:authority`, which hyper keeps in the URI only.
    if let (false, Some(host)) = (saw_host, host) {
        put(b"HTTP_HOST", host.as_bytes());
    }
    // The route's own (nginx `fastcgi_param NAME VALUE`), checked at load not to be one of the
    // above, so nothing certd sets is overridden.
    for (name, value) in extra {
        put(name.as_bytes(), value.as_bytes());
    }
    out
}

/// The parameters certd sets itself: a route's `fastcgi_param` may not name one (nor `HTTP_*`,
/// which come from the request's headers).
const OWN: &[&str] = &[
    "GATEWAY_INTERFACE",
    "SERVER_SOFTWARE",
    "SERVER_PROTOCOL",
    "REQUEST_SCHEME",
    "HTTPS",
    "REQUEST_METHOD",
    "REQUEST_URI",
    "DOCUMENT_URI",
    "QUERY_STRING",
    "DOCUMENT_ROOT",
    "SCRIPT_FILENAME",
    "SCRIPT_NAME",
    "PATH_INFO",
    "PATH_TRANSLATED",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_ADDR",
    "SERVER_PORT",
    "SERVER_NAME",
    "REDIRECT_STATUS",
];

/// Whether `name` is a parameter certd sets itself (see [`OWN`]).
pub fn is_own(name: &str) -> bool {
    OWN.iter().any(|own| own.eq_ignore_ascii_case(name))
        || name
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("HTTP_"))
}

/// Whether `name = value` can be an extra parameter: a name of ASCII letters, digits and `_`
/// (not starting with a digit), a value without variables (`$`) or control characters.
pub fn valid_extra(name: &str, value: &str) -> bool {
    let name_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    name_ok && !value.contains('$') && !value.chars().any(char::is_control)
}

/// `HTTP_` and the header's name upper-cased with `-` as `_`.
fn cgi_name(header: &str) -> String {
    let mut name = String::with_capacity(5 + header.len());
    name.push_str("HTTP_");
    name.extend(header.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// The host the client asked for: the URI's authority (HTTP/2) or the `Host` header.
fn host(parts: &Parts) -> Option<String> {
    if let Some(authority) = parts.uri.authority() {
        return Some(authority.as_str().to_owned());
    }
    parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_owned)
}

fn protocol(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Decodes the name-value pairs again (the inverse of [`record::name_value`]).
    fn decode(mut data: &[u8]) -> HashMap<String, String> {
        fn length(data: &mut &[u8]) -> usize {
            if data[0] < 128 {
                let len = usize::from(data[0]);
                *data = &data[1..];
                len
            } else {
                let len = u32::from_be_bytes([data[0] & 0x7f, data[1], data[2], data[3]]);
                *data = &data[4..];
                len as usize
            }
        }
        let mut map = HashMap::new();
        while !data.is_empty() {
            let name_len = length(&mut data);
            let value_len = length(&mut data);
            let name = String::from_utf8(data[..name_len].to_vec()).expect("utf-8");
            let value =
                String::from_utf8(data[name_len..name_len + value_len].to_vec()).expect("utf-8");
            data = &data[name_len + value_len..];
            map.insert(name, value);
        }
        map
    }

    #[test]
    fn the_standard_variables_are_set() {
        let request = hyper::Request::post("/index.php/a/b?x=1&y=2")
            .header("host", "blog.test:443")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-custom-thing", "one")
            .header("x-custom-thing", "two")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("proxy", "http://evil.test")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let script = Script {
            name: "/index.php".into(),
            path_info: "/a/b".into(),
            filename: "/srv/www/index.php".into(),
        };
        let connection = Connection {
            client: "203.0.113.9".parse().expect("ip"),
            client_port: Some(50000),
            server: Some("127.0.0.1:8443".parse().expect("addr")),
        };
        let params = decode(&encode(
            &parts,
            &script,
            Path::new("/srv/www/"),
            connection,
            Some(7),
            &[("front_controller_active".into(), "true".into())],
        ));
        assert_eq!(params["front_controller_active"], "true");
        let expected = [
            ("SCRIPT_FILENAME", "/srv/www/index.php"),
            ("SCRIPT_NAME", "/index.php"),
            ("PATH_INFO", "/a/b"),
            ("PATH_TRANSLATED", "/srv/www/a/b"),
            ("DOCUMENT_ROOT", "/srv/www"),
            ("DOCUMENT_URI", "/index.php"),
            ("REQUEST_URI", "/index.php/a/b?x=1&y=2"),
            ("QUERY_STRING", "x=1&y=2"),
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", "7"),
            ("REQUEST_SCHEME", "https"),
            ("HTTPS", "on"),
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REMOTE_ADDR", "203.0.113.9"),
            ("REMOTE_PORT", "50000"),
            ("SERVER_ADDR", "127.0.0.1"),
            ("SERVER_PORT", "8443"),
            ("SERVER_NAME", "blog.test"),
            ("REDIRECT_STATUS", "200"),
            ("HTTP_HOST", "blog.test:443"),
            ("HTTP_X_CUSTOM_THING", "one, two"),
            ("HTTP_COOKIE", "a=1; b=2"),
        ];
        for (name, value) in expected {
            assert_eq!(params.get(name).map(String::as_str), Some(value), "{name}");
        }
        assert!(params["SERVER_SOFTWARE"].starts_with("certd/"));
        for absent in ["HTTP_PROXY", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
            assert!(!params.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn http2_requests_get_their_host_from_the_authority() {
        let request = hyper::Request::get("https://[::1]:8443/")
            .version(hyper::Version::HTTP_2)
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let script = Script {
            name: "/index.php".into(),
            path_info: String::new(),
            filename: "/srv/www/index.php".into(),
        };
        let connection = Connection {
            client: "::1".parse().expect("ip"),
            client_port: None,
            server: None,
        };
        let params = decode(&encode(
            &parts,
            &script,
            Path::new("/srv/www"),
            connection,
            None,
            &[],
        ));
        assert_eq!(params["HTTP_HOST"], "[::1]:8443");
        assert_eq!(params["SERVER_NAME"], "[::1]");
        assert_eq!(params["SERVER_PROTOCOL"], "HTTP/2.0");
        assert_eq!(params["CONTENT_LENGTH"], "");
        assert_eq!(params["PATH_INFO"], "");
        assert!(!params.contains_key("REMOTE_PORT"));
        assert!(!params.contains_key("PATH_TRANSLATED"));
    }
}
