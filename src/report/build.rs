//! Builds a [`Report`] by folding over the typed events of transcripts:
//! `mail`, `rcpt` and `transaction` give the attempts, `greeted`,
//! `command` and `reply` the manners and the limits. Senders are client
//! IPs, so attempts group across connections.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::UNIX_EPOCH;

use super::*;
use crate::capture::{Event, EventKind, Limit, Said};
use crate::proto::{Stage, TxEnd};
use crate::scenario::model::Expect;

impl Said {
    fn class(&self) -> u16 {
        self.code.unwrap_or(0) / 100
    }
}

/// A recipient accepted in the open transaction, waiting for its end.
struct Pending {
    rcpt: String,
    time: String,
    at_ms: u64,
}

struct OpenTx {
    mail_from: String,
    rcpts: Vec<Pending>,
}

struct SessionState {
    listener: String,
    id: u64,
    /// The connection's `IP:port`, as shown.
    client: String,
    /// Who sent: the client's IP. Real MTAs open a new connection (a new
    /// port) for every retry, so this is what groups their attempts.
    sender: String,
    /// None until HELO/EHLO was accepted; then whether PIPELINING was offered.
    pipelining: Option<bool>,
    tx: Option<OpenTx>,
    /// MAIL was refused: recipients sent anyway are decided by that reply.
    refused_mail: Option<(String, Said)>,
    saw_421: bool,
    flagged_421: bool,
    flagged_pipelining: bool,
    flagged_bare: bool,
    quit: bool,
}

/// One refusal by a rate limit.
struct RateRefusal {
    at_ms: u64,
    window_ms: u64,
    time: String,
    session: u64,
    reply: String,
}

struct Builder<'a> {
    attempts: Vec<(String, Attempt)>,
    refusals: Vec<Refusal>,
    findings: Vec<Finding>,
    /// (sender, rule) -> its rate-limit refusals.
    rate_refusals: BTreeMap<(String, String), Vec<RateRefusal>>,
    /// sender -> minute -> (attempts, failures)
    judged: BTreeMap<String, BTreeMap<u64, (u64, u64)>>,
    turned: HashMap<String, (String, Option<String>, u64, u64)>,
    /// sender -> HELO names it used, and its connections.
    senders: BTreeMap<String, SenderSeen>,
    /// IPs that greeted with several names (Postfix and Haraka on one
    /// host): there the HELO name tells the senders apart.
    shared_ips: HashSet<String>,
    expects: &'a [Expect],
}

#[derive(Default)]
struct SenderSeen {
    helos: Vec<String>,
    connections: u64,
}

/// The sender of a connection: the IP of `IP:port` (`[v6]:port` too);
/// anything else is taken whole.
pub fn sender_of(client: &str) -> String {
    if let Ok(sa) = client.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    client.to_string()
}

/// The IPs whose connections greeted with more than one name.
fn shared_ips(events: &[Event]) -> HashSet<String> {
    let mut ip_of: HashMap<(&str, u64), String> = HashMap::new();
    let mut names: HashMap<String, HashSet<&str>> = HashMap::new();
    for ev in events {
        let key = (&*ev.listener, ev.session);
        match &ev.kind {
            EventKind::Connect { client } => {
                ip_of.insert(key, sender_of(client));
            }
            EventKind::Greeted { helo, .. } => {
                if let Some(ip) = ip_of.get(&key) {
                    names.entry(ip.clone()).or_default().insert(helo);
                }
            }
            _ => {}
        }
    }
    names
        .into_iter()
        .filter(|(_, n)| n.len() > 1)
        .map(|(ip, _)| ip)
        .collect()
}

