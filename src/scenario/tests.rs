//! Engine tests: stateful rules with time as plain instants (no sleeping).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{parse, Engine};
use crate::proto::{Context, Decision, Outcome, Policy, Stage, Tag};

fn engine(toml: &str, epoch: Instant) -> Engine {
    let s = parse(toml, "t.toml", "t").unwrap_or_else(|e| panic!("{e}"));
    Engine::new(Arc::new(s), epoch)
}

struct Ctx {
    stage: Stage,
    ip: IpAddr,
    from: String,
    rcpt: Option<String>,
    rcpts: Vec<String>,
    session: u64,
}

impl Ctx {
    fn new(stage: Stage) -> Self {
        Self {
            stage,
            ip: IpAddr::from([192, 0, 2, 1]),
            from: "sender@example.test".into(),
            rcpt: None,
            rcpts: vec![],
            session: 1,
        }
    }
    fn rcpt(mut self, r: &str) -> Self {
        self.rcpt = Some(r.into());
        self
    }
    fn ip(mut self, ip: [u8; 4]) -> Self {
        self.ip = IpAddr::from(ip);
        self
    }
    fn session(mut self, id: u64) -> Self {
        self.session = id;
        self
    }
    fn get(&self) -> Context<'_> {
        Context {
            stage: self.stage,
            session_id: self.session,
            command: None,
            client_ip: self.ip,
            helo: Some("client.test"),
            mail_from: Some(&self.from),
            rcpt: self.rcpt.as_deref(),
            rcpts: &self.rcpts,
            tls: false,
            authenticated: false,
            auth_user: None,
            size: None,
            message: None,
        }
    }
}

