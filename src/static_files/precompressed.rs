//! Precompressed files for `precompressed = true` routes (nginx `gzip_static`, Caddy `file_server
//! precompressed`): `file.br`, `file.zst` or `file.gz` next to the requested file, sent with its
//! `Content-Encoding` and the original's `Content-Type` to a client that accepts that encoding.
//!
//! Range requests get the identity file: a range of the compressed bytes is useless to a client
//! that wants to resume or seek in the content, and nginx's `gzip_static` answers ranges of the
//! `.gz` only because it does not decompress. The sidecar is found next to the file after
//! symlinks are resolved, and must itself resolve inside the root, like every served file.

use std::path::{Path, PathBuf};

use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RANGE};
use hyper::{HeaderMap, Response, StatusCode};

use super::{content_type, inside};
use crate::compression::{self, Encoding};
use crate::response::ProxyBody;

/// The order in which sidecars are tried among encodings the client accepts equally: brotli
/// files are the smallest, and the ones build tools write most often besides `.gz`.
const PREFERENCE: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

/// The precompressed file to send in place of `file` (a canonical path under `root`), and its
/// encoding; `None` to send `file` itself.
pub(super) async fn find(
    root: &Path,
    file: &Path,
    headers: &HeaderMap,
) -> Option<(PathBuf, Encoding)> {
    if headers.contains_key(RANGE) {
        return None;
    }
    let ranked = compression::rank(headers, &PREFERENCE);
    ranked.best()?;
    let canonical_root = tokio::fs::canonicalize(root).await.ok()?;
    let name = file.file_name()?;
    for encoding in ranked.iter() {
        let mut sidecar = name.to_os_string();
        sidecar.push(".");
        sidecar.push(encoding.extension());
        let Ok(path) = inside(&canonical_root, &file.with_file_name(sidecar)).await else {
            continue;
        };
        if tokio::fs::metadata(&path)
            .await
            .is_ok_and(|metadata| metadata.is_file())
        {
            return Some((path, encoding));
        }
    }
    None
}

