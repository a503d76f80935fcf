//! Counters shared across connections: how often a rule's key has matched.
//!
//! They sit behind [`StateStore`] so that several servers can later share
//! them (a Redis store is the intended next backend); [`MemoryStore`] keeps
//! them in this process. Each listener's scenario has its own store.

use std::collections::HashMap;
use std::sync::Mutex;

/// Where counters live. Updates are atomic: two sessions incrementing the
/// same key at once get distinct values.
pub trait StateStore: Send + Sync {
    /// Adds one to the counter `key` and returns its new value.
    fn incr(&self, key: &str) -> u64;
    /// Forgets every counter (a reload or an explicit reset).
    fn reset(&self);
    /// How many counters exist (for metrics and tests).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters in memory, sharded so that sessions touching different keys do
/// not wait for each other.
pub struct MemoryStore {
    // Sharded by key hash: one mutex per shard keeps each update atomic while
    // letting unrelated keys proceed in parallel.
    shards: Vec<Mutex<HashMap<String, u64>>>,
}

const SHARDS: usize = 16;

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryStore {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, u64>> {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) % SHARDS]
    }
}

impl StateStore for MemoryStore {
    fn incr(&self, key: &str) -> u64 {
        let mut map = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(key) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                map.insert(key.to_string(), 1);
                1
            }
        }
    }

    fn reset(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn increments_are_atomic_across_threads() {
        let store = Arc::new(MemoryStore::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || (0..1000).map(|_| s.incr("k")).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=8000).collect::<Vec<_>>());
        store.reset();
        assert!(store.is_empty());
        assert_eq!(store.incr("k"), 1);
    }
}
