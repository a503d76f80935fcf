//! The global budget for message bytes in flight.
//!
//! Each session buffers the message it is reading (up to the size limit),
//! so without a shared bound 1,000 clients pouring 35 MB each would need
//! 35 GB. The budget is one atomic counter shared by every session of the
//! server: a message grows its [`Reservation`] before its buffer grows, and
//! a reservation that does not fit is refused (the session then drains the
//! message and answers `452 4.3.1`, RFC 3463 §3.4 / RFC 5321 §4.2.2). The
//! reservation is released when it is dropped: when the message is done or
//! refused, or when the session ends, however abruptly.
//!
//! A counter in memory is not I/O, so this stays in `proto/`: the session
//! takes what it is given and never waits on it (a refusal, not a queue, so
//! a full budget can never stall a session).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default for `--max-message-memory`: 512 MiB.
pub const DEFAULT_MAX_MESSAGE_MEMORY: u64 = 512 * 1024 * 1024;

/// Bytes of message buffers the whole server may hold at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes still free.
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.used())
    }

    /// Takes `n` bytes if they fit; all or nothing.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The bytes one message holds in the budget. Released on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    budget: Option<Arc<MemoryBudget>>,
    bytes: u64,
}

impl Reservation {
    /// A reservation against `budget` (None: no global bound, every growth
    /// succeeds).
    pub fn new(budget: Option<Arc<MemoryBudget>>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Grows the reservation to `total` bytes. Returns false, holding what
    /// it held, when the budget has no room.
    pub fn grow_to(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        let more = total - self.bytes;
        if let Some(b) = &self.budget {
            if !b.take(more) {
                return false;
            }
        }
        self.bytes = total;
        true
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_limit_and_release_on_drop() {
        let b = MemoryBudget::new(100);
        let mut r1 = Reservation::new(Some(b.clone()));
        let mut r2 = Reservation::new(Some(b.clone()));
        assert!(r1.grow_to(60));
        assert!(!r2.grow_to(50), "60 + 50 > 100");
        assert_eq!(r2.bytes(), 0);
        assert!(r2.grow_to(40));
        assert_eq!(b.available(), 0);
        drop(r1);
        assert_eq!(b.used(), 40);
        assert!(r2.grow_to(100));
        drop(r2);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn no_budget_never_refuses() {
        let mut r = Reservation::new(None);
        assert!(r.grow_to(u64::MAX));
    }
}
