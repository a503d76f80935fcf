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
//!
//! The unfiled rules' `mail_from` and `rcpt` patterns are also compiled,
//! per stage and field, into one `RegexSet` (a [`FieldSet`], when three or
//! more rules have such a condition): one pass over an ASCII address tells
//! whether any of those rules' conditions on it can hold (the usual answer
//! is no), and a second, only then, which; the others are skipped without
//! being tried. A skipped rule is one whose `holds` would
//! be false, so the order of the rules tried, and the first that matches,
//! are unchanged.
//!
//! What a stage's sets and lookups find depends on the addresses alone, so
//! each thread remembers its last few answers ([`memo`]): a client sending
//! message after message from and to the same addresses, as a load test
//! does, has its rules found once on each thread.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regex::bytes::RegexSetBuilder;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;

use super::memo;
use super::model::{Gate, Rule};
use super::pattern::{Pattern, MAX_REGEX_SIZE};
use crate::proto::{Context, Stage};

/// Positions (in `Scenario::rules`) of the rules to try, ascending.
type List = Vec<u32>;

/// Lists by lowercased address or `@domain`, hashed with FxHash: a
/// decision looks up to four addresses, SipHash was a tenth of one, and
/// FNV, a byte at a time, still a third of a lookup; Fx takes eight bytes
/// a step. Its keys all come from the scenario, so a client's address can
/// only probe as far as the scenario's own keys collide: no flooding to
/// guard against.
#[derive(Debug, Default)]
struct Filed {
    lists: HashMap<String, List, FxBuildHasher>,
    /// Whether some key is an address, and some a `@domain`: a lookup
    /// that cannot find anything is not made.
    addresses: bool,
    domains: bool,
}

impl Filed {
    fn file(&mut self, key: String, pos: u32) {
        match key.starts_with('@') {
            true => self.domains = true,
            false => self.addresses = true,
        }
        let list = self.lists.entry(key).or_default();
        // Two alternatives may share a key; list the rule once.
        if list.last() != Some(&pos) {
            list.push(pos);
        }
    }
}

/// The rule lists of one stage.
#[derive(Debug, Default)]
struct StageRules {
    /// Every rule at this stage (for a decision with no address to look up).
    all: List,
    /// Rules no address lookup can rule out.
    unfiled: List,
    /// Rules filed by recipient: `a@b` or `@b` (for `*@b`).
    by_rcpt: Filed,
    /// Rules filed by sender, keyed the same way.
    by_mail_from: Filed,
    /// `unfiled` and `all` as bitsets, for a decision with prefilters.
    unfiled_bits: Bits,
    all_bits: Bits,
    /// The prefilter over the unfiled rules' `mail_from` patterns.
    mail_from_set: Option<Arc<FieldSet>>,
    /// The prefilter over the unfiled rules' `rcpt` patterns.
    rcpt_set: Option<Arc<FieldSet>>,
}

/// The number the next index built takes.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The rules of a scenario, by stage and literal address.
#[derive(Debug)]
pub struct RuleIndex {
    /// This index's number among those built by this process: what the
    /// answers [`memo`] keeps name.
    id: u64,
    stages: Vec<StageRules>,
    /// Rules with a reputation gate (they count every judged recipient).
    pub reputation: List,
}

