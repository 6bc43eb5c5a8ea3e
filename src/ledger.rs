//! The rate-limit ledger: every order certd places with a CA, and its outcome, appended to
//! `state/ledger/<ca>.jsonl` (one file per CA directory, so staging and production never mix).
//!
//! Let's Encrypt allows 5 certificates per exact set of names per week; a restart loop, a lost state
//! directory or an operator's repeated `--force` can burn that in minutes and lock a site out for days.
//! Before ordering from Let's Encrypt, certd asks the ledger: when the name set already got
//! [`DUPLICATE_LIMIT`] certificates within [`DUPLICATE_WINDOW`], it does not order and says when it
//! can again. The
//! ledger also feeds `certd status` (orders and failures this week).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use tracing::warn;

use crate::store::{ensure_dir, write_atomic, Store, StoreError};

/// Certificates per exact name set per window before certd stops ordering (Let's Encrypt's
/// "duplicate certificate" limit).
pub const DUPLICATE_LIMIT: usize = 5;
/// The window of that limit.
pub const DUPLICATE_WINDOW: Duration = Duration::days(7);
/// Entries older than this are dropped when the file is compacted.
const KEEP: Duration = Duration::days(30);
/// The file is compacted when an append finds it larger than this.
const COMPACT_ABOVE: u64 = 512 * 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerEvent {
    /// An order is about to be placed.
    Ordered,
    /// It produced a certificate.
    Issued,
    /// It failed.
    Failed,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The site (its first name).
    pub site: String,
    /// The exact name set ordered, sorted.
    pub names: Vec<String>,
    /// What happened.
    pub event: LedgerEvent,
    /// The new certificate's serial (issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// What went wrong (failed), with the CA's problem document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the CA said to try again (failed, rate limits).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub retry_after: Option<OffsetDateTime>,
}

impl LedgerEntry {
    /// An entry for `names` of `site` at `at`.
    pub fn new(at: OffsetDateTime, site: &str, names: &[String], event: LedgerEvent) -> Self {
        Self {
            at,
            site: site.to_owned(),
            names: name_set(names),
            event,
            serial: None,
            error: None,
            retry_after: None,
        }
    }
}

fn name_set(names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|name| name.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    names
}

/// The ledger of one CA.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger of the CA at `directory_url` in `store`.
    pub fn for_ca(store: &Store, directory_url: &str) -> Self {
        Self {
            path: store.layout().ledger_file(directory_url),
        }
    }

    /// Where it is kept.
    #[cfg(test)]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends `entry` and syncs it to disk. The caller holds the state lock.
    pub fn append(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        let io = |action: &'static str| {
            let path = self.path.clone();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        if let Some(folder) = self.path.parent() {
            ensure_dir(folder)?;
        }
        if std::fs::metadata(&self.path).is_ok_and(|meta| meta.len() > COMPACT_ABOVE) {
            self.compact(entry.at)?;
        }
        let mut line = serde_json::to_string(entry).map_err(|err| StoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode a ledger entry: {err}"),
        })?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io("open"))?;
        // A crash in the middle of an earlier write leaves a last line without its newline; the new
        // entry must start a line of its own, or it is glued onto the fragment and lost with it.
        if !ends_with_newline(&file).map_err(io("read"))? {
            line.insert(0, '\n');
        }
        file.write_all(line.as_bytes()).map_err(io("append to"))?;
        file.sync_data().map_err(io("fsync"))
    }

    /// Every entry, oldest first. A line that cannot be read (a torn write after a crash) is logged
    /// with its line number and skipped.
    pub fn entries(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let parsed = parse(&text);
        for skipped in &parsed.skipped {
            warn!(
                file = %self.path.display(),
                line = skipped.line,
                error = %skipped.reason,
                "skipping an unreadable ledger line (torn by a crash mid-write?)"
            );
        }
        Ok(parsed.entries)
    }

    fn compact(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        let kept: String = self
            .entries()?
            .into_iter()
            .filter(|entry| now - entry.at <= KEEP)
            .filter_map(|entry| serde_json::to_string(&entry).ok())
            .map(|line| line + "\n")
            .collect();
        write_atomic(&self.path, kept.as_bytes(), 0o600)
    }
}

