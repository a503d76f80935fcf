//! The rule engine: the [`Policy`] a scenario gives the session.
//!
//! Rules are tried in order; the first whose stage and conditions hold and
//! whose modifiers let it apply decides. Then the magic recipients (when
//! on); then the healthy default.
//!
//! Randomness is a pure function of (seed, rule, key, match number), not a
//! shared generator, so a seeded run gives the same answers whatever order
//! concurrent sessions arrive in.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::headers::Headers;
use super::index::RuleIndex;
use super::magic;
use super::model::*;
use crate::proto::{Asked, Context, Cursor, Decision, Outcome, Policy, Reply, Stage, Tag};
use crate::state::{
    fnv1a, Answer, Backend, Done, FailMode, GateOp, MemoryStore, Op, StateStore, Unavailable,
    FNV_OFFSET, STORE_UNAVAILABLE,
};

/// A scenario ready to serve, with its counters.
pub struct Engine {
    pub scenario: Arc<Scenario>,
    store: Arc<dyn StateStore>,
    seed: u64,
    /// When `during` windows start counting (server start, reload or reset).
    epoch: Instant,
    /// Open-session counters each session holds (for `concurrent`), to
    /// release when it ends, and what they counted at its connect.
    open: Mutex<HashMap<u64, (Vec<String>, Opened)>>,
    /// What stateful rules do while the store is unavailable.
    fail: FailMode,
    /// Which rules each decision needs to try.
    index: RuleIndex,
}

/// Opened session counts at connect: (rule index, sessions open).
type Opened = Vec<(usize, Answer<u64>)>;

impl Engine {
    /// An engine with fresh in-memory counters. Without a scenario seed a
    /// random one is drawn (see [`Engine::seed`] to replay it).
    pub fn new(scenario: Arc<Scenario>, epoch: Instant) -> Self {
        let seed = scenario.server.seed.unwrap_or_else(rand::random);
        Self::with_store(scenario, Arc::new(MemoryStore::default()), seed, epoch)
    }

    /// An engine whose counters live in `backend`. A shared store also
    /// shares the seed (when the scenario has none) and the epoch of
    /// `during` windows, so instances answer as one.
    pub fn with_backend(scenario: Arc<Scenario>, backend: &Backend, epoch: Instant) -> Self {
        let seed = scenario.server.seed.unwrap_or_else(rand::random);
        let store = backend.store(&scenario.name, rules_hash(&scenario));
        Self::with_store(scenario, store, seed, epoch)
    }

    pub fn with_store(
        scenario: Arc<Scenario>,
        store: Arc<dyn StateStore>,
        seed: u64,
        epoch: Instant,
    ) -> Self {
        let seed = store.shared_seed(seed);
        let epoch = store.shared_epoch(epoch);
        Self {
            fail: store.fail_mode(),
            store,
            seed,
            epoch,
            open: Mutex::new(HashMap::new()),
            index: RuleIndex::new(&scenario.rules),
            scenario,
        }
    }

    /// An engine for `scenario` that keeps this one's counters, seed and
    /// `during` epoch: a rule prepended at run time must not reset a
    /// greylist or a rate already under way. Rules keep their `index`, so
    /// their counter keys stay valid.
    pub fn rebuilt(&self, scenario: Arc<Scenario>) -> Self {
        Self::with_store(scenario, self.store.clone(), self.seed, self.epoch)
    }

    /// The answer of a stateful rule (or magic recipient, `label`) whose
    /// counters could not be read: per `--state-fail`.
    pub(super) fn unavailable(&self, label: String) -> Option<Decision> {
        match self.fail {
            FailMode::Ignore => None,
            FailMode::Tempfail => Some(Decision {
                rule: Some(label),
                outcome: Outcome::Reply(Reply::parse(STORE_UNAVAILABLE).ok()?),
                delay: Duration::ZERO,
                close: None,
                drip: None,
                tag: None,
            }),
        }
    }

    /// Removes counters that can no longer change an answer.
    pub fn sweep(&self, now: Instant) -> usize {
        self.store.sweep(now)
    }

