//! Every file in scenarios/ loads and behaves as its header says.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailfault::proto::{Context, Outcome, Stage};
use mailfault::scenario::{self, presets, Engine};
use mailfault::server::Source;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

async fn serve_file(name: &str) -> mailfault::server::Server {
    start_with(Source::File(path(name))).await
}

#[test]
fn every_shipped_scenario_loads_and_is_documented() {
    let mut n = 0;
    for entry in std::fs::read_dir(path("")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            scenario::load_file(&p).unwrap_or_else(|e| panic!("{e}"));
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                text.starts_with(&format!("# {name} — ")),
                "{name} starts with its comment block"
            );
            assert!(
                text.contains("swaks"),
                "{name} says how to drive it with swaks"
            );
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn default_toml_is_the_built_in_default() {
    assert_eq!(
        std::fs::read_to_string(path("default.toml")).unwrap(),
        scenario::load::DEFAULT_TOML
    );
}

#[tokio::test]
async fn gmail_bounces_answers_every_gmail_preset() {
    let server = serve_file("gmail-bounces.toml").await;
    let gmail: Vec<_> = presets::all()
        .iter()
        .filter(|p| p.id.starts_with("gmail."))
        .collect();
    assert_eq!(gmail.len(), 41);
    for p in gmail {
        let name = p.id.split_once('.').unwrap().1;
        let want = String::from_utf8(p.reply().to_wire())
            .unwrap()
            .replace("\r\n", "\n");
        let want = want.trim_end();
        let mut c = Client::connect(&server).await;
        assert_eq!(
            c.reply().await,
            "220 mx.google.test ESMTP mailfault (Gmail replies)"
        );
        c.expect("EHLO x", "250").await;
        c.expect("MAIL FROM:<a@b.test>", "250").await;
        let rcpt = c.cmd(&format!("RCPT TO:<{name}@example.test>")).await;
        let got = if p.stage == "message" {
            assert_eq!(rcpt, "250 2.1.5 Ok", "{}", p.id);
            c.data("hi\r\n").await
        } else {
            rcpt
        };
        assert_eq!(got, want, "{}", p.id);
    }
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "someone@example.test").await;
    assert!(c.data("hi\r\n").await.starts_with("250 2.0.0"));
}

#[tokio::test]
async fn flaky_fails_twice_then_accepts() {
    let server = serve_file("flaky.toml").await;
    let mut got = vec![];
    for _ in 0..3 {
        let mut c = Client::connect(&server).await;
        c.envelope("a@b.test", "someone@flaky.test").await;
        got.push(c.data("hi\r\n").await);
    }
    assert_eq!(
        got[0],
        "451 4.3.0 Mail server temporarily rejected message."
    );
    assert_eq!(got[1], got[0]);
    assert!(got[2].starts_with("250 2.0.0 Ok: queued"));

    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@example.test").await;
    assert_eq!(
        c.cmd("RCPT TO:<x@deferred.test>").await,
        "450 4.2.0 Recipient temporarily unavailable, try again later"
    );
    assert_eq!(c.cmd("RCPT TO:<x@deferred.test>").await, "250 2.1.5 Ok");
    let mut refused = 0;
    for i in 0..50 {
        if c.cmd(&format!("RCPT TO:<u{i}@sometimes.test>"))
            .await
            .starts_with("451 4.4.5")
        {
            refused += 1;
        }
        c.cmd("RSET").await;
        c.cmd("MAIL FROM:<a@b.test>").await;
    }
    assert!((1..30).contains(&refused), "{refused} of 50");
}

fn ctx<'a>(stage: Stage, rcpts: &'a [String]) -> Context<'a> {
    Context {
        stage,
        session_id: 1,
        command: None,
        client_ip: IpAddr::from([127, 0, 0, 1]),
        helo: Some("x"),
        mail_from: Some("a@b.test"),
        rcpt: if stage == Stage::Rcpt {
            rcpts.first().map(|s| s.as_str())
        } else {
            None
        },
        rcpts,
        tls: false,
        authenticated: false,
        auth_user: None,
        size: Some(10),
        message: Some(b"hi\r\n"),
    }
}

