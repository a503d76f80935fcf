//! Which rules a decision needs to try, so a scenario of many rules costs
//! little more than one of few.
//!
//! Rules are listed per stage, in file order (`on = "any"` rules in every
//! command stage's list). Within a stage, a rule whose `rcpt` (at RCPT) or
//! `mail_from` condition is only literal addresses and `*@domain` globs is
//! filed under those (lowercased) instead: it can match no other address.
//! A decision merges the stage's unfiled rules with those filed under its
//! address and domain, by position, so the first rule that matches is the
//! one a scan of every rule would find.

use std::collections::HashMap;

use super::model::{Gate, Rule};
use super::pattern::Pattern;
use crate::proto::{Context, Stage};

/// Positions (in `Scenario::rules`) of the rules to try, ascending.
type List = Vec<u32>;

/// The rule lists of one stage.
#[derive(Debug, Default)]
struct StageRules {
    /// Every rule at this stage (for a decision with no address to look up).
    all: List,
    /// Rules no address lookup can rule out.
    unfiled: List,
    /// Rules filed by recipient: `a@b` or `@b` (for `*@b`).
    by_rcpt: HashMap<String, List>,
    /// Rules filed by sender, keyed the same way.
    by_mail_from: HashMap<String, List>,
}

/// The rules of a scenario, by stage and literal address.
#[derive(Debug)]
pub struct RuleIndex {
    stages: Vec<StageRules>,
    /// Rules with a reputation gate (they count every judged recipient).
    pub reputation: List,
}

impl RuleIndex {
    pub fn new(rules: &[Rule]) -> Self {
        let mut stages: Vec<StageRules> = (0..Stage::ALL.len())
            .map(|_| StageRules::default())
            .collect();
        for stage in Stage::ALL {
            let s = &mut stages[stage as usize];
            for (pos, rule) in rules.iter().enumerate() {
                if rule.applies_at(stage) {
                    s.file(pos as u32, rule, stage);
                }
            }
        }
        let reputation = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.gate, Some(Gate::Reputation { .. })))
            .map(|(pos, _)| pos as u32)
            .collect();
        Self { stages, reputation }
    }

    /// The positions of the rules that may match `ctx`, ascending.
    pub fn candidates<'a>(&'a self, ctx: &Context<'_>) -> Candidates<'a> {
        let s = &self.stages[ctx.stage as usize];
        let mut c = Candidates {
            lists: [&[]; 5],
            n: 0,
        };
        // At RCPT the recipient condition is tested on this command's
        // recipient alone; without one, nothing filed by recipient can be
        // ruled out.
        if ctx.stage == Stage::Rcpt && ctx.rcpt.is_none() {
            c.push(&s.all);
            return c;
        }
        c.push(&s.unfiled);
        if let Some(r) = ctx.rcpt.filter(|_| ctx.stage == Stage::Rcpt) {
            c.lookup(&s.by_rcpt, r);
        }
        if let Some(m) = ctx.mail_from {
            c.lookup(&s.by_mail_from, m);
        }
        c
    }
}

impl StageRules {
    fn file(&mut self, pos: u32, rule: &Rule, stage: Stage) {
        self.all.push(pos);
        let keys = |p: &Option<Pattern>| p.as_ref().and_then(literal_keys);
        let (map, keys) = match (stage, keys(&rule.when.rcpt), keys(&rule.when.mail_from)) {
            (Stage::Rcpt, Some(k), _) => (&mut self.by_rcpt, k),
            (_, _, Some(k)) => (&mut self.by_mail_from, k),
            _ => {
                self.unfiled.push(pos);
                return;
            }
        };
        for k in keys {
            let list = map.entry(k).or_default();
            // Two alternatives may share a key; list the rule once.
            if list.last() != Some(&pos) {
                list.push(pos);
            }
        }
    }
}

/// The keys a pattern can only match under: every alternative a literal
/// address or `*@domain` (no other wildcard, no `@` in the domain), or
/// None when some alternative could match more.
fn literal_keys(p: &Pattern) -> Option<Vec<String>> {
    p.globs()?
        .iter()
        .map(|g| {
            let wild = |s: &str| s.contains(['*', '?']);
            match g.strip_prefix("*@") {
                Some(d) if !wild(d) && !d.contains('@') => Some(format!("@{}", fold(d))),
                _ if !wild(g) => Some(fold(g)),
                _ => None,
            }
        })
        .collect()
}

/// Lowercases as the case-insensitive glob compares: character by
/// character (not `str::to_lowercase`, whose final sigma differs).
fn fold(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.chars().flat_map(char::to_lowercase).collect()
    }
}

/// A merge of up to five ascending lists, without repeats.
pub struct Candidates<'a> {
    lists: [&'a [u32]; 5],
    n: usize,
}

impl<'a> Candidates<'a> {
    fn push(&mut self, list: &'a [u32]) {
        if !list.is_empty() {
            self.lists[self.n] = list;
            self.n += 1;
        }
    }

    /// Adds the rules filed under the address and under its domain.
    fn lookup(&mut self, map: &'a HashMap<String, List>, addr: &str) {
        if map.is_empty() {
            return;
        }
        let addr = fold(addr);
        if let Some(l) = map.get(&addr) {
            self.push(l);
        }
        if let Some(at) = addr.rfind('@') {
            if let Some(l) = map.get(&addr[at..]) {
                self.push(l);
            }
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let lists = &mut self.lists[..self.n];
        let min = lists.iter().filter_map(|l| l.first()).min().copied()?;
        for l in lists.iter_mut() {
            if l.first() == Some(&min) {
                *l = &l[1..];
            }
        }
        Some(min as usize)
    }
}
