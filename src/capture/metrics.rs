//! Counters for `/metrics`, updated as events are recorded.
//!
//! Plain atomics in fixed tables, hand-rolled rather than a metrics crate:
//! every stage and every reply code has its slot from the start, so the
//! SMTP path pays one relaxed `fetch_add` per event and never a lock or an
//! allocation. Only rule hits, whose names come from scenarios, sit in a
//! map; a reply decided by a rule takes its read lock, and a write lock the
//! first time a rule is seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use rustc_hash::FxBuildHasher;

use super::EventKind;
use crate::proto::{Stage, TxEnd};

/// Reply codes get a slot each from 100 to 599; anything else counts as
/// `other`.
const FIRST_CODE: u16 = 100;
const CODES: usize = 500;
const STAGES: usize = Stage::ALL.len();
/// Rule names counted at most; later ones count under `other` so a server
/// fed scenario after scenario keeps a bounded table.
const MAX_RULES: usize = 10_000;

/// How one recipient's attempt ended, as the live events show it. The
/// report (`/api/v1/report`) folds attempts across connections; these
/// counters count what each event says.
pub const OUTCOMES: [&str; 5] = ["delivered", "deferred", "failed", "dropped", "abandoned"];

pub struct Metrics {
    sessions: AtomicU64,
    closed: AtomicU64,
    commands: [AtomicU64; STAGES],
    /// `STAGES` rows of `CODES + 1` columns (the last: other codes).
    replies: Box<[AtomicU64]>,
    /// Scenario, then rule: looked up by `&str`, so a hit allocates nothing.
    /// The names come from the scenarios, never from a client, so FxHash
    /// (a hit took two SipHash runs).
    rule_hits: RwLock<HashMap<String, HashMap<String, AtomicU64, FxBuildHasher>, FxBuildHasher>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
    attempts: [AtomicU64; OUTCOMES.len()],
}