#[test]
fn slow_decisions() {
    let s = Arc::new(scenario::load_file(&path("slow.toml")).unwrap());
    let engine = Engine::new(s, Instant::now());
    let now = Instant::now();
    let tarpit = vec!["a@tarpit.test".to_string()];
    for _ in 0..20 {
        let d = engine.decide(&ctx(Stage::Rcpt, &tarpit), now).unwrap();
        assert_eq!(d.outcome, Outcome::Accept);
        assert!(
            (Duration::from_secs(5)..=Duration::from_secs(15)).contains(&d.delay),
            "{:?}",
            d.delay
        );
    }
    let drip = vec!["a@drip.test".to_string()];
    assert_eq!(
        engine
            .decide(&ctx(Stage::Message, &drip), now)
            .unwrap()
            .drip,
        Some(Duration::from_millis(500))
    );
    let hang = vec!["a@hang.test".to_string()];
    assert_eq!(
        engine
            .decide(&ctx(Stage::Message, &hang), now)
            .unwrap()
            .outcome,
        Outcome::Hang
    );
}

#[tokio::test]
async fn slow_greeting_is_three_seconds_late() {
    let server = serve_file("slow.toml").await;
    let t = Instant::now();
    let mut c = Client::connect(&server).await;
    assert_eq!(c.reply().await, "220 mx.slow.test ESMTP mailfault");
    assert!(t.elapsed() >= Duration::from_secs(3));
}

/// Reply codes of 40 sequential sessions.
async fn chaos_run() -> Vec<String> {
    let server = serve_file("chaos.toml").await;
    let mut codes = vec![];
    for i in 0..40 {
        let mut c = Client::connect(&server).await;
        let mut session = vec![c.reply().await.chars().take(3).collect::<String>()];
        if session[0] == "220" {
            for line in [
                "EHLO x".to_string(),
                "MAIL FROM:<a@b.test>".into(),
                format!("RCPT TO:<u{i}@example.test>"),
                "DATA".into(),
            ] {
                session.push(c.cmd(&line).await.chars().take(3).collect());
            }
            if session.last().is_some_and(|s| s == "354") {
                c.send(b"hi\r\n.\r\n").await;
                session.push(c.reply().await.chars().take(3).collect());
            }
        }
        codes.push(session.join(" "));
    }
    codes
}

#[tokio::test]
async fn chaos_is_reproducible() {
    let a = chaos_run().await;
    let b = chaos_run().await;
    assert_eq!(a, b);
    let all = a.join(" ");
    assert!(
        all.contains("421") || all.contains("450") || all.contains("451"),
        "{all}"
    );
    assert!(
        a.iter().filter(|s| s.ends_with("250")).count() >= 10,
        "{a:?}"
    );
}

/// MAIL and RCPT in a fresh session; returns the RCPT reply, or the first
/// refusal before it.
async fn try_rcpt(server: &mailfault::server::Server, to: &str) -> String {
    let mut c = Client::connect(server).await;
    let g = c.reply().await;
    if !g.starts_with("220") {
        return g;
    }
    c.cmd("EHLO x").await;
    let m = c.cmd("MAIL FROM:<a@b.test>").await;
    if !m.starts_with("250") {
        return m;
    }
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    c.cmd("QUIT").await;
    r
}

#[tokio::test]
async fn greylist_scenario() {
    let server = serve_file("greylist.toml").await;
    assert_eq!(
        try_rcpt(&server, "a@example.test").await,
        "450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/example.test.html"
    );
    assert_eq!(
        try_rcpt(&server, "a@example.test").await,
        "450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/example.test.html"
    );
    assert_eq!(try_rcpt(&server, "a@nogrey.test").await, "250 2.1.5 Ok");
}

