//! Run-time scenarios and the in-process harness: put, replace, delete,
//! prepend a rule, reset, independent counters, and wait-for with lettre.

mod common;

use std::time::Duration;

use common::Client;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use mailfault::testing::{TestServer, MAIN};

const HEALTHY: &str = "[server]\nhostname = \"mx.test\"\n";

const TEMPFAIL_RCPT: &str = r#"
[[rule]]
on = "rcpt"
reply = "450 4.2.1 Mailbox busy"
"#;

/// The reply to RCPT TO:<to> in a fresh session on `addr`.
async fn rcpt_reply(addr: std::net::SocketAddr, to: &str) -> String {
    let mut c = Client::connect_addr(addr).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250-").await;
    c.expect("MAIL FROM:<app@example.test>", "250 ").await;
    c.cmd(&format!("RCPT TO:<{to}>")).await
}

#[tokio::test]
async fn a_new_scenario_gets_its_own_port_and_answers_by_its_rules() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let info = t.put_scenario("busy", TEMPFAIL_RCPT).unwrap();
    assert_eq!(info.name, "busy");
    assert_ne!(info.port, t.addr().port());
    assert_eq!(info.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(info.rules, 1);
    assert!(info.hash.as_deref().unwrap().starts_with("fnv1a:"));

    assert_eq!(
        rcpt_reply(info.addr, "ann@example.test").await,
        "450 4.2.1 Mailbox busy"
    );
    // The first listener is untouched.
    assert_eq!(
        rcpt_reply(t.addr(), "ann@example.test").await,
        "250 2.1.5 Ok"
    );
    let names: Vec<(String, u16)> = t
        .scenarios()
        .into_iter()
        .map(|i| (i.name, i.port))
        .collect();
    assert_eq!(
        names,
        vec![
            ("busy".to_string(), info.port),
            (MAIN.to_string(), t.addr().port())
        ]
    );
    // Its sessions are recorded under its name.
    assert!(t.transcripts().iter().any(|s| s.scenario == "busy"));
}

#[tokio::test]
async fn replacing_keeps_the_port_and_changes_new_sessions_only() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let first = t.put_scenario("flaky", TEMPFAIL_RCPT).unwrap();
    // A session opened before the replacement keeps its scenario.
    let mut open = Client::connect_addr(first.addr).await;
    assert!(open.reply().await.starts_with("220 "));

    let second = t
        .put_scenario(
            "flaky",
            "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 No such user\"\n",
        )
        .unwrap();
    assert_eq!(second.port, first.port);
    assert_ne!(second.hash, first.hash);
    assert_eq!(
        rcpt_reply(second.addr, "ann@example.test").await,
        "550 5.1.1 No such user"
    );
    open.expect("EHLO client.test", "250-").await;
    open.expect("MAIL FROM:<a@example.test>", "250 ").await;
    assert_eq!(
        open.cmd("RCPT TO:<b@example.test>").await,
        "450 4.2.1 Mailbox busy"
    );
    assert_eq!(t.scenarios().len(), 2);
}

#[tokio::test]
async fn a_bad_scenario_is_refused_with_every_problem_at_its_line_and_column() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let bad = "[[rule]]\non = \"rcpt\"\nreply = \"99 nope\"\n\n[[rule]]\non = \"sometime\"\nreply = \"250 ok\"\n";
    let err = t.put_scenario("broken", bad).unwrap_err();
    assert_eq!(err.status(), 422);
    let lines: Vec<String> = err.diagnostics().iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("broken:3:9: "), "{lines:?}");
    assert!(lines[1].starts_with("broken:6:6: "), "{lines:?}");
    // Nothing was added.
    assert_eq!(t.scenarios().len(), 1);

    let syntax = t.put_scenario("broken", "[[rule]\n").unwrap_err();
    assert_eq!(syntax.status(), 422);
    assert!(syntax.diagnostics()[0].to_string().starts_with("broken:1:"));

    for name in ["", "../x", "a b", &"n".repeat(65)] {
        let err = t.put_scenario(name, HEALTHY).unwrap_err();
        assert_eq!(err.status(), 400, "{name:?}");
    }
}

