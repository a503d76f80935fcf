//! End-to-end over loopback against the in-process server with a raw
//! client: exact codes and texts, pipelining, bad input, time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailfault::capture::EventKind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

#[tokio::test]
async fn greeting_ehlo_and_a_captured_message() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    assert_eq!(c.reply().await, "220 mailfault.test ESMTP mailfault");
    assert_eq!(
        c.cmd("EHLO client.test").await,
        "250-mailfault.test\n250-PIPELINING\n250-SIZE 35000000\n250-8BITMIME\n250-SMTPUTF8\n250-ENHANCEDSTATUSCODES\n250-CHUNKING\n250 DSN"
    );
    c.expect("MAIL FROM:<sender@example.test>", "250 2.1.0 Ok")
        .await;
    c.expect("RCPT TO:<rcpt@example.test>", "250 2.1.5 Ok")
        .await;
    let done = c.data("Subject: hello\r\n\r\n..dot\r\nbody\r\n").await;
    assert!(done.starts_with("250 2.0.0 Ok: queued as "), "{done}");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
    assert!(c.closed().await);
    let m = server.capture.messages();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].mail_from, "sender@example.test");
    assert_eq!(m[0].rcpts, ["rcpt@example.test"]);
    assert_eq!(m[0].body, b"Subject: hello\r\n\r\n.dot\r\nbody\r\n");
    assert!(done.ends_with(&m[0].id));
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.send(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<550-5.1.1@d.test>\r\nDATA\r\n").await;
    assert!(c.reply().await.starts_with("250-mailfault.test"));
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert!(c.reply().await.starts_with("550 5.1.1 The email account"));
    assert_eq!(c.reply().await, "354 End data with <CR><LF>.<CR><LF>");
    c.send(b"x\r\n.\r\nQUIT\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    let events = server.capture.events();
    let pipelined = events
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                mailfault::capture::EventKind::Command {
                    pipelined: true,
                    ..
                }
            )
        })
        .count();
    // EHLO, MAIL and both RCPTs had more bytes behind them; DATA did not.
    assert_eq!(pipelined, 4);
}

/// Replies a client does not read back up in its socket: the server
/// writes what the socket takes at once and waits for the rest, and every
/// reply arrives whole, once and in order.
#[tokio::test]
async fn replies_that_back_up_in_the_socket_arrive_whole_and_in_order() {
    let server = start_default().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let commands = ["VRFY x", "HELP"];
    let replies = [
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
        "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY EXPN HELP QUIT",
    ];
    // Twice what the server's send buffer grows to (tcp_wmem's maximum,
    // 4 MB by default), at about 80 bytes a reply: the socket must refuse
    // writes for a while.
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    let n = (2 * wmem_max / 80).min(400_000);
    let mut pipelined = String::new();
    for i in 0..n {
        pipelined.push_str(commands[i % 2]);
        pipelined.push_str("\r\n");
    }
    pipelined.push_str("QUIT\r\n");
    // The server stops reading while it waits to write: the commands go
    // from a task of their own.
    let writer = tokio::spawn(async move { w.write_all(pipelined.as_bytes()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    for i in 0..n {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("{}\r\n", replies[i % 2]), "reply {i}");
    }
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "221 2.0.0 Bye\r\n");
    line.clear();
    assert_eq!(
        r.read_line(&mut line).await.unwrap(),
        0,
        "then the end: {line}"
    );
    writer.await.unwrap().unwrap();
    // The ring keeps the last 50,000 events: the last reply is the Bye.
    let events = server.capture.events();
    let last = events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::Reply { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last, "221 2.0.0 Bye\r\n");
}

#[tokio::test]
async fn bdat_chunks() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "c@d.test").await;
    c.send(b"BDAT 5\r\nhello").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok: 5 octets received");
    c.send(b"BDAT 7 LAST\r\n world!").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as"));
    assert_eq!(server.capture.messages()[0].body, b"hello world!");
}

#[tokio::test]
async fn garbage_nul_and_long_lines_get_replies() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.send(b"\x00\x01\x02\xff\xfe\r\n").await;
    assert_eq!(c.reply().await, "502 5.5.1 Error: command not recognized");
    // 100 KB without CRLF: answered as soon as the limit is passed.
    c.send(&vec![b'A'; 100_000]).await;
    assert_eq!(c.reply().await, "500 5.5.2 Error: line too long");
    c.send(b"AAAA\r\n").await;
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    // Every other session is still served.
    let mut other = Client::connect(&server).await;
    assert!(other.reply().await.starts_with("220 "));
}