/// The counters at one moment, for rendering.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub sessions: u64,
    pub open: u64,
    /// (stage, count), non-zero only.
    pub commands: Vec<(&'static str, u64)>,
    /// (stage, code or None for other, count), non-zero only.
    pub replies: Vec<(&'static str, Option<u16>, u64)>,
    /// (scenario, rule, count), sorted.
    pub rule_hits: Vec<(String, String, u64)>,
    pub messages_accepted: u64,
    pub messages_refused: u64,
    pub message_bytes: u64,
    /// (outcome, count), every outcome.
    pub attempts: Vec<(&'static str, u64)>,
}

/// Sessions opened and closed, messages that reached their end of data,
/// recipients' attempts ended: each only grows while the server runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub sessions: u64,
    pub closed: u64,
    pub messages: u64,
    pub attempts: u64,
}

fn stage_index(stage: Stage) -> usize {
    Stage::ALL
        .iter()
        .position(|s| *s == stage)
        .unwrap_or(STAGES - 1)
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn outcome_index(code: Option<u16>) -> usize {
    match code.unwrap_or(0) / 100 {
        2 | 3 => 0,
        4 => 1,
        _ => 2,
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            commands: std::array::from_fn(|_| AtomicU64::new(0)),
            replies: (0..STAGES * (CODES + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            rule_hits: RwLock::new(HashMap::default()),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            attempts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Metrics {
    /// Counts what one event says.
    pub fn observe(&self, scenario: &str, kind: &EventKind) {
        match kind {
            EventKind::Connect { .. } => bump(&self.sessions),
            EventKind::Close { .. } => bump(&self.closed),
            EventKind::Command { stage, .. } => {
                let s = stage.map_or(STAGES - 1, stage_index);
                bump(&self.commands[s]);
            }
            EventKind::Reply {
                rule: Some(rule), ..
            } => self.rule_hit(scenario, rule),
            EventKind::Message { accepted, size, .. } => {
                bump(if *accepted {
                    &self.accepted
                } else {
                    &self.refused
                });
                self.bytes.fetch_add(*size, Ordering::Relaxed);
            }
            EventKind::Rcpt { answer, .. } if answer.code.is_none_or(|c| c >= 400) => {
                bump(&self.attempts[outcome_index(answer.code)]);
            }
            EventKind::Transaction {
                end, rcpts, answer, ..
            } => {
                let i = match end {
                    TxEnd::Delivered => 0,
                    TxEnd::Refused => outcome_index(answer.as_ref().and_then(|a| a.code)),
                    TxEnd::Dropped => 3,
                    TxEnd::Reset | TxEnd::Abandoned => 4,
                };
                self.attempts[i].fetch_add(rcpts.len() as u64, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Counts a reply sent at `stage`. A reply without a parsed code counts
    /// by its first three digits, as the logs do.
    pub fn reply(&self, stage: Stage, code: Option<u16>, text: &str) {
        let code = code.or_else(|| text.get(..3).and_then(|c| c.parse().ok()));
        let col = code
            .and_then(|c| c.checked_sub(FIRST_CODE))
            .map(usize::from)
            .filter(|c| *c < CODES)
            .unwrap_or(CODES);
        bump(&self.replies[stage_index(stage) * (CODES + 1) + col]);
    }

    fn rule_hit(&self, scenario: &str, rule: &str) {
        let read = self.rule_hits.read().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = read.get(scenario).and_then(|rules| rules.get(rule)) {
            bump(n);
            return;
        }
        let full = read.values().map(HashMap::len).sum::<usize>() >= MAX_RULES;
        drop(read);
        let rule = if full { "other" } else { rule };
        let mut write = self.rule_hits.write().unwrap_or_else(|p| p.into_inner());
        let rules = write.entry(scenario.to_string()).or_default();
        bump(
            rules
                .entry(rule.to_string())
                .or_insert_with(|| AtomicU64::new(0)),
        );
    }

    /// The few counts that say whether anything happened, read without a
    /// lock: cheap enough to look at often.
    pub fn totals(&self) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            sessions: load(&self.sessions),
            closed: load(&self.closed),
            messages: load(&self.accepted) + load(&self.refused),
            attempts: self.attempts.iter().map(load).sum(),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sessions = load(&self.sessions);
        let commands = Stage::ALL
            .iter()
            .zip(&self.commands)
            .map(|(s, n)| (s.name(), load(n)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut replies = vec![];
        for (row, stage) in Stage::ALL.iter().enumerate() {
            for col in 0..=CODES {
                let n = load(&self.replies[row * (CODES + 1) + col]);
                if n > 0 {
                    let code = (col < CODES).then(|| FIRST_CODE + col as u16);
                    replies.push((stage.name(), code, n));
                }
            }
        }
        let mut rule_hits: Vec<_> = self
            .rule_hits
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flat_map(|(s, rules)| rules.iter().map(|(r, n)| (s.clone(), r.clone(), load(n))))
            .collect();
        rule_hits.sort();
        Snapshot {
            sessions,
            open: sessions.saturating_sub(load(&self.closed)),
            commands,
            replies,
            rule_hits,
            messages_accepted: load(&self.accepted),
            messages_refused: load(&self.refused),
            message_bytes: load(&self.bytes),
            attempts: OUTCOMES
                .iter()
                .zip(&self.attempts)
                .map(|(o, n)| (*o, load(n)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_count_by_stage_and_code() {
        let m = Metrics::default();
        m.reply(Stage::Rcpt, Some(550), "550 5.1.1 no\r\n");
        m.reply(Stage::Rcpt, Some(550), "550 5.1.1 no\r\n");
        m.reply(Stage::Connect, None, "220 raw\r\n");
        m.reply(Stage::Data, None, "garbage");
        let s = m.snapshot();
        assert!(s.replies.contains(&("rcpt", Some(550), 2)));
        assert!(s.replies.contains(&("connect", Some(220), 1)));
        assert!(s.replies.contains(&("data", None, 1)));
    }

    #[test]
    fn rule_hits_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_RULES + 5 {
            m.rule_hit("s", &format!("r{i}"));
        }
        let s = m.snapshot();
        assert_eq!(s.rule_hits.len(), MAX_RULES + 1);
        assert!(s.rule_hits.contains(&("s".into(), "other".into(), 5)));
    }
}
