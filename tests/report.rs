//! `report` end to end against the real binary: a reconnecting sender's
//! findings while the server still runs, the live events file (flushed
//! within a second, kept on kill -9), the scenario found from any folder,
//! and exit 2 when there is nothing to judge.

mod common;

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};

/// `mailfault serve` on a free port, killed (SIGKILL) when dropped.
struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Serve {
    fn start(dir: &Path, scenario: &Path, events: &Path) -> Self {
        let mut child = Command::new(bin())
            .current_dir(dir)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--grace",
                "1s",
                "--scenario",
            ])
            .arg(scenario)
            .arg("--events")
            .arg(events)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = listening_addr(&line);
        Self { child, addr }
    }

    /// kill -9: nothing is flushed at exit.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(dir: &Path, args: &[&str], events: &Path) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .arg("report")
        .arg(events)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn message(to: &str) -> Message {
    Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject("mailfault report test")
        .body(String::from("Hello.\r\n"))
        .unwrap()
}

/// Sends with lettre; without a pool, every send is a new connection (a
/// new source port), as a real MTA's retries are. Returns the codes.
async fn send_each_on_new_connection(
    addr: std::net::SocketAddr,
    to: &str,
    n: usize,
) -> Vec<String> {
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(addr.port())
        .build();
    let mut codes = vec![];
    for _ in 0..n {
        codes.push(match mailer.send(message(to)).await {
            Ok(r) => r.code().to_string(),
            Err(e) => e.status().map_or_else(|| e.to_string(), |s| s.to_string()),
        });
    }
    codes
}