impl RuleIndex {
    pub fn new(rules: &[Rule]) -> Self {
        let mut stages: Vec<StageRules> = (0..Stage::ALL.len())
            .map(|_| StageRules::default())
            .collect();
        // Stages with the same unfiled rules share their sets.
        let mut sets = HashMap::new();
        for stage in Stage::ALL {
            let s = &mut stages[stage as usize];
            for (pos, rule) in rules.iter().enumerate() {
                if rule.applies_at(stage) {
                    s.file(pos as u32, rule, stage);
                }
            }
            s.mail_from_set = FieldSet::shared(&mut sets, rules, &s.unfiled, Field::MailFrom);
            s.rcpt_set = FieldSet::shared(&mut sets, rules, &s.unfiled, Field::Rcpt);
            s.unfiled_bits = Bits::of(&s.unfiled);
            s.all_bits = Bits::of(&s.all);
        }
        let reputation = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.gate, Some(Gate::Reputation { .. })))
            .map(|(pos, _)| pos as u32)
            .collect();
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stages,
            reputation,
        }
    }

    /// The positions of the rules that may match `ctx`, ascending: at a
    /// stage with a prefilter set, as found for the same stage and
    /// addresses before on this thread, if they were.
    pub fn candidates<'a>(&'a self, ctx: &Context<'_>) -> Candidates<'a> {
        let s = &self.stages[ctx.stage as usize];
        let q = Query::of(ctx);
        let key = match s.has_sets() {
            true => memo::Key::of(self.id, &q),
            false => None,
        };
        let Some(key) = key else {
            return self.find(s, &q);
        };
        let found = memo::recall(&key).unwrap_or_else(|| {
            let found = self.find(s, &q).into_bits();
            memo::keep(&key, &found);
            found
        });
        Candidates::of(found)
    }

    /// The candidates found anew: the prefilters' survivors merged with
    /// the rules filed under the addresses.
    fn find<'a>(&'a self, s: &'a StageRules, q: &Query<'_>) -> Candidates<'a> {
        let mut c = Candidates::of(Bits::default());
        let (list, bits) = match q.all {
            true => (&s.all, &s.all_bits),
            false => (&s.unfiled, &s.unfiled_bits),
        };
        match s.survivors(bits, q) {
            Some(alive) => c.alive = BitCursor::new(alive),
            None => c.push(list),
        }
        if q.all {
            return c;
        }
        if let Rcpts::One(r) = q.rcpts {
            c.lookup(&s.by_rcpt, r);
        }
        if let Some(m) = q.mail_from {
            c.lookup(&s.by_mail_from, m);
        }
        c
    }
}

/// What the index reads of a decision's context, read once: what it finds
/// depends on nothing else, so this is also what [`memo`] keys its answers
/// by.
pub(super) struct Query<'a> {
    pub(super) stage: Stage,
    /// At RCPT without a recipient: nothing filed by recipient can be
    /// ruled out, so every rule at the stage is a candidate.
    pub(super) all: bool,
    pub(super) mail_from: Option<&'a str>,
    pub(super) rcpts: Rcpts<'a>,
}

/// The recipients a `rcpt` condition is tested on, as `Engine::holds`
/// tests it: this command's recipient at RCPT, else any of the
/// transaction's.
#[derive(Clone, Copy)]
pub(super) enum Rcpts<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Query<'a> {
    fn of(ctx: &Context<'a>) -> Self {
        Self {
            stage: ctx.stage,
            all: ctx.stage == Stage::Rcpt && ctx.rcpt.is_none(),
            mail_from: ctx.mail_from,
            rcpts: match ctx.rcpt {
                Some(r) if ctx.stage == Stage::Rcpt => Rcpts::One(r),
                _ => Rcpts::Many(ctx.rcpts),
            },
        }
    }
}

impl StageRules {
    /// Whether this stage has a prefilter set: finding its candidates
    /// then takes a set pass, which remembering them saves (address
    /// lookups alone cost about what recalling their answer does).
    fn has_sets(&self) -> bool {
        self.mail_from_set.is_some() || self.rcpt_set.is_some()
    }

    /// The rules of `rules` less those whose `mail_from` or `rcpt`
    /// condition the prefilters find false for `q`; None when there is no
    /// prefilter at this stage.
    fn survivors(&self, rules: &Bits, q: &Query<'_>) -> Option<Bits> {
        if !self.has_sets() {
            return None;
        }
        let mut alive = rules.clone();
        if let Some(f) = &self.mail_from_set {
            f.keep_possible(q.mail_from.as_slice(), &mut alive);
        }
        if let Some(f) = &self.rcpt_set {
            match q.rcpts {
                Rcpts::One(r) => f.keep_possible(&[r], &mut alive),
                Rcpts::Many(rs) => f.keep_possible(rs, &mut alive),
            }
        }
        Some(alive)
    }

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
        keys.into_iter().for_each(|k| map.file(k, pos));
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
                _ if !wild(g) => Some(fold(g).into_owned()),
                _ => None,
            }
        })
        .collect()
}