    /// At connect: the open-session keys of every `concurrent` rule whose
    /// conditions hold, with their rule.
    fn concurrent_keys(&self, ctx: &Context<'_>, now: Instant) -> Vec<(usize, String)> {
        let mut keys = vec![];
        for rule in self.index.candidates(ctx).map(|i| &self.scenario.rules[i]) {
            if matches!(rule.gate, Some(Gate::Concurrent { .. }))
                && rule.applies_at(ctx.stage)
                && self.holds(&rule.when, ctx, now, &OnceCell::new())
            {
                let key = format!("c{}\u{1e}{}", rule.index, self.key(rule, ctx));
                keys.push((rule.index, key));
            }
        }
        keys
    }

    /// Counts this session as open under `keys` (the answer of their
    /// `Op::Open`); returns (rule index, sessions open), kept for the
    /// session's later decisions at connect and to release at its end.
    fn opened(&self, session: u64, keys: Vec<(usize, String)>, done: Answer<Done>) -> Opened {
        let counts = match done {
            Ok(Done::Counts(n)) if n.len() == keys.len() => Ok(n),
            _ => Err(Unavailable),
        };
        let opened: Opened = match &counts {
            Ok(n) => keys.iter().zip(n).map(|((r, _), n)| (*r, Ok(*n))).collect(),
            Err(_) => keys.iter().map(|(r, _)| (*r, Err(Unavailable))).collect(),
        };
        if counts.is_ok() && !keys.is_empty() {
            let keys = keys.into_iter().map(|(_, k)| k).collect();
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(session, (keys, opened.clone()));
        }
        opened
    }

