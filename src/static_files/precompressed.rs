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
use crate::proxy::ProxyBody;

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
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(content_type(original)),
        );
    }
}
