//! Static file tests: content types, index, redirects, ETag, ranges, and traversal attempts.
#![allow(clippy::unwrap_used)]

use super::*;
use hyper::Request;

/// A static root `www/` with files under `www/static/`, and a secret beside the root.
struct Fixture {
    dir: tempfile::TempDir,
    /// Passed to [`serve`].
    allow_dotfiles: bool,
}

const SECRET: &str = "TOP-SECRET-CONTENT";

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let static_dir = dir.path().join("www/static");
        std::fs::create_dir_all(static_dir.join("docs/empty")).unwrap();
        std::fs::write(static_dir.join("a.css"), "body { color: red }").unwrap();
        std::fs::write(static_dir.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(static_dir.join("data.bin"), data).unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        std::fs::write(dir.path().join("www/secret"), SECRET).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), static_dir.join("link")).unwrap();
            std::os::unix::fs::symlink(dir.path(), static_dir.join("dirlink")).unwrap();
            std::os::unix::fs::symlink(static_dir.join("a.css"), static_dir.join("inner")).unwrap();
        }
        Self {
            dir,
            allow_dotfiles: false,
        }
    }

    /// Adds what a careless deploy leaves in a web root: `.env`, `.git/`, a hidden folder, a
    /// dotfile in `.well-known/`, beside a `.well-known/security.txt` that is meant to be served.
    fn with_dotfiles(self) -> Self {
        let root = self.root();
        std::fs::write(root.join(".env"), SECRET).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/config"), SECRET).unwrap();
        std::fs::create_dir_all(root.join("a/.hidden")).unwrap();
        std::fs::write(root.join("a/.hidden/x"), SECRET).unwrap();
        std::fs::create_dir_all(root.join(".well-known")).unwrap();
        std::fs::write(root.join(".well-known/security.txt"), "Contact: x").unwrap();
        std::fs::write(root.join(".well-known/.secret"), SECRET).unwrap();
        self
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        self.send(Method::GET, uri, headers).await
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        let response = serve(&self.root(), &parts, self.allow_dotfiles).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }
}

