//! Where certd's log lines go: stderr, written in batches by a thread of its own, so that no request
//! waits for a write(2) to stderr.
//!
//! Between the threads that log and the log thread is a bounded queue of [`QUEUE_LINES`] lines. When
//! it is full (stderr does not keep up: a pipe nobody reads, a stalled journald or terminal), new lines
//! are dropped and counted instead of making the logging thread wait, because that thread may be an
//! HTTPS worker serving thousands of connections: a stalled log must never stall serving. The count is
//! the metric `certd_log_lines_dropped_total` ([`dropped_lines`]), and a warning "dropped N log lines"
//! says so, at most once every [`REPORT_EVERY`].

use std::io::{self, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::Dispatch;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::util::SubscriberInitExt as _;

pub use crate::config::LogFormat;

/// Log lines queued for the log thread at most; further lines are dropped until it catches up. The
/// queue is allocated whole at start, so this bounds memory too (tracing-appender's default, 128,000
/// lines, costs about 4 MiB of resident memory).
pub const QUEUE_LINES: usize = 8192;
/// How often, at most, the "dropped N log lines" warning is logged.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);
/// The log thread's write buffer: it writes what it has when the queue runs empty, or 64 KiB at once.
const WRITE_BUFFER: usize = 64 * 1024;

/// The process's drop counter, once [`init`] has run.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped since start because the queue was full (0 before [`init`]). The access log's
/// own queue counts its drops itself (`access_log::dropped_lines`; the metrics add the two), so that
/// logging does not depend on the access log that is built on it.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Keeps logging running; `main` holds it to the end. On drop, the drop report runs a last time and
/// the log thread flushes what is queued.
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard {
    // Field order is drop order: the reporter's last line is queued before the log thread flushes.
    _reporter: Option<Reporter>,
    _worker: WorkerGuard,
}

/// Sends log lines to stderr through the queue, filtered by `CERTD_LOG` (default `warn,certd=info`),
/// as text, in colour when stderr is a terminal. Call once, first thing in `main`.
pub fn init() -> LogGuard {
    init_with(LogFormat::Text)
}

/// [`init`] in the `[log] format` given: text, or one JSON object per line with the event's fields
/// as keys of its own (`{"timestamp":…,"level":"INFO","target":"certd::daemon","message":…,
/// "site":"a.test"}`) and the spans it happened in, for log shippers that parse JSON.
pub fn init_with(format: LogFormat) -> LogGuard {
    let stderr = io::BufWriter::with_capacity(WRITE_BUFFER, io::stderr());
    let (writer, worker) = queue(stderr, QUEUE_LINES);
    let counter = writer.error_counter();
    let _ = DROPPED.set(counter.clone());
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,certd=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .finish()
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .finish()
            .try_init(),
    };
    // Without the reporter, drops are still counted in the metric; nothing else depends on it.
    let reporter = match Reporter::spawn(counter, REPORT_EVERY) {
        Ok(reporter) => Some(reporter),
        Err(err) => {
            tracing::warn!(%err, "cannot start the thread that reports dropped log lines");
            None
        }
    };
    LogGuard {
        _reporter: reporter,
        _worker: worker,
    }
}

/// A writer that hands each line to a thread of its own writing to `writer`, queueing at most
/// `lines`: lossy, so that a full queue drops the line (counted in [`NonBlocking::error_counter`])
/// instead of blocking the caller.
pub fn queue<W: Write + Send + 'static>(writer: W, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("certd-log")
        .buffered_lines_limit(lines)
        .finish(writer)
}

/// The lines dropped since the last report, if any: `reported` were reported, `total` are counted.
fn newly_dropped(reported: usize, total: usize) -> Option<usize> {
    total.checked_sub(reported).filter(|&new| new > 0)
}

