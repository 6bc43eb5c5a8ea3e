//! [`Problems`]: every problem validation finds, with its key, line and reason. Each table's validator
//! records into it and goes on, so one run of `certd check` lists them all.

use std::ops::Range;

use super::raw::line_at;
use super::ConfigProblem;

/// The problems found so far, and the text they refer to (to turn byte offsets into lines).
pub(super) struct Problems<'a> {
    text: &'a str,
    pub(super) found: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            text,
            found: Vec::new(),
        }
    }

    pub(super) fn add(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        reason: impl Into<String>,
    ) {
        self.found.push(ConfigProblem {
            key: key.into(),
            line: span.map(|span| line_at(self.text, span.start)),
            reason: reason.into(),
        });
    }
}