#[tokio::test]
async fn a_deleted_scenario_refuses_connections() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let info = t.put_scenario("gone", TEMPFAIL_RCPT).unwrap();
    // A session already open finishes with its scenario.
    let mut open = Client::connect_addr(info.addr).await;
    assert!(open.reply().await.starts_with("220 "));

    let deleted = t.delete_scenario("gone").await.unwrap();
    assert_eq!(deleted.port, info.port);
    let refused = tokio::net::TcpStream::connect(info.addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(t.scenarios().len(), 1);

    open.expect("EHLO client.test", "250-").await;
    open.expect("MAIL FROM:<a@example.test>", "250 ").await;
    assert_eq!(
        open.cmd("RCPT TO:<b@example.test>").await,
        "450 4.2.1 Mailbox busy"
    );

    let unknown = t.delete_scenario("gone").await.unwrap_err();
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.to_string(), "no scenario named \"gone\"");
    // The listener given at start can be closed too.
    t.delete_scenario(MAIN).await.unwrap();
    assert!(tokio::net::TcpStream::connect(t.addr()).await.is_err());
}

#[tokio::test]
async fn a_prepended_rule_with_times_3_fails_exactly_3_times() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let rule = serde_json::json!({
        "name": "next three to x",
        "on": "rcpt",
        "when": { "rcpt": "x@*" },
        "reply": "451 4.3.0 Try again later",
        "times": 3,
    });
    let info = t.server().prepend_rule(MAIN, &rule).unwrap();
    assert_eq!(info.rules, 1);
    for _ in 0..3 {
        assert_eq!(
            rcpt_reply(t.addr(), "x@example.test").await,
            "451 4.3.0 Try again later"
        );
        // Other recipients are not touched.
        assert_eq!(rcpt_reply(t.addr(), "y@example.test").await, "250 2.1.5 Ok");
    }
    assert_eq!(rcpt_reply(t.addr(), "x@example.test").await, "250 2.1.5 Ok");
    // The transcript names the rule that answered.
    let named = t
        .server()
        .capture
        .events()
        .iter()
        .filter(|e| {
            serde_json::to_string(e)
                .unwrap()
                .contains("next three to x")
        })
        .count();
    assert!(named >= 3, "{named}");
}

#[tokio::test]
async fn a_prepended_rule_keeps_the_counters_and_bad_rules_are_refused() {
    let t =
        TestServer::start("[[rule]]\non = \"rcpt\"\nreply = \"450 4.2.0 Greylisted\"\ntimes = 2\n")
            .await
            .unwrap();
    assert_eq!(
        rcpt_reply(t.addr(), "a@example.test").await,
        "450 4.2.0 Greylisted"
    );
    t.prepend_rule(
        MAIN,
        "on = \"rcpt\"\nwhen.rcpt = \"other@*\"\nreply = \"550 5.1.1 Unknown\"",
    )
    .unwrap();
    // The first rule's count went on: one more refusal, then through.
    assert_eq!(
        rcpt_reply(t.addr(), "a@example.test").await,
        "450 4.2.0 Greylisted"
    );
    assert_eq!(rcpt_reply(t.addr(), "a@example.test").await, "250 2.1.5 Ok");
    assert_eq!(
        rcpt_reply(t.addr(), "other@example.test").await,
        "550 5.1.1 Unknown"
    );

    // Positions are in the text given (no [[rule]] line: line 2 is line 2).
    let err = t
        .prepend_rule(MAIN, "on = \"rcpt\"\nreply = \"99 nope\"\n")
        .unwrap_err();
    assert_eq!(err.status(), 422);
    assert!(
        err.diagnostics()[0]
            .to_string()
            .starts_with("test rule:2:9: "),
        "{err}"
    );
    let two = t
        .prepend_rule(
            MAIN,
            "[[rule]]\non = \"rcpt\"\naction = \"accept\"\n[[rule]]\non = \"mail\"\naction = \"accept\"\n",
        )
        .unwrap_err();
    assert!(two.to_string().contains("exactly one [[rule]]"), "{two}");
    let json = t
        .server()
        .prepend_rule(MAIN, &serde_json::json!({"on": "rcpt", "times": -1}))
        .unwrap_err();
    assert_eq!(json.status(), 422);
    assert_eq!(
        t.prepend_rule("nobody", "on = \"rcpt\"")
            .unwrap_err()
            .status(),
        404
    );
    assert_eq!(t.scenarios()[0].rules, 2);
}