#[tokio::test]
async fn idle_timeout_counts_from_the_last_command() {
    let server = start("[server]\nidle_timeout = \"400ms\"\n").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    // One byte every 100 ms never completes a command: still timed out.
    let t = Instant::now();
    for b in b"NOOP NOOP NOOP NOOP NOOP NOOP NOOP NOOP" {
        if !c.try_send(&[*b]).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if t.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    assert_eq!(
        c.reply().await,
        "421 4.4.2 mailfault.test Error: timeout exceeded"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn a_busy_session_outlives_its_idle_timeout_then_times_out_when_quiet() {
    let server = start("[server]\nidle_timeout = \"500ms\"\n").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    // A command every 100 ms for three times the idle timeout: served.
    for _ in 0..15 {
        c.expect("NOOP", "250").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Timed from the last command, not from the first: the clock starts
    // before the server can have read it.
    let quiet = Instant::now();
    c.expect("NOOP", "250").await;
    assert_eq!(
        c.reply().await,
        "421 4.4.2 mailfault.test Error: timeout exceeded"
    );
    let waited = quiet.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn data_that_never_ends_times_out_and_vanishing_client_is_harmless() {
    let server = start("[server]\nidle_timeout = \"300ms\"\n").await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "c@d.test").await;
    c.expect("DATA", "354").await;
    c.send(b"partial line without end").await;
    assert_eq!(
        c.reply().await,
        "421 4.4.2 mailfault.test Error: timeout exceeded"
    );

    let mut gone = Client::connect(&server).await;
    gone.envelope("a@b.test", "c@d.test").await;
    gone.expect("DATA", "354").await;
    gone.send(b"half a message\r\n").await;
    drop(gone);
    let mut next = Client::connect(&server).await;
    next.envelope("a@b.test", "c@d.test").await;
    assert!(next.data("ok\r\n").await.starts_with("250 2.0.0"));
    // Only the complete message was captured.
    assert_eq!(server.capture.messages().len(), 1);
}

#[tokio::test]
async fn size_limits() {
    let server = start("[server]\nmax_message_size = \"1KB\"\n").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    assert!(c.cmd("EHLO x").await.contains("250-SIZE 1000\n"));
    c.expect(
        "MAIL FROM:<a@b.test> SIZE=1001",
        "552 5.3.4 Message size exceeds fixed limit",
    )
    .await;
    c.expect(
        "MAIL FROM:<a@b.test> SIZE=999999999999999999999999",
        "501 5.5.4 Bad SIZE parameter syntax",
    )
    .await;
    c.expect("MAIL FROM:<a@b.test> SIZE=500", "250").await;
    c.expect("RCPT TO:<c@d.test>", "250").await;
    let body = "x".repeat(100) + "\r\n";
    let big = body.repeat(1000);
    assert_eq!(c.data(&big).await, "552 5.3.4 Error: message file too big");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 Ok");
    assert!(server.capture.messages()[0].body.is_empty());
}

#[tokio::test]
async fn max_recipients() {
    let server = start("[server]\nmax_recipients = 2\n").await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "1@d.test").await;
    c.expect("RCPT TO:<2@d.test>", "250").await;
    assert_eq!(
        c.cmd("RCPT TO:<3@d.test>").await,
        "452 4.5.3 Error: too many recipients"
    );
}

#[tokio::test]
async fn contract_example_fail_twice_then_accept() {
    let server = start(
        "[[rule]]\non = \"message\"\nwhen = { rcpt = \"*@flaky.test\" }\ntimes = 2\nreply = \"451 4.3.0 Mail server temporarily rejected message.\"\n",
    )
    .await;
    let mut replies = vec![];
    for _ in 0..3 {
        let mut c = Client::connect(&server).await;
        c.envelope("a@b.test", "x@flaky.test").await;
        replies.push(c.data("hi\r\n").await);
        c.expect("QUIT", "221").await;
    }
    assert_eq!(
        replies[0],
        "451 4.3.0 Mail server temporarily rejected message."
    );
    assert_eq!(
        replies[1],
        "451 4.3.0 Mail server temporarily rejected message."
    );
    assert!(replies[2].starts_with("250 2.0.0 Ok: queued as"));
    // Other recipients are never touched.
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "x@stable.test").await;
    assert!(c.data("hi\r\n").await.starts_with("250"));
}

async fn connect_outcomes(toml: &str, n: usize) -> Vec<String> {
    let server = start(toml).await;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let addr = server.addr();
            tokio::spawn(async move { Client::connect_addr(addr).await.reply().await })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out.sort();
    out
}

#[tokio::test]
async fn contract_example_slow_flaky_front_door_is_seeded() {
    let toml = "[server]\nseed = 42\n[[rule]]\non = \"connect\"\nprobability = 0.3\ndelay = \"2s\"\nreply = \"421 4.4.5 Server busy, try again later.\"\n";
    let a = connect_outcomes(toml, 30).await;
    let b = connect_outcomes(toml, 30).await;
    assert_eq!(a, b, "the same seed gives the same outcomes");
    let busy = a
        .iter()
        .filter(|r| *r == "421 4.4.5 Server busy, try again later.")
        .count();
    assert!((1..30).contains(&busy), "{busy} of 30 refused");
    assert_eq!(
        a.iter().filter(|r| r.starts_with("220 ")).count(),
        30 - busy
    );
}

#[tokio::test]
async fn multi_line_replies_are_prefixed() {
    let server = start("[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"nobody@*\" }\nreply = \"550 5.1.1 The email account that you tried to reach does not exist.\\nPlease try double-checking.\\nLearn more at https://support.example.test\"\n").await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    assert_eq!(
        c.cmd("RCPT TO:<NoBody@x.test>").await,
        "550-5.1.1 The email account that you tried to reach does not exist.\n550-5.1.1 Please try double-checking.\n550 5.1.1 Learn more at https://support.example.test"
    );
}

#[tokio::test]
async fn sequence_presets_and_accept() {
    let server = start("[[rule]]\non = \"mail\"\nkey = [\"client_ip\"]\nsequence = [\"451 4.3.0 first\", \"@gmail.receiving_too_quickly\", \"accept\"]\n").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.expect("EHLO x", "250").await;
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await, "451 4.3.0 first");
    let second = c.cmd("MAIL FROM:<a@b.test>").await;
    assert!(
        second.starts_with(
            "450 4.2.1 The user you are trying to contact is receiving mail too quickly."
        ),
        "{second}"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").await, "250 2.1.0 Ok");
    c.expect("RSET", "250").await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b.test>").await,
        "250 2.1.0 Ok",
        "the last item repeats"
    );
}

#[tokio::test]
async fn every_command_is_scriptable() {
    let mut toml = String::new();
    for (stage, code) in [
        ("ehlo", 521),
        ("helo", 522),
        ("rset", 523),
        ("noop", 524),
        ("vrfy", 525),
        ("expn", 526),
        ("help", 527),
        ("quit", 528),
        ("unknown", 529),
    ] {
        toml.push_str(&format!(
            "[[rule]]\non = \"{stage}\"\nreply = \"{code} scripted {stage}\"\n"
        ));
    }
    let server = start(&toml).await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    for (line, want) in [
        ("EHLO x", "521 scripted ehlo"),
        ("HELO x", "522 scripted helo"),
        ("RSET", "523 scripted rset"),
        ("NOOP", "524 scripted noop"),
        ("VRFY x", "525 scripted vrfy"),
        ("EXPN x", "526 scripted expn"),
        ("HELP", "527 scripted help"),
        ("FOO bar", "529 scripted unknown"),
        ("QUIT", "528 scripted quit"),
    ] {
        assert_eq!(c.cmd(line).await, want);
    }
    assert!(c.closed().await, "QUIT closes even with a scripted reply");
}

#[tokio::test]
async fn actions_disconnect_hang_raw_and_close() {
    let server = start(
        "[server]\nidle_timeout = \"300ms\"\n\
         [[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"cut@*\" }\naction = \"disconnect\"\n\
         [[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"hang@*\" }\naction = \"hang\"\n\
         [[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"raw@*\" }\nraw = \"250-no final line\\n\"\n\
         [[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"bye@*\" }\nreply = \"550 5.7.1 go away\"\nclose = true\n",
    )
    .await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    c.send(b"RCPT TO:<cut@x.test>\r\n").await;
    assert!(c.closed().await);

    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    c.send(b"RCPT TO:<hang@x.test>\r\n").await;
    let t = Instant::now();
    assert!(
        c.closed().await,
        "closed after the idle timeout, without a reply"
    );
    assert!(t.elapsed() >= Duration::from_millis(250));

    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    c.send(b"RCPT TO:<raw@x.test>\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await, "250-no final line\n250 2.0.0 Ok");

    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    assert_eq!(c.cmd("RCPT TO:<bye@x.test>").await, "550 5.7.1 go away");
    assert!(c.closed().await);
}

#[tokio::test]
async fn delay_and_drip_take_time() {
    let server = start("[[rule]]\non = \"noop\"\ndelay = \"300ms\"\nreply = \"250 late\"\n[[rule]]\non = \"help\"\ndrip = \"30ms\"\nreply = \"214 drip drip drip\"\n").await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    let t = Instant::now();
    assert_eq!(c.cmd("NOOP").await, "250 late");
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(c.cmd("HELP").await, "214 drip drip drip");
    // 20 bytes in pieces of 4: four pauses.
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
    // The events of one batch share its timestamp, but a reply that
    // waited is stamped when it went out, not when its command came.
    let stamps = |verb: &str| {
        let events = server.capture.events();
        let at = |i: usize| humantime::parse_rfc3339(&events[i].ts).unwrap();
        let cmd = events
            .iter()
            .position(|e| matches!(&e.kind, EventKind::Command { line, .. } if line == verb))
            .unwrap();
        let reply = cmd
            + events[cmd..]
                .iter()
                .position(|e| matches!(e.kind, EventKind::Reply { .. }))
                .unwrap();
        at(reply).duration_since(at(cmd)).unwrap()
    };
    assert!(
        stamps("NOOP") >= Duration::from_millis(300),
        "{:?}",
        stamps("NOOP")
    );
    assert!(
        stamps("HELP") >= Duration::from_millis(120),
        "{:?}",
        stamps("HELP")
    );
}

#[tokio::test]
async fn conditions_combine() {
    let server = start(
        "[[rule]]\non = \"mail\"\nwhen = { helo = \"bad.*\", mail_from = \"/^spam[0-9]+@/\", client_ip = [\"127.0.0.0/8\"], tls = false }\nreply = \"550 5.7.1 blocked\"\n\
         [[rule]]\non = \"message\"\nwhen = { header = { Subject = \"*test*\" }, size = \"< 1KB\" }\nreply = \"554 5.7.1 no tests\"\n\
         [[rule]]\non = \"mail\"\nwhen = { size = \"> 10MB\" }\nreply = \"552 5.3.4 too big for this rule\"\n",
    )
    .await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.expect("EHLO bad.example", "250").await;
    assert_eq!(c.cmd("MAIL FROM:<spam1@x.test>").await, "550 5.7.1 blocked");
    c.expect(
        "MAIL FROM:<ham@x.test> SIZE=20000000",
        "552 5.3.4 too big for this rule",
    )
    .await;
    c.expect("MAIL FROM:<ham@x.test> SIZE=200", "250").await;
    c.expect("RCPT TO:<a@x.test>", "250").await;
    assert_eq!(
        c.data("Subject: a test\r\n\r\nhi\r\n").await,
        "554 5.7.1 no tests"
    );
    c.expect("MAIL FROM:<ham@x.test>", "250").await;
    c.expect("RCPT TO:<a@x.test>", "250").await;
    assert!(c
        .data("Subject: real\r\n\r\nhi\r\n")
        .await
        .starts_with("250"));
}

#[tokio::test]
async fn negative_greeting_and_421_close() {
    let server =
        start("[[rule]]\non = \"connect\"\nreply = \"554 5.7.1 No SMTP service here\"\n").await;
    let mut c = Client::connect(&server).await;
    assert_eq!(c.reply().await, "554 5.7.1 No SMTP service here");
    assert_eq!(
        c.cmd("EHLO x").await,
        "503 5.5.1 Error: no SMTP service here, send QUIT"
    );
    c.expect("QUIT", "221").await;

    let server = start("[[rule]]\non = \"connect\"\npreset = \"gmail.server_busy\"\n").await;
    let mut c = Client::connect(&server).await;
    assert_eq!(c.reply().await, "421 4.4.5 Server busy, try again later.");
    assert!(c.closed().await);
}

#[tokio::test]
async fn magic_recipients() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    assert!(c
        .cmd("RCPT TO:<550-5.1.1@x.test>")
        .await
        .starts_with("550 5.1.1 The email account that you tried to reach does not exist."));
    assert_eq!(
        c.cmd("RCPT TO:<452-4.2.2@x.test>")
            .await
            .split(' ')
            .take(2)
            .collect::<Vec<_>>(),
        ["452", "4.2.2"]
    );
    assert_eq!(
        c.cmd("RCPT TO:<421@x.test>").await,
        "421 4.0.0 Service not available, closing transmission channel"
    );
    assert!(c.closed().await);

    // tempfail2: 451 twice per sender/recipient, then accepted.
    let mut replies = vec![];
    for _ in 0..3 {
        let mut c = Client::connect(&server).await;
        c.envelope("a@b.test", "tempfail2@x.test").await;
        replies.push(c.data("hi\r\n").await);
    }
    assert_eq!(
        replies[0],
        "451 4.3.0 Mail server temporarily rejected message."
    );
    assert_eq!(replies[1], replies[0]);
    assert!(replies[2].starts_with("250 2.0.0"));

    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "drop@x.test").await;
    c.expect("DATA", "354").await;
    c.send(b"hi\r\n.\r\n").await;
    assert!(c.closed().await, "drop@ closes without a reply");
}

