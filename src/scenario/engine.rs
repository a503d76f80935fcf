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
use crate::proto::{Context, Decision, Outcome, Policy, Reply, Stage, Tag};
use crate::state::{
    fnv1a, Answer, Backend, FailMode, Greylist, MemoryStore, StateStore, Unavailable, FNV_OFFSET,
    STORE_UNAVAILABLE,
};

/// A scenario ready to serve, with its counters.
pub struct Engine {
    pub scenario: Arc<Scenario>,
    store: Arc<dyn StateStore>,
    seed: u64,
    /// When `during` windows start counting (server start, reload or reset).
    epoch: Instant,
    /// Open-session counters each session holds (for `concurrent`), to
    /// release when it ends.
    open: Mutex<HashMap<u64, Vec<String>>>,
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

    /// At connect: every `concurrent` rule whose conditions hold counts this
    /// session as open under its key. Returns (rule index, sessions open).
    fn register(&self, ctx: &Context<'_>, now: Instant) -> Opened {
        let mut opened = vec![];
        let mut keys = vec![];
        for rule in self.index.candidates(ctx).map(|i| &self.scenario.rules[i]) {
            if matches!(rule.gate, Some(Gate::Concurrent { .. }))
                && rule.applies_at(ctx.stage)
                && self.holds(&rule.when, ctx, now, &OnceCell::new())
            {
                let key = format!("c{}\u{1e}{}", rule.index, self.key(rule, ctx));
                let open = self.store.open(&key);
                if open.is_ok() {
                    keys.push(key);
                }
                opened.push((rule.index, open));
            }
        }
        if !keys.is_empty() {
            self.open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(ctx.session_id, keys);
        }
        opened
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

    /// Whether the rule's gate lets it apply now; the tag says why.
    fn gate(
        &self,
        rule: &Rule,
        key: &str,
        now: Instant,
        opened: &[(usize, Answer<u64>)],
    ) -> Answer<Option<Option<Tag>>> {
        let Some(gate) = rule.gate else {
            return Ok(Some(None));
        };
        let i = rule.index;
        let tag = match gate {
            Gate::Rate { max, window } => {
                if self
                    .store
                    .rate_pass(&format!("l{i}\u{1e}{}", key), max, window, now)?
                {
                    return Ok(None);
                }
                Tag::Rate { max, window }
            }
            Gate::Concurrent { max } => {
                let Some((_, open)) = opened.iter().find(|(r, _)| *r == i) else {
                    return Ok(None);
                };
                // `open` includes this session.
                if (*open)? <= max {
                    return Ok(None);
                }
                Tag::Concurrent { max }
            }
            Gate::Greylist {
                retry_after,
                expire,
            } => {
                match self.store.greylist(
                    &format!("g{i}\u{1e}{}", key),
                    retry_after,
                    expire,
                    now,
                )? {
                    Greylist::Passed => return Ok(None),
                    Greylist::Refused { .. } => Tag::Greylist { retry_after },
                }
            }
            Gate::Reputation {
                window,
                min_attempts,
                max_failure_rate,
            } => {
                let t = self
                    .store
                    .tally(&format!("p{i}\u{1e}{}", key), window, now)?;
                if t.attempts < min_attempts || t.failure_rate() <= max_failure_rate {
                    return Ok(None);
                }
                Tag::Reputation {
                    attempts: t.attempts,
                    failures: t.failures,
                }
            }
        };
        Ok(Some(Some(tag)))
    }

    fn try_rule(
        &self,
        rule: &Rule,
        ctx: &Context<'_>,
        now: Instant,
        opened: &[(usize, Answer<u64>)],
        headers: &OnceCell<Headers>,
    ) -> Option<Decision> {
        if !rule.applies_at(ctx.stage) || !self.holds(&rule.when, ctx, now, headers) {
            return None;
        }
        // The key is built once, for the gate and the counters alike.
        let key = if rule.gate.is_some() || rule.counts() {
            self.key(rule, ctx)
        } else {
            String::new()
        };
        let counted = self.gate(rule, &key, now, opened).and_then(|tag| {
            let n = match (&tag, rule.counts()) {
                (Some(_), true) => self.store.incr(&format!("r{}\u{1e}{key}", rule.index))?,
                _ => 1,
            };
            Ok((tag, n))
        });
        let (tag, n) = match counted {
            Ok((tag, n)) => (tag?, n),
            Err(Unavailable) => return self.unavailable(rule.label()),
        };
        if rule.times.is_some_and(|t| n > t) {
            return None;
        }
        if let Some(p) = rule.probability {
            if self.draw(rule.index, &key, n, 0) >= p {
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
        let delay = rule.delay.map_or(Duration::ZERO, |d| {
            d.pick(self.draw(rule.index, &key, n, 1))
        });
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
}

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
    fn decide(&self, ctx: &Context<'_>, now: Instant) -> Option<Decision> {
        let opened = if ctx.stage == Stage::Connect {
            self.register(ctx, now)
        } else {
            Opened::new()
        };
        let headers = OnceCell::new();
        for i in self.index.candidates(ctx) {
            let rule = &self.scenario.rules[i];
            if let Some(d) = self.try_rule(rule, ctx, now, &opened, &headers) {
                return Some(d);
            }
        }
        if self.scenario.server.magic_recipients {
            return magic::decide(self, ctx, now);
        }
        None
    }

    fn observe_rcpt(&self, ctx: &Context<'_>, code: u16, tag: Option<&Tag>, now: Instant) {
        // Reputation counts recipients the receiver judged: accepted (2xx)
        // or refused (5xx). Deferrals say nothing about the list, and the
        // reputation rule's own replies must not feed it.
        if !(200..300).contains(&code) && !(500..600).contains(&code) {
            return;
        }
        if matches!(tag, Some(Tag::Reputation { .. })) {
            return;
        }
        for &i in &self.index.reputation {
            let rule = &self.scenario.rules[i as usize];
            if let Some(Gate::Reputation { window, .. }) = rule.gate {
                let key = format!("p{}\u{1e}{}", rule.index, self.key(rule, ctx));
                self.store.record(&key, code >= 500, window, now);
            }
        }
    }

    fn session_closed(&self, session_id: u64) {
        let keys = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_id);
        for key in keys.into_iter().flatten() {
            self.store.close(&key);
        }
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
            let opened = if ctx.stage == Stage::Connect {
                self.register(ctx, now)
            } else {
                Opened::new()
            };
            let headers = OnceCell::new();
            self.scenario
                .rules
                .iter()
                .find_map(|rule| self.try_rule(rule, ctx, now, &opened, &headers))
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
