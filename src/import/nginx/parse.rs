//! The nginx configuration language, as far as `certd import nginx` needs it: a tokenizer and a
//! parser that turn a file into a tree of [`Directive`]s, each with the line it starts on.
//!
//! It follows nginx's own reader (`ngx_conf_read_token`) where that matters for real files:
//! directives end with `;`, blocks are `name args { ... }`, `#` starts a comment only where a new
//! word could start (`a#b` is one word), `'…'` and `"…"` quote, a backslash escapes the next
//! character (`\"`, `\'`, `\\`, `\t`, `\r`, `\n` are unescaped, any other pair is kept as written,
//! so regexes such as `\.php$` survive), `${var}` may appear inside a word, and a quoted string must
//! be followed by a space, `;`, `{` or `)`. `$variables` are kept literally: nothing is evaluated and
//! `include` is not followed.
//!
//! Comments are dropped, except that a `# managed by Certbot` comment on the line a directive (or a
//! block's `}`) ends on marks that directive, so the translation can say what certbot wrote.

/// One directive: `name args... ;`, or a block `name args... { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directive {
    /// The directive's name, e.g. `server`, `listen`, `proxy_pass`.
    pub(super) name: String,
    /// Its arguments, unquoted and unescaped.
    pub(super) args: Vec<String>,
    /// The 1-based line its name is on.
    pub(super) line: usize,
    /// The line of its `;`, or of its block's closing `}`.
    pub(super) end_line: usize,
    /// The directives inside its `{ }`, for a block.
    pub(super) block: Option<Vec<Directive>>,
    /// Whether a `# managed by Certbot` comment follows it on its last line.
    pub(super) certbot: bool,
}

/// Why a file is not valid nginx configuration, and on which line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}: {kind}")]
pub struct ParseError {
    /// The 1-based line the problem is on (for an unclosed quote or block: where it was opened).
    pub line: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

/// What is wrong with a file that [`ParseError`] reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A `'` or `"` that is never closed.
    #[error("the quoted string that starts here is never closed")]
    UnterminatedQuote,
    /// Something other than a space, `;`, `{` or `)` right after a closing quote.
    #[error(
        "unexpected `{0}` right after a quoted string (nginx needs a space, `;` or `{{` there)"
    )]
    AfterQuote(char),
    /// A `;` or `{` with no directive name before it.
    #[error("unexpected `{0}`: there is no directive name before it")]
    Stray(char),
    /// A `}` that closes no block.
    #[error("unexpected `}}`: it closes no block")]
    UnmatchedClose,
    /// A directive that reaches a `}` or the end of the file without its `;`.
    #[error("the `{0}` directive that starts here is not ended by `;`")]
    Unterminated(String),
    /// A block that reaches the end of the file without its `}`.
    #[error("the `{0}` block that starts here is never closed with `}}`")]
    UnclosedBlock(String),
    /// Blocks nested deeper than any real configuration does.
    #[error("blocks are nested more than {MAX_DEPTH} deep")]
    TooDeep,
    /// A `//` "comment", which nginx reads as a directive named `//` that swallows everything up to
    /// the next `;` (often the next line's directive too) and then rejects.
    #[error(
        "`//` does not start a comment in nginx: it is read as a directive named `//` that runs to \
         the next `;` (`nginx -t` fails with unknown directive \"//\"); write `#` instead"
    )]
    SlashComment,
}

/// How deep blocks may nest (`http { server { location { if { … } } } }` is 4); the parser
/// recurses per level, so a bound keeps a hostile file from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// Parses a whole file.
pub(super) fn parse(text: &str) -> Result<Vec<Directive>, ParseError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    let (directives, _) = parse_block(&tokens, &mut pos, None, 0)?;
    Ok(directives)
}