/// Sends a whole message to `to`; returns the reply to the final dot.
async fn deliver(addr: std::net::SocketAddr, to: &str) -> String {
    let mut c = Client::connect_addr(addr).await;
    c.envelope("app@example.test", to).await;
    c.data("Subject: hi\r\n\r\nhello\r\n").await
}

#[tokio::test]
async fn reset_starts_counters_over_and_forgets_messages() {
    let t = TestServer::start("[server]\nmagic_recipients = true\n")
        .await
        .unwrap();
    let to = "tempfail2@example.test";
    assert!(deliver(t.addr(), to).await.starts_with("451 4.3.0"));
    assert!(deliver(t.addr(), to).await.starts_with("451 4.3.0"));
    assert!(deliver(t.addr(), to).await.starts_with("250 "));
    assert_eq!(t.messages().len(), 3);

    t.reset().unwrap();
    assert!(t.messages().is_empty());
    assert!(t.transcripts().is_empty());
    assert!(deliver(t.addr(), to).await.starts_with("451 4.3.0"));

    // Per scenario too.
    t.server().runtime().reset(MAIN).unwrap();
    assert!(deliver(t.addr(), to).await.starts_with("451 4.3.0"));
    assert!(deliver(t.addr(), to).await.starts_with("451 4.3.0"));
    assert!(deliver(t.addr(), to).await.starts_with("250 "));
}

#[tokio::test]
async fn parallel_scenarios_have_independent_counters() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let once = "[[rule]]\non = \"rcpt\"\nreply = \"451 4.7.1 Once\"\ntimes = 1\n";
    let a = t.put_scenario("test-a", once).unwrap();
    let b = t.put_scenario("test-b", once).unwrap();
    assert_ne!(a.port, b.port);
    let (ra, rb) = tokio::join!(
        rcpt_reply(a.addr, "same@example.test"),
        rcpt_reply(b.addr, "same@example.test")
    );
    assert_eq!(ra, "451 4.7.1 Once");
    assert_eq!(rb, "451 4.7.1 Once");
    assert_eq!(
        rcpt_reply(a.addr, "same@example.test").await,
        "250 2.1.5 Ok"
    );
    assert_eq!(
        rcpt_reply(b.addr, "same@example.test").await,
        "250 2.1.5 Ok"
    );
}

fn lettre_to(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build()
}

fn mail(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("shop@example.test".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(String::from("Thank you for your order.\r\n"))
        .unwrap()
}

#[tokio::test]
async fn wait_for_message_sees_a_lettre_delivery_without_sleeping() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let mailer = lettre_to(t.addr().port());
    // Wait first, send after: the waiter must wake when it arrives.
    let waiting = t.wait_for_rcpt("bob@example.test", Duration::from_secs(10));
    let sending = async {
        mailer
            .send(mail("bob@example.test", "Order 42"))
            .await
            .unwrap()
    };
    let (got, sent) = tokio::join!(waiting, sending);
    let got = got.unwrap();
    assert_eq!(sent.code().to_string(), "250");
    assert_eq!(got.mail_from, "shop@example.test");
    assert!(String::from_utf8_lossy(&got.body).contains("Subject: Order 42"));

    // Already there: returns at once.
    let again = t
        .wait_for_message(|m| m.rcpts == ["bob@example.test"], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(again.id, got.id);

    // Nothing matches: a timeout that says what did arrive.
    let missed = t
        .wait_for_rcpt("carol@example.test", Duration::from_millis(50))
        .await
        .unwrap_err();
    let why = missed.to_string();
    assert!(why.contains("1 message(s) arrived"), "{why}");
    assert!(why.contains("bob@example.test"), "{why}");

    let sessions = t.transcripts();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].scenario, MAIN);
    let report = t.report();
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.to_string().contains("bob@example.test"), "{json}");
}

