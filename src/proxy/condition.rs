//! nginx `if (…) { return …; }` in a location: a `return` that answers only when a condition on
//! the request holds, checked before the route's rewrites (the importer only takes `if` blocks
//! written before them, where nginx runs them in the same order).
//!
//! ```text
//! if ($http_user_agent ~ ^DavClnt) { return 302 /remote.php/webdav/$is_args$args; }
//!   →  if = [{ test = '$http_user_agent ~ ^DavClnt', return = { status = 302, location = "…" } }]
//! ```
//!
//! The tests nginx has for a variable: `$v` (neither empty nor `0`), `$v = text`, `$v != text`,
//! `$v ~ regex`, `$v ~* regex` (case ignored), `$v !~ regex`, `$v !~* regex`. File tests (`-f`,
//! `-d`, …) are not supported: they are a config error.

use super::pattern::{Pattern, TooComplex};
use super::rewrite::Return;
use super::variables::{RequestFacts, Template};

/// What is checked of the variable's value.
#[derive(Debug, Clone)]
enum Test {
    /// `$v`: not empty and not `0`.
    Set,
    /// `$v = text` (`negate`: `!=`).
    Equals { text: Template, negate: bool },
    /// `$v ~ regex` (`~*` compiles it case-insensitively; `negate`: `!~`, `!~*`).
    Matches { pattern: Pattern, negate: bool },
}

/// One condition, parsed from its text (the inside of nginx's parentheses).
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    variable: Template,
    test: Test,
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Condition {}

/// A `return` that answers when its condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionalReturn {
    /// When.
    pub condition: Condition,
    /// The answer.
    pub answer: Return,
}

impl Condition {
    /// Parses `$variable [op operand]`; `Err` is the reason, for the config problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let source = text.trim();
        let (variable, rest) = match source.split_once(char::is_whitespace) {
            Some((variable, rest)) => (variable, rest.trim()),
            None => (source, ""),
        };
        if !variable.starts_with('$') || variable.len() < 2 {
            return Err(format!(
                "{source:?}: a condition starts with a variable (`$http_user_agent ~ ^DavClnt`); \
                 file tests such as `-f` are not supported"
            ));
        }
        let variable = Template::parse(variable, false)?;
        let test = if rest.is_empty() {
            Test::Set
        } else {
            let (op, operand) = rest
                .split_once(char::is_whitespace)
                .map(|(op, operand)| (op, unquote(operand.trim())))
                .ok_or_else(|| format!("{source:?}: expected `$variable OPERATOR VALUE`"))?;
            match op {
                "=" | "!=" => Test::Equals {
                    text: Template::parse(operand, false)?,
                    negate: op == "!=",
                },
                "~" | "~*" | "!~" | "!~*" => {
                    let written = match op.ends_with('*') {
                        true => format!("(?i){operand}"),
                        false => operand.to_owned(),
                    };
                    let pattern = Pattern::new(&written)
                        .map_err(|err| format!("{operand:?} is not a regular expression: {err}"))?;
                    Test::Matches {
                        pattern,
                        negate: op.starts_with('!'),
                    }
                }
                _ => {
                    return Err(format!(
                        "{source:?}: `{op}` is not a test certd has (=, !=, ~, ~*, !~, !~*)"
                    ))
                }
            }
        };
        Ok(Self {
            source: source.to_owned(),
            variable,
            test,
        })
    }

    /// The condition as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it holds for the request described by `facts`.
    pub fn holds(&self, facts: &RequestFacts) -> Result<bool, TooComplex> {
        let value = self.variable.expand(facts, &[]);
        Ok(match &self.test {
            Test::Set => !value.is_empty() && value != "0",
            Test::Equals { text, negate } => (value == text.expand(facts, &[])) != *negate,
            Test::Matches { pattern, negate } => pattern.captures(&value)?.is_some() != *negate,
        })
    }
}

/// `"text"` or `'text'` without its quotes (nginx allows both around an operand).
fn unquote(text: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = text
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    text
}

/// The first of `rules` whose condition holds for `facts`, if any.
pub fn first_answer<'a>(
    rules: &'a [ConditionalReturn],
    facts: &RequestFacts,
) -> Result<Option<&'a Return>, TooComplex> {
    for rule in rules {
        if rule.condition.holds(facts)? {
            return Ok(Some(&rule.answer));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use hyper::HeaderMap;

    use super::*;

    fn facts(agent: &str, args: Option<&str>) -> RequestFacts {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", agent.parse().expect("header"));
        RequestFacts {
            headers,
            args: args.map(str::to_owned),
            ..RequestFacts::default()
        }
    }

    #[test]
    fn each_test_nginx_has_for_a_variable() {
        let cases = [
            ("$http_user_agent ~ ^DavClnt", "DavClnt/1.0", true),
            ("$http_user_agent ~ ^DavClnt", "davclnt/1.0", false),
            ("$http_user_agent ~* ^DavClnt", "davclnt/1.0", true),
            ("$http_user_agent !~ ^DavClnt", "curl/8", true),
            ("$http_user_agent !~* ^davclnt", "DavClnt", false),
            ("$http_user_agent = \"curl/8\"", "curl/8", true),
            ("$http_user_agent != curl/8", "curl/8", false),
            ("$http_user_agent", "x", true),
            ("$http_user_agent", "0", false),
            ("$arg_v", "x", false),
        ];
        for (text, agent, expected) in cases {
            let condition = Condition::parse(text).expect(text);
            let holds = condition.holds(&facts(agent, None)).expect("in bounds");
            assert_eq!(holds, expected, "{text} with {agent:?}");
        }
        let condition = Condition::parse("$arg_v").expect("parses");
        assert!(condition.holds(&facts("x", Some("v=1"))).expect("ok"));
    }

    #[test]
    fn what_certd_cannot_test_is_refused_with_the_reason() {
        for (text, fragment) in [
            ("-f $request_filename", "file tests"),
            ("$nope ~ x", "unknown variable"),
            ("$uri ~ (unclosed", "not a regular expression"),
            ("$uri > 3", "not a test"),
            ("$uri ~", "expected"),
        ] {
            let err = Condition::parse(text).expect_err(text);
            assert!(err.contains(fragment), "{text}: {err}");
        }
    }
}