/// Lowercases as the case-insensitive glob compares: character by
/// character (not `str::to_lowercase`, whose final sigma differs). An
/// address already in lower case, the usual one, is not copied.
fn fold(s: &str) -> Cow<'_, str> {
    if !s.is_ascii() {
        Cow::Owned(s.chars().flat_map(char::to_lowercase).collect())
    } else if has_capital(s.as_bytes()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// Whether ASCII `text` has a capital letter, eight bytes a step: a byte
/// by byte test took about seven instructions a byte (callgrind), some 40%
/// of a lookup.
/// For a byte under 0x80, adding 0x3f sets its top bit when it is `A` or
/// above and adding 0x25 when it is past `Z`, without carrying into the
/// next byte.
fn has_capital(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    let capital = |w: u64| (w + 0x3f * ONES) & !(w + 0x25 * ONES) & (0x80 * ONES) != 0;
    let (words, rest) = text.as_chunks::<8>();
    words.iter().any(|w| capital(u64::from_ne_bytes(*w))) || rest.iter().any(u8::is_ascii_uppercase)
}

/// A stage's unfiled rules get a set over a field when at least this many
/// have a condition on it: a pass of a set costs about two rules tried one
/// by one, and three rules per set already gain (`docs/performance.md`).
const MIN_SET_RULES: usize = 3;

/// The most memory one set may take once compiled. Each pattern in it was
/// accepted under [`MAX_REGEX_SIZE`]; a set of many is refused past this,
/// and its stage tries those rules one by one, as without a set.
const MAX_SET_SIZE: usize = 4 * MAX_REGEX_SIZE;

/// One field's patterns of a stage's unfiled rules in one `RegexSet`.
#[derive(Debug)]
struct FieldSet {
    set: regex::bytes::RegexSet,
    /// The rule (position) each pattern of the set is an alternative of.
    owner: Vec<u32>,
    /// The rules whose condition on the field is in the set.
    covered: Bits,
}

/// An address field a set is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    MailFrom,
    Rcpt,
}

impl Field {
    fn of(self, rule: &Rule) -> Option<&Pattern> {
        match self {
            Field::MailFrom => rule.when.mail_from.as_ref(),
            Field::Rcpt => rule.when.rcpt.as_ref(),
        }
    }
}

/// Sets already built, by field and rules (None: refused).
type Built = HashMap<(Field, Vec<u32>), Option<Arc<FieldSet>>>;

impl FieldSet {
    /// The set over `field` of the `unfiled` rules, built once for all the
    /// stages with the same unfiled rules.
    fn shared(
        built: &mut Built,
        rules: &[Rule],
        unfiled: &[u32],
        field: Field,
    ) -> Option<Arc<FieldSet>> {
        let with: Vec<u32> = unfiled
            .iter()
            .copied()
            .filter(|&pos| field.of(&rules[pos as usize]).is_some())
            .collect();
        if with.len() < MIN_SET_RULES {
            return None;
        }
        let key = (field, with);
        if let Some(set) = built.get(&key) {
            return set.clone();
        }
        let set = Self::new(rules, &key.1, field).map(Arc::new);
        built.insert(key, set.clone());
        set
    }

    /// None when the set would be over [`MAX_SET_SIZE`] (or the regex crate
    /// refuses it for another reason): those rules are then tried one by
    /// one.
    fn new(rules: &[Rule], with: &[u32], field: Field) -> Option<Self> {
        let (mut sources, mut owner, mut covered) = (vec![], vec![], Bits::default());
        for &pos in with {
            let p = field.of(&rules[pos as usize])?;
            for s in p.set_sources() {
                sources.push(s);
                owner.push(pos);
            }
            covered.set(pos);
        }
        let set = RegexSetBuilder::new(&sources)
            .size_limit(MAX_SET_SIZE)
            .build()
            .ok()?;
        Some(Self {
            set,
            owner,
            covered,
        })
    }

    /// Takes out of `alive` the covered rules whose pattern matches none
    /// of `values` (all of them for no value). A value outside ASCII tells
    /// nothing: the set's globs only answer exactly for ASCII texts.
    fn keep_possible<S: AsRef<str>>(&self, values: &[S], alive: &mut Bits) {
        if values.iter().any(|v| !v.as_ref().is_ascii()) {
            return;
        }
        let mut hit = Bits::default();
        for v in values {
            let v = v.as_ref().as_bytes();
            // The usual case, an address none of these rules names: asked
            // first with `is_match`, which stops at the first match and
            // builds no list of which patterns matched.
            if !self.set.is_match(v) {
                continue;
            }
            for i in self.set.matches(v).iter() {
                hit.set(self.owner[i]);
            }
        }
        alive.keep_unless_missed(&self.covered, &hit);
    }
}

