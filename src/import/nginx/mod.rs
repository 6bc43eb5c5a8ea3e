//! `certd import nginx FILE...`: translates nginx server blocks into a certd.toml fragment, printed
//! on stdout for the operator to append (`>> certd.toml`).
//!
//! The files are parsed (`parse.rs`: nginx's tokenizer rules, a line number on every directive), each
//! server block is translated on its own (`server.rs`, `location.rs`), blocks with the same names are
//! grouped into one `[[site]]` (`translate.rs`: the certbot-style :80 redirect block joins the :443
//! block it redirects to), the realip and `proxy_protocol` lines of all files become certd's
//! `[https] trusted_proxies` and `proxy_protocol` keys (`edge.rs`), and the result is written out
//! with comments (`render.rs`). A location certd cannot answer the same way is left out whole, and
//! so is every route that would then answer its paths instead (`safety.rs`): the output never
//! serves what nginx refused (`/wp-config.php` beside a dropped `location ~ \.php$`) nor opens
//! what nginx guarded (`deny`, `auth_basic`). Nothing is dropped silently: every directive certd
//! does not take over is listed as
//! `# untranslated (FILE:LINE): <directive>`, and the translated ones are named in comments that
//! say what certd does instead (TLS, the https redirect, websocket and forwarding headers, client
//! addresses).
//!
//! Exit codes: 0 when everything was translated, 1 when some directives were not (they are listed),
//! 2 when a file cannot be read or parsed (nothing is printed on stdout then, so `>> certd.toml`
//! appends nothing).

mod auth;
mod edge;
mod keys;
mod location;
mod map;
mod parse;
mod php;
mod render;
mod safety;
mod server;
mod translate;
mod upstream;
mod vars;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use parse::{ParseError, ParseErrorKind, MAX_DEPTH};

use crate::exit::{EXIT_OK, EXIT_SOME_FAILED, EXIT_UNUSABLE};

/// Why `certd import nginx` could not translate its files at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file is not valid nginx configuration.
    #[error("{}:{source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line and the problem.
        source: ParseError,
    },
}

/// Translates the nginx configuration files `files` into a certd.toml fragment on stdout. Returns the
/// exit code: 0 when everything was translated, 1 when some directives were not (each is listed as
/// a `# untranslated` comment), 2 when a file cannot be read or parsed (every such file is named on
/// stderr with its line, and nothing is printed on stdout).
///
/// `default_name` names the site of nginx's catch-all server block (no `server_name`, or `_`),
/// which certd needs a name for (its certificate); it is also `[https] default_site`.
pub fn run(files: &[PathBuf], default_name: Option<&str>) -> u8 {
    run_to(files, default_name, &mut std::io::stdout().lock())
}

/// [`run`], printing the fragment on `out`.
fn run_to(files: &[PathBuf], default_name: Option<&str>, out: &mut dyn Write) -> u8 {
    let default_name = match default_name.map(crate::hostname::validate_dns_name) {
        None => None,
        Some(Ok(name)) => Some(name),
        Some(Err(reason)) => {
            eprintln!("certd import nginx: --default-name: {reason}");
            return EXIT_UNUSABLE;
        }
    };
    let fragment = match translate_files_named(files, default_name.as_deref()) {
        Ok(fragment) => fragment,
        Err(errors) => {
            for error in errors {
                eprintln!("certd import nginx: {error}");
            }
            return EXIT_UNUSABLE;
        }
    };
    if let Err(err) = out
        .write_all(fragment.text.as_bytes())
        .and_then(|()| out.flush())
    {
        eprintln!("certd import nginx: cannot write to stdout: {err}");
        return EXIT_UNUSABLE;
    }
    if fragment.untranslated > 0 {
        eprintln!(
            "certd import nginx: {} directive(s) could not be translated; each is listed as an \
             `# untranslated (FILE:LINE)` comment in the output",
            fragment.untranslated
        );
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

/// A translated set of files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The certd.toml fragment.
    pub text: String,
    /// How many directives it lists as untranslated.
    pub untranslated: usize,
}

/// Reads, parses and translates `files`. Every file is tried, so all unreadable or invalid files
/// are reported at once.
pub fn translate_files(files: &[PathBuf]) -> Result<Fragment, Vec<ImportError>> {
    translate_files_named(files, None)
}

/// [`translate_files`], with the site name for nginx's catch-all server block (see [`run`]).
pub fn translate_files_named(
    files: &[PathBuf],
    default_name: Option<&str>,
) -> Result<Fragment, Vec<ImportError>> {
    let mut texts = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        match std::fs::read_to_string(path) {
            Ok(text) => texts.push((path.as_path(), text)),
            Err(source) => errors.push(ImportError::Read {
                path: path.clone(),
                source,
            }),
        }
    }
    let texts: Vec<(&Path, &str)> = texts
        .iter()
        .map(|(path, text)| (*path, text.as_str()))
        .collect();
    match translate_texts_named(&texts, default_name) {
        Ok(fragment) if errors.is_empty() => Ok(fragment),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Parses and translates files already read: each is `(its name, its text)`.
pub fn translate_texts(files: &[(&Path, &str)]) -> Result<Fragment, Vec<ImportError>> {
    translate_texts_named(files, None)
}

/// [`translate_texts`], with the site name for nginx's catch-all server block (see [`run`]).
pub fn translate_texts_named(
    files: &[(&Path, &str)],
    default_name: Option<&str>,
) -> Result<Fragment, Vec<ImportError>> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        match parse::parse(text) {
            Ok(directives) => parsed.push((path.display().to_string(), directives)),
            Err(source) => errors.push(ImportError::Parse {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let translation = translate::translate_named(&parsed, default_name);
    Ok(Fragment {
        text: render::render(&translation),
        untranslated: translation.untranslated(),
    })
}
