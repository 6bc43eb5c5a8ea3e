//! `[log]`: the format of certd's own log lines, and the access log's format and destination.
//!
//! Logging starts before a command runs, so [`log_settings`] reads just this table's outcome from the
//! file first (falling back to the defaults when the file is unusable: the command itself reports why).

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::problems::Problems;
use super::raw::RawLog;

/// The format of certd's own log lines (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (tracing's default format), in colour on a terminal.
    #[default]
    Text,
    /// One JSON object per line, every field of the event kept as a key.
    Json,
}

/// The format of the access log (`[log] access_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessFormat {
    /// A certd log line (target `certd::access`) among the others on stderr.
    #[default]
    Text,
    /// nginx's default `combined` format, which log tools (goaccess, awstats, fail2ban) parse.
    Combined,
    /// One JSON object per request.
    Json,
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// certd's own log lines.
    pub format: LogFormat,
    /// The access log's format.
    pub access_format: AccessFormat,
    /// Where the access log goes (resolved against the config folder); stderr when `None`.
    pub access_file: Option<PathBuf>,
}

/// The `[log]` settings of the file at `path`, or the defaults when it cannot be read or is invalid
/// (the command that reads it properly says why).
pub fn log_settings(path: &Path) -> LogConfig {
    super::load(path)
        .map(|config| config.log)
        .unwrap_or_default()
}

pub(super) fn log(
    raw: Option<Spanned<RawLog>>,
    folder: &Path,
    problems: &mut Problems<'_>,
) -> LogConfig {
    let mut log = LogConfig::default();
    let Some(raw) = raw.map(Spanned::into_inner) else {
        return log;
    };
    if let Some(format) = raw.format {
        match format.get_ref().as_str() {
            "text" => log.format = LogFormat::Text,
            "json" => log.format = LogFormat::Json,
            other => problems.add(
                "log.format",
                Some(format.span()),
                format!("`{other}` is not a log format: use \"text\" or \"json\""),
            ),
        }
    }
    if let Some(format) = &raw.access_format {
        match format.get_ref().as_str() {
            "text" => log.access_format = AccessFormat::Text,
            "combined" => log.access_format = AccessFormat::Combined,
            "json" => log.access_format = AccessFormat::Json,
            other => problems.add(
                "log.access_format",
                Some(format.span()),
                format!(
                    "`{other}` is not an access log format: use \"text\", \"combined\" or \"json\""
                ),
            ),
        }
    }
    if let Some(file) = raw.access_file {
        if file.get_ref().trim().is_empty() {
            problems.add(
                "log.access_file",
                Some(file.span()),
                "is empty: name a file, or leave the key out for stderr",
            );
        } else if log.access_format == AccessFormat::Text && raw.access_format.is_none() {
            // Text lines are certd's own log lines, which go to stderr; a file is for log tools.
            problems.add(
                "log.access_file",
                Some(file.span()),
                "needs access_format = \"combined\" or \"json\": \"text\" access lines are certd \
                 log lines and go to stderr",
            );
        } else if log.access_format == AccessFormat::Text {
            problems.add(
                "log.access_file",
                Some(file.span()),
                "cannot be used with access_format = \"text\" (certd log lines go to stderr): use \
                 \"combined\" or \"json\"",
            );
        } else {
            log.access_file = Some(folder.join(file.get_ref()));
        }
    }
    log
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::super::from_toml;
    use super::*;

    const BASE: &str = "[acme]\ndirectory = \"https://ca.test/dir\"\nagree_tos = true\n\n\
                        [[site]]\nnames = [\"a.test\"]\n\n";

    fn parse(log: &str) -> Result<LogConfig, String> {
        from_toml(
            &format!("{BASE}[log]\n{log}"),
            Path::new("/etc/certd/certd.toml"),
        )
        .map(|config| config.log)
        .map_err(|err| err.to_string())
    }

    #[test]
    fn the_log_table_is_read_and_checked() {
        assert_eq!(parse("").unwrap(), LogConfig::default());
        let log = parse(
            "format = \"json\"\naccess_format = \"combined\"\naccess_file = \"log/access.log\"\n",
        )
        .unwrap();
        assert_eq!(log.format, LogFormat::Json);
        assert_eq!(log.access_format, AccessFormat::Combined);
        assert_eq!(
            log.access_file.as_deref(),
            Some(Path::new("/etc/certd/log/access.log"))
        );
        assert_eq!(
            parse("access_format = \"json\"\n").unwrap().access_format,
            AccessFormat::Json
        );
        for (text, expected) in [
            (
                "format = \"xml\"\n",
                "log.format: `xml` is not a log format",
            ),
            (
                "access_format = \"common\"\n",
                "log.access_format: `common` is not an access log format",
            ),
            (
                "access_file = \"/var/log/a.log\"\n",
                "log.access_file: needs access_format",
            ),
            (
                "access_format = \"text\"\naccess_file = \"/var/log/a.log\"\n",
                "log.access_file: cannot be used with access_format = \"text\"",
            ),
            ("access_file = \"\"\n", "log.access_file: is empty"),
            ("level = \"debug\"\n", "level"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("certd.toml:"), "{text:?} names no line: {err}");
        }
    }
}
