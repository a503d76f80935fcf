//! The limits of docs/limits.md over real SMTP on loopback: the message
//! memory budget, sessions per IP, session lifetime, the listen backlog,
//! `[server] bare_lf`, RFC 6531 address replies, and what `check` refuses.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Client;
use mailfault::scenario;
use mailfault::server::{ListenerSpec, Options, Server, Source};
use tokio::sync::Barrier;

async fn start_opts(toml: &str, tune: impl FnOnce(&mut Options)) -> Server {
    let s = scenario::parse(toml, "test.toml", "test").unwrap_or_else(|e| panic!("{e}"));
    let mut opts = Options::new(vec![ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: Source::Given(Arc::new(s)),
        tls: Default::default(),
    }]);
    opts.grace = Duration::from_millis(200);
    tune(&mut opts);
    Server::start(opts).await.unwrap()
}

const STORAGE: &str = "452 4.3.1 Insufficient system storage";

/// A client that has sent 600 KB of DATA, waited for the others, then ends
/// the message: returns the reply to the final dot.
async fn pour(addr: std::net::SocketAddr, barrier: Arc<Barrier>) -> (Client, String) {
    let mut c = Client::connect_addr(addr).await;
    c.envelope("a@sender.test", "b@rcpt.test").await;
    c.expect("DATA", "354 ").await;
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..600 {
        c.send(line.as_bytes()).await;
    }
    barrier.wait().await;
    // Let the server read every byte already sent before any message ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = c.cmd(".").await;
    (c, reply)
}

#[tokio::test]
async fn message_memory_budget_refuses_with_452_and_sessions_go_on() {
    let server = start_opts("", |o| o.max_message_memory = 1_000_000).await;
    let barrier = Arc::new(Barrier::new(3));
    let tasks: Vec<_> = (0..3)
        .map(|_| tokio::spawn(pour(server.addr(), barrier.clone())))
        .collect();
    let mut clients = vec![];
    let mut replies = vec![];
    for t in tasks {
        let (c, r) = t.await.unwrap();
        clients.push(c);
        replies.push(r);
    }
    assert!(
        replies.iter().any(|r| r == STORAGE),
        "3 x 600 KB in flight under a 1 MB budget: {replies:?}"
    );
    for r in &replies {
        assert!(
            r == STORAGE || r.starts_with("250 2.0.0 Ok: queued as "),
            "{r}"
        );
    }
    // Every session is still usable.
    for c in &mut clients {
        c.expect("RSET", "250 2.0.0 Ok").await;
        c.expect("NOOP", "250 2.0.0 Ok").await;
    }
    // Alone, the same message fits: the refused bytes were given back.
    let c = &mut clients[0];
    c.expect("MAIL FROM:<a@sender.test>", "250 ").await;
    c.expect("RCPT TO:<b@rcpt.test>", "250 ").await;
    c.expect("DATA", "354 ").await;
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..600 {
        c.send(line.as_bytes()).await;
    }
    let last = c.cmd(".").await;
    assert!(last.starts_with("250 2.0.0 Ok: queued as "), "{last}");
    let captured = server.capture.messages();
    assert!(captured.iter().any(|m| m.accepted && m.size == 600_000));
    server.shutdown().await;
}

#[tokio::test]
async fn abruptly_closed_sessions_give_their_bytes_back() {
    let server = start_opts("", |o| o.max_message_memory = 1_000_000).await;
    for _ in 0..5 {
        let mut c = Client::connect(&server).await;
        c.envelope("a@sender.test", "b@rcpt.test").await;
        c.expect("DATA", "354 ").await;
        c.send(&vec![b'z'; 700_000]).await;
        drop(c);
    }
    // Each vanished client held up to 700 KB; once its session ended the
    // next one fits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@sender.test", "b@rcpt.test").await;
    c.expect("DATA", "354 ").await;
    c.send(&vec![b'w'; 900_000]).await;
    let got = c.cmd("\r\n.").await;
    assert!(got.starts_with("250 2.0.0 Ok: queued as "), "{got}");
    server.shutdown().await;
}

#[tokio::test]
async fn bdat_chunk_over_the_budget_gets_452() {
    let server = start_opts("", |o| o.max_message_memory = 100_000).await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@sender.test", "b@rcpt.test").await;
    let mut chunk = b"BDAT 200000 LAST\r\n".to_vec();
    chunk.extend(vec![b'q'; 200_000]);
    c.send(&chunk).await;
    assert_eq!(c.reply().await, STORAGE);
    c.expect("NOOP", "250 2.0.0 Ok").await;
    c.expect("MAIL FROM:<a@sender.test>", "250 ").await;
    c.expect("RCPT TO:<b@rcpt.test>", "250 ").await;
    c.send(b"BDAT 5 LAST\r\nhello").await;
    let got = c.reply().await;
    assert!(got.starts_with("250 2.0.0 Ok: queued as "), "{got}");
    server.shutdown().await;
}