/// Events of one kind in the file, as JSON values.
fn events_of(file: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// Waits until the file holds `n` close events; returns how long it took.
fn wait_for_closes(file: &Path, n: usize) -> Duration {
    let t0 = Instant::now();
    while events_of(file, "close").len() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "only {} close events after 5 s",
            events_of(file, "close").len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn reconnecting_sender_that_ignores_a_rate_limit_fails_check_while_the_server_runs() {
    let dir = tmp("report-rate");
    let events = dir.join("events.jsonl");
    let server = Serve::start(&dir, &repo("scenarios/rate-limit.toml"), &events);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // rate-limit.toml: more than 5 a minute to one recipient -> 450 4.2.1.
    let codes = rt.block_on(send_each_on_new_connection(
        server.addr,
        "one@example.test",
        8,
    ));
    assert_eq!(
        codes,
        ["250", "250", "250", "250", "250", "450", "450", "450"]
    );
    wait_for_closes(&events, 8);

    // Eight connections, eight source ports, one sender.
    let ports: HashSet<String> = events_of(&events, "connect")
        .iter()
        .map(|v| v["client"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ports.len(), 8, "{ports:?}");

    let out = report(&dir, &["--check"], &events);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with(
            "mailfault report: 8 sessions from 1 sender, 6 deliveries, 1 finding (1 error)"
        ),
        "{text}"
    );
    assert!(
        text.contains("[rate_limit_ignored] 127.0.0.1 session 8: told \"450 4.2.1"),
        "{text}"
    );
    assert!(
        text.contains("(rule \"per-recipient rate\", a 1m window) and refused 2 more times inside that window"),
        "{text}"
    );
    assert!(
        text.contains("sender@example.test -> one@example.test: deferred after 3 attempts"),
        "{text}"
    );
    drop(server);
}

#[test]
fn live_file_gives_the_verdict_of_a_stopped_server_and_survives_kill_9() {
    let dir = tmp("report-live");
    let events = dir.join("events.jsonl");
    let scenario = dir.join("live.toml");
    std::fs::write(
        &scenario,
        "[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"nobody@*\" }\nreply = \"550 5.1.1 no such user\"\n\
         [[expect]]\nname = \"delivered\"\nrcpt = \"one@ok.test\"\ndelivered = true\nattempts = 1\n\
         [[expect]]\nname = \"gives up on 5xx\"\nrcpt = \"nobody@*\"\nno_retry_after_permanent = true\n\
         [[expect]]\nname = \"also delivered\"\nrcpt = \"two@ok.test\"\ndelivered = true\n",
    )
    .unwrap();
    let mut server = Serve::start(&dir, &scenario, &events);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(
            send_each_on_new_connection(server.addr, "one@ok.test", 1).await,
            ["250"]
        );
        assert_eq!(
            send_each_on_new_connection(server.addr, "nobody@ok.test", 1).await,
            ["550"]
        );
        assert_eq!(
            send_each_on_new_connection(server.addr, "two@ok.test", 1).await,
            ["250"]
        );
    });
    // Within a second of the last session's end, it is in the file.
    let took = wait_for_closes(&events, 3);
    assert!(
        took < Duration::from_secs(1),
        "events took {took:?} to reach the file"
    );

    let live = report(&dir, &["--check"], &events);
    assert_eq!(live.status.code(), Some(0), "{}", stdout(&live));
    assert!(
        stdout(&live).contains("3 of 3 expectations met"),
        "{}",
        stdout(&live)
    );

    // kill -9: no shutdown, no final flush; every event is there anyway.
    server.kill9();
    assert_eq!(events_of(&events, "connect").len(), 3);
    // After the 550 at RCPT, lettre quits with its transaction open.
    let ends: Vec<String> = events_of(&events, "transaction")
        .iter()
        .map(|v| v["end"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ends, ["delivered", "abandoned", "delivered"]);
    assert_eq!(events_of(&events, "rcpt").len(), 3);
    let after = report(&dir, &["--check"], &events);
    assert_eq!(after.status.code(), Some(0));
    assert_eq!(stdout(&after), stdout(&live), "same verdict live and after");
}

#[test]
fn report_finds_the_scenario_from_any_folder_and_warns_when_it_changed() {
    let dir = tmp("report-where");
    let elsewhere = tmp("report-elsewhere");
    let events = dir.join("events.jsonl");
    std::fs::write(
        dir.join("s.toml"),
        "[[expect]]\nname = \"everything delivered\"\ndelivered = true\n",
    )
    .unwrap();
    // Served by a relative path...
    let mut server = Serve::start(&dir, Path::new("s.toml"), &events);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(send_each_on_new_connection(server.addr, "a@b.test", 1));
    wait_for_closes(&events, 1);
    server.kill9();
    let listen = &events_of(&events, "listen")[0];
    assert_eq!(listen["file"], dir.join("s.toml").display().to_string());
    assert!(
        listen["hash"].as_str().unwrap().starts_with("fnv1a:"),
        "{listen}"
    );

    // ...and judged from another folder.
    let out = report(&elsewhere, &["--check"], &events);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ok   everything delivered: 1 delivery checked"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "");

    std::fs::write(
        dir.join("s.toml"),
        "# edited\n[[expect]]\nname = \"everything delivered\"\ndelivered = true\n",
    )
    .unwrap();
    let out = report(&elsewhere, &[], &events);
    assert!(
        stderr(&out).contains(&format!(
            "warning: {} changed since the server read it",
            dir.join("s.toml").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("1 of 1 expectation met"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_with_nothing_to_judge_exits_2() {
    let dir = tmp("report-nothing");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let not_events = dir.join("notes.txt");
    std::fs::write(&not_events, "hello\nworld\n").unwrap();
    let listen_only = dir.join("listen.jsonl");
    std::fs::write(
        &listen_only,
        "{\"ts\":\"2026-01-01T00:00:00.000Z\",\"listener\":\"127.0.0.1:2525\",\"scenario\":\"default\",\"session\":0,\"type\":\"listen\"}\n",
    )
    .unwrap();
    let missing = dir.join("missing.jsonl");
    for (file, why) in [
        (&empty, "no events; nothing to judge"),
        (
            &not_events,
            "not an events file (2 lines and no mailfault event); nothing to judge",
        ),
        (&listen_only, "no client connected; nothing to judge"),
        (&missing, "cannot read"),
    ] {
        let out = report(&dir, &["--check"], file);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}: {}",
            file.display(),
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(why),
            "{}: {}",
            file.display(),
            stderr(&out)
        );
        assert_eq!(stdout(&out), "", "no report for {}", file.display());
    }
    let help = Command::new(bin())
        .args(["report", "--help"])
        .output()
        .unwrap();
    let help = stdout(&help);
    assert!(help.contains("Exit codes: 0 the report was made"), "{help}");
    assert!(help.contains("2 nothing to judge"), "{help}");
}

const EVERY_FINDING: &str = r#"
[[rule]]
on = "rcpt"
when = { rcpt = "*@grey.test" }
greylist = { retry_after = "5s" }
reply = "450 4.2.0 Greylisted"

[[rule]]
on = "rcpt"
when = { rcpt = "gone@*" }
reply = "550 5.1.1 no such user"

[[rule]]
name = "busy"
on = "rcpt"
when = { rcpt = "*@busy.test" }
key = ["rcpt"]
limit = { rate = "1/1m" }
reply = "450 4.2.1 slow down"

[[rule]]
on = "mail"
when = { mail_from = "*@421.test" }
reply = "421 4.7.0 try later"
close = false
"#;

/// One attempt on a new connection: greeting, EHLO, MAIL, RCPT, and DATA
/// when RCPT was accepted; QUIT at the end. Returns the RCPT reply.
async fn attempt(server: &mailfault::server::Server, from: &str, to: &str) -> String {
    let mut c = Client::connect(server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO mta.sender.test", "250-").await;
    c.cmd(&format!("MAIL FROM:<{from}>")).await;
    let rcpt = c.cmd(&format!("RCPT TO:<{to}>")).await;
    if rcpt.starts_with("250") {
        assert!(c.data("Subject: t\r\n\r\nhi\r\n").await.starts_with("250 "));
    }
    c.cmd("QUIT").await;
    rcpt
}

/// Every finding, made by a sender that opens a new connection (a new
/// source port) for every attempt, on real TCP connections.
#[tokio::test]
async fn every_finding_for_a_sender_that_reconnects() {
    let server = start(EVERY_FINDING).await;
    // Greylisted, retried 0 s later instead of 5 s.
    for _ in 0..2 {
        assert_eq!(
            attempt(&server, "a@b.test", "x@grey.test").await,
            "450 4.2.0 Greylisted"
        );
    }
    // 550, tried again.
    for _ in 0..2 {
        assert_eq!(
            attempt(&server, "a@b.test", "gone@x.test").await,
            "550 5.1.1 no such user"
        );
    }
    // Rate 1/1m: accepted, refused, refused again inside the minute.
    let mut got = vec![];
    for _ in 0..3 {
        got.push(attempt(&server, "a@b.test", "u@busy.test").await);
    }
    assert_eq!(got[1..], ["450 4.2.1 slow down", "450 4.2.1 slow down"]);
    // Talking on after a 421, on two connections.
    for _ in 0..2 {
        let mut c = Client::connect(&server).await;
        c.reply().await;
        c.expect("EHLO mta.sender.test", "250-").await;
        c.expect("MAIL FROM:<m@421.test>", "421 4.7.0").await;
        c.cmd("RCPT TO:<x@y.test>").await;
        c.cmd("QUIT").await;
    }
    // Pipelining after HELO (not offered), then leaving without QUIT.
    for _ in 0..2 {
        let mut c = Client::connect(&server).await;
        c.reply().await;
        c.expect("HELO mta.sender.test", "250 ").await;
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<p@y.test>\r\n")
            .await;
        assert!(c.reply().await.starts_with("250 "));
        assert!(c.reply().await.starts_with("250 "));
    }
    // Every close is recorded before the report is made.
    let t0 = Instant::now();
    while server
        .capture
        .events()
        .iter()
        .filter(|e| matches!(e.kind, mailfault::capture::EventKind::Close { .. }))
        .count()
        < 11
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "sessions did not close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = mailfault::report::build(&server.capture.events(), &[], 0);
    let ports: HashSet<&str> = r
        .deliveries
        .iter()
        .flat_map(|d| d.attempts.iter().map(|a| a.client.as_str()))
        .collect();
    assert_eq!(ports.len(), 11, "each attempt from its own port: {ports:?}");
    assert_eq!(r.senders, 1);
    let mut kinds: Vec<&str> = r.findings.iter().map(|f| f.kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "command_after_421",
            "greylist_retry_too_early",
            "no_quit",
            "pipelining_unadvertised",
            "rate_limit_ignored",
            "retry_after_permanent",
        ],
        "{}",
        mailfault::report::text(&r)
    );
    assert!(r.findings.iter().all(|f| f.client == "127.0.0.1"));
    for kind in ["command_after_421", "pipelining_unadvertised", "no_quit"] {
        let f = r.findings.iter().find(|f| f.kind == kind).unwrap();
        assert!(
            f.message.ends_with("(on 2 connections)"),
            "{kind}: {}",
            f.message
        );
    }
    assert!(!r.passed());
}