/// A thread that logs "dropped N log lines" when the counter has grown, at most once per period.
/// It logs through the subscriber that was the default where it was spawned; the report itself may be
/// dropped while the queue is still full, and is then counted in the next one.
struct Reporter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    fn spawn(counter: ErrorCounter, every: Duration) -> io::Result<Self> {
        let dispatch = tracing::dispatcher::get_default(Dispatch::clone);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("certd-log-drops".into())
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let mut reported = 0;
                    loop {
                        // A message or a closed channel both mean stop; report once more first.
                        let stopping =
                            !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout));
                        let total = counter.dropped_lines();
                        if let Some(new) = newly_dropped(reported, total) {
                            tracing::warn!(
                                dropped = new,
                                total,
                                "dropped {new} log lines: stderr did not keep up and the log queue \
                                 was full"
                            );
                            reported = total;
                        }
                        if stopping {
                            return;
                        }
                    }
                });
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use tracing::instrument::WithSubscriber as _;

    use super::*;

    /// A writer whose every write waits until the test lets it go: stderr that nobody reads.
    struct Stalled(Arc<Mutex<mpsc::Receiver<()>>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Returns once the sender is dropped.
            let _ = self.0.lock().unwrap().recv();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A queue of `lines` in front of a stalled writer, the guard, and what releases the writer.
    fn stalled_queue(lines: usize) -> (NonBlocking, WorkerGuard, mpsc::Sender<()>) {
        let (release, stalled) = mpsc::channel();
        let (writer, guard) = queue(Stalled(Arc::new(Mutex::new(stalled))), lines);
        (writer, guard, release)
    }

    /// Everything a subscriber wrote, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    // Two workers: with a blocking log, the timeout below must still be able to fire.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_writer_drops_lines_instead_of_blocking_the_task() {
        let (writer, guard, release) = stalled_queue(64);
        let counter = writer.error_counter();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let started = Instant::now();
        let emitting = tokio::spawn(
            async {
                for line in 0..10_000 {
                    tracing::info!(line, "a request was answered");
                }
            }
            .with_subscriber(subscriber),
        );
        tokio::time::timeout(Duration::from_secs(5), emitting)
            .await
            .expect("logging must not wait for a stalled writer")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // 64 queued, at most one taken by the stalled log thread: the rest were dropped.
        let dropped = counter.dropped_lines();
        assert!(
            (10_000 - 65..=10_000 - 64).contains(&dropped),
            "dropped {dropped}"
        );
        drop(release);
        drop(guard);
    }

    #[test]
    fn the_reporter_says_how_many_lines_were_dropped() {
        let (writer, guard, release) = stalled_queue(4);
        let counter = writer.error_counter();
        let captured = Captured::default();
        let report_to = captured.clone();
        let reports = tracing_subscriber::fmt()
            .with_writer(move || report_to.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let reporter = tracing::dispatcher::with_default(&Dispatch::new(reports), || {
            Reporter::spawn(counter.clone(), Duration::from_millis(50)).unwrap()
        });
        let stalled = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let (done, emitted) = mpsc::channel();
        std::thread::spawn(move || {
            tracing::subscriber::with_default(stalled, || {
                for line in 0..100 {
                    tracing::info!(line, "a request was answered");
                }
            });
            let _ = done.send(());
        });
        if emitted.recv_timeout(Duration::from_secs(5)).is_err() {
            drop(release);
            panic!("logging must not wait for a stalled writer");
        }
        let dropped = counter.dropped_lines();
        assert!(dropped >= 95, "dropped {dropped}");
        let expected = format!("dropped {dropped} log lines");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !captured.text().contains(&expected) {
            assert!(
                Instant::now() < deadline,
                "no report {expected:?} in {:?}",
                captured.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing new dropped: no new report.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            captured
                .text()
                .lines()
                .filter(|line| line.contains("log lines"))
                .count(),
            1
        );
        drop(reporter);
        drop(release);
        drop(guard);
    }

    #[test]
    fn json_lines_are_one_object_each_with_the_fields_kept() {
        let captured = Captured::default();
        let into = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || into.clone())
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("renewal", site = "a.test");
            let _entered = span.enter();
            tracing::warn!(
                attempt = 3,
                error = "the CA said \"no\"\nand more",
                "renewal failed"
            );
        });
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "renewal failed");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["error"], "the CA said \"no\"\nand more");
        assert_eq!(line["spans"][0]["site"], "a.test");
    }

    #[test]
    fn only_new_drops_are_reported() {
        let cases = [
            (0, 0, None),
            (0, 5, Some(5)),
            (5, 5, None),
            (5, 7, Some(2)),
            (7, 5, None),
        ];
        for (reported, total, expected) in cases {
            assert_eq!(
                newly_dropped(reported, total),
                expected,
                "{reported} {total}"
            );
        }
    }
}