#[tokio::test]
async fn magic_slow_is_ten_seconds_late() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    let t = Instant::now();
    assert_eq!(c.cmd("RCPT TO:<slow@x.test>").await, "250 2.1.5 Ok");
    assert!(t.elapsed() >= Duration::from_secs(10));
}

#[tokio::test]
async fn transcript_records_commands_replies_and_rules() {
    let server = start("[[rule]]\nname = \"unknown user\"\non = \"rcpt\"\nwhen = { rcpt = \"nobody@*\" }\nreply = \"550 5.1.1 no such user\"\n").await;
    let mut c = Client::connect(&server).await;
    c.envelope("a@b.test", "ok@x.test").await;
    c.expect("RCPT TO:<nobody@x.test>", "550").await;
    c.expect("QUIT", "221").await;
    assert!(c.closed().await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lines: Vec<String> = server
        .capture
        .events()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let joined = lines.join("\n");
    assert!(lines[1].contains("\"type\":\"connect\""), "{joined}");
    assert!(
        joined.contains(
            "\"type\":\"command\",\"line\":\"RCPT TO:<nobody@x.test>\",\"stage\":\"rcpt\""
        ),
        "{joined}"
    );
    assert!(joined.contains("\"type\":\"reply\",\"code\":550,\"text\":\"550 5.1.1 no such user\\r\\n\",\"rule\":\"unknown user\""), "{joined}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains("\"type\":\"close\",\"by\":\"server\",\"reason\":\"quit\""),
        "{joined}"
    );
}

#[tokio::test]
async fn connection_cap_answers_421() {
    let mut opts = mailfault::server::Options::new(vec![mailfault::server::ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        source: mailfault::server::Source::Default,
        tls: Default::default(),
    }]);
    opts.max_connections = 1;
    let server = mailfault::server::Server::start(opts).await.unwrap();
    let mut first = Client::connect(&server).await;
    assert!(first.reply().await.starts_with("220"));
    let mut second = Client::connect(&server).await;
    assert_eq!(
        second.reply().await,
        "421 4.7.0 mailfault.test Error: too many connections"
    );
    assert!(second.closed().await);
}

#[tokio::test]
async fn graceful_shutdown_waits_then_421() {
    let server = start_default().await;
    let mut c = Client::connect(&server).await;
    c.reply().await;
    c.expect("EHLO x", "250").await;
    let addr = server.addr();
    let stop = tokio::spawn(server.shutdown());
    // Grace is 200 ms in the harness: the open session then gets 421 4.3.2.
    assert_eq!(
        c.reply().await,
        "421 4.3.2 mailfault.test Service shutting down, closing transmission channel"
    );
    assert!(c.closed().await);
    stop.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
