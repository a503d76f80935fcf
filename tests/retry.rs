//! Retry and throttling end to end: real senders that back off (or do not)
//! against stateful rules, and the report's verdict on them.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mailfault::server::{ListenerSpec, Options, Server, Source};

/// One full delivery attempt; returns the deciding reply (the first
/// refusal, or the reply after the message).
async fn attempt(addr: std::net::SocketAddr, from: &str, to: &str) -> String {
    let mut c = Client::connect_addr(addr).await;
    let greeting = c.reply().await;
    if !greeting.starts_with("220") {
        return greeting;
    }
    for line in [
        "EHLO sender.test".to_string(),
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
    ] {
        let r = c.cmd(&line).await;
        if !r.starts_with('2') {
            c.cmd("QUIT").await;
            return r;
        }
    }
    let r = c.data("Subject: retry test\r\n\r\nhello\r\n").await;
    c.cmd("QUIT").await;
    r
}

/// A sender that does what it is told: on a 4xx it waits and tries again,
/// on a 5xx it stops.
async fn polite_sender(
    addr: std::net::SocketAddr,
    to: &str,
    wait: Duration,
    max: usize,
) -> Vec<String> {
    let mut replies = vec![];
    for _ in 0..max {
        let r = attempt(addr, "polite@sender.test", to).await;
        let done = !r.starts_with('4');
        replies.push(r);
        if done {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    replies
}

fn report(server: &Server, scenario: &str) -> mailfault::report::Report {
    let expects = mailfault::scenario::parse(scenario, "t.toml", "t")
        .unwrap()
        .expects;
    mailfault::report::build(&server.capture.events(), &expects, 0)
}

const GREYLIST: &str = "[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"1s\" }\nreply = \"450 4.2.0 Greylisted, come back in a second\"\n\
    [[expect]]\nname = \"greylisted, then delivered\"\ndelivered = true\nattempts = 2\nmin_interval = \"1s\"\nno_retry_after_permanent = true\n";

#[tokio::test]
async fn greylisted_sender_that_waits_is_delivered_and_passes() {
    let server = start(GREYLIST).await;
    let replies = polite_sender(
        server.addr(),
        "someone@example.test",
        Duration::from_millis(1100),
        5,
    )
    .await;
    assert_eq!(replies[0], "450 4.2.0 Greylisted, come back in a second");
    assert_eq!(replies.len(), 2);
    assert!(
        replies[1].starts_with("250 2.0.0 Ok: queued as"),
        "{replies:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = report(&server, GREYLIST);
    assert_eq!(r.deliveries.len(), 1);
    assert!(r.deliveries[0].delivered());
    assert!(r.deliveries[0].intervals_ms[0] >= 1000);
    assert!(
        r.findings.iter().all(|f| f.kind == "no_quit"),
        "{:?}",
        r.findings
    );
    assert!(r.passed(), "{}", mailfault::report::text(&r));
}

#[tokio::test]
async fn impatient_sender_is_flagged() {
    let server = start(GREYLIST).await;
    let replies = polite_sender(
        server.addr(),
        "someone@example.test",
        Duration::from_millis(100),
        20,
    )
    .await;
    assert!(replies.len() > 2);
    assert!(replies.last().unwrap().starts_with("250"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = report(&server, GREYLIST);
    assert!(r
        .findings
        .iter()
        .any(|f| f.kind == "greylist_retry_too_early"));
    assert!(!r.passed());
    let v = &r.expectations[0];
    assert!(!v.passed);
    assert!(v.detail.contains("attempts, expected 2"), "{}", v.detail);
}

#[tokio::test]
async fn fifty_clients_at_once_get_exactly_the_rate() {
    let server = start("[[rule]]\non = \"mail\"\nkey = [\"client_ip\"]\nlimit = { rate = \"10/1m\" }\npreset = \"gmail.receiving_too_quickly\"\n").await;
    let addr = server.addr();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(async move {
                attempt(addr, &format!("s{i}@sender.test"), "r@example.test").await
            })
        })
        .collect();
    let mut accepted = 0;
    let mut throttled = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.starts_with("250 2.0.0") {
            accepted += 1;
        } else if r.starts_with(
            "450 4.2.1 The user you are trying to contact is receiving mail too quickly.",
        ) {
            throttled += 1;
        } else {
            panic!("{r}");
        }
    }
    assert_eq!((accepted, throttled), (10, 40));
}

#[tokio::test]
async fn concurrent_connection_limit() {
    let server = start("[[rule]]\non = \"connect\"\nlimit = { concurrent = 2 }\nreply = \"421 4.7.0 Too many concurrent SMTP connections\"\n").await;
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    assert!(a.reply().await.starts_with("220"));
    assert!(b.reply().await.starts_with("220"));
    let mut c = Client::connect(&server).await;
    assert_eq!(
        c.reply().await,
        "421 4.7.0 Too many concurrent SMTP connections"
    );
    assert!(c.closed().await);
    a.expect("QUIT", "221").await;
    assert!(a.closed().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut d = Client::connect(&server).await;
    assert!(
        d.reply().await.starts_with("220"),
        "a closed session frees its place"
    );
}

#[tokio::test]
async fn outage_window_then_healthy() {
    let server = start("[[rule]]\non = \"connect\"\nwhen = { during = \"0s..400ms\" }\nreply = \"421 4.3.2 System not accepting network messages\"\n").await;
    let r = attempt(server.addr(), "a@b.test", "c@d.test").await;
    assert_eq!(r, "421 4.3.2 System not accepting network messages");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(attempt(server.addr(), "a@b.test", "c@d.test")
        .await
        .starts_with("250 2.0.0"));
}

#[tokio::test]
async fn each_listener_has_its_own_counters() {
    let s = Arc::new(
        mailfault::scenario::parse(
            "[[rule]]\non = \"message\"\ntimes = 1\nreply = \"451 4.3.0 first time\"\n",
            "t.toml",
            "t",
        )
        .unwrap(),
    );
    let spec = |s: &Arc<_>| ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::Given(Arc::clone(s)),
        tls: Default::default(),
    };
    let server = Server::start(Options::new(vec![spec(&s), spec(&s)]))
        .await
        .unwrap();
    let (a, b) = (server.listeners[0].addr, server.listeners[1].addr);
    assert_eq!(
        attempt(a, "x@y.test", "r@z.test").await,
        "451 4.3.0 first time"
    );
    assert_eq!(
        attempt(b, "x@y.test", "r@z.test").await,
        "451 4.3.0 first time",
        "the second listener counts on its own"
    );
    assert!(attempt(a, "x@y.test", "r@z.test").await.starts_with("250"));
}

#[tokio::test]
async fn magic_greylist_recipient() {
    let server = start_default().await;
    assert_eq!(
        attempt(server.addr(), "a@b.test", "greylist@example.test").await,
        "450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/example.test.html"
    );
}

/// The real binary, a misbehaving sender, and `report --check` failing on it.
#[test]
fn report_check_fails_a_sender_that_retries_a_550() {
    let dir = tmp("check");
    let events = dir.join("events.jsonl");
    let report_file = dir.join("report.txt");
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/retry-check.toml");
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "1s",
            "--scenario",
        ])
        .arg(&scenario)
        .arg("--events")
        .arg(&events)
        .arg("--report")
        .arg(&report_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = listening_addr(&line);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Good behaviour for the flaky domain: back off and retry.
        let replies = polite_sender(addr, "a@flaky.test", Duration::from_millis(1050), 5).await;
        assert_eq!(replies.len(), 3, "{replies:?}");
        // Bad behaviour: retry a 550 at once.
        for _ in 0..2 {
            let r = attempt(addr, "bad@sender.test", "nobody@example.test").await;
            assert!(r.starts_with("550 5.1.1 The email account"), "{r}");
        }
    });
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success());

    let out = Command::new(bin())
        .arg("report")
        .arg(&events)
        .arg("--check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok   retries temporary failures: 1 delivery checked"),
        "{text}"
    );
    assert!(
        text.contains("FAIL stops after a permanent failure: bad@sender.test -> nobody@example.test was tried again after the permanent failure \"550 5.1.1 The email account"),
        "{text}"
    );
    assert!(
        text.contains("FAIL comes back after greylisting: no matching delivery was attempted"),
        "{text}"
    );
    assert!(text.contains("[retry_after_permanent]"), "{text}");
    assert!(
        text.contains("a@flaky.test: delivered after 3 attempts"),
        "{text}"
    );

    let json = Command::new(bin())
        .arg("report")
        .arg(&events)
        .arg("--json")
        .output()
        .unwrap();
    assert!(json.status.success(), "without --check the exit code is 0");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["expectations"].as_array().unwrap().len(), 3);
    assert_eq!(v["findings"][0]["kind"], "retry_after_permanent");

    // serve --report wrote the same verdicts when it stopped.
    let written = std::fs::read_to_string(&report_file).unwrap();
    assert!(
        written.contains("FAIL stops after a permanent failure"),
        "{written}"
    );
}