/// Whether `file` is empty or its last byte is a newline, i.e. whether an append starts a new line.
fn ends_with_newline(file: &std::fs::File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    let Some(last) = len.checked_sub(1) else {
        return Ok(true);
    };
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, last)?;
    Ok(byte[0] == b'\n')
}

/// The lines of a ledger file, read.
#[derive(Debug, Default)]
struct Parsed {
    /// The entries of every readable line, in file order.
    entries: Vec<LedgerEntry>,
    /// The lines that are not entries.
    skipped: Vec<SkippedLine>,
}

/// A line of the ledger that is not an entry.
#[derive(Debug, PartialEq, Eq)]
struct SkippedLine {
    /// Its 1-based line number.
    line: usize,
    /// Why it could not be read.
    reason: String,
}

/// Reads every line of a ledger file; blank lines are ignored, unreadable ones are skipped.
fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => parsed.entries.push(entry),
            Err(error) => parsed.skipped.push(SkippedLine {
                line: index + 1,
                reason: error.to_string(),
            }),
        }
    }
    parsed
}

/// What the ledger says about one name set over the last [`DUPLICATE_WINDOW`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerSummary {
    /// Certificates issued.
    pub issued: usize,
    /// Orders that failed.
    pub failed: usize,
    /// The last order placed, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_order: Option<OffsetDateTime>,
}

/// Counts the orders for exactly `names` in the week before `now`.
pub fn summary(entries: &[LedgerEntry], names: &[String], now: OffsetDateTime) -> LedgerSummary {
    let names = name_set(names);
    let mut summary = LedgerSummary::default();
    for entry in entries
        .iter()
        .filter(|entry| entry.names == names && now - entry.at <= DUPLICATE_WINDOW)
    {
        match entry.event {
            LedgerEvent::Ordered => summary.last_order = Some(entry.at),
            LedgerEvent::Issued => summary.issued += 1,
            LedgerEvent::Failed => summary.failed += 1,
        }
    }
    summary
}

/// Whether the duplicate-certificate limit applies at the CA at `directory_url`: it is Let's Encrypt's
/// limit (production and staging); other CAs (a private CA, Pebble) are not held to it.
pub fn duplicate_limit_applies(directory_url: &str) -> bool {
    directory_url.contains(".api.letsencrypt.org/")
}

