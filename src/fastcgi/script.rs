//! Which script a FastCGI route runs for a request path, or whether the request is a static file or
//! nothing at all: Caddy's `php_fastcgi` (`try_files {path} {path}/index.php index.php` with
//! `split_path .php`) and nginx's `fastcgi_split_path_info ^(.+?\.php)(/.*)$; try_files $uri =404;`.
//!
//! The order, on the normalised, percent-decoded path:
//! 1. a path with a dot segment (`/.htaccess`, `/.git/config`; not `/.well-known/`) → 404 (for a
//!    script, one in the script's own part: a dot segment in its `PATH_INFO` names no file);
//! 2. a path with a `.php` segment end (`/index.php`, `/index.php/extra`): the part up to and
//!    including the first `.php` is the script, the rest is `PATH_INFO`; the script runs only if it
//!    is a regular file inside the root — otherwise 404, never the front controller and never the
//!    file as text. So `/uploads/evil.jpg/x.php` runs nothing (`evil.jpg/x.php` does not exist), the
//!    `cgi.fix_pathinfo` attack;
//! 3. an existing file → served as a static file, unless it looks like PHP source (`.phtml`,
//!    `.phar`, …), which is 404;
//! 4. a folder: without its trailing `/` it is redirected (by the static files module); with it,
//!    the first of its index names that it holds answers (a `.php` name runs, another is served
//!    as a file), and a folder with none of them is 403, as nginx's index module answers (never
//!    the front controller: nginx's `try_files $uri $uri/ /index.php` stops at an existing folder);
//! 5. anything else → the front controller (`/index.php`, WordPress, Laravel, Nextcloud), if the
//!    route has one and it exists; 404 otherwise.

use std::path::{Path, PathBuf};

use crate::static_files;

/// What a FastCGI route does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run a script.
    Script(Script),
    /// Serve the path as a static file (or the folder redirect) with the static files module.
    Static,
    /// Serve this path (a folder's index file) as a static file.
    StaticAt(String),
    /// A folder that holds none of its index names: 403.
    Forbidden,
    /// Nothing to run or serve: 404.
    NotFound,
    /// A path the file system cannot name (bad encoding, encoded separators): 400.
    BadRequest,
}

/// The script to run and what it is told about the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// `SCRIPT_NAME`: the script's path below the root, decoded, starting with `/`.
    pub name: String,
    /// `PATH_INFO`: what followed the script's name in the path (empty or starting with `/`).
    pub path_info: String,
    /// `SCRIPT_FILENAME`: the script's file, symlinks resolved, inside the root.
    pub filename: PathBuf,
}

/// Extensions of files that are PHP source whatever runs them: never sent as text.
const PHP_SOURCE: &[&str] = &[
    "php", "phtml", "phar", "phps", "php3", "php4", "php5", "php7", "php8", "inc",
];

/// Whether a path names a file that is PHP source (by extension, case-insensitively).
pub fn is_php_source(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => PHP_SOURCE
            .iter()
            .any(|php| extension.eq_ignore_ascii_case(php)),
        _ => false,
    }
}

/// The split of a decoded path at the end of its first `.php` segment (case-insensitive) that is
/// followed by `/` or the end: `(script, path_info)`.
pub fn split_php(decoded: &str) -> Option<(&str, &str)> {
    let lower = decoded.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(".php") {
        let end = from + found + 4;
        // `/.php` alone is a dotfile, not a script with a name.
        let named = from + found > 0 && !lower[..from + found].ends_with('/');
        if named && (end == lower.len() || lower.as_bytes()[end] == b'/') {
            return Some((&decoded[..end], &decoded[end..]));
        }
        from = end;
    }
    None
}

