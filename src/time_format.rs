//! How certd prints a point in time, in one leaf module so the commands, the access log, renewal and
//! the importers print the same format without depending on each other.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time as RFC 3339 in whole seconds, the one format certd prints.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_whole_seconds_in_utc() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_796_180_645_678_000_000)
            .expect("a time in range");
        assert_eq!(rfc3339(at), "2026-12-02T03:04:05Z");
    }
}