/// When `names` may be ordered again if they already got [`DUPLICATE_LIMIT`] certificates within
/// [`DUPLICATE_WINDOW`] before `now`: when the oldest of those leaves the window. `None`: order away.
pub fn duplicate_limit_until(
    entries: &[LedgerEntry],
    names: &[String],
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let names = name_set(names);
    let issued: Vec<OffsetDateTime> = entries
        .iter()
        .filter(|entry| {
            entry.event == LedgerEvent::Issued
                && entry.names == names
                && now - entry.at < DUPLICATE_WINDOW
        })
        .map(|entry| entry.at)
        .collect();
    if issued.len() < DUPLICATE_LIMIT {
        return None;
    }
    // Oldest first in the file; the window reopens when enough of them have aged out.
    let reopening = issued.len() - DUPLICATE_LIMIT;
    // Checked: an entry dated in the last week of year 9999 (an edited file, a broken clock) would
    // overflow; such an entry keeps the window shut as far as a date can say.
    issued
        .get(reopening)
        .map(|at| at.checked_add(DUPLICATE_WINDOW).unwrap_or(*at))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn entries_survive_a_round_trip_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = Ledger::for_ca(&store, "https://ca.test/dir");
        let now = datetime!(2026-06-01 12:00 UTC);
        let mut issued = LedgerEntry::new(
            now,
            "a.test",
            &names(&["www.a.test", "a.test"]),
            LedgerEvent::Issued,
        );
        issued.serial = Some("0a".into());
        ledger
            .append(&LedgerEntry::new(
                now,
                "a.test",
                &names(&["a.test"]),
                LedgerEvent::Ordered,
            ))
            .unwrap();
        ledger.append(&issued).unwrap();
        // A crash in the middle of a write leaves half a line.
        let mut file = OpenOptions::new().append(true).open(ledger.path()).unwrap();
        file.write_all(b"{\"at\":\"2026-").unwrap();
        let entries = ledger.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], issued);
        assert_eq!(
            entries[1].names,
            names(&["a.test", "www.a.test"]),
            "name sets are sorted"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(ledger.path())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[test]
    fn an_append_after_a_torn_line_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = Ledger::for_ca(&store, "https://ca.test/dir");
        let now = datetime!(2026-06-01 12:00 UTC);
        let ordered = LedgerEntry::new(now, "a.test", &names(&["a.test"]), LedgerEvent::Ordered);
        ledger.append(&ordered).unwrap();
        // A crash in the middle of the second write leaves half a line, without its newline.
        let mut file = OpenOptions::new().append(true).open(ledger.path()).unwrap();
        file.write_all(b"{\"at\":\"2026-").unwrap();
        drop(file);
        let issued = LedgerEntry::new(now, "a.test", &names(&["a.test"]), LedgerEvent::Issued);
        ledger.append(&issued).unwrap();

        assert_eq!(ledger.entries().unwrap(), vec![ordered, issued]);
        let text = std::fs::read_to_string(ledger.path()).unwrap();
        let parsed = parse(&text);
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
        assert_eq!(
            parsed.skipped[0].line, 2,
            "the fragment is reported by its line"
        );
        // The entry, the fragment on a line of its own, the new entry.
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn an_append_to_an_empty_or_whole_file_adds_no_blank_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ledger = Ledger::for_ca(&store, "https://ca.test/dir");
        let now = datetime!(2026-06-01 12:00 UTC);
        let entry = LedgerEntry::new(now, "a.test", &names(&["a.test"]), LedgerEvent::Ordered);
        ensure_dir(ledger.path().parent().unwrap()).unwrap();
        std::fs::write(ledger.path(), b"").unwrap();
        ledger.append(&entry).unwrap();
        ledger.append(&entry).unwrap();
        let text = std::fs::read_to_string(ledger.path()).unwrap();
        assert!(!text.starts_with('\n'));
        assert_eq!(text.lines().count(), 2);
        assert!(parse(&text).skipped.is_empty());
    }

    #[test]
    fn the_duplicate_limit_is_let_s_encrypt_s() {
        assert!(duplicate_limit_applies(
            crate::config::LETSENCRYPT_PRODUCTION
        ));
        assert!(duplicate_limit_applies(crate::config::LETSENCRYPT_STAGING));
        assert!(!duplicate_limit_applies("https://127.0.0.1:14000/dir"));
    }

    #[test]
    fn the_duplicate_limit_stops_a_sixth_certificate_in_a_week() {
        let now = datetime!(2026-06-08 12:00 UTC);
        let set = names(&["a.test", "www.a.test"]);
        let entries: Vec<LedgerEntry> = (0..5)
            .map(|day| {
                LedgerEntry::new(
                    datetime!(2026-06-02 0:00 UTC) + Duration::days(day),
                    "a.test",
                    &set,
                    LedgerEvent::Issued,
                )
            })
            .collect();
        assert_eq!(
            duplicate_limit_until(&entries, &set, now),
            Some(datetime!(2026-06-09 0:00 UTC)),
            "the oldest leaves the window a week after it was issued"
        );
        assert_eq!(duplicate_limit_until(&entries[1..], &set, now), None);
        // Another name set is not limited by these.
        assert_eq!(
            duplicate_limit_until(&entries, &names(&["a.test"]), now),
            None
        );
        let summary = summary(&entries, &set, now);
        assert_eq!(summary.issued, 5);
        assert_eq!(summary.failed, 0);
    }

    #[test]
    fn entries_dated_at_the_end_of_time_do_not_panic() {
        let last_day = datetime!(9999-12-31 0:00 UTC);
        let set = names(&["a.test"]);
        let entries: Vec<LedgerEntry> = (0..5)
            .map(|_| LedgerEntry::new(last_day, "a.test", &set, LedgerEvent::Issued))
            .collect();
        assert_eq!(
            duplicate_limit_until(&entries, &set, last_day),
            Some(last_day)
        );
    }
}
