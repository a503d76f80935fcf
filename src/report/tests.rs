//! Report tests on hand-written transcripts.

use super::*;
use crate::capture::{Event, EventKind, Limit};
use crate::scenario;

struct T {
    events: Vec<Event>,
    ms: u64,
}

impl T {
    fn new() -> Self {
        Self {
            events: vec![],
            ms: 1_700_000_000_000,
        }
    }
    fn at(&mut self, ms: u64) -> &mut Self {
        self.ms = 1_700_000_000_000 + ms;
        self
    }
    fn ev(&mut self, session: u64, kind: EventKind) -> &mut Self {
        let ts = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.ms),
        )
        .to_string();
        self.events.push(Event {
            ts,
            listener: "127.0.0.1:2525".into(),
            scenario: "t".into(),
            session,
            kind,
        });
        self
    }
    fn cmd(&mut self, s: u64, line: &str, stage: &str) -> &mut Self {
        self.ev(
            s,
            EventKind::Command {
                line: line.into(),
                stage: Some(stage.into()),
                pipelined: false,
            },
        )
    }
    fn reply(&mut self, s: u64, text: &str) -> &mut Self {
        self.reply_limit(s, text, None)
    }
    fn reply_limit(&mut self, s: u64, text: &str, limit: Option<Limit>) -> &mut Self {
        let code = text[..3].parse().ok();
        self.ev(
            s,
            EventKind::Reply {
                code,
                text: format!("{text}\r\n"),
                rule: None,
                delay_ms: None,
                limit,
            },
        )
    }
    /// One whole session sending one message to `rcpt`; `rcpt_reply` and
    /// `end` are the server's replies at RCPT and after the message.
    fn session(&mut self, s: u64, rcpt: &str, rcpt_reply: &str, end: Option<&str>) -> &mut Self {
        self.ev(
            s,
            EventKind::Connect {
                client: "127.0.0.1:4000".into(),
            },
        );
        self.reply(s, "220 mx ESMTP");
        self.cmd(s, "EHLO c", "ehlo")
            .reply(s, "250-mx\r\n250 PIPELINING");
        self.cmd(s, "MAIL FROM:<a@b.test>", "mail")
            .reply(s, "250 2.1.0 Ok");
        self.cmd(s, &format!("RCPT TO:<{rcpt}>"), "rcpt")
            .reply(s, rcpt_reply);
        if let Some(end) = end {
            self.cmd(s, "DATA", "data").reply(s, "354 go");
            self.reply(s, end);
        }
        self.cmd(s, "QUIT", "quit").reply(s, "221 Bye");
        self.ev(
            s,
            EventKind::Close {
                by: "server".into(),
                reason: "quit".into(),
            },
        )
    }
}

fn expects(toml: &str) -> Vec<scenario::model::Expect> {
    scenario::parse(toml, "t.toml", "t").unwrap().expects
}

#[test]
fn retries_grouped_into_one_delivery() {
    let mut t = T::new();
    t.at(0)
        .session(1, "x@flaky.test", "250 2.1.5 Ok", Some("451 4.3.0 later"));
    t.at(2000)
        .session(2, "x@flaky.test", "250 2.1.5 Ok", Some("451 4.3.0 later"));
    t.at(5000).session(
        3,
        "x@flaky.test",
        "250 2.1.5 Ok",
        Some("250 2.0.0 Ok: queued as X"),
    );
    t.at(6000).session(
        4,
        "x@flaky.test",
        "250 2.1.5 Ok",
        Some("250 2.0.0 Ok: queued as Y"),
    );
    let e = expects("[[expect]]\nname = \"retries\"\nrcpt = \"*@flaky.test\"\ndelivered = true\nattempts = \"1..3\"\nmin_interval = \"1s\"\n");
    let r = build(&t.events, &e, 0);
    assert_eq!(r.sessions, 4);
    assert_eq!(r.deliveries.len(), 2, "a delivered attempt ends a delivery");
    let d = &r.deliveries[0];
    assert_eq!(d.attempts.len(), 3);
    assert_eq!(d.intervals_ms, [2000, 3000]);
    assert_eq!(d.outcome, Outcome::Delivered);
    assert_eq!(d.attempts[0].outcome, Outcome::Deferred);
    assert_eq!(d.attempts[0].stage, "message");
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
fn retry_after_permanent_is_flagged_and_fails_expectations() {
    let mut t = T::new();
    t.at(0)
        .session(1, "gone@x.test", "550 5.1.1 no such user", None);
    t.at(300)
        .session(2, "gone@x.test", "550 5.1.1 no such user", None);
    let e = expects("[[expect]]\nname = \"stops after 5xx\"\nno_retry_after_permanent = true\n");
    let r = build(&t.events, &e, 0);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, "retry_after_permanent");
    assert!(r.findings[0]
        .message
        .contains("tried again 300ms after the permanent failure \"550 5.1.1 no such user\""));
    assert!(!r.expectations[0].passed);
    assert_eq!(r.expectations[0].detail, "a@b.test -> gone@x.test was tried again after the permanent failure \"550 5.1.1 no such user\"");
    assert!(!r.passed());
}

