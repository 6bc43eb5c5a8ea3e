//! Published challenge answers: what this process answers for the ACME orders in flight, by key
//! (an HTTP-01 token, a TLS-ALPN-01 server name), each withdrawn when its guard drops.
//!
//! One type for both challenge kinds ([`crate::challenge::ChallengeTokens`] keeps key
//! authorizations in it, [`crate::tls_alpn::AlpnCertificates`] challenge certificates), so the
//! guard rules (a failed or finished order cannot leave a stale answer behind) are written once.
//! Answers shared with the other nodes of a fleet are [`crate::fleet_answers`]' business; this map is
//! the in-memory half that is always asked first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Answers by key. Cheap to clone; all clones share the same map.
#[derive(Debug)]
pub struct Answers<V> {
    inner: Arc<RwLock<HashMap<String, V>>>,
}

// Not derived: a derive would ask `V: Clone` / `V: Default`, which the map does not need.
impl<V> Clone for Answers<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<V> Default for Answers<V> {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
        }
    }
}

/// Keeps one answer published; dropping it withdraws the answer.
#[derive(Debug)]
pub struct PublishedAnswer<V> {
    answers: Answers<V>,
    key: String,
}

impl<V> Drop for PublishedAnswer<V> {
    fn drop(&mut self) {
        self.answers.write().remove(&self.key);
    }
}

impl<V: Clone> Answers<V> {
    /// Makes `value` the answer for `key` until the returned guard drops.
    pub fn publish(&self, key: String, value: V) -> PublishedAnswer<V> {
        self.write().insert(key.clone(), value);
        PublishedAnswer {
            answers: self.clone(),
            key,
        }
    }

    /// The answer for `key`, if one is published.
    pub fn get(&self, key: &str) -> Option<V> {
        self.read().get(key).cloned()
    }

    /// How many answers are published now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // Inserts and removes are single calls, so a lock poisoned by a panic elsewhere still guards a
    // consistent map.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, V>> {
        self.inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl<V> Answers<V> {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, V>> {
        self.inner
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lives_as_long_as_its_guard() {
        let answers: Answers<Arc<str>> = Answers::default();
        let first = answers.publish("a".into(), "one".into());
        let second = answers.clone().publish("b".into(), "two".into());
        assert_eq!(answers.get("a").as_deref(), Some("one"));
        assert_eq!(answers.len(), 2);
        drop(first);
        assert_eq!(answers.get("a"), None);
        assert_eq!(answers.get("b").as_deref(), Some("two"));
        drop(second);
        assert!(answers.is_empty());
    }
}