fn millis(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn outcome_of(said: &Said) -> Outcome {
    match said.class() {
        2 | 3 => Outcome::Delivered,
        4 => Outcome::Deferred,
        _ => Outcome::Failed,
    }
}

/// Builds the report. `expects` come from the scenario.
pub fn build(events: &[Event], expects: &[Expect], skipped_lines: usize) -> Report {
    let mut b = Builder {
        attempts: vec![],
        refusals: vec![],
        findings: vec![],
        rate_refusals: BTreeMap::new(),
        judged: BTreeMap::new(),
        turned: HashMap::new(),
        senders: BTreeMap::new(),
        shared_ips: shared_ips(events),
        expects,
    };
    let mut sessions: HashMap<(std::sync::Arc<str>, u64), SessionState> = HashMap::new();
    let mut count = 0;
    for ev in events {
        let key = (ev.listener.clone(), ev.session);
        if let EventKind::Connect { client } = &ev.kind {
            count += 1;
            sessions.insert(key, SessionState::new(ev, client, sender_of(client)));
            continue;
        }
        let Some(s) = sessions.get_mut(&key) else {
            continue;
        };
        if b.on_event(s, ev) {
            if let Some(s) = sessions.remove(&key) {
                b.on_close(s, ev);
            }
        }
    }
    // Sessions still open at the end of the transcript (a live file, or a
    // server stopped mid-session): their finished transactions are judged
    // already; the open one is in progress, neither delivered nor failed.
    let in_progress = sessions.len();
    for s in sessions.values() {
        b.senders.entry(s.sender.clone()).or_default().connections += 1;
    }
    b.finish(count, in_progress, skipped_lines)
}

impl SessionState {
    fn new(ev: &Event, client: &str, sender: String) -> Self {
        Self {
            listener: ev.listener.to_string(),
            id: ev.session,
            client: client.to_string(),
            sender,
            pipelining: None,
            tx: None,
            refused_mail: None,
            saw_421: false,
            flagged_421: false,
            flagged_pipelining: false,
            flagged_bare: false,
            quit: false,
        }
    }
}

impl Builder<'_> {
    /// Folds one event of a session; true when the session closed.
    fn on_event(&mut self, s: &mut SessionState, ev: &Event) -> bool {
        match &ev.kind {
            EventKind::Command {
                line,
                stage,
                pipelined,
            } => self.on_command(s, ev, line, *stage, *pipelined),
            EventKind::Reply {
                code,
                rule,
                limit,
                text,
                ..
            } => self.on_reply(s, ev, *code, rule, limit.as_ref(), text),
            EventKind::Greeted {
                helo, pipelining, ..
            } => {
                s.pipelining = Some(*pipelining);
                if self.shared_ips.contains(&s.sender) {
                    s.sender = format!("{} ({helo})", s.sender);
                }
                let seen = self.senders.entry(s.sender.clone()).or_default();
                if !seen.helos.contains(helo) {
                    seen.helos.push(helo.clone());
                }
            }
            EventKind::Refused { stage, answer } => {
                self.refusal(s, ev, *stage, None, answer);
            }
            EventKind::Mail { mail_from, answer } => {
                s.refused_mail = None;
                if answer.class() == 2 {
                    // A transaction the session dropped without a word
                    // (STARTTLS forgets it, RFC 3207 §4.2) ends here.
                    self.on_tx_end(s, TxEnd::Reset, Stage::Mail, None);
                    s.tx = Some(OpenTx {
                        mail_from: mail_from.clone(),
                        rcpts: vec![],
                    });
                } else {
                    self.refusal(s, ev, Stage::Mail, Some(mail_from.clone()), answer);
                    s.refused_mail = Some((mail_from.clone(), answer.clone()));
                }
            }
            EventKind::Rcpt { rcpt, answer } => self.on_rcpt(s, ev, rcpt, answer),
            EventKind::Transaction {
                end, stage, answer, ..
            } => self.on_tx_end(s, *end, *stage, answer.as_ref()),
            EventKind::Close { .. } => return true,
            EventKind::Message {
                bare_lf, bare_cr, ..
            } if (*bare_lf || *bare_cr) && !s.flagged_bare => {
                s.flagged_bare = true;
                self.bare_line_ends(s, ev, *bare_lf, *bare_cr);
            }
            _ => {}
        }
        false
    }

    fn on_close(&mut self, mut s: SessionState, ev: &Event) {
        self.senders
            .entry(s.sender.clone())
            .or_default()
            .connections += 1;
        let EventKind::Close { by, .. } = &ev.kind else {
            return;
        };
        // No Transaction event: the connection ended under it.
        let end = if by == "server" {
            TxEnd::Dropped
        } else {
            TxEnd::Abandoned
        };
        self.on_tx_end(&mut s, end, Stage::Rcpt, None);
        if by == "client" && !s.quit && !s.saw_421 {
            self.finding(
                &s,
                ev,
                "no_quit",
                Severity::Warning,
                "left without QUIT".into(),
            );
        }
    }

    /// RFC 5321 §2.3.8: lines end with CR LF only. Since the SMTP smuggling
    /// disclosures (CVE-2023-51764) receivers refuse bare ones: Postfix 3.9
    /// `smtpd_forbid_bare_newline`, Sendmail 8.18, Exim 4.97, Microsoft 365.
    fn bare_line_ends(&mut self, s: &SessionState, ev: &Event, lf: bool, cr: bool) {
        let what = match (lf, cr) {
            (true, true) => "bare LF and bare CR",
            (true, false) => "a bare LF",
            _ => "a bare CR",
        };
        self.finding(
            s,
            ev,
            "bare_line_ends",
            Severity::Warning,
            format!(
                "sent message data with {what} (a line end without CR LF); current receivers refuse it (Postfix smtpd_forbid_bare_newline, Exim, Sendmail, Microsoft 365): end every line with CR LF"
            ),
        );
    }

    fn finding(
        &mut self,
        s: &SessionState,
        ev: &Event,
        kind: &'static str,
        severity: Severity,
        message: String,
    ) {
        self.findings.push(Finding {
            kind,
            severity,
            time: ev.ts.to_string(),
            client: s.sender.clone(),
            session: s.id,
            message,
        });
    }

    fn on_command(
        &mut self,
        s: &mut SessionState,
        ev: &Event,
        line: &str,
        stage: Option<Stage>,
        pipelined: bool,
    ) {
        // RFC 5321 §3.8: after 421 the server closes; a client that keeps
        // talking did not read the reply.
        if s.saw_421 && !s.flagged_421 {
            s.flagged_421 = true;
            self.finding(
                s,
                ev,
                "command_after_421",
                Severity::Error,
                format!("sent {line:?} after a 421 reply on the same connection"),
            );
        }
        // RFC 2920 §3: only a server that offered PIPELINING may be sent
        // commands without waiting for each reply.
        if pipelined && s.pipelining == Some(false) && !s.flagged_pipelining {
            s.flagged_pipelining = true;
            self.finding(
                s,
                ev,
                "pipelining_unadvertised",
                Severity::Error,
                format!("pipelined {line:?} although PIPELINING was not advertised"),
            );
        }
        if stage == Some(Stage::Quit) {
            s.quit = true;
        }
    }

    fn on_reply(
        &mut self,
        s: &mut SessionState,
        ev: &Event,
        code: Option<u16>,
        rule: &Option<String>,
        limit: Option<&Limit>,
        text: &str,
    ) {
        if code == Some(421) {
            s.saw_421 = true;
        }
        match limit {
            Some(Limit::Rate { window_ms, .. }) => self
                .rate_refusals
                .entry((s.sender.clone(), rule.clone().unwrap_or_default()))
                .or_default()
                .push(RateRefusal {
                    at_ms: millis(&ev.ts),
                    window_ms: *window_ms,
                    time: ev.ts.to_string(),
                    session: s.id,
                    reply: text.lines().last().unwrap_or("").trim_end().to_string(),
                }),
            Some(Limit::Reputation { attempts, failures }) => {
                self.turned.entry(s.sender.clone()).or_insert((
                    ev.ts.to_string(),
                    rule.clone(),
                    *attempts,
                    *failures,
                ));
            }
            _ => {}
        }
    }

    fn on_rcpt(&mut self, s: &mut SessionState, ev: &Event, rcpt: &str, answer: &Said) {
        // Reputation counts what the receiver judged about the recipient
        // itself: accepted or refused for good, not deferred or refused by
        // the reputation rule.
        if matches!(answer.class(), 2 | 5)
            && !matches!(answer.limit, Some(Limit::Reputation { .. }))
        {
            let e = self
                .judged
                .entry(s.sender.clone())
                .or_default()
                .entry(millis(&ev.ts) / 60_000)
                .or_default();
            e.0 += 1;
            e.1 += (answer.class() == 5) as u64;
        }
        let pending = Pending {
            rcpt: rcpt.to_string(),
            time: ev.ts.to_string(),
            at_ms: millis(&ev.ts),
        };
        if answer.class() == 2 {
            if let Some(tx) = s.tx.as_mut() {
                tx.rcpts.push(pending);
            }
            return;
        }
        // Refused: this attempt ends here, or at the refused MAIL before it.
        let (from, said, stage) = match (&s.tx, &s.refused_mail) {
            (None, Some((from, mail))) => (from.clone(), mail.clone(), Stage::Mail),
            (tx, _) => (
                tx.as_ref().map(|t| t.mail_from.clone()).unwrap_or_default(),
                answer.clone(),
                Stage::Rcpt,
            ),
        };
        let outcome = outcome_of(&said);
        self.attempt(s, from, pending, outcome, stage, Some(&said));
    }

    fn on_tx_end(&mut self, s: &mut SessionState, end: TxEnd, stage: Stage, answer: Option<&Said>) {
        let Some(tx) = s.tx.take() else { return };
        let outcome = match (end, answer) {
            (TxEnd::Delivered, _) => Outcome::Delivered,
            (TxEnd::Refused, Some(a)) => outcome_of(a),
            (TxEnd::Refused | TxEnd::Dropped, _) => Outcome::Dropped,
            (TxEnd::Reset | TxEnd::Abandoned, _) => Outcome::Abandoned,
        };
        for p in tx.rcpts {
            self.attempt(s, tx.mail_from.clone(), p, outcome, stage, answer);
        }
    }

    fn attempt(
        &mut self,
        s: &SessionState,
        mail_from: String,
        p: Pending,
        outcome: Outcome,
        stage: Stage,
        said: Option<&Said>,
    ) {
        let attempt = Attempt {
            rcpt: p.rcpt,
            time: p.time,
            at_ms: p.at_ms,
            listener: s.listener.clone(),
            session: s.id,
            client: s.client.clone(),
            sender: s.sender.clone(),
            outcome,
            stage: stage.name().into(),
            reply: said.map(|x| x.reply.clone()),
            code: said.and_then(|x| x.code),
            rule: said.and_then(|x| x.rule.clone()),
            greylist_ms: said.and_then(|x| match x.limit {
                Some(Limit::Greylist { retry_after_ms }) => Some(retry_after_ms),
                _ => None,
            }),
        };
        self.attempts.push((mail_from, attempt));
    }

    fn refusal(
        &mut self,
        s: &SessionState,
        ev: &Event,
        stage: Stage,
        mail_from: Option<String>,
        said: &Said,
    ) {
        self.refusals.push(Refusal {
            time: ev.ts.to_string(),
            client: s.client.clone(),
            sender: s.sender.clone(),
            session: s.id,
            stage: stage.name().into(),
            mail_from,
            reply: said.reply.clone(),
            rule: said.rule.clone(),
        });
    }

    fn finish(mut self, sessions: usize, in_progress: usize, skipped_lines: usize) -> Report {
        self.attempts.sort_by_key(|(_, a)| a.at_ms);
        let mut deliveries: Vec<Delivery> = vec![];
        let mut open: HashMap<(String, String), usize> = HashMap::new();
        for (from, a) in std::mem::take(&mut self.attempts) {
            let key = (from.to_ascii_lowercase(), a.rcpt.to_ascii_lowercase());
            let idx = match open.get(&key) {
                Some(&i) if !deliveries[i].delivered() => i,
                _ => {
                    deliveries.push(Delivery {
                        mail_from: from.clone(),
                        rcpt: a.rcpt.clone(),
                        outcome: a.outcome,
                        attempts: vec![],
                        intervals_ms: vec![],
                    });
                    open.insert(key, deliveries.len() - 1);
                    deliveries.len() - 1
                }
            };
            let d = &mut deliveries[idx];
            if let Some(last) = d.attempts.last() {
                d.intervals_ms.push(a.at_ms.saturating_sub(last.at_ms));
            }
            d.outcome = a.outcome;
            d.attempts.push(a);
        }
        for d in &deliveries {
            self.delivery_findings(d);
        }
        self.rate_findings();
        self.findings.sort_by(|a, b| a.time.cmp(&b.time));
        self.findings = per_sender(std::mem::take(&mut self.findings));
        let expectations = self
            .expects
            .iter()
            .map(|e| verdict(e, &deliveries))
            .collect();
        let reputation = self.reputation();
        Report {
            sessions,
            in_progress,
            senders: self.senders.len(),
            deliveries,
            refusals: self.refusals,
            findings: self.findings,
            reputation,
            expectations,
            skipped_lines,
        }
    }

    fn delivery_findings(&mut self, d: &Delivery) {
        let mut permanent: Option<&Attempt> = None;
        let mut grey: Option<(&Attempt, u64)> = None;
        for a in &d.attempts {
            if let Some(p) = permanent {
                self.findings.push(Finding {
                    kind: "retry_after_permanent",
                    severity: Severity::Error,
                    time: a.time.clone(),
                    client: a.sender.clone(),
                    session: a.session,
                    message: format!(
                        "{} -> {}: tried again {} after the permanent failure \"{}\"",
                        d.mail_from,
                        d.rcpt,
                        human_ms(a.at_ms.saturating_sub(p.at_ms)),
                        p.reply.as_deref().unwrap_or("")
                    ),
                });
            }
            if let Some((g, wait)) = grey {
                let waited = a.at_ms.saturating_sub(g.at_ms);
                if waited < wait {
                    self.findings.push(Finding {
                        kind: "greylist_retry_too_early",
                        severity: Severity::Error,
                        time: a.time.clone(),
                        client: a.sender.clone(),
                        session: a.session,
                        message: format!(
                            "{} -> {}: retried {} after being greylisted; the server asked for {}",
                            d.mail_from,
                            d.rcpt,
                            human_ms(waited),
                            human_ms(wait)
                        ),
                    });
                }
            }
            if a.outcome == Outcome::Failed && permanent.is_none() {
                permanent = Some(a);
            }
            if let (Some(ms), None) = (a.greylist_ms, grey) {
                grey = Some((a, ms));
            }
        }
    }

    fn rate_findings(&mut self) {
        for ((client, rule), refusals) in &self.rate_refusals {
            let Some(first) = refusals.first() else {
                continue;
            };
            let again: Vec<&RateRefusal> = refusals[1..]
                .iter()
                .filter(|r| r.at_ms.saturating_sub(first.at_ms) < first.window_ms)
                .collect();
            if let Some(last) = again.last() {
                self.findings.push(Finding {
                    kind: "rate_limit_ignored",
                    severity: Severity::Error,
                    time: last.time.clone(),
                    client: client.clone(),
                    session: last.session,
                    message: format!(
                        "told \"{}\" at {} (rule {rule:?}, a {} window) and refused {} more time{} inside that window",
                        first.reply,
                        first.time,
                        human_ms(first.window_ms),
                        again.len(),
                        if again.len() == 1 { "" } else { "s" }
                    ),
                });
            }
        }
    }

    fn reputation(&self) -> Vec<Reputation> {
        let mut out = vec![];
        for (client, minutes) in &self.judged {
            let turned = self.turned.get(client);
            let (attempts, failures) = minutes
                .values()
                .fold((0, 0), |(a, f), (x, y)| (a + x, f + y));
            if failures == 0 && turned.is_none() {
                continue;
            }
            let seen = self.senders.get(client);
            out.push(Reputation {
                client: client.clone(),
                helos: seen.map(|s| s.helos.clone()).unwrap_or_default(),
                connections: seen.map_or(0, |s| s.connections),
                attempts,
                failures,
                series: minutes
                    .iter()
                    .map(|(m, (a, f))| ReputationPoint {
                        minute: humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + std::time::Duration::from_secs(m * 60),
                        )
                        .to_string(),
                        attempts: *a,
                        failures: *f,
                    })
                    .collect(),
                turned_at: turned.map(|t| t.0.clone()),
                turned_by: turned.and_then(|t| t.1.clone()),
                turned_after: turned.map(|t| (t.2, t.3)),
            });
        }
        out
    }
}