/// A set of rule positions. Up to 256 rules live inline: a decision
/// copies its stage's set, and a heap copy was an allocation and a free
/// each time.
#[derive(Debug, Default)]
pub(super) struct Bits(SmallVec<[u64; 4]>);

impl Clone for Bits {
    /// A copy of the words (the derived clone extends item by item).
    fn clone(&self) -> Self {
        Self(SmallVec::from_slice(&self.0))
    }
}

impl Bits {
    fn of(positions: &[u32]) -> Self {
        let mut b = Bits::default();
        positions.iter().for_each(|&p| b.set(p));
        b
    }

    fn set(&mut self, pos: u32) {
        let (w, b) = (pos as usize / 64, pos % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << b;
    }

    /// Takes out what is in `covered` but not in `hit`.
    fn keep_unless_missed(&mut self, covered: &Bits, hit: &Bits) {
        let word = |b: &Bits, i: usize| b.0.get(i).copied().unwrap_or(0);
        for (i, a) in self.0.iter_mut().enumerate() {
            *a &= !word(covered, i) | word(hit, i);
        }
    }
}

/// The positions in a bitset, ascending.
#[derive(Default)]
struct BitCursor {
    bits: Bits,
    /// The word `rest` is from, and its bits not yet taken.
    word: usize,
    rest: u64,
}

impl BitCursor {
    fn new(bits: Bits) -> Self {
        let rest = bits.0.first().copied().unwrap_or(0);
        Self {
            bits,
            word: 0,
            rest,
        }
    }

    fn peek(&mut self) -> Option<u32> {
        while self.rest == 0 {
            self.word += 1;
            self.rest = *self.bits.0.get(self.word)?;
        }
        Some(self.word as u32 * 64 + self.rest.trailing_zeros())
    }

    fn pop(&mut self) {
        self.rest &= self.rest.wrapping_sub(1);
    }
}

/// A merge of up to five ascending lists and the rules the prefilters
/// left, without repeats.
pub struct Candidates<'a> {
    lists: [&'a [u32]; 5],
    n: usize,
    alive: BitCursor,
}

impl<'a> Candidates<'a> {
    /// The rules in `alive`, to which lists may be added.
    fn of(alive: Bits) -> Self {
        Self {
            lists: [&[]; 5],
            n: 0,
            alive: BitCursor::new(alive),
        }
    }

    /// All of the rules of candidates not yet iterated, as one set: the
    /// merge's result without the merge.
    fn into_bits(self) -> Bits {
        let mut bits = self.alive.bits;
        for &p in self.lists[..self.n].iter().flat_map(|l| l.iter()) {
            bits.set(p);
        }
        bits
    }

    fn push(&mut self, list: &'a [u32]) {
        if !list.is_empty() {
            self.lists[self.n] = list;
            self.n += 1;
        }
    }

    /// Adds the rules filed under the address and under its domain.
    fn lookup(&mut self, map: &'a Filed, addr: &str) {
        if !map.addresses && !map.domains {
            return;
        }
        let addr = fold(addr);
        if let Some(l) = map
            .addresses
            .then(|| map.lists.get(addr.as_ref()))
            .flatten()
        {
            self.push(l);
        }
        if !map.domains {
            return;
        }
        // `memrchr`: `str::rfind` with a char went through a generic
        // searcher, the most of a lookup.
        if let Some(at) = memchr::memrchr(b'@', addr.as_bytes()) {
            if let Some(l) = map.lists.get(&addr[at..]) {
                self.push(l);
            }
        }
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let lists = &mut self.lists[..self.n];
        let bit = self.alive.peek();
        let min = lists
            .iter()
            .filter_map(|l| l.first())
            .chain(&bit)
            .min()
            .copied()?;
        for l in lists.iter_mut() {
            if l.first() == Some(&min) {
                *l = &l[1..];
            }
        }
        if bit == Some(min) {
            self.alive.pop();
        }
        Some(min as usize)
    }
}

#[cfg(test)]
mod tests {
    //! What the prefilter skips. That it never skips the rule that decides
    //! is `engine::tests::the_index_picks_the_rule_a_scan_of_every_rule_picks`.

