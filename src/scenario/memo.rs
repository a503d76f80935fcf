//! The rule index's last answers, remembered on each thread.
//!
//! Which rules a decision must try depends only on the stage, the sender
//! and the recipients (`RuleIndex::candidates`), and a sending client
//! usually repeats them: every message of a load test, of a kept session
//! or not, has the same sender and recipients. Remembering the answer for
//! the last few of them saves the prefilter passes and address lookups:
//! most of what a hundred rules cost a message, in instructions and in
//! code fetched (`docs/performance.md`, "The latest runs").
//!
//! Per thread, not per engine, so a decision takes no lock; an entry names
//! the index it was computed by (a number no other index has), so a
//! reloaded scenario finds nothing from its predecessor.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

use super::index::Bits;
use crate::proto::{Context, Stage};

/// Answers remembered a thread: a transaction asks at MAIL, at each RCPT
/// and at its end, so one of a few recipients fits. A decision about
/// addresses not among them pays a hash of its addresses, a comparison of
/// hashes per entry, and a copy of them.
const SLOTS: usize = 8;

/// The most recipients a remembered answer is for: a thread's memo then
/// holds at most this many addresses an entry, and a longer transaction
/// (asked about once at its end) finds its rules anew.
const MOST_RCPTS: usize = 16;

/// What an answer depends on, read from a decision's context as the index
/// reads it.
pub(super) struct Key<'a> {
    index: u64,
    stage: Stage,
    /// At RCPT without a recipient: every rule at the stage is a candidate.
    all: bool,
    mail_from: Option<&'a str>,
    /// At RCPT (with one) this command's recipient, else the transaction's.
    rcpts: Rcpts<'a>,
    /// All of the above hashed: an entry whose hash differs answers for
    /// another key, told without comparing addresses.
    hash: u64,
}

enum Rcpts<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl Rcpts<'_> {
    fn eq(&self, kept: &[String]) -> bool {
        match self {
            Rcpts::One(r) => kept.len() == 1 && kept[0] == *r,
            Rcpts::Many(rs) => kept == *rs,
        }
    }

    fn copy_into(&self, kept: &mut Vec<String>) {
        let mut put = |i: usize, r: &str| match kept.get_mut(i) {
            Some(s) => {
                s.clear();
                s.push_str(r);
            }
            None => kept.push(r.to_owned()),
        };
        let n = match self {
            Rcpts::One(r) => {
                put(0, r);
                1
            }
            Rcpts::Many(rs) => {
                rs.iter().enumerate().for_each(|(i, r)| put(i, r));
                rs.len()
            }
        };
        kept.truncate(n);
    }
}

impl<'a> Key<'a> {
    /// None for a context with more than [`MOST_RCPTS`] recipients.
    pub(super) fn of(index: u64, ctx: &Context<'a>) -> Option<Self> {
        let rcpts = match ctx.rcpt {
            Some(r) if ctx.stage == Stage::Rcpt => Rcpts::One(r),
            _ if ctx.rcpts.len() > MOST_RCPTS => return None,
            _ => Rcpts::Many(ctx.rcpts),
        };
        let all = ctx.stage == Stage::Rcpt && ctx.rcpt.is_none();
        let mut h = FxHasher::default();
        (index, ctx.stage as u8, all, ctx.mail_from).hash(&mut h);
        match rcpts {
            Rcpts::One(r) => [r].hash(&mut h),
            Rcpts::Many(rs) => rs.hash(&mut h),
        }
        Some(Self {
            index,
            stage: ctx.stage,
            all,
            mail_from: ctx.mail_from,
            rcpts,
            hash: h.finish(),
        })
    }
}

/// One remembered answer. Its strings are reused when it is replaced, so a
/// thread's memo stops allocating once it has seen addresses as long.
struct Entry {
    hash: u64,
    index: u64,
    stage: Stage,
    all: bool,
    has_mail_from: bool,
    mail_from: String,
    rcpts: Vec<String>,
    found: Bits,
}

impl Entry {
    fn answers(&self, k: &Key<'_>) -> bool {
        self.hash == k.hash
            && self.index == k.index
            && self.stage == k.stage
            && self.all == k.all
            && self.has_mail_from == k.mail_from.is_some()
            && self.mail_from == k.mail_from.unwrap_or("")
            && k.rcpts.eq(&self.rcpts)
    }

    fn set(&mut self, k: &Key<'_>, found: &Bits) {
        (self.hash, self.index, self.stage, self.all) = (k.hash, k.index, k.stage, k.all);
        self.has_mail_from = k.mail_from.is_some();
        self.mail_from.clear();
        self.mail_from.push_str(k.mail_from.unwrap_or(""));
        k.rcpts.copy_into(&mut self.rcpts);
        self.found.clone_from(found);
    }
}

struct Memo {
    entries: Vec<Entry>,
    /// The entry the next new answer replaces, once all are in use.
    next: usize,
}

thread_local! {
    static MEMO: RefCell<Memo> = const {
        RefCell::new(Memo {
            entries: Vec::new(),
            next: 0,
        })
    };
}

/// The answer remembered for `k`, if any.
pub(super) fn recall(k: &Key<'_>) -> Option<Bits> {
    MEMO.with_borrow(|m| {
        m.entries
            .iter()
            .find(|e| e.answers(k))
            .map(|e| e.found.clone())
    })
}

/// Remembers `found` as the answer for `k`, in place of the oldest.
pub(super) fn keep(k: &Key<'_>, found: &Bits) {
    MEMO.with_borrow_mut(|m| {
        if m.entries.len() < SLOTS {
            m.entries.push(Entry {
                hash: k.hash,
                index: k.index,
                stage: k.stage,
                all: k.all,
                has_mail_from: false,
                mail_from: String::new(),
                rcpts: Vec::new(),
                found: Bits::default(),
            });
            m.next = m.entries.len() - 1;
        }
        m.entries[m.next].set(k, found);
        m.next = (m.next + 1) % SLOTS;
    })
}
