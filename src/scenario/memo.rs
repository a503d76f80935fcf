//! The rule index's last answers, remembered on each thread.
//!
//! Which rules a decision must try depends only on the stage, the sender
//! and the recipients (`index::Query`), and a sending client
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

use super::index::{Bits, Query, Rcpts};
use crate::proto::Stage;

/// Answers remembered a thread: a transaction asks at MAIL, at each RCPT
/// and at its end, so one of a few recipients fits. A decision about
/// addresses not among them pays a hash of its addresses, a comparison of
/// hashes per entry, and a copy of them.
const SLOTS: usize = 8;

/// The most recipients a remembered answer is for: a thread's memo then
/// holds at most this many addresses an entry, and a longer transaction
/// (asked about once at its end) finds its rules anew.
const MOST_RCPTS: usize = 16;

/// An answer's key: the index's reading of a decision's context, the
/// index's number, and both hashed.
pub(super) struct Key<'q, 'a> {
    index: u64,
    query: &'q Query<'a>,
    /// All of the above hashed: an entry whose hash differs answers for
    /// another key, told without comparing addresses.
    hash: u64,
}

impl<'q, 'a> Key<'q, 'a> {
    /// None for a query with more than [`MOST_RCPTS`] recipients.
    pub(super) fn of(index: u64, query: &'q Query<'a>) -> Option<Self> {
        let mut h = FxHasher::default();
        (index, query.stage as u8, query.all, query.mail_from).hash(&mut h);
        match query.rcpts {
            Rcpts::One(r) => [r].hash(&mut h),
            Rcpts::Many(rs) if rs.len() > MOST_RCPTS => return None,
            Rcpts::Many(rs) => rs.hash(&mut h),
        }
        Some(Self {
            index,
            query,
            hash: h.finish(),
        })
    }

    fn rcpts_are(&self, kept: &[String]) -> bool {
        fn same<S: AsRef<str>>(kept: &[String], rs: &[S]) -> bool {
            kept.len() == rs.len() && kept.iter().zip(rs).all(|(k, r)| k == r.as_ref())
        }
        match self.query.rcpts {
            Rcpts::One(r) => same(kept, &[r]),
            Rcpts::Many(rs) => same(kept, rs),
        }
    }

    /// Copies the recipients into `kept`, reusing its strings.
    fn copy_rcpts(&self, kept: &mut Vec<String>) {
        fn copy<S: AsRef<str>>(rs: &[S], kept: &mut Vec<String>) {
            kept.truncate(rs.len());
            for (i, r) in rs.iter().enumerate() {
                match kept.get_mut(i) {
                    Some(k) => {
                        k.clear();
                        k.push_str(r.as_ref());
                    }
                    None => kept.push(r.as_ref().to_owned()),
                }
            }
        }
        match self.query.rcpts {
            Rcpts::One(r) => copy(&[r], kept),
            Rcpts::Many(rs) => copy(rs, kept),
        }
    }
}

/// One remembered answer. Its strings are reused when it is replaced, so a
/// thread's memo stops allocating once it has seen addresses as long.
#[derive(Default)]
struct Entry {
    hash: u64,
    index: u64,
    /// None in an entry not yet set.
    stage: Option<Stage>,
    all: bool,
    has_mail_from: bool,
    mail_from: String,
    rcpts: Vec<String>,
    found: Bits,
}

impl Entry {
    fn answers(&self, k: &Key<'_, '_>) -> bool {
        let q = k.query;
        self.hash == k.hash
            && self.index == k.index
            && self.stage == Some(q.stage)
            && self.all == q.all
            && self.has_mail_from == q.mail_from.is_some()
            && self.mail_from == q.mail_from.unwrap_or("")
            && k.rcpts_are(&self.rcpts)
    }

    fn set(&mut self, k: &Key<'_, '_>, found: &Bits) {
        let q = k.query;
        (self.hash, self.index, self.stage, self.all) = (k.hash, k.index, Some(q.stage), q.all);
        self.has_mail_from = q.mail_from.is_some();
        self.mail_from.clear();
        self.mail_from.push_str(q.mail_from.unwrap_or(""));
        k.copy_rcpts(&mut self.rcpts);
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
pub(super) fn recall(k: &Key<'_, '_>) -> Option<Bits> {
    MEMO.with_borrow(|m| {
        m.entries
            .iter()
            .find(|e| e.answers(k))
            .map(|e| e.found.clone())
    })
}

/// Remembers `found` as the answer for `k`, in place of the oldest.
pub(super) fn keep(k: &Key<'_, '_>, found: &Bits) {
    MEMO.with_borrow_mut(|m| {
        if m.entries.len() < SLOTS {
            m.next = m.entries.len();
            m.entries.push(Entry::default());
        }
        m.entries[m.next].set(k, found);
        m.next = (m.next + 1) % SLOTS;
    })
}