    use std::net::IpAddr;

    use super::*;

    /// `benches/decision.rs`'s rules: `n - 1` misses, then the recipient.
    fn bench_rules(n: usize) -> Vec<Rule> {
        let mut t = String::new();
        for i in 1..n {
            let when = match i % 3 {
                0 => format!("{{ rcpt = \"nobody{i}@*\" }}"),
                1 => format!("{{ mail_from = \"user{i}@example{i}.test\" }}"),
                _ => format!("{{ mail_from = \"/^never{i}[0-9]+@/\" }}"),
            };
            t.push_str(&format!(
                "[[rule]]\non = [\"mail\", \"rcpt\", \"message\"]\nwhen = {when}\nreply = \"550 5.7.1 No\"\n\n"
            ));
        }
        t.push_str("[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"rcpt@bench.test\" }\nreply = \"250 2.1.5 Ok\"\n");
        super::super::parse(&t, "t.toml", "t").unwrap().rules
    }

    fn rcpt_ctx<'a>(from: &'a str, rcpt: &'a str) -> Context<'a> {
        Context {
            stage: Stage::Rcpt,
            session_id: 1,
            command: None,
            client_ip: IpAddr::from([192, 0, 2, 1]),
            helo: None,
            mail_from: Some(from),
            rcpt: Some(rcpt),
            rcpts: &[],
            tls: false,
            authenticated: false,
            auth_user: None,
            size: None,
            message: None,
        }
    }

    fn tried(index: &RuleIndex, ctx: &Context<'_>) -> Vec<usize> {
        index.candidates(ctx).collect()
    }

    #[test]
    fn only_rules_whose_address_conditions_can_hold_are_tried() {
        let index = RuleIndex::new(&bench_rules(100));
        assert_eq!(
            tried(&index, &rcpt_ctx("sender@bench.test", "rcpt@bench.test")),
            [99]
        );
        // Rule 9 (`nobody9@*`, any case), 10 (filed: `user10@example10.test`)
        // and 11 (`/^never11[0-9]+@/`).
        let ctx = rcpt_ctx("user10@EXAMPLE10.test", "NoBody9@x.test");
        assert_eq!(tried(&index, &ctx), [8, 9]);
        let ctx = rcpt_ctx("never110@x.test", "nobody9@x.test");
        assert_eq!(tried(&index, &ctx), [8, 10]);
        // The null sender matches no sender pattern here.
        assert_eq!(tried(&index, &rcpt_ctx("", "rcpt@bench.test")), [99]);
    }

    #[test]
    fn a_remembered_answer_is_the_one_found() {
        let index = RuleIndex::new(&bench_rules(100));
        let ctx = rcpt_ctx("user10@example10.test", "nobody9@x.test");
        assert!(memo::recall(&memo::Key::of(index.id, &Query::of(&ctx)).unwrap()).is_none());
        assert_eq!(tried(&index, &ctx), [8, 9]);
        assert!(memo::recall(&memo::Key::of(index.id, &Query::of(&ctx)).unwrap()).is_some());
        assert_eq!(tried(&index, &ctx), [8, 9]);
        // Without this command's recipient every rule at RCPT is tried,
        // though the transaction's recipients are the same address.
        let rcpts = ["nobody9@x.test".to_owned()];
        let without = Context {
            rcpt: None,
            rcpts: &rcpts,
            ..rcpt_ctx("user10@example10.test", "")
        };
        // (Rules filed by sender are then tried too: 0, 3, … 99.)
        let every: Vec<usize> = (0..100).filter(|p| p % 3 == 0 || *p == 8).collect();
        assert_eq!(tried(&index, &without), every);
        // Another index (a reloaded scenario) finds its own answer for the
        // same addresses: here a scenario without rule 10.
        let mut rules = bench_rules(100);
        rules.remove(9);
        let other = RuleIndex::new(&rules);
        assert_eq!(tried(&other, &ctx), [8]);
        assert_eq!(tried(&index, &ctx), [8, 9]);
    }