/// One token with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A word or a quoted string, unescaped; `quoted` when it was written in quotes.
    Word {
        text: String,
        line: usize,
        quoted: bool,
    },
    Semicolon(usize),
    Open(usize),
    Close(usize),
    /// A `#` comment, without the `#`.
    Comment(String, usize),
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            ';' => tokens.push(Token::Semicolon(line)),
            '{' => tokens.push(Token::Open(line)),
            '}' => tokens.push(Token::Close(line)),
            '#' => {
                let mut comment = String::new();
                while let Some(c) = chars.next_if(|c| *c != '\n') {
                    comment.push(c);
                }
                tokens.push(Token::Comment(comment, line));
            }
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ParseError {
                                line: start,
                                kind: ParseErrorKind::UnterminatedQuote,
                            })
                        }
                        Some(q) if q == c => break,
                        Some('\\') => unescape(&mut chars, &mut word, &mut line),
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            word.push(other);
                        }
                    }
                }
                match chars.peek() {
                    Some(next) if !(next.is_whitespace() || matches!(next, ';' | '{' | ')')) => {
                        return Err(ParseError {
                            line,
                            kind: ParseErrorKind::AfterQuote(*next),
                        })
                    }
                    _ => {}
                }
                tokens.push(Token::Word {
                    text: word,
                    line: start,
                    quoted: true,
                });
            }
            first => {
                let mut word = String::new();
                let mut next = Some(first);
                while let Some(c) = next {
                    match c {
                        '\\' => unescape(&mut chars, &mut word, &mut line),
                        // `${name}` inside a word: the braces belong to the variable.
                        '{' if word.ends_with('$') => {
                            word.push('{');
                            while let Some(c) = chars.next_if(|c| *c != '}' && *c != '\n') {
                                word.push(c);
                            }
                            if let Some(close) = chars.next_if_eq(&'}') {
                                word.push(close);
                            }
                        }
                        c => word.push(c),
                    }
                    let in_variable = word.ends_with('$');
                    next = chars.next_if(|c| {
                        !(c.is_whitespace()
                            || matches!(c, ';' | '}')
                            || (*c == '{' && !in_variable))
                    });
                }
                tokens.push(Token::Word {
                    text: word,
                    line,
                    quoted: false,
                });
            }
        }
    }
    Ok(tokens)
}

/// Reads what follows a backslash, as nginx does: `\"`, `\'`, `\\` drop the backslash, `\t`, `\r`,
/// `\n` become the control character, any other pair is kept as written.
fn unescape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut String,
    line: &mut usize,
) {
    match chars.next() {
        Some(c @ ('"' | '\'' | '\\')) => word.push(c),
        Some('t') => word.push('\t'),
        Some('r') => word.push('\r'),
        Some('n') => word.push('\n'),
        Some(other) => {
            if other == '\n' {
                *line += 1;
            }
            word.push('\\');
            word.push(other);
        }
        None => word.push('\\'),
    }
}

/// Parses directives up to the `}` that closes the block opened by `opened` (name and line), or up
/// to the end for the top level; `depth` is how many blocks enclose it. Returns them and the line
/// of the closing `}`.
fn parse_block(
    tokens: &[Token],
    pos: &mut usize,
    opened: Option<(&str, usize)>,
    depth: usize,
) -> Result<(Vec<Directive>, usize), ParseError> {
    let mut directives: Vec<Directive> = Vec::new();
    // The words of the directive being read: text and line.
    let mut words: Vec<(String, usize)> = Vec::new();
    let unterminated = |words: &[(String, usize)]| match words.first() {
        Some((name, line)) => Err(ParseError {
            line: *line,
            kind: ParseErrorKind::Unterminated(name.clone()),
        }),
        None => Ok(()),
    };
    while let Some(token) = tokens.get(*pos) {
        *pos += 1;
        match token {
            Token::Word { text, line, quoted } => {
                if words.is_empty() && !quoted && text.starts_with("//") {
                    return Err(ParseError {
                        line: *line,
                        kind: ParseErrorKind::SlashComment,
                    });
                }
                words.push((text.clone(), *line));
            }
            Token::Comment(text, line) => {
                // A comment after a finished directive, on its last line, belongs to it.
                if words.is_empty() && text.to_ascii_lowercase().contains("managed by certbot") {
                    if let Some(last) = directives.last_mut().filter(|d| d.end_line == *line) {
                        last.certbot = true;
                    }
                }
            }
            Token::Semicolon(line) => {
                let Some(directive) = directive(&mut words, *line, None) else {
                    return Err(ParseError {
                        line: *line,
                        kind: ParseErrorKind::Stray(';'),
                    });
                };
                directives.push(directive);
            }
            Token::Open(line) => {
                let Some((name, name_line)) = words.first().cloned() else {
                    return Err(ParseError {
                        line: *line,
                        kind: ParseErrorKind::Stray('{'),
                    });
                };
                if depth >= MAX_DEPTH {
                    return Err(ParseError {
                        line: *line,
                        kind: ParseErrorKind::TooDeep,
                    });
                }
                let (inner, close) = parse_block(tokens, pos, Some((&name, name_line)), depth + 1)?;
                if let Some(directive) = directive(&mut words, close, Some(inner)) {
                    directives.push(directive);
                }
            }
            Token::Close(line) => {
                unterminated(&words)?;
                return match opened {
                    Some(_) => Ok((directives, *line)),
                    None => Err(ParseError {
                        line: *line,
                        kind: ParseErrorKind::UnmatchedClose,
                    }),
                };
            }
        }
    }
    unterminated(&words)?;
    match opened {
        Some((name, line)) => Err(ParseError {
            line,
            kind: ParseErrorKind::UnclosedBlock(name.to_owned()),
        }),
        None => Ok((directives, 0)),
    }
}