/// Decides what to do with `raw_path` (normalised, still percent-encoded) under `root`: see the
/// module docs. `index` is the folder names tried in order (the route's `index`, with the FastCGI
/// index script first when none of them is a script), `front_controller` the script (a path
/// starting with `/`) for paths that name nothing.
pub async fn decide(
    root: &Path,
    raw_path: &str,
    index: &[&str],
    front_controller: Option<&str>,
) -> Decision {
    let Ok(relative) = static_files::relative_path(raw_path) else {
        return Decision::BadRequest;
    };
    let Some(decoded) = relative.to_str() else {
        return Decision::BadRequest;
    };
    let decoded = format!("/{decoded}");
    if let Some((script, path_info)) = split_php(&decoded) {
        // Only the script is a file: a dot segment after it is `PATH_INFO`, a string for the app
        // (nginx hands `/index.php/x/.hidden` to index.php too).
        if static_files::is_hidden(std::path::Path::new(script.trim_start_matches('/'))) {
            return Decision::NotFound;
        }
        return match script_file(root, script).await {
            Some(filename) => Decision::Script(Script {
                name: script.to_owned(),
                path_info: path_info.to_owned(),
                filename,
            }),
            None => Decision::NotFound,
        };
    }
    if static_files::is_hidden(&relative) {
        return Decision::NotFound;
    }
    let trailing_slash = raw_path.ends_with('/');
    match tokio::fs::metadata(root.join(&relative)).await {
        Ok(metadata) if metadata.is_file() => {
            if is_php_source(&decoded) {
                Decision::NotFound
            } else {
                Decision::Static
            }
        }
        Ok(metadata) if metadata.is_dir() => {
            if !trailing_slash {
                return Decision::Static;
            }
            let folder = decoded.trim_end_matches('/');
            for index in index {
                let name = format!("{folder}/{index}");
                if split_php(&name).is_some() {
                    if let Some(filename) = script_file(root, &name).await {
                        return Decision::Script(Script {
                            name,
                            path_info: String::new(),
                            filename,
                        });
                    }
                } else if tokio::fs::metadata(root.join(&relative).join(index))
                    .await
                    .is_ok_and(|file| file.is_file())
                {
                    // The request's own (still encoded) folder path, so the static files module
                    // decodes it as it decodes every path.
                    return Decision::StaticAt(format!(
                        "{}/{index}",
                        raw_path.trim_end_matches('/')
                    ));
                }
            }
            Decision::Forbidden
        }
        _ => front(root, front_controller).await,
    }
}

async fn front(root: &Path, front_controller: Option<&str>) -> Decision {
    let Some(name) = front_controller else {
        return Decision::NotFound;
    };
    match script_file(root, name).await {
        Some(filename) => Decision::Script(Script {
            name: name.to_owned(),
            path_info: String::new(),
            filename,
        }),
        None => Decision::NotFound,
    }
}