/// The engine reads time from tokio's clock in the server, so a paused
/// clock drives greylisting and windows without sleeping.
#[tokio::test(start_paused = true)]
async fn paused_clock_drives_greylist_and_windows() {
    use mailfault::proto::{Context, Outcome, Stage};
    let s = mailfault::scenario::parse(
        "[[rule]]\non = \"rcpt\"\ngreylist = { retry_after = \"5m\" }\nreply = \"450 4.2.0 wait\"\n\
         [[rule]]\non = \"mail\"\nwhen = { during = \"0s..10m\" }\nreply = \"421 4.3.2 down\"\n",
        "t.toml",
        "t",
    )
    .unwrap();
    let now = || tokio::time::Instant::now().into_std();
    let engine = mailfault::scenario::Engine::new(Arc::new(s), now());
    let rcpts: Vec<String> = vec![];
    let ctx = |stage| Context {
        stage,
        session_id: 1,
        command: None,
        client_ip: [127, 0, 0, 1].into(),
        helo: Some("x"),
        mail_from: Some("a@b.test"),
        rcpt: Some("c@d.test"),
        rcpts: &rcpts,
        tls: false,
        authenticated: false,
        auth_user: None,
        size: None,
        message: None,
    };
    let is_refused = |d: Option<mailfault::proto::Decision>| {
        matches!(d.map(|d| d.outcome), Some(Outcome::Reply(_)))
    };
    assert!(is_refused(engine.decide(&ctx(Stage::Rcpt), now())));
    assert!(is_refused(engine.decide(&ctx(Stage::Mail), now())));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(
        is_refused(engine.decide(&ctx(Stage::Rcpt), now())),
        "4 min 59 s: still greylisted"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        !is_refused(engine.decide(&ctx(Stage::Rcpt), now())),
        "5 min: passes"
    );
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(
        !is_refused(engine.decide(&ctx(Stage::Mail), now())),
        "10 min: the outage is over"
    );
}