/// Turns the words read so far into a directive ending on `end_line`, emptying `words`; `None` if
/// there are none.
fn directive(
    words: &mut Vec<(String, usize)>,
    end_line: usize,
    block: Option<Vec<Directive>>,
) -> Option<Directive> {
    let mut drained = words.drain(..);
    let (name, line) = drained.next()?;
    Some(Directive {
        name,
        args: drained.map(|(text, _)| text).collect(),
        line,
        end_line,
        block,
        certbot: false,
    })
}

/// `d` as nginx text on one line, for comments: arguments quoted where needed, and a block's
/// contents written out when they are short (`{ … }` otherwise).
pub(super) fn directive_text(d: &Directive) -> String {
    const SHORT: usize = 100;
    let mut text = quote(&d.name);
    for arg in &d.args {
        text.push(' ');
        text.push_str(&quote(arg));
    }
    match &d.block {
        None => text.push(';'),
        Some(inner) if inner.is_empty() => text.push_str(" { }"),
        Some(inner) => {
            let inner: Vec<String> = inner.iter().map(directive_text).collect();
            let inner = inner.join(" ");
            if inner.chars().count() <= SHORT {
                text.push_str(&format!(" {{ {inner} }}"));
            } else {
                text.push_str(" { … }");
            }
        }
    }
    text
}

