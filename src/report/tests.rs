//! Report tests on transcripts made by real sans-I/O sessions and the rule
//! engine, with a hand-driven clock: every connection comes from its own
//! source port, as a real MTA's retries do.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::capture::{Event, EventKind};
use crate::proto::{Output, Policy, Session, SessionConfig};
use crate::scenario::{self, Engine};

const T0_MS: u64 = 1_700_000_000_000;

struct Sim {
    engine: Arc<Engine>,
    cfg: Arc<SessionConfig>,
    epoch: Instant,
    events: Vec<Event>,
    expects: Vec<scenario::model::Expect>,
    next_id: u64,
}

impl Sim {
    fn new(toml: &str) -> Self {
        let s = scenario::parse(toml, "t.toml", "t").unwrap_or_else(|e| panic!("{e}"));
        let expects = s.expects.clone();
        let epoch = Instant::now();
        Self {
            engine: Arc::new(Engine::new(Arc::new(s), epoch)),
            cfg: Arc::new(SessionConfig::default()),
            epoch,
            events: vec![],
            expects,
            next_id: 1,
        }
    }

    fn push(&mut self, id: u64, ms: u64, kind: EventKind) {
        let ts = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(T0_MS + ms))
            .to_string();
        self.events.push(Event {
            ts: ts.into(),
            listener: "127.0.0.1:2525".into(),
            scenario: "t".into(),
            session: id,
            kind,
        });
    }

    fn record(&mut self, id: u64, ms: u64, outputs: Vec<Output>) -> bool {
        let mut closed = false;
        for o in outputs {
            let kind = match o {
                Output::Command {
                    line,
                    stage,
                    pipelined,
                } => EventKind::Command {
                    line,
                    stage,
                    pipelined,
                },
                Output::Send {
                    bytes,
                    code,
                    rule,
                    tag,
                    ..
                } => EventKind::Reply {
                    code,
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    rule,
                    delay_ms: None,
                    limit: tag.map(Into::into),
                },
                Output::Fact(f) => f.into(),
                Output::Message(m) => EventKind::Message {
                    id: m.id,
                    mail_from: m.mail_from,
                    rcpt: m.rcpts,
                    size: m.size,
                    accepted: m.accepted,
                    reply_code: m.reply_code,
                    tls: m.tls,
                    chunked: m.chunked,
                    bare_lf: m.bare_lf,
                    bare_cr: m.bare_cr,
                },
                Output::Close(reason) => {
                    closed = true;
                    EventKind::Close {
                        by: "server".into(),
                        reason: reason.name(),
                    }
                }
                _ => continue,
            };
            self.push(id, ms, kind);
        }
        closed
    }

    /// One connection from `10.0.0.1:port` at `ms`: each element of `sends`
    /// arrives as one read (several lines in one element are pipelined).
    /// Without a server close, the client closes (`eof`) unless `open`.
    fn conn_from(&mut self, ip: &str, port: u16, ms: u64, sends: &[&str], open: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let peer: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
        let now = self.epoch + Duration::from_millis(ms);
        let policy: Arc<dyn Policy> = self.engine.clone();
        let mut s = Session::new(self.cfg.clone(), policy, peer, id);
        self.push(
            id,
            ms,
            EventKind::Connect {
                client: peer.to_string(),
            },
        );
        let mut closed = self.record(id, ms, s.greet(now));
        for chunk in sends {
            if closed {
                break;
            }
            let out = s.feed(chunk.replace('\n', "\r\n").as_bytes(), now);
            closed = self.record(id, ms, out);
        }
        if !closed && !open {
            self.push(
                id,
                ms,
                EventKind::Close {
                    by: "client".into(),
                    reason: "eof".into(),
                },
            );
        }
        if closed || !open {
            self.engine.session_closed(id);
        }
        id
    }

    fn conn(&mut self, port: u16, ms: u64, sends: &[&str]) -> u64 {
        self.conn_from("10.0.0.1", port, ms, sends, false)
    }

    /// A whole delivery attempt to `rcpt` on a new connection.
    fn send(&mut self, port: u16, ms: u64, rcpt: &str) -> u64 {
        let rcpt_line = format!("RCPT TO:<{rcpt}>\n");
        self.conn(
            port,
            ms,
            &[
                "EHLO mta.sender.test\n",
                "MAIL FROM:<a@b.test>\n",
                &rcpt_line,
                "DATA\n",
                "Subject: t\n\nhi\n.\n",
                "QUIT\n",
            ],
        )
    }

    fn report(&self) -> Report {
        build(&self.events, &self.expects, 0)
    }
}