#[tokio::test]
async fn dropping_the_test_server_closes_its_ports() {
    let t = TestServer::start(HEALTHY).await.unwrap();
    let extra = t.put_scenario("extra", HEALTHY).unwrap();
    let main = t.addr();
    let mut open = Client::connect_addr(main).await;
    assert!(open.reply().await.starts_with("220 "));
    drop(t);
    // The open session is told to go away, then the ports refuse.
    let bye = open.cmd("NOOP").await;
    assert!(bye.is_empty() || bye.starts_with("421 "), "{bye:?}");
    for addr in [main, extra.addr] {
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "{addr} still accepts");
    }
}

#[tokio::test]
async fn listeners_given_at_start_are_listed_under_their_scenario_names() {
    use mailfault::server::{ListenerSpec, Options, Source};
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/flaky.toml");
    let spec = |source| ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source,
        tls: Default::default(),
    };
    let mut opts = Options::new(vec![
        spec(Source::File(file.clone())),
        spec(Source::Default),
        spec(Source::Default),
    ]);
    opts.grace = Duration::from_millis(200);
    let t = TestServer::start_with(opts).await.unwrap();
    let listed = t.scenarios();
    let ports: Vec<u16> = t.server().listeners.iter().map(|b| b.addr.port()).collect();
    let names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    let second_default = format!("default-{}", ports[2]);
    assert_eq!(names, ["default", second_default.as_str(), "flaky"]);
    let flaky = &listed[2];
    assert_eq!(flaky.port, ports[0]);
    assert_eq!(flaky.file.as_deref(), Some(file.as_path()));
    let text = std::fs::read(&file).unwrap();
    assert_eq!(
        flaky.hash.as_deref(),
        Some(mailfault::capture::scenario_hash(&text).as_str())
    );
    assert!(flaky.rules > 0);
    assert_eq!(listed[0].port, ports[1]);

    // Replacing a start listener by name keeps its port.
    let replaced = t.put_scenario("flaky", TEMPFAIL_RCPT).unwrap();
    assert_eq!(replaced.port, ports[0]);
    assert_eq!(replaced.file, None);
    assert_eq!(
        rcpt_reply(replaced.addr, "ann@example.test").await,
        "450 4.2.1 Mailbox busy"
    );
}

#[tokio::test]
async fn scenarios_and_prepended_rules_are_bounded() {
    use mailfault::server::runtime::{MAX_RULES, MAX_SCENARIOS};
    let t = TestServer::start(HEALTHY).await.unwrap();
    for n in 1..MAX_SCENARIOS {
        t.put_scenario(&format!("s{n}"), HEALTHY).unwrap();
    }
    let full = t.put_scenario("one-too-many", HEALTHY).unwrap_err();
    assert_eq!(full.status(), 409);
    assert!(full.to_string().contains("delete one first"), "{full}");
    // Replacing is not adding; deleting makes room.
    t.put_scenario("s1", TEMPFAIL_RCPT).unwrap();
    t.delete_scenario("s2").await.unwrap();
    t.put_scenario("one-too-many", HEALTHY).unwrap();

    let many = "[[rule]]\non = \"vrfy\"\nreply = \"252 2.0.0 Maybe\"\n".repeat(MAX_RULES);
    t.put_scenario("s3", &many).unwrap();
    let err = t.prepend_rule("s3", TEMPFAIL_RCPT).unwrap_err();
    assert_eq!(err.status(), 409, "{err}");
}