/// `word` as nginx would need it written: quoted when it is empty or holds a space, `;`, `{`, `}`
/// or a quote.
fn quote(word: &str) -> String {
    let needs_quotes = word.is_empty()
        || word.starts_with('#')
        || word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\''));
    if needs_quotes {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `(name, args, line)` of each directive, depth first, with blocks' contents indented by `>`.
    fn outline(directives: &[Directive]) -> Vec<String> {
        fn walk(directives: &[Directive], depth: usize, out: &mut Vec<String>) {
            for d in directives {
                out.push(format!(
                    "{}{}:{} {}{}",
                    ">".repeat(depth),
                    d.line,
                    d.end_line,
                    d.name,
                    d.args.iter().map(|a| format!(" [{a}]")).collect::<String>()
                ));
                if let Some(inner) = &d.block {
                    walk(inner, depth + 1, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(directives, 0, &mut out);
        out
    }

    #[test]
    fn directives_blocks_and_line_numbers() {
        let text = "user www-data;\n\nhttp {\n  server {\n    listen 80;\n    location / {\n      \
                    proxy_pass http://localhost:8080;\n    }\n  }\n}\n";
        assert_eq!(
            outline(&parse(text).unwrap()),
            [
                "1:1 user [www-data]",
                "3:10 http",
                ">4:9 server",
                ">>5:5 listen [80]",
                ">>6:8 location [/]",
                ">>>7:7 proxy_pass [http://localhost:8080]",
            ]
        );
    }

    #[test]
    fn quotes_escapes_and_variables() {
        let text = concat!(
            "proxy_set_header Connection 'upgrade';\n",
            "proxy_set_header Connection \"Upgrade\";\n",
            "add_header X-Note \"two words; {braces} # not a comment\";\n",
            "return 200 \"say \\\"hi\\\"\\n\";\n",
            "location ~ \\.php$ { }\n",
            "return 301 https://$host$request_uri;\n",
            "set $x ${host}suffix;\n",
            "empty \"\";\n",
            "multi 'a\nb' c;\n",
            "after_multi x;\n",
        );
        let parsed = parse(text).unwrap();
        let args: Vec<Vec<&str>> = parsed
            .iter()
            .map(|d| d.args.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(args[0], ["Connection", "upgrade"]);
        assert_eq!(args[1], ["Connection", "Upgrade"]);
        assert_eq!(args[2], ["X-Note", "two words; {braces} # not a comment"]);
        assert_eq!(args[3], ["200", "say \"hi\"\n"]);
        assert_eq!(args[4], ["~", "\\.php$"]);
        assert_eq!(parsed[4].block, Some(vec![]));
        assert_eq!(args[5], ["301", "https://$host$request_uri"]);
        assert_eq!(args[6], ["$x", "${host}suffix"]);
        assert_eq!(args[7], [""]);
        assert_eq!(args[8], ["a\nb", "c"]);
        assert_eq!((parsed[8].line, parsed[8].end_line), (9, 10));
        assert_eq!(parsed[9].line, 11);
    }

    #[test]
    fn comments_are_dropped_but_certbot_marks_are_kept() {
        let text = concat!(
            "# a comment; with { braces }\n",
            "server { # opening comment\n",
            "    listen 443 ssl; # managed by Certbot\n",
            "    listen 80; # something else\n",
            "    if ($host = a.example) {\n",
            "        return 301 https://$host$request_uri;\n",
            "    } # managed by Certbot\n",
            "    root /srv/a#b; # the # inside a word is not a comment\n",
            "    return 404;\n",
            "    # managed by Certbot (on its own line: marks nothing)\n",
            "}\n",
        );
        let parsed = parse(text).unwrap();
        let server = parsed[0].block.as_ref().unwrap();
        let marks: Vec<(&str, bool)> = server
            .iter()
            .map(|d| (d.name.as_str(), d.certbot))
            .collect();
        assert_eq!(
            marks,
            [
                ("listen", true),
                ("listen", false),
                ("if", true),
                ("root", false),
                ("return", false),
            ]
        );
        assert_eq!(server[2].args, ["($host", "=", "a.example)"]);
        assert_eq!(server[3].args, ["/srv/a#b"]);
    }

    #[test]
    fn certbot_scheme_condition_tokenizes_like_nginx() {
        let parsed = parse("if ($scheme != \"https\") { return 301 https://$host; }").unwrap();
        assert_eq!(parsed[0].args, ["($scheme", "!=", "https", ")"]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, usize, ParseErrorKind); 8] = [
            (
                "server {\n  listen 80;\n",
                1,
                ParseErrorKind::UnclosedBlock("server".into()),
            ),
            ("listen 80;\n}\n", 2, ParseErrorKind::UnmatchedClose),
            (
                "server {\n  listen 80\n}\n",
                2,
                ParseErrorKind::Unterminated("listen".into()),
            ),
            (
                "a;\nlisten 80",
                2,
                ParseErrorKind::Unterminated("listen".into()),
            ),
            (
                "a;\n\nroot \"/srv\n/www;\n",
                3,
                ParseErrorKind::UnterminatedQuote,
            ),
            ("a \"b\"c;", 1, ParseErrorKind::AfterQuote('c')),
            ("a;\n;\n", 2, ParseErrorKind::Stray(';')),
            (
                "server {\n\tlisten 443;\n\t// a note\n\tserver_name a.example;\n}\n",
                3,
                ParseErrorKind::SlashComment,
            ),
        ];
        let deep = "a {\n".repeat(MAX_DEPTH + 1);
        let cases =
            cases
                .into_iter()
                .chain([(deep.as_str(), MAX_DEPTH + 1, ParseErrorKind::TooDeep)]);
        for (text, line, kind) in cases {
            assert_eq!(
                parse(text),
                Err(ParseError { line, kind }),
                "parsing {text:?}"
            );
        }
    }

    #[test]
    fn directive_text_quotes_where_needed_and_shortens_long_blocks() {
        let parsed = parse(concat!(
            "add_header X-A \"a b\";\n",
            "location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; include fastcgi_params; }\n",
            "upstream app {",
            "  server 127.0.0.1:8080 weight=5 max_fails=3 fail_timeout=30s;\n",
            "  server 127.0.0.1:8081 weight=5 max_fails=3 fail_timeout=30s;\n",
            "}\n",
        ))
        .unwrap();
        let texts: Vec<String> = parsed.iter().map(directive_text).collect();
        assert_eq!(
            texts,
            [
                "add_header X-A \"a b\";",
                "location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; include fastcgi_params; }",
                "upstream app { … }",
            ]
        );
    }
}