#[test]
fn greylist_retry_too_early() {
    let grey = Some(Limit::Greylist {
        retry_after_ms: 60_000,
    });
    let mut t = T::new();
    for (s, ms) in [(1, 0), (2, 10_000), (3, 61_000)] {
        t.at(ms);
        t.ev(
            s,
            EventKind::Connect {
                client: "127.0.0.1:1".into(),
            },
        )
        .reply(s, "220 mx");
        t.cmd(s, "EHLO c", "ehlo").reply(s, "250 mx");
        t.cmd(s, "MAIL FROM:<a@b.test>", "mail").reply(s, "250 ok");
        t.cmd(s, "RCPT TO:<c@d.test>", "rcpt");
        if ms < 60_000 {
            t.reply_limit(s, "450 4.2.0 Greylisted", grey.clone());
        } else {
            t.reply(s, "250 ok")
                .cmd(s, "DATA", "data")
                .reply(s, "354 go")
                .reply(s, "250 queued");
        }
        t.cmd(s, "QUIT", "quit").reply(s, "221 bye").ev(
            s,
            EventKind::Close {
                by: "server".into(),
                reason: "quit".into(),
            },
        );
    }
    let r = build(&t.events, &[], 0);
    assert_eq!(r.deliveries[0].attempts.len(), 3);
    assert!(r.deliveries[0].delivered());
    let kinds: Vec<&str> = r.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["greylist_retry_too_early"]);
    assert!(
        r.findings[0]
            .message
            .contains("retried 10.0s after being greylisted; the server asked for 1m"),
        "{}",
        r.findings[0].message
    );
}

#[test]
fn protocol_findings() {
    let mut t = T::new();
    // 421 then another command; pipelining after HELO; leaving without QUIT.
    t.ev(1, EventKind::Connect { client: "c".into() })
        .reply(1, "220 mx");
    t.cmd(1, "HELO c", "helo").reply(1, "250 mx");
    t.ev(
        1,
        EventKind::Command {
            line: "MAIL FROM:<a@b>".into(),
            stage: Some("mail".into()),
            pipelined: true,
        },
    );
    t.reply(1, "421 4.7.0 go away");
    t.cmd(1, "RCPT TO:<x@y>", "rcpt");
    t.ev(
        1,
        EventKind::Close {
            by: "client".into(),
            reason: "eof".into(),
        },
    );
    t.ev(2, EventKind::Connect { client: "c".into() })
        .reply(2, "220 mx");
    t.ev(
        2,
        EventKind::Close {
            by: "client".into(),
            reason: "eof".into(),
        },
    );
    let r = build(&t.events, &[], 0);
    let kinds: Vec<&str> = r.findings.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        ["pipelining_unadvertised", "command_after_421", "no_quit"]
    );
    assert_eq!(r.findings[2].severity, Severity::Warning);
    assert_eq!(r.refusals[0].stage, "mail");
}

#[test]
fn rate_limit_ignored_and_expectation_without_deliveries() {
    let rate = Some(Limit::Rate {
        max: 5,
        window_ms: 60_000,
    });
    let mut t = T::new();
    for (s, ms) in [(1, 0), (2, 1000), (3, 2000), (4, 70_000)] {
        t.at(ms);
        t.ev(
            s,
            EventKind::Connect {
                client: "10.0.0.1:1".into(),
            },
        )
        .reply(s, "220 mx");
        t.cmd(s, "EHLO c", "ehlo").reply(s, "250 mx");
        t.cmd(s, "MAIL FROM:<a@b.test>", "mail").reply_limit(
            s,
            "450 4.2.1 slow down",
            rate.clone(),
        );
        t.cmd(s, "QUIT", "quit").reply(s, "221 bye");
        t.ev(
            s,
            EventKind::Close {
                by: "server".into(),
                reason: "quit".into(),
            },
        );
    }
    let e = expects("[[expect]]\nrcpt = \"*@nowhere.test\"\ndelivered = true\n");
    let r = build(&t.events, &e, 0);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].kind, "rate_limit_ignored");
    assert!(
        r.findings[0]
            .message
            .contains("refused 2 more times inside that window"),
        "{}",
        r.findings[0].message
    );
    assert_eq!(r.refusals.len(), 4);
    assert_eq!(r.expectations[0].name, "expectation #1");
    assert_eq!(
        r.expectations[0].detail,
        "no matching delivery was attempted"
    );
}

#[test]
fn reputation_series_and_turn() {
    let mut t = T::new();
    t.ev(
        1,
        EventKind::Connect {
            client: "10.0.0.2".into(),
        },
    )
    .reply(1, "220 mx");
    t.cmd(1, "EHLO c", "ehlo").reply(1, "250 mx");
    t.cmd(1, "MAIL FROM:<a@b.test>", "mail").reply(1, "250 ok");
    for i in 0..10 {
        t.cmd(1, &format!("RCPT TO:<u{i}@x.test>"), "rcpt").reply(
            1,
            if i % 3 == 0 {
                "550 5.1.1 unknown"
            } else {
                "250 ok"
            },
        );
    }
    t.cmd(1, "MAIL FROM:<a@b.test>", "mail").reply_limit(
        1,
        "421 4.7.0 unusual rate",
        Some(Limit::Reputation {
            attempts: 10,
            failures: 4,
        }),
    );
    let r = build(&t.events, &[], 0);
    let rep = &r.reputation[0];
    assert_eq!((rep.attempts, rep.failures), (10, 4));
    assert_eq!(rep.turned_after, Some((10, 4)));
    assert!(text(&r).contains("turned at "));
}