#[test]
fn content_types_by_extension() {
    let cases = [
        ("a.html", "text/html; charset=utf-8"),
        ("A.CSS", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("x.json", "application/json"),
        ("logo.png", "image/png"),
        ("photo.JPG", "image/jpeg"),
        ("anim.gif", "image/gif"),
        ("icon.svg", "image/svg+xml"),
        ("favicon.ico", "image/x-icon"),
        ("notes.txt", "text/plain; charset=utf-8"),
        ("app.wasm", "application/wasm"),
        ("font.woff2", "font/woff2"),
        ("font.woff", "font/woff"),
        ("font.otf", "font/otf"),
        ("module.mjs", "text/javascript; charset=utf-8"),
        ("app.js.map", "application/json"),
        ("feed.xml", "application/xml"),
        ("photo.webp", "image/webp"),
        ("photo.AVIF", "image/avif"),
        ("site.webmanifest", "application/manifest+json"),
        ("data.csv", "text/csv; charset=utf-8"),
        ("README.md", "text/markdown; charset=utf-8"),
        ("clip.mp4", "video/mp4"),
        ("paper.pdf", "application/pdf"),
        ("archive.unknown", "application/octet-stream"),
        ("Makefile", "application/octet-stream"),
    ];
    for (name, expected) in cases {
        assert_eq!(content_type(Path::new(name)), expected, "{name}");
    }
}

#[test]
fn range_parsing() {
    use ByteRange::{Full, Partial, Unsatisfiable};
    let many_ranges = format!(
        "bytes={}",
        (0..101)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases = [
        ("bytes=0-9", 100, Partial { start: 0, end: 9 }),
        ("bytes=90-", 100, Partial { start: 90, end: 99 }),
        ("bytes=90-500", 100, Partial { start: 90, end: 99 }),
        ("bytes=-10", 100, Partial { start: 90, end: 99 }),
        ("bytes=-500", 100, Partial { start: 0, end: 99 }),
        ("Bytes=5-5", 100, Partial { start: 5, end: 5 }),
        ("bytes=100-", 100, Unsatisfiable),
        ("bytes=100-200", 100, Unsatisfiable),
        ("bytes=-0", 100, Unsatisfiable),
        ("bytes=0-", 0, Unsatisfiable),
        ("bytes=-5", 0, Unsatisfiable),
        ("bytes=9-0", 100, Full),
        ("bytes=0-1,5-6", 100, Full),
        ("bytes=a-b", 100, Full),
        ("bytes=+1-2", 100, Full),
        ("bytes=-", 100, Full),
        ("items=0-1", 100, Full),
        ("0-1", 100, Full),
        // RFC 9110 has no whitespace around `=` (nginx ignores such a header too).
        ("bytes = 5-5", 100, Full),
        // Several ranges: the ones past the end are dropped; one left is a single part, none
        // left is 416, several left are ignored (no multipart/byteranges), as nginx does.
        ("bytes=0-1,100-", 100, Partial { start: 0, end: 1 }),
        ("bytes=200-300, 100-", 100, Unsatisfiable),
        // Overlapping or absurdly many ranges (a range-amplification attack) are ignored.
        ("bytes=0-50,10-60,20-70", 100, Full),
        (many_ranges.as_str(), 1000, Full),
        // A number beyond u64 is "to the end", not an error.
        (
            "bytes=10-99999999999999999999",
            100,
            Partial { start: 10, end: 99 },
        ),
    ];
    for (value, size, expected) in cases {
        assert_eq!(parse_range(value, size), expected, "{value} of {size}");
    }
}

#[test]
fn request_paths_map_to_relative_paths_or_are_refused() {
    let accepted = [
        ("/", ""),
        ("/static/a.css", "static/a.css"),
        ("/static//a%20b.css", "static/a b.css"),
        ("/static/docs/", "static/docs"),
        ("/static/%C3%A9t%C3%A9", "static/été"),
        ("/static/.well-known", "static/.well-known"),
    ];
    for (raw, expected) in accepted {
        assert_eq!(
            relative_path(raw).unwrap(),
            PathBuf::from(expected),
            "{raw}"
        );
    }
    let refused = [
        "static/a.css",
        "/static/../secret",
        "/static/./a.css",
        "/static/%2e%2e/secret",
        "/static/%2E%2E/secret",
        "/static/..%2fsecret",
        "/static/%2fetc%2fpasswd",
        "/static/..%5csecret",
        "/static/a%00.css",
        "/static/%zz",
        "/static/%2",
        "/static/%ff",
        // u8::from_str_radix takes a sign; an escape is two hex digits, nothing else.
        "/static/%+1",
        "/static/a%",
    ];
    for raw in refused {
        assert!(relative_path(raw).is_err(), "{raw}");
    }
}

#[tokio::test]
async fn serves_a_file_with_type_validators_and_length() {
    let fixture = Fixture::new();
    let (status, headers, body) = fixture.get("/static/a.css?v=3", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "body { color: red }");
    assert_eq!(headers[CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(headers[CONTENT_LENGTH], "19");
    assert_eq!(headers[ACCEPT_RANGES], "bytes");
    assert!(headers[ETAG].to_str().unwrap().starts_with("\"13-"));
    assert!(httpdate::parse_http_date(headers[LAST_MODIFIED].to_str().unwrap()).is_ok());
}

#[tokio::test]
async fn head_has_headers_but_no_body() {
    let fixture = Fixture::new();
    let (status, headers, body) = fixture.send(Method::HEAD, "/static/a.css", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[CONTENT_LENGTH], "19");
    assert!(body.is_empty());
}

#[tokio::test]
async fn other_methods_are_not_allowed() {
    let fixture = Fixture::new();
    let (status, headers, _) = fixture.send(Method::POST, "/static/a.css", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[ALLOW], "GET, HEAD");
}

#[tokio::test]
async fn directories_serve_their_index_or_redirect_to_the_slashed_path() {
    let fixture = Fixture::new();
    let (status, headers, body) = fixture.get("/static/docs/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "<h1>docs</h1>");
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");

    let (status, headers, _) = fixture.get("/static/docs?x=1", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers[LOCATION], "/static/docs/?x=1");

    // A folder without an index file is forbidden, as nginx answers without `autoindex`.
    let (status, _, _) = fixture.get("/static/docs/empty/", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = fixture.get("/static/missing/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = fixture.get("/static/a.css/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = fixture.get("/static/missing.css", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validators_answer_not_modified() {
    let fixture = Fixture::new();
    let (_, headers, _) = fixture.get("/static/a.css", &[]).await;
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    let last_modified = headers[LAST_MODIFIED].to_str().unwrap().to_owned();

    let (status, headers, body) = fixture
        .get("/static/a.css", &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[ETAG], etag.as_str());
    assert!(body.is_empty());
    let weak_list = format!("\"other\", W/{etag}");
    let (status, _, _) = fixture
        .get("/static/a.css", &[("if-none-match", &weak_list)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = fixture
        .get("/static/a.css", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, _) = fixture
        .get("/static/a.css", &[("if-modified-since", &last_modified)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    let (status, _, _) = fixture
        .get("/static/a.css", &[("if-modified-since", old)])
        .await;
    assert_eq!(status, StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", &last_modified),
    ];
    let (status, _, _) = fixture.get("/static/a.css", &both).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn ranges_answer_partial_content_or_not_satisfiable() {
    let fixture = Fixture::new();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();

    let (status, headers, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=100-199")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[CONTENT_RANGE], "bytes 100-199/1000");
    assert_eq!(headers[CONTENT_LENGTH], "100");
    assert_eq!(body, data[100..200]);

    let (status, headers, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=990-")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[CONTENT_RANGE], "bytes 990-999/1000");
    assert_eq!(body, data[990..]);

    let (status, _, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=-3")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, data[997..]);

    let (status, headers, _) = fixture
        .get("/static/data.bin", &[("range", "bytes=1000-")])
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[CONTENT_RANGE], "bytes */1000");

    let stale = [("range", "bytes=0-9"), ("if-range", "\"stale\"")];
    let (status, _, body) = fixture.get("/static/data.bin", &stale).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), 1000);

    let (_, headers, _) = fixture.get("/static/data.bin", &[]).await;
    let etag = headers[ETAG].to_str().unwrap().to_owned();
    let fresh = [("range", "bytes=0-9"), ("if-range", etag.as_str())];
    let (status, _, body) = fixture.get("/static/data.bin", &fresh).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, data[..10]);
}

/// Range lists: certd sends no `multipart/byteranges`, so a list is answered as nginx answers the
/// ranges it will not serve (200, the whole file), except that ranges past the end are dropped
/// first: one left is a single-part 206, none left is 416 with `Content-Range: bytes */len`.
#[tokio::test]
async fn range_lists_answer_one_part_the_whole_file_or_not_satisfiable() {
    let fixture = Fixture::new();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();

    let (status, headers, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=10-19, 5000-")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[CONTENT_RANGE], "bytes 10-19/1000");
    assert_eq!(body, data[10..20]);

    let (status, headers, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=0-9,20-29")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key(CONTENT_RANGE));
    assert_eq!(headers[CONTENT_LENGTH], "1000");
    assert_eq!(body, data);

    let (status, headers, body) = fixture
        .get("/static/data.bin", &[("range", "bytes=1000-,2000-2100")])
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[CONTENT_RANGE], "bytes */1000");
    assert!(body.len() < 100, "no file content in a 416");
}

#[tokio::test]
async fn large_files_stream_in_chunks() {
    let fixture = Fixture::new();
    let big: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 253) as u8).collect();
    std::fs::write(fixture.root().join("static/big.bin"), &big).unwrap();
    let (status, headers, body) = fixture.get("/static/big.bin", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[CONTENT_LENGTH], big.len().to_string().as_str());
    assert_eq!(body, big);
}

#[tokio::test]
async fn traversal_never_reads_outside_the_root() {
    let fixture = Fixture::new();
    let attempts = [
        "/static/../secret",
        "/static/../../secret",
        "/static/%2e%2e/secret",
        "/static/%2e%2e/%2e%2e/secret",
        "/static/..%2fsecret",
        "/static/..%2f..%2fsecret",
        "/static/%2e%2e%2f%2e%2e%2fsecret",
        "/static/..%5c..%5csecret",
        "/static/secret%00.css",
        "/static/link",
        "/static/dirlink/secret",
    ];
    for attempt in attempts {
        let (status, _, body) = fixture.get(attempt, &[]).await;
        assert!(
            matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ),
            "{attempt}: {status}"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains(SECRET),
            "{attempt}"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_inside_the_root_are_followed() {
    let fixture = Fixture::new();
    let (status, headers, body) = fixture.get("/static/inner", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "body { color: red }");
    // The type comes from the resolved file's name.
    assert_eq!(headers[CONTENT_TYPE], "text/css; charset=utf-8");
}

#[tokio::test]
async fn dotfiles_are_not_found_but_well_known_is_served() {
    let fixture = Fixture::new().with_dotfiles();
    for hidden in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/.git",
        "/a/.hidden/x",
        "/a/.hidden",
        "/%2eenv",
        "//.env",
        "/.well-known/.secret",
    ] {
        let (status, _, body) = fixture.get(hidden, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{hidden}");
        assert_ne!(body, SECRET, "{hidden}");
    }
    let (status, _, body) = fixture.get("/.well-known/security.txt", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "Contact: x");
}

#[tokio::test]
async fn dotfiles_are_served_when_the_route_allows_them() {
    let mut fixture = Fixture::new().with_dotfiles();
    fixture.allow_dotfiles = true;
    for path in [
        "/.env",
        "/.git/config",
        "/a/.hidden/x",
        "/.well-known/.secret",
    ] {
        let (status, _, body) = fixture.get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, SECRET, "{path}");
    }
}

#[test]
fn hidden_paths_are_those_with_a_dot_segment_outside_well_known() {
    let cases = [
        (".env", true),
        (".git/config", true),
        ("a/.hidden/x", true),
        ("a/b.txt", false),
        ("a/b.", false),
        (".well-known/security.txt", false),
        (".well-known/acme-challenge/t", false),
        (".well-known/.x", true),
        ("static/.well-known/x", true),
        ("", false),
    ];
    for (path, hidden) in cases {
        assert_eq!(is_hidden(Path::new(path)), hidden, "{path}");
    }
}

#[tokio::test]
async fn a_folder_redirect_is_never_protocol_relative() {
    let fixture = Fixture::new();
    for (request, expected) in [
        ("//static", "/static/"),
        ("///static", "/static/"),
        ("//static/docs?x=1", "/static/docs/?x=1"),
        ("/static//docs", "/static/docs/"),
        ("/static/docs", "/static/docs/"),
    ] {
        let (status, headers, _) = fixture.get(request, &[]).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{request}");
        let location = headers[LOCATION].to_str().unwrap();
        assert_eq!(location, expected, "{request}");
        assert!(!location.starts_with("//"), "{request} → {location}");
    }
}

#[test]
fn folder_locations_are_root_relative_with_one_leading_slash() {
    assert_eq!(folder_location("//evil.test", None), "/evil.test/");
    assert_eq!(folder_location("/a//b", Some("q=1")), "/a/b/?q=1");
    assert_eq!(folder_location("/", None), "/");
    assert_eq!(folder_location("/%2fx", None), "/%2fx/");
}