    /// The open sessions counted at this session's connect.
    fn opened_of(&self, session: u64) -> Opened {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&session)
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    }

    /// Performs `op` now if the store can (memory): `then` gets its answer.
    /// Otherwise the decision suspends at `at`.
    pub(super) fn now_or_suspend(
        &self,
        op: Op,
        at: u32,
        now: Instant,
        then: impl FnOnce(Answer<Done>) -> Asked,
    ) -> Asked {
        match self.store.run_now(&op, now) {
            Some(done) => then(done),
            None => Asked::Suspend { at: Cursor(at), op },
        }
    }

    /// `decide` to the end, performing each op on the spot (an op the store
    /// cannot perform now finds it unavailable): for tests and benches, and
    /// for the memory store, where it is exactly what the session gets.
    pub fn decide(&self, ctx: &Context<'_>, now: Instant) -> Option<Decision> {
        let mut asked = self.ask(ctx, now);
        loop {
            match asked {
                Asked::Decided(d) => return d,
                Asked::Suspend { at, op } => {
                    let done = self.store.run_now(&op, now).unwrap_or(Err(Unavailable));
                    asked = self.resume(ctx, now, at, done);
                }
            }
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn store(&self) -> &dyn StateStore {
        &*self.store
    }

    /// A uniform draw in [0, 1) for this rule, key and match number.
    fn draw(&self, rule: usize, key: &str, n: u64, salt: u8) -> f64 {
        let h = fnv1a(FNV_OFFSET ^ self.seed, &(rule as u64).to_le_bytes());
        let h = fnv1a(h, &n.to_le_bytes());
        let h = fnv1a(h, &[salt]);
        let h = fnv1a(h, key.as_bytes());
        ChaCha8Rng::seed_from_u64(h).random::<f64>()
    }

    fn key(&self, rule: &Rule, ctx: &Context<'_>) -> String {
        let fields = rule.key_fields(ctx.stage);
        let mut key = String::new();
        for f in fields {
            match f {
                KeyField::ClientIp => key.push_str(&ctx.client_ip.to_string()),
                KeyField::Helo => key.push_str(&ctx.helo.unwrap_or("").to_ascii_lowercase()),
                KeyField::MailFrom => {
                    key.push_str(&ctx.mail_from.unwrap_or("").to_ascii_lowercase())
                }
                KeyField::Rcpt => match ctx.rcpt {
                    Some(r) => key.push_str(&r.to_ascii_lowercase()),
                    None => {
                        let mut all: Vec<String> =
                            ctx.rcpts.iter().map(|r| r.to_ascii_lowercase()).collect();
                        all.sort();
                        key.push_str(&all.join(","));
                    }
                },
            }
            key.push('\u{1f}');
        }
        key
    }

    /// `headers` is parsed at most once per decision, by the first rule
    /// with a `header` condition.
    fn holds(
        &self,
        w: &When,
        ctx: &Context<'_>,
        now: Instant,
        headers: &OnceCell<Headers>,
    ) -> bool {
        if let Some(nets) = &w.client_ip {
            if !nets.iter().any(|n| n.contains(&ctx.client_ip)) {
                return false;
            }
        }
        if let Some(p) = &w.helo {
            if !ctx.helo.is_some_and(|h| p.matches(h)) {
                return false;
            }
        }
        if let Some(p) = &w.mail_from {
            if !ctx.mail_from.is_some_and(|m| p.matches(m)) {
                return false;
            }
        }
        if let Some(p) = &w.rcpt {
            let hit = match ctx.rcpt {
                Some(r) if ctx.stage == Stage::Rcpt => p.matches(r),
                _ => ctx.rcpts.iter().any(|r| p.matches(r)),
            };
            if !hit {
                return false;
            }
        }
        if let Some(p) = &w.auth_user {
            if !ctx.auth_user.is_some_and(|u| p.matches(u)) {
                return false;
            }
        }
        if w.tls.is_some_and(|t| t != ctx.tls)
            || w.authenticated.is_some_and(|a| a != ctx.authenticated)
        {
            return false;
        }
        if let Some(c) = &w.size {
            if !ctx.size.is_some_and(|n| c.holds(n)) {
                return false;
            }
        }
        if !w.header.is_empty() {
            let Some(msg) = ctx.message else { return false };
            let headers = headers.get_or_init(|| Headers::parse(msg));
            if !w
                .header
                .iter()
                .all(|(name, p)| headers.any(name, |v| p.matches(v)))
            {
                return false;
            }
        }
        if let Some(win) = &w.during {
            let elapsed = now.saturating_duration_since(self.epoch);
            if !win.iter().any(|w| w.contains(elapsed)) {
                return false;
            }
        }
        true
    }

    /// What the rule's gate asks the store; Err: it is decided without
    /// the store (`concurrent` reads what connect counted): Err(true) the
    /// rule applies, Err(false) it does not, or the store was unavailable.
    fn gate_op(&self, rule: &Rule, key: &str, opened: &Opened) -> Result<Option<GateOp>, Local> {
        let i = rule.index;
        Ok(Some(match rule.gate {
            None => return Ok(None),
            Some(Gate::Rate { max, window }) => GateOp::Rate {
                key: format!("l{i}\u{1e}{key}"),
                max,
                window,
            },
            Some(Gate::Greylist {
                retry_after,
                expire,
            }) => GateOp::Greylist {
                key: format!("g{i}\u{1e}{key}"),
                retry_after,
                expire,
            },
            Some(Gate::Reputation {
                window,
                min_attempts,
                max_failure_rate,
            }) => GateOp::Reputation {
                key: format!("p{i}\u{1e}{key}"),
                window,
                min_attempts,
                max_failure_rate: max_failure_rate.to_bits(),
            },
            Some(Gate::Concurrent { max }) => {
                let Some((_, open)) = opened.iter().find(|(r, _)| *r == i) else {
                    return Err(Local::Miss);
                };
                // `open` includes this session.
                return match open {
                    Err(Unavailable) => Err(Local::Unavailable),
                    Ok(n) if *n <= max => Err(Local::Miss),
                    Ok(_) => Ok(None),
                };
            }
        }))
    }

    /// Tries one rule: a decision, a miss, or the store op it waits for.
    fn try_rule(
        &self,
        rule: &Rule,
        ctx: &Context<'_>,
        now: Instant,
        opened: &Opened,
        headers: &OnceCell<Headers>,
    ) -> Asked {
        if !rule.applies_at(ctx.stage) || !self.holds(&rule.when, ctx, now, headers) {
            return Asked::Decided(None);
        }
        // The key is built once, for the gate and the counters alike.
        let key = if rule.gate.is_some() || rule.counts() {
            self.key(rule, ctx)
        } else {
            String::new()
        };
        let gate = match self.gate_op(rule, &key, opened) {
            Ok(g) => g,
            Err(Local::Miss) => return Asked::Decided(None),
            Err(Local::Unavailable) => return Asked::Decided(self.unavailable(rule.label())),
        };
        let count = rule.counts().then(|| format!("r{}\u{1e}{key}", rule.index));
        if gate.is_none() && count.is_none() {
            let done = Done::Rule {
                applies: true,
                tally: Default::default(),
                count: 1,
            };
            return Asked::Decided(self.finish(rule, &key, Ok(done)));
        }
        let op = Op::Rule { gate, count };
        self.now_or_suspend(op, rule.index as u32, now, |done| {
            Asked::Decided(self.finish(rule, &key, done))
        })
    }

    /// A rule's decision once its gate and counter answered (None: the
    /// rule does not apply).
    fn finish(&self, rule: &Rule, key: &str, done: Answer<Done>) -> Option<Decision> {
        let Ok(Done::Rule {
            applies,
            tally,
            count: n,
        }) = done
        else {
            return self.unavailable(rule.label());
        };
        if !applies {
            return None;
        }
        let tag = rule.gate.map(|g| match g {
            Gate::Rate { max, window } => Tag::Rate { max, window },
            Gate::Concurrent { max } => Tag::Concurrent { max },
            Gate::Greylist { retry_after, .. } => Tag::Greylist { retry_after },
            Gate::Reputation { .. } => Tag::Reputation {
                attempts: tally.attempts,
                failures: tally.failures,
            },
        });
        if rule.times.is_some_and(|t| n > t) {
            return None;
        }
        if let Some(p) = rule.probability {
            if self.draw(rule.index, key, n, 0) >= p {
                return None;
            }
        }
        let step = match &rule.outcome {
            RuleOutcome::Step(s) => s,
            RuleOutcome::Sequence(items) => {
                let i = (n as usize).min(items.len()).saturating_sub(1);
                items.get(i)?
            }
        };
        let delay = rule
            .delay
            .map_or(Duration::ZERO, |d| d.pick(self.draw(rule.index, key, n, 1)));
        Some(Decision {
            rule: Some(rule.label()),
            outcome: step_outcome(step),
            delay,
            close: if matches!(step, Step::TlsAbort) {
                Some(true)
            } else {
                rule.close
            },
            drip: rule.drip,
            tag,
        })
    }

    /// The rules after `after` (all of them for None), in file order; then
    /// the magic recipients.
    fn rules_from(
        &self,
        ctx: &Context<'_>,
        now: Instant,
        after: Option<usize>,
        opened: &Opened,
    ) -> Asked {
        let headers = OnceCell::new();
        for i in self.index.candidates(ctx) {
            if after.is_some_and(|a| i <= a) {
                continue;
            }
            let rule = &self.scenario.rules[i];
            match self.try_rule(rule, ctx, now, opened, &headers) {
                Asked::Decided(None) => {}
                decided => return decided,
            }
        }
        if self.scenario.server.magic_recipients {
            return magic::decide(self, ctx, now);
        }
        Asked::Decided(None)
    }
}

/// How a gate decided without the store.
enum Local {
    Miss,
    Unavailable,
}

/// Where a decision suspended when it is not at a rule (a rule's cursor is
/// its index).
pub(super) const AT_CONNECT: u32 = u32::MAX;
pub(super) const AT_MAGIC_GREYLIST: u32 = u32::MAX - 1;
pub(super) const AT_MAGIC_TEMPFAIL: u32 = u32::MAX - 2;

/// A stable hash of what a scenario decides with, to namespace its shared
/// counters: a changed scenario starts fresh.
fn rules_hash(s: &Scenario) -> u64 {
    let text = format!("{:?}|{}", s.rules, s.server.magic_recipients);
    fnv1a(FNV_OFFSET, text.as_bytes())
}

/// What `tls_abort` sends before it closes: the usual go-ahead.
const TLS_ABORT: &[u8] = b"220 2.0.0 Ready to start TLS\r\n";

pub(super) fn step_outcome(step: &Step) -> Outcome {
    match step {
        Step::Reply(r) => Outcome::Reply(r.clone()),
        Step::Accept => Outcome::Accept,
        Step::Disconnect => Outcome::Disconnect,
        Step::Hang => Outcome::Hang,
        Step::Raw(b) => Outcome::Raw(b.clone()),
        Step::TlsAbort => Outcome::Raw(TLS_ABORT.to_vec()),
    }
}

impl Policy for Engine {
    fn ask(&self, ctx: &Context<'_>, now: Instant) -> Asked {
        if ctx.stage != Stage::Connect {
            return self.rules_from(ctx, now, None, &Opened::new());
        }
        let keys = self.concurrent_keys(ctx, now);
        if keys.is_empty() {
            return self.rules_from(ctx, now, None, &Opened::new());
        }
        let op = Op::Open(keys.iter().map(|(_, k)| k.clone()).collect());
        self.now_or_suspend(op, AT_CONNECT, now, |done| {
            let opened = self.opened(ctx.session_id, keys, done);
            self.rules_from(ctx, now, None, &opened)
        })
    }

    fn resume(&self, ctx: &Context<'_>, now: Instant, at: Cursor, done: Answer<Done>) -> Asked {
        match at.0 {
            AT_CONNECT => {
                let keys = self.concurrent_keys(ctx, now);
                let opened = self.opened(ctx.session_id, keys, done);
                self.rules_from(ctx, now, None, &opened)
            }
            AT_MAGIC_GREYLIST | AT_MAGIC_TEMPFAIL => magic::resume(self, ctx, at.0, done),
            i => {
                let i = i as usize;
                let Some(rule) = self.scenario.rules.get(i) else {
                    return Asked::Decided(None);
                };
                let key = self.key(rule, ctx);
                match self.finish(rule, &key, done) {
                    Some(d) => Asked::Decided(Some(d)),
                    None => {
                        let opened = match ctx.stage {
                            Stage::Connect => self.opened_of(ctx.session_id),
                            _ => Opened::new(),
                        };
                        self.rules_from(ctx, now, Some(i), &opened)
                    }
                }
            }
        }
    }

    fn observe_rcpt(
        &self,
        ctx: &Context<'_>,
        code: u16,
        tag: Option<&Tag>,
        now: Instant,
    ) -> Option<Op> {
        // Reputation counts recipients the receiver judged: accepted (2xx)
        // or refused (5xx). Deferrals say nothing about the list, and the
        // reputation rule's own replies must not feed it.
        if !(200..300).contains(&code) && !(500..600).contains(&code) {
            return None;
        }
        if matches!(tag, Some(Tag::Reputation { .. })) || self.index.reputation.is_empty() {
            return None;
        }
        let mut items = vec![];
        for &i in &self.index.reputation {
            let rule = &self.scenario.rules[i as usize];
            if let Some(Gate::Reputation { window, .. }) = rule.gate {
                let key = format!("p{}\u{1e}{}", rule.index, self.key(rule, ctx));
                items.push((key, code >= 500, window));
            }
        }
        let op = Op::Record(items);
        self.store.run_now(&op, now).is_none().then_some(op)
    }

    fn session_closed(&self, session_id: u64) -> Option<Op> {
        let (keys, _) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_id)?;
        let op = Op::Close(keys);
        // Closing needs no clock: any instant will do.
        self.store.run_now(&op, self.epoch).is_none().then_some(op)
    }
}

