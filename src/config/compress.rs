//! Validation of a site's or route's `compress` key into a [`Policy`] (a route without one takes
//! its site's): known encodings
//! once each, `type/subtype` or `type/*` media types, a sane `min_length`, and levels within each
//! codec's range.

use std::sync::Arc;

use toml::Spanned;

use super::problems::Problems;
use super::raw::{RawCompress, RawCompressLevel, RawCompressOptions};
use crate::compression::{Encoding, Policy};

/// The largest `min_length` accepted: a larger one is a typo (it would turn compression off).
const MAX_MIN_LENGTH: i64 = 1 << 30;

/// `<key>` (`site[i].route[j].compress`): `None` when absent, `false`, or refused (a problem).
pub(super) fn policy(
    key: &str,
    raw: Option<Spanned<RawCompress>>,
    problems: &mut Problems<'_>,
) -> Option<Arc<Policy>> {
    let raw = raw?;
    let span = raw.span();
    let options = match raw.into_inner() {
        RawCompress::Enabled(false) => return None,
        RawCompress::Enabled(true) => return Some(Arc::new(Policy::default())),
        RawCompress::Options(options) => options,
    };
    let before = problems.found.len();
    let RawCompressOptions {
        encodings,
        types,
        min_length,
        level,
    } = *options;
    let mut policy = Policy::default();
    if let Some(encodings) = encodings {
        policy.encodings = self::encodings(&format!("{key}.encodings"), encodings, problems);
    }
    if let Some(types) = types {
        policy.types = self::types(&format!("{key}.types"), types, problems);
    }
    if let Some(min_length) = min_length {
        match u64::try_from(*min_length.get_ref()) {
            Ok(length) if *min_length.get_ref() <= MAX_MIN_LENGTH => policy.min_length = length,
            _ => problems.add(
                format!("{key}.min_length"),
                Some(min_length.span()),
                format!(
                    "{} is out of range 0..={MAX_MIN_LENGTH} (bytes)",
                    min_length.get_ref()
                ),
            ),
        }
    }
    if let Some(level) = level {
        let RawCompressLevel { gzip, br, zstd } = level.into_inner();
        let mut one = |name: &str, value: Option<Spanned<i64>>, range: (u8, u8), into: &mut u8| {
            let Some(value) = value else { return };
            match u8::try_from(*value.get_ref()) {
                Ok(parsed) if (range.0..=range.1).contains(&parsed) => *into = parsed,
                _ => problems.add(
                    format!("{key}.level.{name}"),
                    Some(value.span()),
                    format!(
                        "{} is out of range {}..={} for {name}",
                        value.get_ref(),
                        range.0,
                        range.1
                    ),
                ),
            }
        };
        one("gzip", gzip, (1, 9), &mut policy.levels.gzip);
        one("br", br, (0, 11), &mut policy.levels.brotli);
        // 20 to 22 are zstd's "ultra" levels, which need tens of MiB per response.
        one("zstd", zstd, (1, 19), &mut policy.levels.zstd);
    }
    if problems.found.len() > before {
        return None;
    }
    if policy.encodings.is_empty() || policy.types.is_empty() {
        problems.add(
            key,
            Some(span),
            "compresses nothing: list at least one encoding and one type, or write `compress = false`",
        );
        return None;
    }
    Some(Arc::new(policy))
}

