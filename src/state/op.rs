//! Store operations as values: what a decision needs from the store, made
//! by the engine, carried (unread) by the session as an output, performed
//! by whoever owns the I/O, and answered back with a [`Done`].
//!
//! The memory store performs an [`Op`] on the spot ([`StateStore::run_now`]
//! answers), so a decision never suspends for it; a store that needs the
//! network (Redis) answers only through [`StateStore::perform`], a future
//! the connection driver awaits.

use std::time::{Duration, Instant};

use super::{Answer, Greylist, StateStore, Tally};

/// What a rule's gate asks the store. Keys are complete (the engine names
/// them); the store only stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOp {
    /// A pass of a sliding-window rate: the rule applies when it is refused.
    Rate {
        key: String,
        max: u64,
        window: Duration,
    },
    /// A greylist attempt: the rule applies while the key is refused.
    Greylist {
        key: String,
        retry_after: Duration,
        expire: Duration,
    },
    /// A reputation look-up: the rule applies with `min_attempts` or more
    /// recipients and a failure rate above `max_failure_rate` (its bits,
    /// so that the op stays `Eq`).
    Reputation {
        key: String,
        window: Duration,
        min_attempts: u64,
        max_failure_rate: u64,
    },
}

/// One store operation: what one step of a decision (or a side effect
/// after it) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A rule's gate (if any), then, when the rule applies, its match
    /// counter (if it counts): one step, so a store can answer it in one
    /// round trip, and a counter moves only for a rule that applies.
    Rule {
        gate: Option<GateOp>,
        count: Option<String>,
    },
    /// Adds one to each counter.
    Incr(Vec<String>),
    /// One more open session under each key.
    Open(Vec<String>),
    /// A session of each key ended.
    Close(Vec<String>),
    /// Recipient outcomes for reputation: (key, failed, window).
    Record(Vec<(String, bool, Duration)>),
}

/// The answer to an [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// `Op::Rule`: whether the gate lets the rule apply, the tally a
    /// reputation gate read, and the match number (1 without a counter).
    Rule {
        applies: bool,
        tally: Tally,
        count: u64,
    },
    /// `Op::Incr` and `Op::Open`: the new values, in order.
    Counts(Vec<u64>),
    /// Side effects only.
    Nothing,
}

impl GateOp {
    /// The rule applies given a tally (reputation).
    pub fn reputation_applies(t: &Tally, min_attempts: u64, max_failure_rate: u64) -> bool {
        t.attempts >= min_attempts && t.failure_rate() > f64::from_bits(max_failure_rate)
    }
}

/// Performs `op` with a store's one-key operations, synchronously: what a
/// store that answers on the spot (memory) does.
pub fn run<S: StateStore + ?Sized>(store: &S, op: &Op, now: Instant) -> Answer<Done> {
    Ok(match op {
        Op::Rule { gate, count } => {
            let (applies, tally) = match gate {
                None => (true, Tally::default()),
                Some(g) => gate_now(store, g, now)?,
            };
            let count = match count {
                Some(key) if applies => store.incr(key)?,
                _ => 1,
            };
            Done::Rule {
                applies,
                tally,
                count,
            }
        }
        Op::Incr(keys) => Done::Counts(keys.iter().map(|k| store.incr(k)).collect::<Answer<_>>()?),
        Op::Open(keys) => Done::Counts(keys.iter().map(|k| store.open(k)).collect::<Answer<_>>()?),
        Op::Close(keys) => {
            keys.iter().for_each(|k| store.close(k));
            Done::Nothing
        }
        Op::Record(items) => {
            for (key, failed, window) in items {
                store.record(key, *failed, *window, now);
            }
            Done::Nothing
        }
    })
}

fn gate_now<S: StateStore + ?Sized>(store: &S, g: &GateOp, now: Instant) -> Answer<(bool, Tally)> {
    Ok(match g {
        GateOp::Rate { key, max, window } => {
            (!store.rate_pass(key, *max, *window, now)?, Tally::default())
        }
        GateOp::Greylist {
            key,
            retry_after,
            expire,
        } => {
            let g = store.greylist(key, *retry_after, *expire, now)?;
            (matches!(g, Greylist::Refused { .. }), Tally::default())
        }
        GateOp::Reputation {
            key,
            window,
            min_attempts,
            max_failure_rate,
        } => {
            let t = store.tally(key, *window, now)?;
            (
                GateOp::reputation_applies(&t, *min_attempts, *max_failure_rate),
                t,
            )
        }
    })
}