#[cfg(test)]
mod tests {
    //! The index must pick exactly the rule a scan of every rule picks.

    use std::net::IpAddr;

    use rand::seq::IndexedRandom;

    use super::*;

    impl Engine {
        /// `decide` without the index: every rule, in file order.
        fn decide_linear(&self, ctx: &Context<'_>, now: Instant) -> Option<Decision> {
            let headers = OnceCell::new();
            self.scenario.rules.iter().find_map(|rule| {
                match self.try_rule(rule, ctx, now, &Opened::new(), &headers) {
                    Asked::Decided(d) => d,
                    Asked::Suspend { .. } => unreachable!("the memory store answers at once"),
                }
            })
        }
    }

    const ADDRS: &[&str] = &[
        "user0@dom0.test",
        "User1@Dom1.TEST",
        "user1@dom1.test",
        "user2@dom2.test",
        "a@b@dom1.test",
        "@dom0.test",
        "nobody@else.test",
        "ΣΊΣΥΦΟΣ@dom2.test",
        "σίσυφοσ@DOM2.test",
        // The null reverse-path (MAIL FROM:<>, RFC 5321 §4.5.5).
        "",
        "kelvin@dom1.test",
        "NOBODY7@dom0.test",
        "never12@else.test",
    ];
    const PATTERNS: &[&str] = &[
        "\"user0@dom0.test\"",
        "\"USER1@dom1.test\"",
        "\"*@dom1.test\"",
        "\"*@DOM2.TEST\"",
        "\"*@dom0.test\"",
        "\"user1@*\"",
        "\"user?@dom1.test\"",
        "\"*\"",
        "\"/^user[12]@/\"",
        "[\"user0@dom0.test\", \"*@dom2.test\"]",
        "[\"user2@dom2.test\", \"/dom0/\"]",
        "[\"*@dom1.test\", \"a@b@dom1.test\"]",
        "\"σίσυφος@dom2.test\"",
        "\"@dom0.test\"",
        // Shapes only the prefilter sets rule out: literal prefixes, `?`,
        // case differences, the empty pattern, globs outside ASCII, and
        // lists mixing globs and expressions.
        "\"nobody7@*\"",
        "\"NoBody?@*.TEST\"",
        "\"user*\"",
        "\"*@dom?.test\"",
        "\"\"",
        "[\"\", \"never*\"]",
        "\"\\u212Aelvin@*\"",
        "\"σίσυφοσ@*\"",
        "\"/^never[0-9]+@/\"",
        "\"/(?i)^KELVIN@/\"",
        "\"/^$/\"",
        "[\"nobody?@dom0.test\", \"/^user2@/\", \"kelvin@*\"]",
        "[\"/dom1/\", \"*@else.test\"]",
    ];
    const ONS: &[&str] = &[
        "\"mail\"",
        "\"rcpt\"",
        "\"rcpt\"",
        "\"data\"",
        "\"message\"",
        "\"any\"",
        "[\"mail\", \"rcpt\"]",
        "[\"rcpt\", \"message\"]",
    ];
    const STAGES: &[Stage] = &[
        Stage::Ehlo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Rcpt,
        Stage::Data,
        Stage::Message,
        Stage::Rset,
    ];