/// Findings about one connection's manners (421, pipelining, QUIT) once
/// per sender and kind: a sender that reconnects for every retry repeats
/// them on each connection, and one line with the count says it better.
fn per_sender(findings: Vec<Finding>) -> Vec<Finding> {
    const PER_CONNECTION: [&str; 4] = [
        "command_after_421",
        "pipelining_unadvertised",
        "no_quit",
        "bare_line_ends",
    ];
    let mut out: Vec<Finding> = vec![];
    let mut first: HashMap<(&'static str, String), (usize, u64)> = HashMap::new();
    for f in findings {
        if !PER_CONNECTION.contains(&f.kind) {
            out.push(f);
            continue;
        }
        match first.get_mut(&(f.kind, f.client.clone())) {
            Some((_, n)) => *n += 1,
            None => {
                first.insert((f.kind, f.client.clone()), (out.len(), 1));
                out.push(f);
            }
        }
    }
    for (i, n) in first.into_values() {
        if n > 1 {
            out[i].message = format!("{} (on {n} connections)", out[i].message);
        }
    }
    out
}

/// "1.5s", "120ms", "5m 3s".
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
    }
}

fn verdict(e: &Expect, deliveries: &[Delivery]) -> Verdict {
    let chosen: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| e.rcpt.as_ref().is_none_or(|p| p.matches(&d.rcpt)))
        .filter(|d| e.mail_from.as_ref().is_none_or(|p| p.matches(&d.mail_from)))
        .collect();
    let fail = |detail: String| Verdict {
        name: e.name.clone(),
        passed: false,
        detail,
    };
    if chosen.is_empty() {
        return fail("no matching delivery was attempted".into());
    }
    for d in &chosen {
        let who = format!("{} -> {}", d.mail_from, d.rcpt);
        if let Some(want) = e.delivered {
            if d.delivered() != want {
                return fail(format!(
                    "{who} was {}delivered after {} attempt{} (last: {})",
                    if d.delivered() { "" } else { "not " },
                    d.attempts.len(),
                    if d.attempts.len() == 1 { "" } else { "s" },
                    d.attempts
                        .last()
                        .and_then(|a| a.reply.clone())
                        .unwrap_or_else(|| format!("{:?}", d.outcome).to_lowercase())
                ));
            }
        }
        if let Some((lo, hi)) = e.attempts {
            let n = d.attempts.len() as u64;
            if n < lo || hi.is_some_and(|h| n > h) {
                let range = match hi {
                    Some(h) if h == lo => format!("{lo}"),
                    Some(h) => format!("{lo}..{h}"),
                    None => format!("at least {lo}"),
                };
                return fail(format!(
                    "{who} took {n} attempt{}, expected {range}",
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
        if let Some(min) = e.min_interval {
            let min_ms = min.as_millis() as u64;
            if let Some(&short) = d.intervals_ms.iter().find(|&&i| i < min_ms) {
                return fail(format!(
                    "{who} retried after {}, expected at least {}",
                    human_ms(short),
                    human_ms(min_ms)
                ));
            }
        }
        if e.no_retry_after_permanent {
            if let Some(i) = d.attempts.iter().position(|a| a.outcome == Outcome::Failed) {
                if i + 1 < d.attempts.len() {
                    return fail(format!(
                        "{who} was tried again after the permanent failure \"{}\"",
                        d.attempts[i].reply.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    Verdict {
        name: e.name.clone(),
        passed: true,
        detail: format!(
            "{} deliver{} checked",
            chosen.len(),
            if chosen.len() == 1 { "y" } else { "ies" }
        ),
    }
}
