//! `certd check` and invalid configurations: every problem is named as `<file>:<line>: <key>: <reason>`,
//! the exit code is 2, and `certd issue` with an invalid file touches nothing.

use std::path::Path;

use crate::harness::{free_port, toml_str, Certd, TestPki};

/// A valid configuration; `acme_extra` is appended to `[acme]` and `sites` replaces the sites.
fn config_text(ca_roots: &Path, agree_tos: Option<&str>, acme_extra: &str, sites: &str) -> String {
    let mut text = String::from("state_dir = \"state\"\n\n[acme]\n");
    text += "directory = \"https://127.0.0.1:9/dir\"\n";
    text += "email = \"ops@certd-e2e.example.com\"\n";
    if let Some(agree_tos) = agree_tos {
        text += &format!("agree_tos = {agree_tos}\n");
    }
    text += &format!("ca_roots = {}\n", toml_str(&ca_roots.display().to_string()));
    text += "key_type = \"ecdsa-p256\"\n";
    text += acme_extra;
    text += &format!("\n[http]\nlisten = [\"127.0.0.1:{}\"]\n", free_port());
    text += sites;
    text
}

const GOOD_SITES: &str =
    "\n[[site]]\nnames = [\"a.test\", \"www.a.test\"]\n\n[[site]]\nnames = [\"b.test\"]\n";

/// The 1-based numbers of the lines of `text` that contain `needle`.
fn lines_of(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

/// One reported problem: `<file>[:<line>]: <key>: <reason>`.
#[derive(Debug)]
struct Reported {
    line: Option<usize>,
    key: String,
    reason: String,
}

/// The problems on `stderr` that name `file`.
fn reported(stderr: &str, file: &Path) -> Vec<Reported> {
    let file = file.display().to_string();
    stderr
        .lines()
        .filter_map(|line| line.trim().strip_prefix(file.as_str()))
        .filter_map(|rest| {
            let rest = rest.strip_prefix(':')?;
            let (line, rest) = match rest.split_once(':') {
                Some((number, rest))
                    if number.chars().all(|c| c.is_ascii_digit()) && !number.is_empty() =>
                {
                    (number.parse().ok(), rest)
                }
                _ => (None, rest),
            };
            let (key, reason) = rest.trim_start().split_once(": ")?;
            Some(Reported {
                line,
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        })
        .collect()
}

struct Case {
    what: &'static str,
    text: String,
    /// Substring of the reported key.
    key: &'static str,
    /// Lines the problem may be reported on (empty: any, or none).
    lines: Vec<usize>,
}

fn bad_configs(ca_roots: &Path) -> Vec<Case> {
    let mut cases = Vec::new();

    let text = config_text(ca_roots, Some("true"), "colour = \"blue\"\n", GOOD_SITES);
    cases.push(Case {
        what: "unknown key",
        lines: lines_of(&text, "colour"),
        text,
        key: "colour",
    });

    let sites =
        "\n[[site]]\nnames = [\"a.test\"]\n\n[[site]]\nnames = [\"b.test\", \"bad_host!.test\"]\n";
    let text = config_text(ca_roots, Some("true"), "", sites);
    cases.push(Case {
        what: "bad hostname",
        lines: lines_of(&text, "bad_host!"),
        text,
        key: "site[1].names",
    });

    let sites = "\n[[site]]\nnames = [\"a.test\", \"www.a.test\"]\n\n[[site]]\nnames = [\"b.test\", \"WWW.A.TEST\"]\n";
    let text = config_text(ca_roots, Some("true"), "", sites);
    cases.push(Case {
        what: "duplicate name (case-insensitive, across sites)",
        lines: lines_of(&text, "www.a.test")
            .into_iter()
            .chain(lines_of(&text, "WWW.A.TEST"))
            .collect(),
        text,
        key: "names",
    });

    let text = config_text(ca_roots, None, "", GOOD_SITES);
    cases.push(Case {
        what: "agree_tos missing",
        lines: Vec::new(),
        text,
        key: "agree_tos",
    });

    let text = config_text(ca_roots, Some("false"), "", GOOD_SITES);
    cases.push(Case {
        what: "agree_tos false",
        lines: lines_of(&text, "agree_tos"),
        text,
        key: "agree_tos",
    });

    cases
}

#[tokio::test]
async fn check_accepts_a_valid_config() {
    let certd = Certd::new();
    let pki = TestPki::generate(certd.dir());
    certd.write_config_text(&config_text(&pki.ca_path, Some("true"), "", GOOD_SITES));
    let run = certd.check().await;
    run.expect_code(0);
}

#[tokio::test]
async fn check_names_file_line_and_key_of_each_problem() {
    let certd = Certd::new();
    let pki = TestPki::generate(certd.dir());
    for case in bad_configs(&pki.ca_path) {
        certd.write_config_text(&case.text);
        let run = certd.check().await;
        assert_eq!(
            run.code,
            Some(2),
            "{}: exit code\n{}\n{run}",
            case.what,
            case.text
        );
        let problems = reported(&run.stderr, &certd.config_path());
        let problem = problems
            .iter()
            .find(|problem| problem.key.contains(case.key))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no `<file>:<line>: {}...` line\n{}\n{run}",
                    case.what, case.key, case.text
                )
            });
        assert!(
            !problem.reason.trim().is_empty(),
            "{}: empty reason: {problem:?}",
            case.what
        );
        if !case.lines.is_empty() {
            assert!(
                problem.line.is_some_and(|line| case.lines.contains(&line)),
                "{}: reported on line {:?}, expected one of {:?}\n{}\n{run}",
                case.what,
                problem.line,
                case.lines,
                case.text
            );
        }
    }
}

#[tokio::test]
async fn check_lists_every_problem_at_once() {
    let certd = Certd::new();
    let pki = TestPki::generate(certd.dir());
    let sites = "\n[[site]]\nnames = [\"a.test\", \"bad_host!.test\"]\n\n[[site]]\nnames = [\"b.test\", \"a.test\"]\n";
    let text = config_text(&pki.ca_path, None, "", sites);
    certd.write_config_text(&text);
    let run = certd.check().await;
    run.expect_code(2);
    let problems = reported(&run.stderr, &certd.config_path());
    // Three problems: agree_tos missing, a bad hostname, and a.test named by two sites.
    assert!(
        problems.len() >= 3,
        "every problem must be listed: {problems:?}\n{text}\n{run}"
    );
    for key in ["agree_tos", "site[0].names[1]"] {
        assert!(
            problems.iter().any(|problem| problem.key.contains(key)),
            "{key} not reported: {problems:?}\n{text}\n{run}"
        );
    }
}

#[tokio::test]
async fn issue_with_an_invalid_config_creates_nothing() {
    let certd = Certd::new();
    let pki = TestPki::generate(certd.dir());
    for case in bad_configs(&pki.ca_path) {
        certd.write_config_text(&case.text);
        let run = certd.issue(&[]).await;
        assert_eq!(run.code, Some(2), "{}: exit code\n{run}", case.what);
        assert!(
            reported(&run.stderr, &certd.config_path())
                .iter()
                .any(|problem| problem.key.contains(case.key)),
            "{}: issue must name the problem like check does\n{run}",
            case.what
        );
        let state = certd.state_dir();
        if let Ok(entries) = std::fs::read_dir(&state) {
            let entries: Vec<_> = entries
                .map(|entry| entry.expect("dir entry").path())
                .collect();
            assert!(
                entries.is_empty(),
                "{}: {} should be empty: {entries:?}",
                case.what,
                state.display()
            );
        }
    }
}
