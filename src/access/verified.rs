//! The cache of successful bcrypt verifications: a browser sends the same `Authorization` header
//! with every request of a page, and bcrypt costs tens of milliseconds each time by design.
//!
//! Entries are keyed by SHA-256 over a per-process random salt, the user, the password and the
//! stored hash, so the cache holds no password, a changed hash (after SIGHUP) misses, and a key
//! cannot be precomputed. Only successes are stored, for [`TTL`], at most [`CAPACITY`] of them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a successful verification is remembered.
pub(super) const TTL: Duration = Duration::from_secs(300);
/// How many are remembered at most; past that the oldest is forgotten.
pub(super) const CAPACITY: usize = 1024;

/// The key of one verification.
pub(super) type Key = [u8; 32];

/// Successful verifications, by [`Key`], with when they were made.
#[derive(Debug)]
pub(super) struct VerifiedCache {
    salt: [u8; 32],
    entries: Mutex<HashMap<Key, Instant>>,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self {
            salt: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl VerifiedCache {
    /// The key of `user` with `password` against the stored hash `stored`. Each part is
    /// length-prefixed, so no two different triples hash the same bytes.
    pub(super) fn key(&self, user: &str, password: &[u8], stored: &str) -> Key {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        for part in [user.as_bytes(), password, stored.as_bytes()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    /// Whether `key` was verified less than [`TTL`] before `now`.
    pub(super) fn contains(&self, key: &Key, now: Instant) -> bool {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < TTL)
    }

    /// Remembers `key` as verified at `now`, dropping expired entries (or the oldest) when full.
    pub(super) fn insert(&self, key: Key, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, at| now.saturating_duration_since(*at) < TTL);
            if entries.len() >= CAPACITY {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(key, _)| *key);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, now);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let cache = VerifiedCache::default();
        let key = cache.key("alice", b"pw", "$2y$05$x");
        assert_eq!(key, cache.key("alice", b"pw", "$2y$05$x"));
        assert_ne!(key, cache.key("alice", b"pw2", "$2y$05$x"));
        assert_ne!(key, cache.key("alic", b"epw", "$2y$05$x"));
        assert_ne!(key, cache.key("alice", b"pw", "$2y$05$y"));
        // Another process (another salt) has other keys.
        assert_ne!(
            key,
            VerifiedCache::default().key("alice", b"pw", "$2y$05$x")
        );
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let cache = VerifiedCache::default();
        let start = Instant::now();
        let key = cache.key("alice", b"pw", "h");
        cache.insert(key, start);
        assert!(cache.contains(&key, start + TTL - Duration::from_secs(1)));
        assert!(!cache.contains(&key, start + TTL));
        for i in 0..CAPACITY + 10 {
            let at = start + Duration::from_millis(i as u64);
            cache.insert(cache.key(&i.to_string(), b"pw", "h"), at);
        }
        assert_eq!(cache.len(), CAPACITY);
        // The oldest went first; the newest are kept.
        assert!(!cache.contains(&key, start));
        let newest = cache.key(&(CAPACITY + 9).to_string(), b"pw", "h");
        assert!(cache.contains(&newest, start + Duration::from_secs(1)));
    }
}