    fn rule(rng: &mut ChaCha8Rng, i: usize) -> String {
        let mut when = vec![];
        if rng.random_bool(0.6) {
            when.push(format!("rcpt = {}", PATTERNS.choose(rng).unwrap()));
        }
        if rng.random_bool(0.4) {
            when.push(format!("mail_from = {}", PATTERNS.choose(rng).unwrap()));
        }
        let mut extra = String::new();
        if rng.random_bool(0.2) {
            extra.push_str(&format!("times = {}\n", rng.random_range(1..3)));
        }
        if rng.random_bool(0.2) {
            extra.push_str("probability = 0.5\n");
        }
        format!(
            "[[rule]]\non = {}\nwhen = {{ {} }}\nreply = \"550 5.7.1 r{i}\"\n{extra}\n",
            ONS.choose(rng).unwrap(),
            when.join(", ")
        )
    }

    fn scenario(rng: &mut ChaCha8Rng) -> Option<Scenario> {
        let n = rng.random_range(1..30);
        let text: String = (0..n).map(|i| rule(rng, i)).collect();
        let text = format!("[server]\nseed = 7\n\n{text}");
        super::super::parse(&text, "t.toml", "t").ok()
    }

    fn addr(rng: &mut ChaCha8Rng) -> String {
        ADDRS.choose(rng).unwrap().to_string()
    }