fn kinds(r: &Report) -> Vec<&'static str> {
    r.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn retries_on_new_connections_group_into_one_delivery() {
    let mut t = Sim::new(
        "[[rule]]\non = \"message\"\nsequence = [\"451 4.3.0 later\", \"451 4.3.0 later\", \"accept\"]\n\
         [[expect]]\nname = \"retries\"\nrcpt = \"*@flaky.test\"\ndelivered = true\nattempts = \"1..3\"\nmin_interval = \"1s\"\n",
    );
    t.send(40001, 0, "x@flaky.test");
    t.send(40002, 2000, "x@flaky.test");
    t.send(40003, 5000, "x@flaky.test");
    t.send(40004, 6000, "x@flaky.test");
    let r = t.report();
    assert_eq!((r.sessions, r.senders, r.in_progress), (4, 1, 0));
    assert_eq!(r.deliveries.len(), 2, "a delivered attempt ends a delivery");
    let d = &r.deliveries[0];
    assert_eq!(d.attempts.len(), 3);
    assert_eq!(d.intervals_ms, [2000, 3000]);
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(d.attempts[0].outcome, Outcome::Deferred);
    assert_eq!(d.attempts[0].stage, "message");
    assert_eq!(d.attempts[0].client, "10.0.0.1:40001");
    assert_eq!(d.attempts[2].client, "10.0.0.1:40003");
    assert_eq!(d.attempts[0].reply.as_deref(), Some("451 4.3.0 later"));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.passed(), "{:?}", r.expectations);
    let text = text(&r);
    assert!(
        text.contains("a@b.test -> x@flaky.test: delivered after 3 attempts, intervals 2.0s, 3.0s"),
        "{text}"
    );
}

#[test]
fn retry_after_permanent_on_a_new_connection() {
    let mut t = Sim::new(
        "[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"gone@x.test\" }\nreply = \"550 5.1.1 no such user\"\n\
         [[expect]]\nname = \"stops after 5xx\"\nno_retry_after_permanent = true\n",
    );
    t.send(40001, 0, "gone@x.test");
    t.send(40002, 300, "gone@x.test");
    let r = t.report();
    assert_eq!(kinds(&r), ["retry_after_permanent"]);
    assert_eq!(r.findings[0].client, "10.0.0.1");
    assert!(r.findings[0]
        .message
        .contains("tried again 300ms after the permanent failure \"550 5.1.1 no such user\""));
    assert!(!r.expectations[0].passed);
    assert_eq!(r.expectations[0].detail, "a@b.test -> gone@x.test was tried again after the permanent failure \"550 5.1.1 no such user\"");
    assert!(!r.passed());
}

#[test]
fn greylist_retried_too_early_on_new_connections() {
    let mut t = Sim::new("[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"60s\" }\nreply = \"450 4.2.0 Greylisted\"\n");
    t.send(40001, 0, "c@d.test");
    t.send(40002, 10_000, "c@d.test");
    t.send(40003, 61_000, "c@d.test");
    let r = t.report();
    assert_eq!(r.deliveries.len(), 1);
    assert_eq!(r.deliveries[0].attempts.len(), 3);
    assert!(r.deliveries[0].delivered());
    assert_eq!(kinds(&r), ["greylist_retry_too_early"]);
    assert!(
        r.findings[0]
            .message
            .contains("retried 10.0s after being greylisted; the server asked for 1m"),
        "{}",
        r.findings[0].message
    );
    assert!(!r.passed());
}

const RATE: &str = "[[rule]]\nname = \"per-recipient rate\"\non = \"rcpt\"\nkey = [\"rcpt\"]\nlimit = { rate = \"2/1m\" }\nreply = \"450 4.2.1 slow down\"\n";

