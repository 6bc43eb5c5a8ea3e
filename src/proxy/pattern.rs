//! The regular expressions of rewrites: the `regex` crate (linear time) for every pattern it
//! reads, and `fancy-regex` only for the patterns that need look-around or back-references, which
//! nginx's PCRE has (Nextcloud's `rewrite ^/(?!index|remote|…) /index.php$request_uri;`). Those
//! match by backtracking, so each match has a step limit: a request path cannot make one spin,
//! and a match that reaches the limit is an error (nginx's PCRE match limit: 500), never a
//! silent "no match".

/// How many backtracking steps one match of a look-around pattern may take.
const BACKTRACK_LIMIT: usize = 100_000;
/// The most memory a compiled pattern may take (as route regexes).
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled rewrite pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A pattern the `regex` crate reads.
    Linear(regex::Regex),
    /// A pattern with look-around or back-references.
    Backtracking(Box<fancy_regex::Regex>),
}

/// A match of a [`Pattern`] ran past [`BACKTRACK_LIMIT`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pattern {pattern:?} took more than {BACKTRACK_LIMIT} steps on a path")]
pub struct TooComplex {
    /// The pattern.
    pub pattern: String,
}

impl Pattern {
    /// Compiles `pattern` with the `regex` crate, or, when only a backtracking engine can read it,
    /// with `fancy-regex`. The error is the `regex` crate's reason when neither reads it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        match regex::RegexBuilder::new(pattern)
            .size_limit(SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Ok(Self::Linear(regex)),
            Err(linear) => fancy_regex::RegexBuilder::new(pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(SIZE_LIMIT)
                .build()
                .map(|fancy| Self::Backtracking(Box::new(fancy)))
                .map_err(|_| linear.to_string()),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Linear(regex) => regex.as_str(),
            Self::Backtracking(regex) => regex.as_str(),
        }
    }

    /// How many capture groups it has (not counting the whole match).
    pub fn groups(&self) -> usize {
        match self {
            Self::Linear(regex) => regex.captures_len().saturating_sub(1),
            Self::Backtracking(regex) => regex.captures_len().saturating_sub(1),
        }
    }

    /// The groups of the first match in `text` (the whole match first), `None` without one.
    pub fn captures<'t>(&self, text: &'t str) -> Result<Option<Vec<Option<&'t str>>>, TooComplex> {
        match self {
            Self::Linear(regex) => Ok(regex.captures(text).map(|found| {
                found
                    .iter()
                    .map(|group| group.map(|group| group.as_str()))
                    .collect()
            })),
            Self::Backtracking(regex) => match regex.captures(text) {
                Ok(found) => Ok(found.map(|found| {
                    found
                        .iter()
                        .map(|group| group.map(|group| group.as_str()))
                        .collect()
                })),
                Err(_) => Err(TooComplex {
                    pattern: regex.as_str().to_owned(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_patterns_stay_linear_and_lookarounds_backtrack() {
        assert!(matches!(
            Pattern::new("^/old/(.*)$"),
            Ok(Pattern::Linear(_))
        ));
        let legacy = Pattern::new(r"^/(?!index|remote|ocs\/v[12])").expect("lookahead");
        assert!(matches!(legacy, Pattern::Backtracking(_)));
        assert_eq!(legacy.groups(), 0);
        let cases = [
            ("/wp-config.php", true),
            ("/nested/dir/info.php", true),
            ("/index.php", false),
            ("/remote.php/dav", false),
            ("/ocs/v2.php/x", false),
            ("/ocs/v3.php", true),
        ];
        for (path, rewritten) in cases {
            let found = legacy.captures(path).expect("within the limit");
            assert_eq!(found.is_some(), rewritten, "{path}");
        }
        let back = Pattern::new(r"^/(\w+)/\1$").expect("back-reference");
        assert_eq!(
            back.captures("/ab/ab").expect("ok"),
            Some(vec![Some("/ab/ab"), Some("ab")])
        );
        assert_eq!(back.captures("/ab/cd").expect("ok"), None);
    }

    #[test]
    fn unreadable_patterns_say_why_and_runaway_matches_are_errors() {
        let err = Pattern::new("(unclosed").expect_err("bad");
        assert!(err.contains("unclosed") || err.contains("group"), "{err}");
        // Catastrophic backtracking on a long path: refused at the limit, quickly.
        // Exponential backtracking on a short path: refused at the step limit, quickly.
        let runaway = Pattern::new(r"^(a|a)+\1$x").expect("compiles");
        let path = "a".repeat(30);
        let started = std::time::Instant::now();
        assert!(runaway.captures(&path).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
