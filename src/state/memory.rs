//! The in-process store: a sharded map of small entries.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Answer, Greylist, StateStore, Tally};

/// Buckets per reputation window: the tally is exact to 1/60 of a window.
const BUCKETS: u32 = 60;

enum Entry {
    Count(u64),
    /// Times of the passes inside the window (at most `max` of them), and
    /// the window, for sweeping.
    Rate(VecDeque<Instant>, Duration),
    Grey {
        first: Instant,
        last: Instant,
        expire: Duration,
    },
    Open(u64),
    Reputation(Buckets),
}

/// Recipient tallies in time buckets covering one window.
struct Buckets {
    width: Duration,
    /// (bucket start, attempts, failures), oldest first.
    slots: VecDeque<(Instant, u64, u64)>,
}

impl Buckets {
    fn new(window: Duration) -> Self {
        Self {
            width: (window / BUCKETS).max(Duration::from_millis(1)),
            slots: VecDeque::new(),
        }
    }

    fn trim(&mut self, window: Duration, now: Instant) {
        while let Some(&(start, _, _)) = self.slots.front() {
            if now.saturating_duration_since(start) >= window + self.width {
                self.slots.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Counters in memory, sharded so that sessions touching different keys do
/// not wait for each other.
pub struct MemoryStore {
    // One mutex per shard keeps each update atomic while unrelated keys
    // proceed in parallel.
    shards: Vec<Mutex<HashMap<String, Entry>>>,
}

const SHARDS: usize = 32;

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryStore {
    fn with<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let h = super::fnv1a(super::FNV_OFFSET, key.as_bytes());
        let mut map = self.shards[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }
}

impl StateStore for MemoryStore {
    fn incr(&self, key: &str) -> Answer<u64> {
        Ok(self.with(key, |map| match map.get_mut(key) {
            Some(Entry::Count(n)) => {
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                map.insert(key.to_string(), Entry::Count(1));
                1
            }
        }))
    }

    fn rate_pass(&self, key: &str, max: u64, window: Duration, now: Instant) -> Answer<bool> {
        Ok(self.with(key, |map| {
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| Entry::Rate(VecDeque::new(), window));
            let Entry::Rate(passes, _) = entry else {
                *entry = Entry::Rate(VecDeque::new(), window);
                return true;
            };
            while passes
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= window)
            {
                passes.pop_front();
            }
            if (passes.len() as u64) < max {
                passes.push_back(now);
                true
            } else {
                false
            }
        }))
    }

    fn greylist(
        &self,
        key: &str,
        retry_after: Duration,
        expire: Duration,
        now: Instant,
    ) -> Answer<Greylist> {
        Ok(self.with(key, |map| {
            if let Some(Entry::Grey { first, last, .. }) = map.get_mut(key) {
                if now.saturating_duration_since(*last) < expire {
                    *last = now;
                    return if now.saturating_duration_since(*first) >= retry_after {
                        Greylist::Passed
                    } else {
                        Greylist::Refused {
                            first_seen: *first,
                            first: false,
                        }
                    };
                }
            }
            map.insert(
                key.to_string(),
                Entry::Grey {
                    first: now,
                    last: now,
                    expire,
                },
            );
            Greylist::Refused {
                first_seen: now,
                first: true,
            }
        }))
    }

    fn open(&self, key: &str) -> Answer<u64> {
        Ok(self.with(key, |map| match map.get_mut(key) {
            Some(Entry::Open(n)) => {
                *n += 1;
                *n
            }
            _ => {
                map.insert(key.to_string(), Entry::Open(1));
                1
            }
        }))
    }

    fn close(&self, key: &str) {
        self.with(key, |map| {
            if let Some(Entry::Open(n)) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        })
    }

    fn record(&self, key: &str, failed: bool, window: Duration, now: Instant) {
        self.with(key, |map| {
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| Entry::Reputation(Buckets::new(window)));
            if !matches!(entry, Entry::Reputation(_)) {
                *entry = Entry::Reputation(Buckets::new(window));
            }
            let Entry::Reputation(b) = entry else { return };
            b.trim(window, now);
            let failed = failed as u64;
            match b.slots.back_mut() {
                Some((start, a, f)) if now.saturating_duration_since(*start) < b.width => {
                    *a += 1;
                    *f += failed;
                }
                _ => b.slots.push_back((now, 1, failed)),
            }
        })
    }

    fn tally(&self, key: &str, window: Duration, now: Instant) -> Answer<Tally> {
        Ok(self.with(key, |map| match map.get_mut(key) {
            Some(Entry::Reputation(b)) => {
                b.trim(window, now);
                let mut t = Tally::default();
                for &(start, a, f) in &b.slots {
                    // A bucket counts while its start is inside the window.
                    if now.saturating_duration_since(start) < window {
                        t.attempts += a;
                        t.failures += f;
                    }
                }
                t
            }
            _ => Tally::default(),
        }))
    }

    fn sweep(&self, now: Instant) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, e| match e {
                Entry::Count(_) => true,
                Entry::Rate(passes, window) => passes
                    .back()
                    .is_some_and(|&t| now.saturating_duration_since(t) < *window),
                Entry::Grey { last, expire, .. } => now.saturating_duration_since(*last) < *expire,
                Entry::Open(n) => *n > 0,
                Entry::Reputation(b) => b.slots.back().is_some_and(|&(start, _, _)| {
                    now.saturating_duration_since(start) < b.width * (BUCKETS + 1)
                }),
            });
            removed += before - map.len();
        }
        removed
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

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn increments_are_atomic_across_threads() {
        let store = Arc::new(MemoryStore::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || {
                    (0..1000).map(|_| s.incr("k").unwrap()).collect::<Vec<_>>()
                })
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
        assert_eq!(store.incr("k"), Ok(1));
    }

    #[test]
    fn sliding_window_rate() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        let w = secs(60);
        for i in 0..5 {
            assert!(s.rate_pass("k", 5, w, t0 + secs(i)).unwrap(), "pass {i}");
        }
        assert!(
            !s.rate_pass("k", 5, w, t0 + secs(10)).unwrap(),
            "6th inside the window"
        );
        assert!(!s.rate_pass("k", 5, w, t0 + secs(59)).unwrap());
        // The first pass leaves the window at t0+60: one more gets through.
        assert!(s.rate_pass("k", 5, w, t0 + secs(60)).unwrap());
        assert!(!s.rate_pass("k", 5, w, t0 + secs(60)).unwrap());
        assert!(
            s.rate_pass("other", 5, w, t0 + secs(10)).unwrap(),
            "keys are independent"
        );
        // A sender that slows to one a minute always gets through.
        for i in 2..10 {
            assert!(s.rate_pass("slow", 1, w, t0 + secs(60 * i)).unwrap());
        }
    }

    #[test]
    fn rate_is_exact_under_contention() {
        let store = Arc::new(MemoryStore::default());
        let now = Instant::now();
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || s.rate_pass("k", 10, secs(60), now).unwrap())
            })
            .collect();
        let passed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|p| *p)
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn greylisting() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        let (retry, expire) = (secs(300), secs(4 * 3600));
        assert_eq!(
            s.greylist("k", retry, expire, t0).unwrap(),
            Greylist::Refused {
                first_seen: t0,
                first: true
            }
        );
        assert_eq!(
            s.greylist("k", retry, expire, t0 + secs(60)).unwrap(),
            Greylist::Refused {
                first_seen: t0,
                first: false
            }
        );
        assert_eq!(
            s.greylist("k", retry, expire, t0 + secs(300)).unwrap(),
            Greylist::Passed
        );
        assert_eq!(
            s.greylist("k", retry, expire, t0 + secs(3 * 3600)).unwrap(),
            Greylist::Passed,
            "known keys keep passing"
        );
        // Unused for longer than expire: forgotten, greylisted again.
        let later = t0 + secs(3 * 3600) + expire;
        assert_eq!(
            s.greylist("k", retry, expire, later).unwrap(),
            Greylist::Refused {
                first_seen: later,
                first: true
            }
        );
    }

    #[test]
    fn open_sessions() {
        let s = MemoryStore::default();
        assert_eq!(s.open("ip").unwrap(), 1);
        assert_eq!(s.open("ip").unwrap(), 2);
        s.close("ip");
        s.close("ip");
        assert!(s.is_empty(), "a count back at zero is removed");
    }

    #[test]
    fn reputation_tally() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        let w = secs(3600);
        for i in 0..10 {
            s.record("ip", i % 5 == 0, w, t0 + secs(i));
        }
        assert_eq!(
            s.tally("ip", w, t0 + secs(10)).unwrap(),
            Tally {
                attempts: 10,
                failures: 2
            }
        );
        assert_eq!(
            s.tally("ip", w, t0 + secs(3600 + 120)).unwrap(),
            Tally::default(),
            "the window moved on"
        );
    }

    #[test]
    fn sweep_removes_what_no_longer_matters() {
        let s = MemoryStore::default();
        let t0 = Instant::now();
        s.incr("count").unwrap();
        s.rate_pass("rate", 5, secs(60), t0).unwrap();
        s.greylist("grey", secs(60), secs(3600), t0).unwrap();
        s.record("rep", true, secs(600), t0);
        assert_eq!(s.sweep(t0 + secs(30)), 0);
        assert_eq!(s.sweep(t0 + secs(61)), 1, "the rate window emptied");
        assert_eq!(s.sweep(t0 + secs(700)), 1, "the reputation window passed");
        assert_eq!(s.sweep(t0 + secs(3600)), 1, "greylist entry expired");
        assert_eq!(s.len(), 1, "match counters stay");
    }
}