    #[test]
    fn answers_stay_right_past_the_memos_size() {
        let index = RuleIndex::new(&bench_rules(100));
        // Rule `j` (position j - 1) is `nobody{j}@*` when j % 3 is 0 and
        // `/^never{j}[0-9]+@/` when it is 2. 39 contexts, three times
        // over, are more than a thread remembers.
        let want = |i: usize| -> Vec<usize> {
            let digits = format!("{i}0");
            (1..100)
                .filter(|j| match j % 3 {
                    0 => *j == i,
                    2 => digits.len() > j.to_string().len() && digits.starts_with(&j.to_string()),
                    _ => false,
                })
                .map(|j| j - 1)
                .collect()
        };
        for round in 0..3 {
            for i in 1..40 {
                let (from, rcpt) = (format!("never{i}0@x.test"), format!("nobody{i}@x.test"));
                let ctx = rcpt_ctx(&from, &rcpt);
                assert_eq!(tried(&index, &ctx), want(i), "{i}, round {round}");
            }
        }
    }

    #[test]
    fn a_transaction_of_many_recipients_is_answered_but_not_remembered() {
        let index = RuleIndex::new(&bench_rules(100));
        let mut rcpts: Vec<String> = (0..16).map(|k| format!("r{k}@x.test")).collect();
        // The seventeenth: `nobody6@*`, rule 6.
        rcpts.push("nobody6@x.test".into());
        let ctx = Context {
            stage: Stage::Message,
            rcpt: None,
            rcpts: &rcpts,
            ..rcpt_ctx("never50@x.test", "")
        };
        assert!(memo::Key::of(index.id, &Query::of(&ctx)).is_none());
        assert_eq!(tried(&index, &ctx), [4, 5]);
        let ctx = Context {
            rcpts: &rcpts[..16],
            ..ctx
        };
        assert_eq!(tried(&index, &ctx), [4]);
        assert!(memo::recall(&memo::Key::of(index.id, &Query::of(&ctx)).unwrap()).is_some());
    }

    #[test]
    fn a_capital_is_found_wherever_it_is() {
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..0x80u8 {
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    assert_eq!(
                        has_capital(&text),
                        b.is_ascii_uppercase(),
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert_eq!(fold("Rcpt@Bench.TEST"), "rcpt@bench.test");
        assert!(matches!(fold("rcpt@bench.test"), Cow::Borrowed(_)));
    }

    #[test]
    fn sets_are_built_once_for_stages_with_the_same_rules() {
        let index = RuleIndex::new(&bench_rules(10));
        let set = |st: Stage| index.stages[st as usize].rcpt_set.clone().unwrap();
        assert!(Arc::ptr_eq(&set(Stage::Mail), &set(Stage::Message)));
        assert!(index.stages[Stage::Ehlo as usize].rcpt_set.is_none());
    }

    #[test]
    fn an_address_outside_ascii_is_not_prefiltered() {
        let index = RuleIndex::new(&bench_rules(10));
        // Every unfiled rule (3, 6, 9 by recipient; 2, 5, 8 by sender) is
        // tried: the globs' sets only answer for ASCII.
        let ctx = rcpt_ctx("séndér@bench.test", "rçpt@bench.test");
        assert_eq!(tried(&index, &ctx), [1, 2, 4, 5, 7, 8]);
    }

    #[test]
    fn a_set_too_big_once_compiled_falls_back_to_trying_each_rule() {
        // Each expression is accepted alone (under MAX_REGEX_SIZE); eight
        // in one set are over MAX_SET_SIZE.
        let t: String = (0..8)
            .map(|i| {
                format!(
                    "[[rule]]\non = \"rcpt\"\nwhen = {{ mail_from = '/^x{i}\\w{{20}}@/' }}\nreply = \"550 5.7.1 No\"\n\n"
                )
            })
            .collect();
        let rules = super::super::parse(&t, "t.toml", "t").unwrap().rules;
        let index = RuleIndex::new(&rules);
        assert!(index.stages[Stage::Rcpt as usize].mail_from_set.is_none());
        let ctx = rcpt_ctx("sender@bench.test", "rcpt@bench.test");
        assert_eq!(tried(&index, &ctx), (0..8).collect::<Vec<_>>());
        // Fewer of them fit in a set.
        let index = RuleIndex::new(&rules[..3]);
        assert_eq!(tried(&index, &ctx), [] as [usize; 0]);
    }
}