/// Marks a response of a precompressed route: `Vary: Accept-Encoding` on every answer about the
/// file (the answer depends on it), and for a sidecar its encoding and the original's type.
pub(super) fn mark(
    response: &mut Response<ProxyBody>,
    original: &Path,
    encoding: Option<Encoding>,
) {
    if !matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        return;
    }
    let headers = response.headers_mut();
    compression::add_vary(headers);
    let Some(encoding) = encoding else {
        return;
    };
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.token()));
    if headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, content_type(original));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, VARY};
    use hyper::{Method, Request};

    use super::super::serve_with;
    use super::*;

    struct Root(tempfile::TempDir);

    impl Root {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let www = dir.path().join("www");
            std::fs::create_dir_all(&www).unwrap();
            std::fs::write(www.join("index.html"), "<h1>plain</h1>").unwrap();
            std::fs::write(www.join("index.html.gz"), "GZ-BYTES").unwrap();
            std::fs::write(www.join("index.html.br"), "BR-BYTES").unwrap();
            std::fs::write(www.join("app.js"), "let a = 1;").unwrap();
            std::fs::write(www.join("app.js.zst"), "ZST-BYTES").unwrap();
            std::fs::write(www.join(".env"), "SECRET").unwrap();
            std::fs::write(www.join(".env.gz"), "SECRET-GZ").unwrap();
            std::fs::write(dir.path().join("outside.gz"), "OUTSIDE").unwrap();
            #[cfg(unix)]
            {
                std::fs::write(www.join("style.css"), "body {}").unwrap();
                std::os::unix::fs::symlink(dir.path().join("outside.gz"), www.join("style.css.gz"))
                    .unwrap();
            }
            Self(dir)
        }

        async fn send(
            &self,
            method: Method,
            path: &str,
            headers: &[(&str, &str)],
            precompressed: bool,
        ) -> (StatusCode, HeaderMap, Bytes) {
            let mut request = Request::builder().method(method).uri(path);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            let root = self.0.path().join("www");
            let response = serve_with(&root, &parts, false, precompressed).await;
            let (parts, body) = response.into_parts();
            (
                parts.status,
                parts.headers,
                body.collect().await.unwrap().to_bytes(),
            )
        }

        async fn get(
            &self,
            path: &str,
            headers: &[(&str, &str)],
        ) -> (StatusCode, HeaderMap, Bytes) {
            self.send(Method::GET, path, headers, true).await
        }
    }

    #[tokio::test]
    async fn the_accepted_sidecar_is_sent_with_the_original_type() {
        let root = Root::new();
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            ("/index.html", "gzip, br", Some("br"), "BR-BYTES"),
            ("/", "gzip, br", Some("br"), "BR-BYTES"),
            ("/index.html", "gzip", Some("gzip"), "GZ-BYTES"),
            ("/index.html", "br;q=0.5, gzip", Some("gzip"), "GZ-BYTES"),
            ("/index.html", "br;q=0, gzip;q=0", None, "<h1>plain</h1>"),
            ("/index.html", "zstd", None, "<h1>plain</h1>"),
            ("/index.html", "identity", None, "<h1>plain</h1>"),
            (
                "/app.js",
                "gzip, deflate, br, zstd",
                Some("zstd"),
                "ZST-BYTES",
            ),
            // A sidecar that resolves outside the root is not served.
            #[cfg(unix)]
            ("/style.css", "gzip", None, "body {}"),
        ];
        for (path, accept, encoding, body) in cases {
            let (status, headers, bytes) = root.get(path, &[("accept-encoding", accept)]).await;
            assert_eq!(status, StatusCode::OK, "{path} {accept}");
            assert_eq!(
                headers.get(CONTENT_ENCODING).map(|v| v.to_str().unwrap()),
                *encoding,
                "{path} {accept}"
            );
            assert_eq!(bytes, body.as_bytes(), "{path} {accept}");
            assert_eq!(headers[VARY], "Accept-Encoding", "{path} {accept}");
            assert_eq!(
                headers[CONTENT_LENGTH],
                body.len().to_string().as_str(),
                "{path} {accept}"
            );
            let original = if path.ends_with('/') {
                "index.html"
            } else {
                path
            };
            assert_eq!(
                headers[CONTENT_TYPE],
                content_type(Path::new(original)),
                "{path} {accept}"
            );
        }
    }

    #[tokio::test]
    async fn ranges_head_dotfiles_and_routes_without_the_option() {
        let root = Root::new();
        // A range is of the identity file.
        let (status, headers, bytes) = root
            .get(
                "/index.html",
                &[("accept-encoding", "gzip"), ("range", "bytes=0-3")],
            )
            .await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert!(!headers.contains_key(CONTENT_ENCODING));
        assert_eq!(headers[CONTENT_RANGE], "bytes 0-3/14");
        assert_eq!(bytes, "<h1>".as_bytes());

        // HEAD: the sidecar's headers, no body.
        let (status, headers, bytes) = root
            .send(
                Method::HEAD,
                "/index.html",
                &[("accept-encoding", "gzip")],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_ENCODING], "gzip");
        assert_eq!(headers[CONTENT_LENGTH], "8");
        assert!(bytes.is_empty());

        // A 304 names the encoding of the representation it validates.
        let (_, headers, _) = root
            .get("/index.html", &[("accept-encoding", "gzip")])
            .await;
        let etag = headers[hyper::header::ETAG].to_str().unwrap().to_owned();
        let (status, headers, _) = root
            .get(
                "/index.html",
                &[("accept-encoding", "gzip"), ("if-none-match", &etag)],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(headers[CONTENT_ENCODING], "gzip");

        // Dotfiles stay hidden, sidecar or not.
        let (status, _, bytes) = root.get("/.env", &[("accept-encoding", "gzip")]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!bytes.starts_with(b"SECRET"));

        // Without `precompressed`, the file itself and no Vary.
        let (status, headers, bytes) = root
            .send(
                Method::GET,
                "/index.html",
                &[("accept-encoding", "gzip, br")],
                false,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!headers.contains_key(CONTENT_ENCODING));
        assert!(!headers.contains_key(VARY));
        assert_eq!(bytes, "<h1>plain</h1>".as_bytes());
    }
}