/// The canonical file of script `name` (decoded, starting with `/`) if it is a regular file inside
/// `root` whose name ends in `.php`.
async fn script_file(root: &Path, name: &str) -> Option<PathBuf> {
    if !name.to_ascii_lowercase().ends_with(".php") {
        return None;
    }
    let relative = name.trim_start_matches('/');
    let canonical_root = tokio::fs::canonicalize(root).await.ok()?;
    let file = tokio::fs::canonicalize(root.join(relative)).await.ok()?;
    if !file.starts_with(&canonical_root) {
        tracing::warn!(script = name, resolved = %file.display(), "script symlink leaves the root");
        return None;
    }
    let metadata = tokio::fs::metadata(&file).await.ok()?;
    metadata.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_after_the_first_php_segment() {
        let cases = [
            ("/index.php", Some(("/index.php", ""))),
            ("/index.php/a/b", Some(("/index.php", "/a/b"))),
            ("/a.php/b.php/c", Some(("/a.php", "/b.php/c"))),
            ("/Admin.PHP", Some(("/Admin.PHP", ""))),
            (
                "/uploads/x.jpg/evil.php",
                Some(("/uploads/x.jpg/evil.php", "")),
            ),
            ("/a.php.txt", None),
            ("/a.phpx/b", None),
            ("/.php", None),
            ("/style.css", None),
            ("/", None),
        ];
        for (path, expected) in cases {
            assert_eq!(split_php(path), expected, "{path}");
        }
    }

    #[test]
    fn php_source_is_known_by_extension() {
        for path in ["/a.php", "/x/B.PHTML", "/lib.inc", "/p.phar", "/v.php5"] {
            assert!(is_php_source(path), "{path}");
        }
        for path in ["/style.css", "/php", "/a.php.txt", "/.php", "/x/"] {
            assert!(!is_php_source(path), "{path}");
        }
    }

    struct Docroot(tempfile::TempDir);

    impl Docroot {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let root = dir.path();
            for (file, text) in [
                ("index.php", "<?php echo 'front';"),
                ("wp-config.php", "<?php // secret"),
                ("style.css", "body{}"),
                (".htaccess", "deny"),
                ("uploads/x.jpg", "<?php system('id');"),
                ("wp-admin/index.php", "<?php echo 'admin';"),
                ("docs/index.html", "<p>docs</p>"),
                ("lib/old.phtml", "<?php echo 'old';"),
            ] {
                let path = root.join(file);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, text).expect("write");
            }
            std::fs::create_dir_all(root.join("empty")).expect("mkdir");
            Self(dir)
        }

        async fn decide(&self, path: &str) -> Decision {
            decide(
                self.0.path(),
                path,
                &["index.php", "index.html"],
                Some("/index.php"),
            )
            .await
        }

        fn script(&self, name: &str, path_info: &str, file: &str) -> Decision {
            let filename = std::fs::canonicalize(self.0.path().join(file)).expect("exists");
            Decision::Script(Script {
                name: name.to_owned(),
                path_info: path_info.to_owned(),
                filename,
            })
        }
    }

    #[tokio::test]
    async fn requests_map_like_caddys_php_fastcgi() {
        let root = Docroot::new();
        let front = root.script("/index.php", "", "index.php");
        let cases = [
            ("/", front.clone()),
            ("/2024/01/hello/", front.clone()),
            ("/index.php", front.clone()),
            (
                "/index.php/route/x",
                root.script("/index.php", "/route/x", "index.php"),
            ),
            (
                "/wp-config.php",
                root.script("/wp-config.php", "", "wp-config.php"),
            ),
            (
                "/wp-admin/",
                root.script("/wp-admin/index.php", "", "wp-admin/index.php"),
            ),
            ("/wp-admin", Decision::Static),
            ("/style.css", Decision::Static),
            ("/docs/", Decision::StaticAt("/docs/index.html".into())),
            ("/empty/", Decision::Forbidden),
            ("/missing.php", Decision::NotFound),
            ("/uploads/x.jpg/evil.php", Decision::NotFound),
            ("/uploads/x.jpg", Decision::Static),
            ("/.htaccess", Decision::NotFound),
            ("/.git/config.php", Decision::NotFound),
            (
                "/index.php/x/.hidden",
                root.script("/index.php", "/x/.hidden", "index.php"),
            ),
            ("/lib/old.phtml", Decision::NotFound),
            ("/style.css/x", front.clone()),
            ("/a%2fb", Decision::BadRequest),
        ];
        for (path, expected) in cases {
            assert_eq!(root.decide(path).await, expected, "{path}");
        }
    }

    #[tokio::test]
    async fn a_folder_tries_only_its_index_names_like_nginx() {
        // nginx: `index index.php;` with `try_files $uri $uri/ /index.php?$args;`: a folder with
        // only index.html is 403, not its index.html and not the front controller.
        let root = Docroot::new();
        let only_php = ["index.php"];
        let decide = |path| decide(root.0.path(), path, &only_php, Some("/index.php"));
        assert_eq!(decide("/docs/").await, Decision::Forbidden);
        assert_eq!(decide("/empty/").await, Decision::Forbidden);
        assert_eq!(
            decide("/wp-admin/").await,
            root.script("/wp-admin/index.php", "", "wp-admin/index.php")
        );
        let html_first = ["index.html", "index.php"];
        let decision = super::decide(root.0.path(), "/docs/", &html_first, None).await;
        assert_eq!(decision, Decision::StaticAt("/docs/index.html".into()));
    }

    #[tokio::test]
    async fn without_a_front_controller_unknown_paths_are_not_found() {
        let root = Docroot::new();
        let decision = decide(root.0.path(), "/2024/x", &["index.php"], None).await;
        assert_eq!(decision, Decision::NotFound);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn scripts_behind_symlinks_out_of_the_root_do_not_run() {
        let root = Docroot::new();
        let outside = tempfile::tempdir().expect("temp dir");
        std::fs::write(outside.path().join("x.php"), "<?php").expect("write");
        std::os::unix::fs::symlink(outside.path().join("x.php"), root.0.path().join("link.php"))
            .expect("symlink");
        assert_eq!(root.decide("/link.php").await, Decision::NotFound);
    }
}
