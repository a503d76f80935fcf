//! Counters shared across connections: match counts, sliding-window rates,
//! greylist entries, open sessions and reputation tallies.
//!
//! They sit behind [`StateStore`] so that several servers can share them:
//! [`MemoryStore`] keeps them in this process, [`RedisStore`] in Redis (or
//! Valkey, single node or Cluster) so that instances answer as one. Each
//! listener's scenario has its own store (or its own key namespace).
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
pub mod op;
mod redis_store;
mod url;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub use memory::MemoryStore;
pub use op::{Done, GateOp, Op};
pub use redis_store::{RedisBackend, RedisStore};
pub use url::{Backend, FailMode};

/// The store could not answer in time (Redis down, unreachable or too
/// slow). What a stateful rule does then is the store's [`FailMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the state store is unavailable")]
pub struct Unavailable;

/// The answer of a store operation.
pub type Answer<T> = Result<T, Unavailable>;

/// What a stateful rule answers when the store is unavailable and the fail
/// mode is `tempfail`: RFC 3463 4.3.0 (other or undefined mail system
/// status), a transient reply so the sender retries (RFC 5321 §4.2.1).
pub const STORE_UNAVAILABLE: &str = "451 4.3.0 Temporary state store failure, try again later";

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

/// A store operation under way (see [`StateStore::perform`]).
pub type Pending<'a> = Pin<Box<dyn Future<Output = Answer<Done>> + Send + 'a>>;

/// Where counters live.
pub trait StateStore: Send + Sync {
    /// Performs `op` now if this store can without waiting for I/O (the
    /// memory store always can); None when it must go through
    /// [`StateStore::perform`]. Decisions use this first, so a store in
    /// this process costs no task, no future and no suspension.
    fn run_now(&self, op: &Op, now: Instant) -> Option<Answer<Done>> {
        Some(op::run(self, op, now))
    }

    /// Performs `op`, waiting for I/O without blocking the thread (the
    /// connection driver awaits this, then resumes the session).
    fn perform(&self, op: Op, now: Instant) -> Pending<'_> {
        Box::pin(std::future::ready(op::run(self, &op, now)))
    }

    /// Adds one to the counter `key` and returns its new value.
    fn incr(&self, key: &str) -> Answer<u64>;

    /// Sliding-window rate limit: true (and the pass is recorded) when fewer
    /// than `max` passes of `key` happened in the `window` before `now`;
    /// false when the key is over its rate. Refused attempts are not
    /// recorded: at most `max` attempts get through in any window.
    fn rate_pass(&self, key: &str, max: u64, window: Duration, now: Instant) -> Answer<bool>;

    /// Greylisting: the first attempt of a key (or the first after `expire`
    /// without any attempt) starts its wait; attempts before `retry_after`
    /// are refused; later ones pass, and keep the key known.
    fn greylist(
        &self,
        key: &str,
        retry_after: Duration,
        expire: Duration,
        now: Instant,
    ) -> Answer<Greylist>;

    /// One more open session for `key`; returns how many are open now.
    fn open(&self, key: &str) -> Answer<u64>;
    /// A session of `key` ended.
    fn close(&self, key: &str);

    /// Records one recipient's outcome for reputation.
    fn record(&self, key: &str, failed: bool, window: Duration, now: Instant);
    /// Recipients and refusals of `key` in the `window` before `now`.
    fn tally(&self, key: &str, window: Duration, now: Instant) -> Answer<Tally>;

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

    /// The seed every instance sharing this store uses: the first one
    /// stored wins. The memory store keeps `local`.
    fn shared_seed(&self, local: u64) -> u64 {
        local
    }
    /// When `during` windows started for every instance sharing this store,
    /// as an instant of this process. The memory store keeps `local`.
    fn shared_epoch(&self, local: Instant) -> Instant {
        local
    }
    /// What stateful rules do while the store is unavailable.
    fn fail_mode(&self) -> FailMode {
        FailMode::Tempfail
    }
    /// True while the store is unreachable (for metrics).
    fn is_down(&self) -> bool {
        false
    }
    /// How many outages began since start (for metrics).
    fn outages(&self) -> u64 {
        0
    }
}