#[tokio::test]
async fn declared_size_over_the_budget_is_refused_at_data() {
    let server = start_opts("", |o| o.max_message_memory = 10_000).await;
    let mut c = Client::connect(&server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.expect("EHLO client.test", "250-").await;
    c.expect("MAIL FROM:<a@sender.test> SIZE=50000", "250 ")
        .await;
    c.expect("RCPT TO:<b@rcpt.test>", "250 ").await;
    assert_eq!(c.cmd("DATA").await, STORAGE);
    c.expect("RSET", "250 2.0.0 Ok").await;
    server.shutdown().await;
}

const BARE: &str = "521 5.5.2 mailfault.test Error: bare <LF> received";

#[tokio::test]
async fn bare_lf_reject_in_commands_and_data() {
    let server = start_opts("[server]\nbare_lf = \"reject\"\n", |_| {}).await;
    let mut c = Client::connect(&server).await;
    assert!(c.reply().await.starts_with("220 "));
    c.send(b"EHLO client.test\n").await;
    assert_eq!(c.reply().await, BARE);
    assert!(c.closed().await);

    let mut c = Client::connect(&server).await;
    c.envelope("a@sender.test", "b@rcpt.test").await;
    c.expect("DATA", "354 ").await;
    c.send(b"Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<evil@x.test>\r\n")
        .await;
    assert_eq!(c.reply().await, BARE);
    assert!(c.closed().await);
    let m = &server.capture.messages()[0];
    assert!(!m.accepted && m.bare_lf);
    server.shutdown().await;
}

#[tokio::test]
async fn bare_lf_accept_is_the_default() {
    let server = start_opts("", |_| {}).await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@sender.test", "b@rcpt.test").await;
    c.expect("DATA", "354 ").await;
    c.send(b"a\nb\r\n").await;
    let got = c.cmd(".").await;
    assert!(got.starts_with("250 2.0.0 Ok: queued as "), "{got}");
    assert!(server.capture.messages()[0].bare_lf);
    server.shutdown().await;
}

#[tokio::test]
async fn rfc6531_replies_to_addresses() {
    let server = start_opts("", |_| {}).await;
    let mut c = Client::connect(&server).await;
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("250-SMTPUTF8"), "{ehlo}");
    assert_eq!(
        c.cmd("MAIL FROM:<jörg@example.test>").await,
        "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8"
    );
    c.send(b"MAIL FROM:<j\xf6rg@example.test> SMTPUTF8\r\n")
        .await;
    assert_eq!(c.reply().await, "501 5.5.2 Error: bad UTF-8 syntax");
    c.expect("MAIL FROM:<jörg@example.test> SMTPUTF8", "250 2.1.0 Ok")
        .await;
    c.expect("RCPT TO:<δοκιμή@παράδειγμα.test>", "250 2.1.5 Ok")
        .await;
    let got = c.data("Subject: utf8\r\n\r\nhi\r\n").await;
    assert!(got.starts_with("250 2.0.0 Ok: queued as "), "{got}");
    let m = &server.capture.messages()[0];
    assert_eq!(m.mail_from, "jörg@example.test");
    assert_eq!(m.rcpts, ["δοκιμή@παράδειγμα.test"]);
    server.shutdown().await;
}

#[tokio::test]
async fn smtplib_sends_smtputf8_addresses() {
    if !common::have_python3() {
        return;
    }
    let server = start_opts("", |_| {}).await;
    let port = server.addr().port();
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\n\
         s.ehlo('client.test')\n\
         assert s.has_extn('smtputf8')\n\
         s.sendmail('jörg@example.test', ['δοκιμή@example.test'], b'Subject: a\\r\\n\\r\\nb\\r\\n', mail_options=['SMTPUTF8'])\n\
         print('utf8 sent')\n\
         s.quit()\n"
    );
    let out = common::output("python3", &["-c", &script]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "utf8 sent");
    let m = &server.capture.messages()[0];
    assert!(m.accepted);
    assert_eq!(m.mail_from, "jörg@example.test");
    assert_eq!(m.rcpts, ["δοκιμή@example.test"]);
    server.shutdown().await;
}