#[test]
fn rate_limit_ignored_by_a_sender_that_reconnects() {
    let mut t = Sim::new(RATE);
    for (i, ms) in [0, 1000, 2000, 3000, 4000].into_iter().enumerate() {
        t.send(40001 + i as u16, ms, "one@x.test");
    }
    let r = t.report();
    assert_eq!(kinds(&r), ["rate_limit_ignored"]);
    let f = &r.findings[0];
    assert_eq!(f.client, "10.0.0.1");
    assert!(
        f.message
            .contains("refused 2 more times inside that window"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("\"per-recipient rate\""),
        "{}",
        f.message
    );
    assert!(!r.passed());
}

#[test]
fn rate_limit_respected_by_a_sender_that_waits() {
    let mut t = Sim::new(RATE);
    for (i, ms) in [0, 1000, 2000, 62_000].into_iter().enumerate() {
        t.send(40001 + i as u16, ms, "one@x.test");
    }
    let r = t.report();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.passed());
    assert_eq!(r.deliveries.len(), 3, "{:?}", r.deliveries);
}

#[test]
fn two_senders_on_the_rate_are_judged_apart() {
    // Each IP is refused once: neither ignored the limit.
    let mut t = Sim::new("[[rule]]\non = \"rcpt\"\nkey = [\"client_ip\"]\nlimit = { rate = \"1/1m\" }\nreply = \"450 4.2.1 slow down\"\n");
    t.send(40001, 0, "one@x.test");
    t.send(40002, 1000, "one@x.test");
    let two = "10.0.0.2";
    t.conn_from(
        two,
        50001,
        0,
        &[
            "EHLO b\n",
            "MAIL FROM:<a@b.test>\n",
            "RCPT TO:<z@x.test>\n",
            "QUIT\n",
        ],
        false,
    );
    t.conn_from(
        two,
        50002,
        1000,
        &[
            "EHLO b\n",
            "MAIL FROM:<a@b.test>\n",
            "RCPT TO:<z@x.test>\n",
            "QUIT\n",
        ],
        false,
    );
    let r = t.report();
    assert_eq!(r.senders, 2);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn command_after_421_on_each_connection_is_one_finding() {
    let mut t = Sim::new("[[rule]]\non = \"mail\"\nreply = \"421 4.7.0 go away\"\nclose = false\n");
    for port in [40001, 40002, 40003] {
        t.conn(
            port,
            0,
            &[
                "EHLO c\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<x@y.test>\n",
                "QUIT\n",
            ],
        );
    }
    let r = t.report();
    assert_eq!(kinds(&r), ["command_after_421"]);
    assert_eq!(r.findings[0].severity, Severity::Error);
    assert!(
        r.findings[0].message.ends_with("(on 3 connections)"),
        "{}",
        r.findings[0].message
    );
    assert_eq!(r.refusals.len(), 3);
    assert_eq!(r.refusals[0].stage, "mail");
}

#[test]
fn bare_line_ends_are_a_warning_once_per_sender() {
    let mut t = Sim::new("");
    // `\n` becomes CR LF on the way; a lone `\r` stays bare.
    for port in [40001, 40002] {
        t.conn(
            port,
            0,
            &[
                "EHLO c\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<x@y.test>\n",
                "DATA\n",
                "a\rb\n.\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<x@y.test>\n",
                "DATA\n",
                "a\rb\n.\n",
                "QUIT\n",
            ],
        );
    }
    let r = t.report();
    assert_eq!(kinds(&r), ["bare_line_ends"]);
    let f = &r.findings[0];
    assert_eq!(f.severity, Severity::Warning);
    assert!(
        f.message.starts_with("sent message data with a bare CR"),
        "{}",
        f.message
    );
    assert!(f.message.contains("current receivers refuse it"));
    assert!(f.message.ends_with("(on 2 connections)"), "{}", f.message);
}

#[test]
fn pipelining_unadvertised_and_no_quit_per_sender() {
    let mut t = Sim::new("");
    // HELO offers no PIPELINING; MAIL and RCPT arrive in one read.
    for port in [40001, 40002] {
        t.conn(
            port,
            0,
            &["HELO c\n", "MAIL FROM:<a@b.test>\nRCPT TO:<x@y.test>\n"],
        );
    }
    let r = t.report();
    assert_eq!(kinds(&r), ["pipelining_unadvertised", "no_quit"]);
    assert_eq!(r.findings[1].severity, Severity::Warning);
    assert!(r.findings[0].message.contains("(on 2 connections)"));
    assert!(r.findings[1].message.contains("(on 2 connections)"));
    // The open transactions ended with the connections: abandoned.
    assert_eq!(r.deliveries[0].outcome, Outcome::Abandoned);
}

#[test]
fn reputation_is_one_line_per_sender_with_when_it_turned() {
    let mut t = Sim::new(
        "[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"u0*\" }\nreply = \"550 5.1.1 unknown\"\n\
         [[rule]]\nname = \"dirty list\"\non = \"mail\"\nkey = [\"client_ip\"]\nreputation = { window = \"1h\", min_attempts = 4, max_failure_rate = 0.2 }\nreply = \"421 4.7.0 unusual rate\"\n",
    );
    for (i, rcpt) in ["u01", "u11", "u02", "u12", "u03"].iter().enumerate() {
        let line = format!("RCPT TO:<{rcpt}@x.test>\n");
        t.conn(
            40001 + i as u16,
            1000 * i as u64,
            &["EHLO mta.test\n", "MAIL FROM:<a@b.test>\n", &line, "QUIT\n"],
        );
    }
    let r = t.report();
    assert_eq!(r.reputation.len(), 1, "{:?}", r.reputation);
    let rep = &r.reputation[0];
    assert_eq!(rep.client, "10.0.0.1");
    assert_eq!(rep.connections, 5);
    assert_eq!(rep.helos, ["mta.test"]);
    assert_eq!((rep.attempts, rep.failures), (4, 2));
    assert_eq!(rep.turned_by.as_deref(), Some("dirty list"));
    let text = text(&r);
    assert!(
        text.contains("10.0.0.1 (mta.test): 5 connections, 4 judged, 2 refused"),
        "{text}"
    );
    assert!(text.contains("turned at 2023-11-14T22:13:24"), "{text}");
}

#[test]
fn open_sessions_are_in_progress_not_failures() {
    let mut t = Sim::new("[[expect]]\nname = \"delivered\"\ndelivered = true\n");
    t.send(40001, 0, "x@y.test");
    // A second connection still in its transaction when the file was read.
    t.conn_from(
        "10.0.0.1",
        40002,
        500,
        &["EHLO c\n", "MAIL FROM:<a@b.test>\n", "RCPT TO:<x@y.test>\n"],
        true,
    );
    let r = t.report();
    assert_eq!(r.in_progress, 1);
    assert_eq!(r.deliveries[0].attempts.len(), 1);
    assert!(r.passed(), "{:?} {:?}", r.expectations, r.findings);
    assert!(text(&r).contains("(1 session still open: its open transaction not judged yet)"));
}

#[test]
fn refused_mail_decides_pipelined_recipients_and_expectations_without_deliveries() {
    let mut t = Sim::new("[[rule]]\non = \"mail\"\nreply = \"550 5.7.1 sender blocked\"\n[[expect]]\nrcpt = \"*@nowhere.test\"\ndelivered = true\n");
    t.conn(
        40001,
        0,
        &[
            "EHLO c\n",
            "MAIL FROM:<a@b.test>\nRCPT TO:<x@y.test>\n",
            "QUIT\n",
        ],
    );
    let r = t.report();
    assert_eq!(r.deliveries[0].attempts[0].stage, "mail");
    assert_eq!(r.deliveries[0].outcome, Outcome::Failed);
    assert_eq!(r.refusals.len(), 1);
    assert_eq!(r.expectations[0].name, "expectation #1");
    assert_eq!(
        r.expectations[0].detail,
        "no matching delivery was attempted"
    );
}

#[test]
fn two_mtas_on_one_host_are_told_apart_by_helo() {
    // Each MTA is refused once by a per-HELO rate: neither ignored it.
    let mut t = Sim::new("[[rule]]\non = \"rcpt\"\nkey = [\"helo\"]\nlimit = { rate = \"1/1m\" }\nreply = \"450 4.2.1 slow down\"\n");
    let mut port = 40000;
    for helo in ["postfix.test", "haraka.test"] {
        for ms in [0, 1000] {
            port += 1;
            let ehlo = format!("EHLO {helo}\n");
            t.conn(
                port,
                ms,
                &[
                    &ehlo,
                    "MAIL FROM:<a@b.test>\n",
                    "RCPT TO:<x@y.test>\n",
                    "QUIT\n",
                ],
            );
        }
    }
    let r = t.report();
    assert_eq!(r.senders, 2);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let attempts: Vec<&str> = r
        .deliveries
        .iter()
        .flat_map(|d| d.attempts.iter().map(|a| a.sender.as_str()))
        .collect();
    assert!(
        attempts.contains(&"10.0.0.1 (postfix.test)"),
        "{attempts:?}"
    );
    assert!(attempts.contains(&"10.0.0.1 (haraka.test)"), "{attempts:?}");
}
