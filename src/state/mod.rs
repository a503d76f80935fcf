//! Counters shared across connections: match counts, sliding-window rates,
//! greylist entries, open sessions and reputation tallies.
//!
//! They sit behind [`StateStore`] so that several servers can later share
//! them (a Redis store is the intended next backend); [`MemoryStore`] keeps
//! them in this process. Each listener's scenario has its own store.
//!
//! Every operation is atomic per key and takes `now` from the caller, so
//! time-dependent behaviour is tested with plain instants and the server
//! can run on tokio's paused clock.
//!
//! Memory stays bounded: an entry that can no longer change an answer
//! (a rate window that emptied, a greylist entry past `expire`, a session
//! count back at zero, a reputation window with no attempts) is removed by
//! [`StateStore::sweep`], which the server calls every few seconds. Match
//! counters for `times`/`sequence` are kept: they matter for the life of the
//! scenario.

mod memory;

use std::time::{Duration, Instant};

pub use memory::MemoryStore;

/// FNV-1a offset basis: the starting value for [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `h`: a stable hash (the standard
/// library's may change between releases, and seeded draws must not).
pub fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The answer of a greylist lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greylist {
    /// Refused: the key was first seen at `first_seen`; it passes once
    /// `retry_after` has gone by since then.
    Refused { first_seen: Instant, first: bool },
    /// The key waited long enough.
    Passed,
}

/// Refused and total recipients of a key inside a reputation window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub attempts: u64,
    pub failures: u64,
}

impl Tally {
    pub fn failure_rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.failures as f64 / self.attempts as f64
        }
    }
}

/// Where counters live.
pub trait StateStore: Send + Sync {
    /// Adds one to the counter `key` and returns its new value.
    fn incr(&self, key: &str) -> u64;

    /// Sliding-window rate limit: true (and the pass is recorded) when fewer
    /// than `max` passes of `key` happened in the `window` before `now`;
    /// false when the key is over its rate. Refused attempts are not
    /// recorded: at most `max` attempts get through in any window.
    fn rate_pass(&self, key: &str, max: u64, window: Duration, now: Instant) -> bool;

    /// Greylisting: the first attempt of a key (or the first after `expire`
    /// without any attempt) starts its wait; attempts before `retry_after`
    /// are refused; later ones pass, and keep the key known.
    fn greylist(
        &self,
        key: &str,
        retry_after: Duration,
        expire: Duration,
        now: Instant,
    ) -> Greylist;

    /// One more open session for `key`; returns how many are open now.
    fn open(&self, key: &str) -> u64;
    /// A session of `key` ended.
    fn close(&self, key: &str);

    /// Records one recipient's outcome for reputation.
    fn record(&self, key: &str, failed: bool, window: Duration, now: Instant);
    /// Recipients and refusals of `key` in the `window` before `now`.
    fn tally(&self, key: &str, window: Duration, now: Instant) -> Tally;

    /// Removes entries that can no longer change an answer; returns how
    /// many were removed.
    fn sweep(&self, now: Instant) -> usize;
    /// Forgets everything (a reload or an explicit reset).
    fn reset(&self);
    /// How many entries exist.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