#[tokio::test]
async fn sessions_per_ip_are_capped_with_421() {
    let server = start_opts("", |o| o.max_sessions_per_ip = 2).await;
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    assert!(a.reply().await.starts_with("220 "));
    assert!(b.reply().await.starts_with("220 "));
    let mut c = Client::connect(&server).await;
    assert_eq!(
        c.reply().await,
        "421 4.7.0 mailfault.test Error: too many connections from your address"
    );
    assert!(c.closed().await);
    a.expect("QUIT", "221 ").await;
    assert!(a.closed().await);
    // The slot is free again once a session ends.
    let mut d = Client::connect(&server).await;
    assert!(d.reply().await.starts_with("220 "), "after a QUIT");
    b.expect("NOOP", "250 ").await;
    server.shutdown().await;
}

#[tokio::test]
async fn session_lifetime_ends_even_a_busy_session() {
    let server = start_opts("", |o| o.session_lifetime = Duration::from_millis(400)).await;
    let mut c = Client::connect(&server).await;
    assert!(c.reply().await.starts_with("220 "));
    let mut last = String::new();
    for _ in 0..20 {
        last = c.cmd("NOOP").await;
        if !last.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, "421 4.4.2 mailfault.test Error: timeout exceeded");
    assert!(c.closed().await);
    server.shutdown().await;
}

/// The listen backlog, as the kernel reports it (`ss` shows it as Send-Q
/// of a listening socket), capped by net.core.somaxconn: for a listener
/// given at start and for one a scenario added at run time opens.
#[tokio::test]
async fn listen_backlog_is_what_was_asked() {
    if !common::capable("ss -ltn", "ss (iproute2) not installed") {
        return;
    }
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    for backlog in [2000, mailfault::server::limits::DEFAULT_BACKLOG] {
        let server = start_opts("", |o| o.backlog = backlog).await;
        let added = server.runtime().put("added", "").unwrap();
        for port in [server.addr().port(), added.port] {
            assert_eq!(listen_backlog(port).await, backlog.min(somaxconn));
        }
        server.shutdown().await;
    }
    const { assert!(mailfault::server::limits::DEFAULT_BACKLOG >= 1024) };
}

/// The backlog of the socket listening on `port`, from `ss`.
async fn listen_backlog(port: u16) -> u32 {
    let out = common::output("ss", &["-ltnH", &format!("sport = :{port}")]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket in {text:?}"))
}

#[tokio::test]
async fn serve_help_lists_every_limit() {
    let out = common::output(common::bin(), &["serve", "--help"]).await;
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--max-connections",
        "--max-sessions-per-ip",
        "--max-message-memory",
        "--session-lifetime",
        "--backlog",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("[default: 512MiB]"), "{help}");
    assert!(help.contains("[default: 4096]"), "{help}");
}

#[tokio::test]
async fn check_refuses_long_reply_lines_and_huge_patterns() {
    let dir = common::tmp("limits-check");
    let file = dir.join("long.toml");
    let text = format!(
        "[[rule]]\non = \"rcpt\"\nreply = \"550 5.1.1 {}\"\n\n[[rule]]\non = \"rcpt\"\nwhen = {{ rcpt = \"/\\\\w{{1000}}@x/\" }}\naction = \"accept\"\n\n[[rule]]\non = \"rcpt\"\nraw = \"550 {}\\r\\n\"\n",
        "x".repeat(600),
        "y".repeat(600)
    );
    std::fs::write(&file, text).unwrap();
    let out = common::output(common::bin(), &["check", file.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let path = file.display();
    assert!(
        stderr.contains(&format!("{path}:3:9: a reply line is 612 octets on the wire, over the 512 RFC 5321 §4.5.3.1.5 allows")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:7:17: regular expression /\\w{{1000}}@x/ is too big once compiled"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(":11:"), "raw stays free: {stderr}");
}

#[tokio::test]
async fn line_length_limit_is_the_scenarios() {
    let server = start_opts("[server]\nmax_line_length = 600\n", |_| {}).await;
    let mut c = Client::connect(&server).await;
    assert!(c.reply().await.starts_with("220 "));
    // "NOOP " + 593 + CRLF = 600 octets: the most allowed.
    c.expect(&format!("NOOP {}", "a".repeat(593)), "250 2.0.0 Ok")
        .await;
    assert_eq!(
        c.cmd(&format!("NOOP {}", "a".repeat(594))).await,
        "500 5.5.2 Error: line too long"
    );
    c.expect("NOOP", "250 2.0.0 Ok").await;
    server.shutdown().await;
}