    #[test]
    fn the_index_picks_the_rule_a_scan_of_every_rule_picks() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let now = Instant::now();
        let (mut checked, mut decided) = (0, 0);
        for _ in 0..800 {
            let Some(s) = scenario(&mut rng) else {
                continue;
            };
            let s = Arc::new(s);
            // Each engine keeps its own counters, fed the same questions.
            let indexed = Engine::new(s.clone(), now);
            let linear = Engine::new(s, now);
            for _ in 0..60 {
                let stage = *STAGES.choose(&mut rng).unwrap();
                let from = rng.random_bool(0.8).then(|| addr(&mut rng));
                let rcpt = (stage == Stage::Rcpt && rng.random_bool(0.9)).then(|| addr(&mut rng));
                let rcpts: Vec<String> = (0..rng.random_range(0..3))
                    .map(|_| addr(&mut rng))
                    .collect();
                let ctx = Context {
                    stage,
                    session_id: 1,
                    command: None,
                    client_ip: IpAddr::from([192, 0, 2, 1]),
                    helo: Some("client.test"),
                    mail_from: from.as_deref(),
                    rcpt: rcpt.as_deref(),
                    rcpts: &rcpts,
                    tls: false,
                    authenticated: false,
                    auth_user: None,
                    size: None,
                    message: Some(b"Subject: x\r\n\r\nhi\r\n"),
                };
                let a = indexed.decide(&ctx, now).map(|d| (d.rule, d.outcome));
                let b = linear.decide_linear(&ctx, now).map(|d| (d.rule, d.outcome));
                assert_eq!(a, b, "{ctx:?}\n{:#?}", indexed.scenario.rules);
                checked += 1;
                decided += a.is_some() as usize;
            }
        }
        assert!(checked > 15_000, "only {checked} decisions compared");
        assert!(
            decided > checked / 5,
            "only {decided} of {checked} matched a rule"
        );
    }
}
