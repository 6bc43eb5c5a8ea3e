//! Giving the heap that a load leaves behind back to the operating system.
//!
//! glibc's allocator keeps freed memory in its per-thread arenas: after a burst of connections
//! (buffers, TLS state, upstream exchanges) the resident size stays near its peak for as long as
//! the process runs, although almost all of it is free. [`release_after_load`] watches the number
//! of open connections and, once it has fallen to half of its peak or less, calls `malloc_trim(0)`,
//! which returns every free page of every arena (`madvise(MADV_DONTNEED)`); the memory is taken
//! again, from the kernel, if the load comes back. At most once per [`MIN_INTERVAL`], and never
//! while the count holds steady or rises, so a busy server does not pay for it. Other allocators
//! (musl) have nothing to trim: there this task only sleeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the number of open connections is looked at: often enough to see a short burst.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two trims.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// A peak below this many connections leaves too little behind to be worth a trim.
const MIN_PEAK: usize = 8;

/// What the watcher remembers between samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watch {
    /// The most connections seen open since the last trim.
    peak: usize,
    /// When the last trim ran (or the watch started).
    last_trim: Instant,
}

impl Watch {
    fn new(now: Instant) -> Self {
        Self {
            peak: 0,
            last_trim: now,
        }
    }

    /// Records `open` connections at `now`; true when the heap should be trimmed now (the count
    /// has fallen to half its peak or less, from a peak of at least [`MIN_PEAK`], and the last
    /// trim is at least [`MIN_INTERVAL`] ago).
    fn sample(&mut self, open: usize, now: Instant) -> bool {
        self.peak = self.peak.max(open);
        let fallen = self.peak >= MIN_PEAK && open <= self.peak / 2;
        if fallen && now.saturating_duration_since(self.last_trim) >= MIN_INTERVAL {
            self.peak = open;
            self.last_trim = now;
            return true;
        }
        false
    }
}

/// Until `shutdown`: samples the open connections (`max_connections` less the free permits of
/// `connections`) and trims the heap after a load, as the module header says.
pub(super) async fn release_after_load(
    connections: Arc<Semaphore>,
    max_connections: usize,
    shutdown: CancellationToken,
) {
    let mut watch = Watch::new(Instant::now());
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let open = max_connections.saturating_sub(connections.available_permits());
        if watch.sample(open, Instant::now()) {
            // It walks every arena under its lock: milliseconds, off the async threads.
            let started = std::time::Instant::now();
            if tokio::task::spawn_blocking(trim).await.is_ok() {
                tracing::debug!(open, took = ?started.elapsed(), "returned free heap to the system");
            }
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The one call into the C allocator; nothing else here is unsafe.
fn trim() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists; it takes no
    // pointer and is thread-safe (each arena is locked while it is trimmed).
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn trims_once_the_connections_fall_to_half_their_peak() {
        let start = Instant::now();
        let mut watch = Watch::new(start);
        // Load rises and holds: nothing to give back.
        for (second, open) in [(1, 10), (2, 64), (11, 64), (12, 64), (13, 40)] {
            assert!(!watch.sample(open, at(start, second)), "at {second} s");
        }
        // Down to half the peak, well after the start: trim, once.
        assert!(watch.sample(32, at(start, 14)));
        assert!(!watch.sample(32, at(start, 15)));
        // The next fall waits for MIN_INTERVAL since that trim.
        assert!(!watch.sample(0, at(start, 16)));
        assert!(watch.sample(0, at(start, 24)));
        assert!(!watch.sample(0, at(start, 60)));
    }

    #[test]
    fn a_burst_between_two_samples_apart_is_still_seen() {
        let start = Instant::now();
        let mut watch = Watch::new(start);
        assert!(!watch.sample(2000, at(start, 20)));
        assert!(watch.sample(0, at(start, 21)));
    }

    #[test]
    fn a_small_peak_is_left_alone() {
        let start = Instant::now();
        let mut watch = Watch::new(start);
        assert!(!watch.sample(MIN_PEAK - 1, at(start, 20)));
        assert!(!watch.sample(0, at(start, 40)));
    }

    /// This process's resident size, in bytes (`/proc/self/status` says it in kB).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib: usize = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0);
        kib * 1024
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trimming_returns_freed_heap_to_the_system() {
        const MIB: usize = 1024 * 1024;
        // 64 MiB in 4 KiB blocks (below the mmap threshold, so in this thread's arena), touched,
        // then freed except the last, which keeps the arena from shrinking by itself.
        let mut blocks: Vec<Box<[u8; 4096]>> =
            (0..16 * 1024).map(|_| Box::new([1u8; 4096])).collect();
        let last = blocks.pop();
        drop(blocks);
        let before = resident_bytes();
        trim();
        let after = resident_bytes();
        drop(last);
        assert!(
            before.saturating_sub(after) >= 32 * MIB,
            "resident {} MiB before the trim, {} MiB after",
            before / MIB,
            after / MIB
        );
    }
}