fn code(d: Option<Decision>) -> u16 {
    match d.map(|d| d.outcome) {
        Some(Outcome::Reply(r)) => r.code,
        None | Some(Outcome::Accept) => 250,
        Some(o) => panic!("{o:?}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn rate_limit_sliding_window() {
    let t0 = Instant::now();
    let e = engine("[[rule]]\non = \"mail\"\nkey = [\"client_ip\"]\nlimit = { rate = \"5/1m\" }\npreset = \"gmail.receiving_too_quickly\"\n", t0);
    let c = Ctx::new(Stage::Mail);
    let codes: Vec<u16> = (0..7)
        .map(|i| code(e.decide(&c.get(), t0 + secs(i))))
        .collect();
    assert_eq!(codes, [250, 250, 250, 250, 250, 450, 450]);
    let d = e.decide(&c.get(), t0 + secs(30)).unwrap();
    assert_eq!(
        d.tag,
        Some(Tag::Rate {
            max: 5,
            window: secs(60)
        })
    );
    // Slowing down: the first pass leaves the window after 60 s.
    assert_eq!(code(e.decide(&c.get(), t0 + secs(60))), 250);
    assert_eq!(code(e.decide(&c.get(), t0 + secs(60))), 450);
    // Another client has its own window.
    assert_eq!(
        code(e.decide(
            &Ctx::new(Stage::Mail).ip([192, 0, 2, 2]).get(),
            t0 + secs(30)
        )),
        250
    );
}

#[test]
fn greylisting_triplet() {
    let t0 = Instant::now();
    let e = engine("[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"60s\", expire = \"4h\" }\nreply = \"450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/example.test.html\"\n", t0);
    let c = Ctx::new(Stage::Rcpt).rcpt("a@example.test");
    assert_eq!(code(e.decide(&c.get(), t0)), 450);
    let d = e.decide(&c.get(), t0 + secs(30)).unwrap();
    assert_eq!(
        d.tag,
        Some(Tag::Greylist {
            retry_after: secs(60)
        })
    );
    assert_eq!(
        code(e.decide(&c.get(), t0 + secs(61))),
        250,
        "a proper retry passes"
    );
    assert_eq!(
        code(e.decide(&c.get(), t0 + secs(3600))),
        250,
        "and keeps passing"
    );
    // A new recipient is a new triplet.
    assert_eq!(
        code(e.decide(
            &Ctx::new(Stage::Rcpt).rcpt("b@example.test").get(),
            t0 + secs(61)
        )),
        450
    );
    // Forgotten after expire without a retry.
    assert_eq!(code(e.decide(&c.get(), t0 + secs(3600 + 4 * 3600))), 450);
}

#[test]
fn concurrent_sessions_per_client() {
    let t0 = Instant::now();
    let e = engine("[[rule]]\non = \"connect\"\nlimit = { concurrent = 2 }\npreset = \"postfix.too_many_connections\"\n", t0);
    let connect = |id: u64| code(e.decide(&Ctx::new(Stage::Connect).session(id).get(), t0));
    assert_eq!(connect(1), 250);
    assert_eq!(connect(2), 250);
    assert_eq!(connect(3), 421, "a third open session");
    e.session_closed(3);
    e.session_closed(1);
    assert_eq!(connect(4), 250, "one closed: room again");
    assert_eq!(
        code(e.decide(
            &Ctx::new(Stage::Connect).ip([10, 0, 0, 1]).session(5).get(),
            t0
        )),
        250,
        "per client IP"
    );
}

#[test]
fn reputation_turns_after_too_many_refusals() {
    let t0 = Instant::now();
    let e = engine(
        "[[rule]]\non = \"mail\"\nreputation = { window = \"1h\", min_attempts = 10, max_failure_rate = 0.2 }\npreset = \"gmail.unsolicited_rate_temp\"\n",
        t0,
    );
    let c = Ctx::new(Stage::Rcpt).rcpt("x@example.test");
    let mail = Ctx::new(Stage::Mail);
    // 7 good recipients and 2 unknown: 9 attempts, not enough to judge.
    for i in 0..9 {
        e.observe_rcpt(&c.get(), if i < 7 { 250 } else { 550 }, None, t0 + secs(i));
    }
    assert_eq!(code(e.decide(&mail.get(), t0 + secs(10))), 250);
    // Deferrals do not count.
    e.observe_rcpt(&c.get(), 450, None, t0 + secs(10));
    assert_eq!(code(e.decide(&mail.get(), t0 + secs(10))), 250);
    // The 10th: 3 of 10 refused = 30% > 20%.
    e.observe_rcpt(&c.get(), 550, None, t0 + secs(11));
    let d = e.decide(&mail.get(), t0 + secs(12)).unwrap();
    assert_eq!(code(Some(d.clone())), 421);
    assert_eq!(
        d.tag,
        Some(Tag::Reputation {
            attempts: 10,
            failures: 3
        })
    );
    // Other clients are unaffected; an hour later the window has moved on.
    assert_eq!(
        code(e.decide(
            &Ctx::new(Stage::Mail).ip([192, 0, 2, 9]).get(),
            t0 + secs(12)
        )),
        250
    );
    assert_eq!(code(e.decide(&mail.get(), t0 + secs(3700))), 250);
}

#[test]
fn outage_windows_and_flapping() {
    let t0 = Instant::now();
    let e = engine(
        "[[rule]]\non = \"connect\"\nwhen = { during = \"0s..5m\" }\nreply = \"421 4.3.2 down\"\n",
        t0,
    );
    let c = Ctx::new(Stage::Connect);
    assert_eq!(code(e.decide(&c.get(), t0 + secs(299))), 421);
    assert_eq!(code(e.decide(&c.get(), t0 + secs(300))), 250);

    let e = engine("[[rule]]\non = \"connect\"\nwhen = { during = \"0s..30s every 1m\" }\nreply = \"421 4.3.2 flap\"\n", t0);
    let pattern: Vec<u16> = [0, 29, 30, 59, 60, 95, 125]
        .iter()
        .map(|&s| code(e.decide(&c.get(), t0 + secs(s))))
        .collect();
    assert_eq!(pattern, [421, 421, 250, 250, 421, 250, 421]);

    let e = engine("[[rule]]\non = \"connect\"\nwhen = { during = [\"1m..2m\", \"5m..\"] }\nreply = \"421 4.3.2 twice\"\n", t0);
    let pattern: Vec<u16> = [0, 61, 130, 301]
        .iter()
        .map(|&s| code(e.decide(&c.get(), t0 + secs(s))))
        .collect();
    assert_eq!(pattern, [250, 421, 250, 421]);
}

#[test]
fn magic_greylist_address() {
    let t0 = Instant::now();
    let e = Engine::new(Arc::new(super::default_scenario()), t0);
    let c = Ctx::new(Stage::Rcpt).rcpt("greylist@example.test");
    let d = e.decide(&c.get(), t0).unwrap();
    match &d.outcome {
        Outcome::Reply(r) => assert_eq!(
            r.to_string(),
            "450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/example.test.html"
        ),
        o => panic!("{o:?}"),
    }
    assert_eq!(code(e.decide(&c.get(), t0 + secs(59))), 450);
    assert_eq!(code(e.decide(&c.get(), t0 + secs(60))), 250);
}

#[test]
fn state_for_a_million_keys_is_swept() {
    // Rate entries of a million distinct clients vanish once their windows
    // have passed (the memory figure is in docs/performance.md).
    let t0 = Instant::now();
    let e = engine("[[rule]]\non = \"mail\"\nkey = [\"mail_from\"]\nlimit = { rate = \"5/1m\" }\nreply = \"450 4.2.1 slow down\"\n", t0);
    let mut c = Ctx::new(Stage::Mail);
    for i in 0..100_000 {
        c.from = format!("s{i}@example.test");
        e.decide(&c.get(), t0);
    }
    assert_eq!(e.store().len(), 100_000);
    assert_eq!(e.sweep(t0 + secs(59)), 0);
    assert_eq!(e.sweep(t0 + secs(60)), 100_000);
    assert!(e.store().is_empty());
}