#[tokio::test]
async fn rate_limit_scenario() {
    let server = serve_file("rate-limit.toml").await;
    let mut got = vec![];
    for _ in 0..7 {
        got.push(try_rcpt(&server, "one@example.test").await);
    }
    assert!(got[..5].iter().all(|r| r == "250 2.1.5 Ok"), "{got:?}");
    assert!(got[5].starts_with(
        "450 4.2.1 The user you are trying to contact is receiving mail too quickly."
    ));
    // 7 MAILs so far: 20 a minute from one IP are allowed, the 21st is not.
    for _ in 0..13 {
        try_rcpt(&server, "other@example.test").await;
    }
    let r = try_rcpt(&server, "third@example.test").await;
    assert!(
        r.starts_with("421 4.7.0 Our system has detected an unusual rate of unsolicited mail"),
        "{r}"
    );
    // Three open connections are fine, a fourth is not.
    let mut open = vec![];
    for _ in 0..3 {
        let mut c = Client::connect(&server).await;
        assert!(c.reply().await.starts_with("220"));
        open.push(c);
    }
    let mut fourth = Client::connect(&server).await;
    assert_eq!(
        fourth.reply().await,
        "421 4.7.0 Too many concurrent SMTP connections from this IP; please try again later"
    );
}

#[tokio::test]
async fn reputation_scenario_turns_on_a_dirty_list() {
    let server = serve_file("reputation.toml").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.cmd("EHLO x").await;
    c.expect("MAIL FROM:<list@sender.test>", "250").await;
    for i in 0..18 {
        c.expect(&format!("RCPT TO:<user{i}@example.test>"), "250 2.1.5")
            .await;
    }
    for i in 0..4 {
        c.expect(&format!("RCPT TO:<gone{i}@dead.test>"), "550 5.1.1")
            .await;
    }
    c.expect("RSET", "250").await;
    // 4 of 22 refused = 18%: over 10%, under 30%.
    let r = c.cmd("MAIL FROM:<list@sender.test>").await;
    assert!(
        r.starts_with("421 4.7.0 Our system has detected an unusual rate of unsolicited mail"),
        "{r}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = mailfault::report::build(&server.capture.events(), &[], 0);
    let rep = &report.reputation[0];
    assert_eq!((rep.attempts, rep.failures), (22, 4));
    assert_eq!(rep.turned_by.as_deref(), Some("deferred: dirty list"));
}

#[tokio::test]
async fn outage_scenario_starts_down() {
    let server = serve_file("outage.toml").await;
    let mut c = Client::connect(&server).await;
    assert_eq!(
        c.reply().await,
        "421 4.3.2 System not accepting network messages"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn tls_scenarios() {
    let server = serve_file("tls-required.toml").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    assert!(c.cmd("EHLO x").await.ends_with("250 STARTTLS"));
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await,
        "530 5.7.0 Must issue a STARTTLS command first"
    );
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");

    let server = serve_file("tls-broken.toml").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.cmd("EHLO busy.example").await;
    assert_eq!(
        c.cmd("STARTTLS").await,
        "454 4.7.0 TLS not available due to temporary reason"
    );
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.cmd("EHLO abort.example").await;
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    assert!(c.closed().await);

    let server = serve_file("submission.toml").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    let ehlo = c.cmd("EHLO x").await;
    assert!(
        ehlo.ends_with("250-STARTTLS\n250 AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await,
        "530 5.7.0 Authentication required"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
}

/// The rules and the certificates know no sockets: nothing in `scenario/`
/// or `certs/` reaches into `server/` (and `certs/` knows no scenario).
#[test]
fn scenario_and_certs_do_not_reach_into_the_server() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (room, forbidden) in [
        ("scenario", &["crate::server", "tokio::net"][..]),
        (
            "certs",
            &["crate::server", "crate::scenario", "tokio::net"][..],
        ),
    ] {
        let mut files = 0;
        for entry in std::fs::read_dir(src.join(room)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            files += 1;
            for f in forbidden {
                assert!(!text.contains(f), "{} uses {f}", path.display());
            }
        }
        assert!(files > 0, "no files in src/{room}");
    }
}