fn encodings(
    key: &str,
    raw: Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> Vec<Encoding> {
    let mut encodings = Vec::new();
    for (i, token) in raw.into_inner().into_iter().enumerate() {
        let text = token.get_ref().trim();
        match Encoding::from_token(text) {
            Some(encoding) if encodings.contains(&encoding) => problems.add(
                format!("{key}[{i}]"),
                Some(token.span()),
                format!("{text:?} is listed twice"),
            ),
            Some(encoding) => encodings.push(encoding),
            None => problems.add(
                format!("{key}[{i}]"),
                Some(token.span()),
                format!(
                    "{text:?} is not an encoding certd makes: write \"zstd\", \"br\" or \"gzip\""
                ),
            ),
        }
    }
    encodings
}

fn types(
    key: &str,
    raw: Spanned<Vec<Spanned<String>>>,
    problems: &mut Problems<'_>,
) -> Vec<String> {
    let mut types = Vec::new();
    for (i, media) in raw.into_inner().into_iter().enumerate() {
        let text = media.get_ref().trim().to_ascii_lowercase();
        let valid = match text.split_once('/') {
            Some((kind, sub)) => {
                let token = |part: &str| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                };
                token(kind) && (sub == "*" || token(sub))
            }
            None => false,
        };
        if valid {
            types.push(text);
        } else {
            problems.add(
                format!("{key}[{i}]"),
                Some(media.span()),
                format!(
                    "{:?} is not a media type: write e.g. \"text/html\", or \"text/*\" for all text",
                    media.get_ref()
                ),
            );
        }
    }
    types
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use crate::compression::{Encoding, Levels, Policy};
    use crate::config::{from_toml, Config, ConfigError};

    const SITE: &str = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                        [[site]]\nnames = [\"example.org\"]\n\
                        [[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:8080\"\n";

    fn load(route_lines: &str) -> Result<Config, ConfigError> {
        from_toml(
            &format!("{SITE}{route_lines}"),
            Path::new("/etc/certd/certd.toml"),
        )
    }

    fn problems(route_lines: &str) -> Vec<(String, Option<usize>, String)> {
        load(route_lines)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|problem| (problem.key, problem.line, problem.reason))
            .collect()
    }

    #[test]
    fn compress_true_means_the_defaults_and_a_table_overrides_them() {
        let config = load("").unwrap();
        assert_eq!(config.sites[0].routes[0].compress, None);
        let config = load("compress = false\n").unwrap();
        assert_eq!(config.sites[0].routes[0].compress, None);
        let config = load("compress = true\n").unwrap();
        assert_eq!(
            config.sites[0].routes[0].compress.as_deref(),
            Some(&Policy::default())
        );
        let config = load(
            "compress = { encodings = [\"gzip\", \"zstd\"], types = [\"text/*\", \"Application/JSON\"], \
             min_length = 1024, level = { gzip = 9, zstd = 19 } }\n",
        )
        .unwrap();
        let policy = config.sites[0].routes[0].compress.clone().unwrap();
        assert_eq!(policy.encodings, [Encoding::Gzip, Encoding::Zstd]);
        assert_eq!(policy.types, ["text/*", "application/json"]);
        assert_eq!(policy.min_length, 1024);
        assert_eq!(
            policy.levels,
            Levels {
                gzip: 9,
                brotli: Levels::default().brotli,
                zstd: 19
            }
        );
    }

    #[test]
    fn bad_compress_options_name_their_key_and_line() {
        let found = problems(
            "compress = { encodings = [\"gzip\", \"deflate\", \"gzip\"], types = [\"html\", \"text/*\"], \
             min_length = -1, level = { gzip = 0, br = 12, zstd = 22 } }\n",
        );
        let keys: Vec<&str> = found.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "site[0].route[0].compress.encodings[1]",
                "site[0].route[0].compress.encodings[2]",
                "site[0].route[0].compress.types[0]",
                "site[0].route[0].compress.min_length",
                "site[0].route[0].compress.level.gzip",
                "site[0].route[0].compress.level.br",
                "site[0].route[0].compress.level.zstd",
            ],
            "{found:#?}"
        );
        assert!(
            found.iter().all(|(_, line, _)| *line == Some(9)),
            "{found:#?}"
        );
        assert!(
            found[0].2.contains("\"zstd\", \"br\" or \"gzip\""),
            "{found:#?}"
        );

        let found = problems("compress = { encodings = [] }\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, "site[0].route[0].compress");
        assert!(found[0].2.contains("compresses nothing"), "{found:#?}");
    }

    #[test]
    fn unknown_compress_keys_and_wrong_types_are_refused() {
        let found = problems("compress = { encoding = [\"gzip\"] }\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].0.starts_with("site[0].route[0].compress"),
            "{found:#?}"
        );
        assert!(
            found[0].2.contains("unknown field `encoding`"),
            "{found:#?}"
        );

        let found = problems("compress = \"gzip\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].2.contains("true, false, or a table"), "{found:#?}");
    }

    #[test]
    fn routes_take_the_sites_compress_unless_they_set_their_own() {
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                    [[site]]\nnames = [\"example.org\"]\n\
                    [site.compress]\nencodings = [\"gzip\"]\n\
                    [[site.route]]\npath = \"/\"\nproxy = \"http://127.0.0.1:8080\"\n\
                    [[site.route]]\npath = \"/raw\"\nproxy = \"http://127.0.0.1:8080\"\ncompress = false\n\
                    [[site.route]]\npath = \"/all\"\nproxy = \"http://127.0.0.1:8080\"\ncompress = true\n";
        let config = from_toml(text, Path::new("/etc/certd/certd.toml")).unwrap();
        let routes = &config.sites[0].routes;
        assert_eq!(
            routes[0].compress.as_ref().unwrap().encodings,
            [Encoding::Gzip]
        );
        assert_eq!(routes[1].compress, None);
        assert_eq!(routes[2].compress.as_deref(), Some(&Policy::default()));

        let bad = text.replace("encodings = [\"gzip\"]", "encodings = [\"lz4\"]");
        let found = from_toml(&bad, Path::new("/etc/certd/certd.toml")).unwrap_err();
        assert_eq!(found.problems.len(), 1, "{found}");
        assert_eq!(found.problems[0].key, "site[0].compress.encodings[0]");
        assert_eq!(found.problems[0].line, Some(7));
    }

    #[test]
    fn exact_regex_and_nested_routes_inherit_from_where_they_are() {
        // nginx inherits `gzip` from server into every location, and from a location into the
        // locations nested in it, whatever kind of location they are.
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                    [[site]]\nnames = [\"example.org\"]\n\
                    [site.compress]\nencodings = [\"gzip\"]\n\
                    [[site.route]]\nexact = \"/x\"\nproxy = \"http://127.0.0.1:8080\"\n\
                    [[site.route]]\npath = \"/raw/\"\nproxy = \"http://127.0.0.1:8080\"\ncompress = false\n\
                    [[site.route.route]]\nregex = '\\.json$'\nproxy = \"http://127.0.0.1:8081\"\n";
        let config = from_toml(text, Path::new("/etc/certd/certd.toml")).unwrap();
        let routes = &config.sites[0].routes;
        assert_eq!(
            routes[0].compress.as_ref().unwrap().encodings,
            [Encoding::Gzip],
            "an exact route takes the site's"
        );
        assert_eq!(routes[1].compress, None);
        assert_eq!(
            routes[1].routes[0].compress, None,
            "a nested route takes its parent's `compress = false`"
        );
    }

    #[test]
    fn precompressed_is_for_static_routes_only() {
        let found = problems("precompressed = true\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, "site[0].route[0].precompressed");
        assert_eq!(found[0].1, Some(9));
        assert!(
            found[0].2.contains("only applies to `root` routes"),
            "{found:#?}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("www")).unwrap();
        let text = "[acme]\ndirectory = \"letsencrypt\"\nagree_tos = true\n\
                    [[site]]\nnames = [\"example.org\"]\n\
                    [[site.route]]\npath = \"/\"\nroot = \"www\"\nprecompressed = true\n";
        let config = from_toml(text, &dir.path().join("certd.toml")).unwrap();
        assert!(config.sites[0].routes[0].precompressed);
    }
}
