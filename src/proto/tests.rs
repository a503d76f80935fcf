//! Session tests on the sync core: no sockets, no clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

struct T {
    s: Session,
    outputs: Vec<Output>,
}

fn client() -> std::net::SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

impl T {
    fn new() -> Self {
        Self::with(SessionConfig::default(), Arc::new(Healthy))
    }

    fn with(cfg: SessionConfig, policy: Arc<dyn Policy>) -> Self {
        let mut s = Session::new(Arc::new(cfg), policy, client(), 1);
        let outputs = s.greet(Instant::now());
        Self { s, outputs }
    }

    /// Everything sent by the last step, as text.
    fn sent(&self) -> String {
        sent(&self.outputs)
    }

    fn feed(&mut self, bytes: &[u8]) -> String {
        self.outputs = self.s.feed(bytes, Instant::now());
        self.sent()
    }

    /// Sends one line and checks the reply starts with `expected`.
    #[track_caller]
    fn cmd(&mut self, line: &str, expected: &str) -> String {
        let got = self.feed(format!("{line}\r\n").as_bytes());
        assert!(
            got.starts_with(expected),
            "{line:?}: expected {expected:?}, got {got:?}"
        );
        got
    }

    fn closed(&self) -> Option<CloseReason> {
        self.outputs.iter().find_map(|o| match o {
            Output::Close(r) => Some(r.clone()),
            _ => None,
        })
    }

    fn message(&self) -> Option<Captured> {
        self.outputs.iter().find_map(|o| match o {
            Output::Message(m) => Some((**m).clone()),
            _ => None,
        })
    }

    fn envelope_again(&mut self) {
        self.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0 Ok");
        self.cmd("RCPT TO:<b@rcpt.test>", "250 2.1.5 Ok");
    }

    fn envelope(&mut self) {
        self.cmd("EHLO client.test", "250-mailfault.test");
        self.cmd("MAIL FROM:<a@sender.test>", "250 2.1.0 Ok");
        self.cmd("RCPT TO:<b@rcpt.test>", "250 2.1.5 Ok");
    }
}

fn sent(outputs: &[Output]) -> String {
    let mut s = String::new();
    for o in outputs {
        if let Output::Send { bytes, .. } = o {
            s.push_str(&String::from_utf8_lossy(bytes));
        }
    }
    s
}

#[test]
fn greeting_and_ehlo() {
    let mut t = T::new();
    assert_eq!(t.sent(), "220 mailfault.test ESMTP mailfault\r\n");
    let ehlo = t.cmd("EHLO client.test", "250-mailfault.test\r\n");
    assert_eq!(
        ehlo,
        "250-mailfault.test\r\n250-PIPELINING\r\n250-SIZE 35000000\r\n250-8BITMIME\r\n\
         250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 DSN\r\n"
    );
    t.cmd("HELO client.test", "250 mailfault.test\r\n");
}

#[test]
fn a_whole_transaction() {
    let mut t = T::new();
    t.envelope();
    t.cmd("DATA", "354 End data with <CR><LF>.<CR><LF>");
    let got = t.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n");
    assert!(got.starts_with("250 2.0.0 Ok: queued as "), "{got}");
    let m = t.message().unwrap();
    assert_eq!(m.mail_from, "a@sender.test");
    assert_eq!(m.rcpts, ["b@rcpt.test"]);
    assert_eq!(m.body, b"Subject: hi\r\n\r\nbody\r\n");
    assert!(m.accepted);
    assert!(got.ends_with(&format!("{}\r\n", m.id)));
    t.cmd("QUIT", "221 2.0.0 Bye");
    assert_eq!(t.closed(), Some(CloseReason::Quit));
}

#[test]
fn sequence_errors() {
    let mut t = T::new();
    t.cmd("MAIL FROM:<a@b>", "503 5.5.1 Error: send HELO/EHLO first");
    t.cmd("EHLO x", "250-");
    t.cmd("RCPT TO:<a@b>", "503 5.5.1 Error: need MAIL command");
    t.cmd("DATA", "503 5.5.1 Error: need MAIL command");
    t.cmd("MAIL FROM:<a@b>", "250 2.1.0");
    t.cmd("MAIL FROM:<a@b>", "503 5.5.1 Error: nested MAIL command");
    t.cmd("DATA", "503 5.5.1 Error: need RCPT command");
    t.cmd(
        "RCPT TO:<bad address@x>",
        "501 5.1.3 Bad recipient address syntax",
    );
    t.cmd("DATA", "554 5.5.1 Error: no valid recipients");
    t.cmd("RSET", "250 2.0.0 Ok");
    t.cmd("RCPT TO:<a@b>", "503 5.5.1 Error: need MAIL command");
}

#[test]
fn syntax_errors() {
    let mut t = T::new();
    t.cmd("EHLO", "501 5.5.4 Syntax: EHLO hostname");
    t.cmd("EHLO x", "250-");
    t.cmd("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>");
    t.cmd("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax");
    t.cmd(
        "MAIL FROM:<a@b> SIZE=99999999999999999999999",
        "501 5.5.4 Bad SIZE parameter syntax",
    );
    t.cmd(
        "MAIL FROM:<a@b> SIZE=36000000",
        "552 5.3.4 Message size exceeds fixed limit",
    );
    t.cmd(
        "MAIL FROM:<a@b> FOO=BAR",
        "555 5.5.4 Unsupported option: FOO",
    );
    t.cmd(
        "MAIL FROM:<> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x",
        "250 2.1.0 Ok",
    );
    t.cmd("RCPT TO:<> ", "501 5.1.3");
    t.cmd(
        "RCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d",
        "250 2.1.5",
    );
    t.cmd("RCPT TO:<c@d> XYZ", "555 5.5.4 Unsupported option: XYZ");
    t.cmd("DATA now", "501 5.5.4 Syntax: DATA (no arguments)");
    t.cmd("RSET x", "501 5.5.4");
    t.cmd("VRFY", "501 5.5.4");
    t.cmd("VRFY joe", "252 2.0.0");
    t.cmd("EXPN list", "252 2.0.0");
    t.cmd("HELP", "214 2.0.0");
    t.cmd("NOOP anything", "250 2.0.0 Ok");
    t.cmd("XYZZY", "502 5.5.1 Error: command not recognized");
    t.cmd("", "500 5.5.2 Error: bad syntax");
    t.cmd("STARTTLS", "502 5.5.1 Error: STARTTLS not available");
    t.cmd("QUIT now", "501 5.5.4");
}

#[test]
fn garbage_and_nul_get_replies() {
    let mut t = T::new();
    let got = t.feed(b"\x00\x01\xff\xfe\r\n");
    assert_eq!(got, "502 5.5.1 Error: command not recognized\r\n");
    let got = t.feed(b"\x00\x00\x00\n");
    assert_eq!(got, "502 5.5.1 Error: command not recognized\r\n");
}

#[test]
fn long_line_gets_500_and_session_stays_in_sync() {
    let mut t = T::new();
    let mut line = vec![b'A'; 100_000];
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let got = t.feed(&line);
    assert_eq!(got, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut t = T::new();
    t.cmd("EHLO x", "250-");
    let got = t.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n");
    assert_eq!(
        got,
        "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    let pipelined: Vec<bool> = t
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Command { pipelined, .. } => Some(*pipelined),
            _ => None,
        })
        .collect();
    assert_eq!(pipelined, [true, true, true, false]);
    // Data and the commands after it in one read.
    let got = t.feed(b"x\r\n.\r\nMAIL FROM:<a@b>\r\nQUIT\r\nNOOP\r\n");
    assert!(got.starts_with("250 2.0.0 Ok: queued as "));
    assert!(got.ends_with("250 2.1.0 Ok\r\n221 2.0.0 Bye\r\n"), "{got}");
}

#[test]
fn every_split_point_gives_the_same_replies() {
    let script: &[u8] = b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n..x\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\ndeMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5 LAST\r\nhelloQUIT\r\n";
    let run = |parts: &[&[u8]]| {
        let mut t = T::new();
        let mut all = String::new();
        let mut msgs = vec![];
        for p in parts {
            let out = t.s.feed(p, Instant::now());
            all.push_str(&sent(&out));
            for o in out {
                if let Output::Message(m) = o {
                    msgs.push((m.body.clone(), m.rcpts.clone()));
                }
            }
        }
        // Queue ids differ between runs.
        let all: Vec<String> = all
            .lines()
            .map(|l| l.split(" queued as ").next().unwrap().to_string())
            .collect();
        (all, msgs)
    };
    let whole = run(&[script]);
    assert_eq!(whole.1.len(), 3, "{:?}", whole.0);
    assert_eq!(whole.1[0].0, b".x\r\n");
    assert_eq!(whole.1[1].0, b"abcde");
    assert_eq!(whole.1[2].0, b"hello");
    assert!(!whole.0.iter().any(|l| l.starts_with('5')), "{:?}", whole.0);
    assert!(
        whole
            .0
            .iter()
            .any(|l| l == "250 2.0.0 Ok: 3 octets received"),
        "{:?}",
        whole.0
    );
    for i in 0..=script.len() {
        assert_eq!(run(&[&script[..i], &script[i..]]), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    assert_eq!(run(&bytes), whole);
}

#[test]
fn bdat_chunks_join_and_count() {
    let mut t = T::new();
    t.envelope();
    assert_eq!(t.feed(b"BDAT 4\r\nab"), "");
    assert_eq!(t.feed(b"cd"), "250 2.0.0 Ok: 4 octets received\r\n");
    let got = t.feed(b"BDAT 0 LAST\r\n");
    assert!(got.starts_with("250 2.0.0 Ok: queued as"), "{got}");
    let m = t.message().unwrap();
    assert_eq!(m.body, b"abcd");
    assert!(m.chunked);
    t.cmd("DATA", "503 5.5.1 Error: need MAIL command");
}

#[test]
fn bdat_without_transaction_drains_then_503() {
    let mut t = T::new();
    t.cmd("EHLO x", "250-");
    // The chunk body "NOOP\r\n" must not run as a command.
    assert_eq!(
        t.feed(b"BDAT 6\r\nNOOP\r\n"),
        "503 5.5.1 Error: need MAIL command\r\n"
    );
    t.cmd(
        "BDAT 99999999999999999999999",
        "501 5.5.4 Syntax: BDAT size [LAST]",
    );
}

#[test]
fn data_after_bdat_is_refused() {
    let mut t = T::new();
    t.envelope();
    t.feed(b"BDAT 1\r\nx");
    t.cmd("DATA", "503 5.5.1 Error: DATA after BDAT");
}

#[test]
fn oversized_message_is_drained_then_552() {
    let cfg = SessionConfig {
        max_message_size: 100,
        ..SessionConfig::default()
    };
    let mut t = T::with(cfg, Arc::new(Healthy));
    t.envelope();
    t.cmd("DATA", "354");
    let mut body = vec![b'x'; 10_000];
    body.extend_from_slice(b"\r\n");
    assert_eq!(t.feed(&body), "");
    assert_eq!(
        t.feed(b".\r\n"),
        "552 5.3.4 Error: message file too big\r\n"
    );
    let m = t.message().unwrap();
    assert!(!m.accepted);
    assert_eq!(m.size, 10_002);
    t.cmd("NOOP", "250 2.0.0 Ok");
}

#[test]
fn max_recipients() {
    let cfg = SessionConfig {
        max_recipients: 2,
        ..SessionConfig::default()
    };
    let mut t = T::with(cfg, Arc::new(Healthy));
    t.cmd("EHLO x", "250-");
    t.cmd("MAIL FROM:<a@b>", "250");
    t.cmd("RCPT TO:<1@b>", "250 2.1.5");
    t.cmd("RCPT TO:<2@b>", "250 2.1.5");
    t.cmd("RCPT TO:<3@b>", "452 4.5.3 Error: too many recipients");
    t.cmd("DATA", "354");
}

#[test]
fn require_tls() {
    let cfg = SessionConfig {
        require_tls: true,
        ..SessionConfig::default()
    };
    let mut t = T::with(cfg, Arc::new(Healthy));
    t.cmd("EHLO x", "250-");
    t.cmd(
        "MAIL FROM:<a@b>",
        "530 5.7.0 Must issue a STARTTLS command first",
    );
}

#[test]
fn idle_timeout_and_shutdown_replies() {
    let mut t = T::new();
    t.outputs = t.s.idle_timeout();
    assert_eq!(
        t.sent(),
        "421 4.4.2 mailfault.test Error: timeout exceeded\r\n"
    );
    assert_eq!(t.closed(), Some(CloseReason::IdleTimeout));
    let mut t = T::new();
    t.outputs = t.s.shutdown();
    assert!(t.sent().starts_with("421 4.3.2 mailfault.test"));
    assert_eq!(t.closed(), Some(CloseReason::Shutdown));
}

/// A policy that answers one stage with fixed decisions.
struct Script(Stage, Decision);

impl Policy for Script {
    fn ask(&self, ctx: &Context<'_>, _: Instant) -> Asked {
        Asked::Decided((ctx.stage == self.0).then(|| self.1.clone()))
    }
}

fn scripted(stage: Stage, outcome: Outcome) -> T {
    let d = Decision {
        rule: Some("r".into()),
        outcome,
        ..Decision::accept()
    };
    T::with(SessionConfig::default(), Arc::new(Script(stage, d)))
}

#[test]
fn scripted_rejection_at_rcpt_has_no_effect() {
    let mut t = scripted(
        Stage::Rcpt,
        Outcome::Reply(Reply::parse("550 5.1.1 nope").unwrap()),
    );
    t.cmd("EHLO x", "250");
    t.cmd("MAIL FROM:<a@b>", "250");
    t.cmd("RCPT TO:<c@d>", "550 5.1.1 nope");
    t.cmd("DATA", "554 5.5.1 Error: no valid recipients");
}

#[test]
fn scripted_positive_reply_takes_effect_even_out_of_sequence() {
    let mut t = scripted(
        Stage::Mail,
        Outcome::Reply(Reply::parse("250 fine").unwrap()),
    );
    t.cmd("EHLO x", "250");
    t.cmd("MAIL garbage", "250 fine");
    t.cmd("RCPT TO:<c@d>", "250 2.1.5");
}

#[test]
fn negative_greeting_serves_only_quit() {
    let mut t = scripted(
        Stage::Connect,
        Outcome::Reply(Reply::parse("554 5.7.1 go away").unwrap()),
    );
    assert_eq!(t.sent(), "554 5.7.1 go away\r\n");
    assert_eq!(t.closed(), None);
    t.cmd("EHLO x", "503 5.5.1 Error: no SMTP service here, send QUIT");
    t.cmd("MAIL FROM:<a@b>", "503 5.5.1");
    t.cmd("QUIT", "221");
}

#[test]
fn reply_421_closes_and_later_input_is_ignored() {
    let mut t = scripted(
        Stage::Mail,
        Outcome::Reply(Reply::parse("421 4.7.0 bye").unwrap()),
    );
    t.cmd("EHLO x", "250");
    let got = t.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
    assert_eq!(got, "421 4.7.0 bye\r\n");
    assert_eq!(t.closed(), Some(CloseReason::AfterReply(421)));
    assert_eq!(t.feed(b"NOOP\r\n"), "");
}

#[test]
fn disconnect_hang_and_raw() {
    let mut t = scripted(Stage::Data, Outcome::Disconnect);
    t.envelope();
    assert_eq!(t.cmd("DATA", ""), "");
    assert_eq!(t.closed(), Some(CloseReason::Disconnect));

    let mut t = scripted(Stage::Noop, Outcome::Hang);
    assert_eq!(t.cmd("NOOP", ""), "");
    assert!(t.outputs.contains(&Output::Hang {
        rule: Some("r".into())
    }));
    assert!(t.s.is_stopped());

    let mut t = scripted(Stage::Noop, Outcome::Raw(b"250-broken\n".to_vec()));
    assert_eq!(t.cmd("NOOP", ""), "250-broken\n");
}

#[test]
fn delay_and_drip_are_outputs() {
    let d = Decision {
        rule: Some("slow".into()),
        outcome: Outcome::Accept,
        delay: Duration::from_secs(3),
        close: None,
        drip: Some(Duration::from_millis(200)),
        tag: None,
    };
    let mut t = T::with(SessionConfig::default(), Arc::new(Script(Stage::Noop, d)));
    t.feed(b"NOOP\r\n");
    assert_eq!(t.outputs[1], Output::Wait(Duration::from_secs(3)));
    match &t.outputs[2] {
        Output::Send { drip, rule, .. } => {
            assert_eq!(*drip, Some(Duration::from_millis(200)));
            assert_eq!(rule.as_deref(), Some("slow"));
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn message_rule_sees_size_and_body() {
    struct Big;
    impl Policy for Big {
        fn ask(&self, ctx: &Context<'_>, _: Instant) -> Asked {
            Asked::Decided(
                (ctx.stage == Stage::Message
                    && ctx.size == Some(5)
                    && ctx.message == Some(&b"abc\r\n"[..]))
                .then(|| Decision {
                    outcome: Outcome::Reply(Reply::parse("451 4.3.0 later").unwrap()),
                    ..Decision::accept()
                }),
            )
        }
    }
    let mut t = T::with(SessionConfig::default(), Arc::new(Big));
    t.envelope();
    t.cmd("DATA", "354");
    assert_eq!(t.feed(b"abc\r\n.\r\n"), "451 4.3.0 later\r\n");
    assert!(!t.message().unwrap().accepted);
}

#[test]
fn random_input_never_panics_and_memory_stays_bounded() {
    use rand::{Rng, SeedableRng};
    // Pieces of real SMTP mixed with garbage, cut at random places.
    const PIECES: &[&[u8]] = &[
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"RCPT TO:<c@d>\r\n",
        b"DATA\r\n",
        b"\r\n.\r\n",
        b".\r\n",
        b"BDAT 3\r\n",
        b"BDAT 0 LAST\r\n",
        b"BDAT 99999999999999999999\r\n",
        b"RSET\r\n",
        b"\n.\n",
        b"\r",
        b"\n",
        b"\x00\xff",
        b"MAIL FROM:<",
        b"SIZE=18446744073709551616",
        b"QUIT\r\n",
        b"NOOP\r\n",
        b"..",
    ];
    let cfg = SessionConfig {
        max_message_size: 4096,
        ..SessionConfig::default()
    };
    for seed in 0..200u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut s = Session::new(Arc::new(cfg.clone()), Arc::new(Healthy), client(), seed);
        s.greet(Instant::now());
        for _ in 0..300 {
            let mut chunk = Vec::new();
            for _ in 0..rng.random_range(1..6) {
                if rng.random_bool(0.3) {
                    let n = rng.random_range(1..3000);
                    chunk.extend((0..n).map(|_| rng.random::<u8>()));
                } else {
                    chunk.extend_from_slice(PIECES[rng.random_range(0..PIECES.len())]);
                }
            }
            for o in s.feed(&chunk, Instant::now()) {
                if let Output::Send { ref bytes, .. } = o {
                    assert!(bytes.ends_with(b"\r\n"));
                    assert!(bytes[..3].iter().all(u8::is_ascii_digit));
                }
                if let Output::Message(m) = o {
                    assert!(m.body.len() <= 4096);
                }
            }
            if s.is_stopped() {
                assert!(s.feed(b"NOOP\r\n", Instant::now()).is_empty());
                break;
            }
        }
    }
}

fn reject_bare_lf() -> T {
    let cfg = SessionConfig {
        bare_lf: BareLf::Reject,
        ..SessionConfig::default()
    };
    T::with(cfg, Arc::new(Healthy))
}

#[test]
fn bare_lf_reject_in_a_command_answers_521_and_closes() {
    let mut t = reject_bare_lf();
    t.cmd("EHLO client.test", "250-");
    let got = t.feed(b"NOOP\n");
    assert_eq!(
        got,
        "521 5.5.2 mailfault.test Error: bare <LF> received\r\n"
    );
    assert_eq!(t.closed(), Some(CloseReason::AfterReply(521)));
    assert!(t.s.is_stopped());
}

#[test]
fn bare_lf_reject_in_data_refuses_the_message_and_closes() {
    let mut t = reject_bare_lf();
    t.envelope();
    t.cmd("DATA", "354");
    // The smuggling shape: a bare LF then ".\n" then a command.
    let got = t.feed(b"Subject: x\r\n\r\nline\n.\nRSET\r\n");
    assert_eq!(
        got,
        "521 5.5.2 mailfault.test Error: bare <LF> received\r\n"
    );
    let m = t.message().expect("the refused message is recorded");
    assert!(!m.accepted && m.bare_lf);
    assert_eq!(m.reply_code, Some(521));
    assert_eq!(t.closed(), Some(CloseReason::AfterReply(521)));
}

#[test]
fn bare_lf_accept_keeps_todays_behaviour() {
    let mut t = T::new();
    t.cmd("EHLO client.test", "250-");
    t.feed(b"NOOP\n");
    assert_eq!(t.sent(), "250 2.0.0 Ok\r\n");
    t.cmd("MAIL FROM:<a@b.test>", "250");
    t.cmd("RCPT TO:<c@d.test>", "250");
    t.cmd("DATA", "354");
    let got = t.feed(b"a\nb\r\n.\r\n");
    assert!(got.starts_with("250 2.0.0 Ok: queued"), "{got}");
    assert!(t.message().unwrap().bare_lf);
    // CR LF command lines never trip the reject mode either.
    let mut r = reject_bare_lf();
    r.envelope();
    r.cmd("RSET", "250 2.0.0 Ok");
}

#[test]
fn non_ascii_addresses_need_smtputf8() {
    let mut t = T::new();
    t.cmd("EHLO client.test", "250-");
    t.cmd(
        "MAIL FROM:<jöran@example.test>",
        "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8",
    );
    t.cmd("MAIL FROM:<a@example.test>", "250 2.1.0 Ok");
    t.cmd(
        "RCPT TO:<用户@例子.test>",
        "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8",
    );
    t.cmd("RSET", "250");
    t.cmd("MAIL FROM:<jöran@example.test> SMTPUTF8", "250 2.1.0 Ok");
    t.cmd("RCPT TO:<用户@例子.test>", "250 2.1.5 Ok");
}

#[test]
fn invalid_utf8_addresses_are_syntax_errors() {
    let mut t = T::new();
    t.cmd("EHLO client.test", "250-");
    let got = t.feed(b"MAIL FROM:<a\xff\xfe@example.test> SMTPUTF8\r\n");
    assert_eq!(got, "501 5.5.2 Error: bad UTF-8 syntax\r\n");
    t.cmd("MAIL FROM:<a@example.test> SMTPUTF8", "250");
    let got = t.feed(b"RCPT TO:<\xc3(@example.test>\r\n");
    assert_eq!(got, "501 5.5.2 Error: bad UTF-8 syntax\r\n");
}

#[test]
fn smtputf8_not_offered_is_an_unknown_parameter() {
    let cfg = SessionConfig {
        extensions: vec!["PIPELINING".into(), "ENHANCEDSTATUSCODES".into()],
        ..SessionConfig::default()
    };
    let mut t = T::with(cfg, Arc::new(Healthy));
    t.cmd("EHLO client.test", "250-");
    t.cmd(
        "MAIL FROM:<jöran@example.test> SMTPUTF8",
        "555 5.5.4 Unsupported option: SMTPUTF8",
    );
}

#[test]
fn an_extension_is_offered_by_its_whole_first_word() {
    let cfg = SessionConfig {
        extensions: vec!["dsn".into(), "SMTPUTF8X".into(), "SIZE 1000".into()],
        ..SessionConfig::default()
    };
    let mut t = T::with(cfg, Arc::new(Healthy));
    t.cmd("EHLO client.test", "250-");
    t.cmd("MAIL FROM:<a@example.test> RET=FULL", "250 2.1.0 Ok");
    t.cmd("RSET", "250");
    t.cmd(
        "MAIL FROM:<a@example.test> SMTPUTF8",
        "555 5.5.4 Unsupported option: SMTPUTF8",
    );
}

fn plain_auth() -> SessionConfig {
    SessionConfig {
        auth: Some(Arc::new(crate::proto::auth::AuthConfig {
            mechanisms: vec![crate::proto::auth::Mechanism::Plain],
            required: false,
            users: Default::default(),
            allow_plaintext: true,
        })),
        ..SessionConfig::default()
    }
}

fn command_lines(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Command { line, .. } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn credentials_on_the_auth_line_never_reach_the_transcript() {
    let mut t = T::with(plain_auth(), Arc::new(Healthy));
    t.cmd("EHLO client.test", "250-");
    // "\0user\0secret" in base64.
    t.cmd(
        "AUTH PLAIN AHVzZXIAc2VjcmV0",
        "235 2.7.0 Authentication successful",
    );
    assert_eq!(
        command_lines(&t.outputs),
        ["AUTH PLAIN [initial response hidden]"]
    );
}

#[test]
fn an_auth_line_that_waits_for_the_store_stays_hidden_and_runs_once_answered() {
    let mut t = T::with(plain_auth(), Arc::new(Waits(Stage::Auth)));
    t.cmd("EHLO client.test", "250-");
    assert_eq!(t.feed(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"), "");
    assert!(t.s.is_suspended());
    assert_eq!(
        command_lines(&t.outputs),
        ["AUTH PLAIN [initial response hidden]"]
    );
    // Run again with the store's answer: the line is not shown twice, and
    // the credentials it kept still authenticate.
    let out = t.s.resume(count(2), Instant::now());
    assert_eq!(sent(&out), "235 2.7.0 Authentication successful\r\n");
    assert!(command_lines(&out).is_empty());
    assert!(!t.s.is_suspended());
}

fn with_budget(limit: u64) -> (T, Arc<MemoryBudget>) {
    let budget = MemoryBudget::new(limit);
    let mut t = T::new();
    t.s.set_budget(budget.clone());
    (t, budget)
}

#[test]
fn message_past_the_memory_budget_gets_452_and_the_session_goes_on() {
    let (mut t, budget) = with_budget(100_000);
    t.envelope();
    t.cmd("DATA", "354");
    let mut body = vec![b'x'; 300_000];
    body.extend_from_slice(b"\r\n");
    assert_eq!(t.feed(&body), "");
    assert_eq!(budget.used(), 0, "the partial message was let go");
    assert_eq!(
        t.feed(b".\r\n"),
        "452 4.3.1 Insufficient system storage\r\n"
    );
    let m = t.message().unwrap();
    assert!(!m.accepted);
    assert_eq!(m.size, 300_002);
    t.cmd("RSET", "250 2.0.0 Ok");
    t.envelope_again();
    t.cmd("DATA", "354");
    let got = t.feed(b"small\r\n.\r\n");
    assert!(got.starts_with("250 2.0.0 Ok: queued"), "{got}");
    assert_eq!(budget.used(), 0);
}

#[test]
fn declared_size_over_the_budget_is_refused_at_data() {
    let (mut t, _budget) = with_budget(1000);
    t.cmd("EHLO client.test", "250-");
    t.cmd("MAIL FROM:<a@b.test> SIZE=5000", "250");
    t.cmd("RCPT TO:<c@d.test>", "250");
    t.cmd("DATA", "452 4.3.1 Insufficient system storage");
    t.cmd("RSET", "250");
}

#[test]
fn bdat_chunk_over_the_budget_is_refused_and_drained() {
    let (mut t, budget) = with_budget(10_000);
    t.envelope();
    let mut chunk = b"BDAT 5000\r\n".to_vec();
    chunk.extend(vec![b'y'; 5000]);
    assert_eq!(t.feed(&chunk), "250 2.0.0 Ok: 5000 octets received\r\n");
    let mut chunk = b"BDAT 20000 LAST\r\n".to_vec();
    chunk.extend(vec![b'z'; 20000]);
    assert_eq!(t.feed(&chunk), "452 4.3.1 Insufficient system storage\r\n");
    assert_eq!(budget.used(), 0, "the transaction ended, its bytes too");
    t.cmd("NOOP", "250 2.0.0 Ok");
    t.cmd("MAIL FROM:<a@b.test>", "250");
}

/// A policy whose decisions at one stage wait for the store: it asks to
/// count the stage's recipient (or message), then refuses the first time.
struct Waits(Stage);

const WAIT_AT: Cursor = Cursor(7);

impl Policy for Waits {
    fn ask(&self, ctx: &Context<'_>, _: Instant) -> Asked {
        if ctx.stage != self.0 {
            return Asked::Decided(None);
        }
        let key = ctx.rcpt.unwrap_or("message").to_string();
        Asked::Suspend {
            at: WAIT_AT,
            op: Op::Incr(vec![key]),
        }
    }

    fn resume(&self, _: &Context<'_>, _: Instant, at: Cursor, done: Answer<Done>) -> Asked {
        assert_eq!(at, WAIT_AT, "resumed where it stopped");
        let reply = match done {
            Ok(Done::Counts(n)) if n == [1] => "550 5.7.1 first time",
            Ok(_) => return Asked::Decided(None),
            Err(_) => "451 4.3.0 store down",
        };
        Asked::Decided(Some(Decision {
            rule: Some("waits".into()),
            outcome: Outcome::Reply(Reply::parse(reply).unwrap()),
            ..Decision::accept()
        }))
    }
}

use crate::state::{Answer, Done, Op};

/// The op of the batch's final `Output::Store`, if it ends with one.
fn store_op(outputs: &[Output]) -> Option<Op> {
    match outputs.last() {
        Some(Output::Store(op)) => Some(op.clone()),
        _ => None,
    }
}

fn count(n: u64) -> Answer<Done> {
    Ok(Done::Counts(vec![n]))
}

#[test]
fn pipelined_commands_behind_a_waiting_decision_wait_for_it() {
    let mut t = T::with(SessionConfig::default(), Arc::new(Waits(Stage::Rcpt)));
    t.cmd("EHLO client.test", "250-mailfault.test");
    let got =
        t.feed(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    // MAIL is answered; the first RCPT waits, and nothing behind it runs.
    assert_eq!(got, "250 2.1.0 Ok\r\n");
    assert_eq!(
        store_op(&t.outputs),
        Some(Op::Incr(vec!["b@y.test".into()]))
    );
    assert!(t.s.is_suspended());
    assert_eq!(
        command_lines(&t.outputs),
        ["MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>"]
    );
    // More input while waiting is held too, not answered.
    assert_eq!(t.feed(b"NOOP\r\n"), "");
    assert!(t.outputs.is_empty());

    // The answer: the first RCPT is refused, the second waits in its turn.
    let out = t.s.resume(count(1), Instant::now());
    assert_eq!(sent(&out), "550 5.7.1 first time\r\n");
    assert_eq!(store_op(&out), Some(Op::Incr(vec!["c@y.test".into()])));
    // Its command line is given once, when it was read.
    assert_eq!(command_lines(&out), ["RCPT TO:<c@y.test>"]);

    // The second passes; DATA and the held NOOP follow, in order.
    let out = t.s.resume(count(2), Instant::now());
    assert_eq!(
        sent(&out),
        "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    assert!(!t.s.is_suspended());
    assert!(store_op(&out).is_none());
    // NOOP was held behind DATA: it is part of the message.
    assert!(t.feed(b".\r\n").starts_with("250 2.0.0 Ok: queued as "));
    assert!(store_op(&t.outputs).is_none());
    assert!(t.message().is_some_and(|m| m.accepted));
}

#[test]
fn an_unavailable_store_answers_through_the_policy() {
    let mut t = T::with(SessionConfig::default(), Arc::new(Waits(Stage::Rcpt)));
    t.cmd("EHLO client.test", "250");
    t.cmd("MAIL FROM:<a@x.test>", "250");
    assert_eq!(t.feed(b"RCPT TO:<b@y.test>\r\n"), "");
    let out = t.s.resume(Err(crate::state::Unavailable), Instant::now());
    assert_eq!(sent(&out), "451 4.3.0 store down\r\n");
    assert!(!t.s.is_suspended());
}

#[test]
fn a_greeting_that_waits_holds_the_client_s_first_command() {
    let policy = Arc::new(Waits(Stage::Connect));
    let mut s = Session::new(Arc::new(SessionConfig::default()), policy, client(), 1);
    let out = s.greet(Instant::now());
    assert_eq!(sent(&out), "");
    assert!(store_op(&out).is_some());
    // A client that talks first (a pregreet) is not answered first.
    assert!(s.feed(b"EHLO early.test\r\n", Instant::now()).is_empty());
    let out = s.resume(count(2), Instant::now());
    let text = sent(&out);
    assert!(text.starts_with("220 mailfault.test ESMTP"), "{text}");
    assert!(text.contains("\r\n250-mailfault.test"), "{text}");
}

#[test]
fn a_session_closed_while_waiting_leaks_nothing() {
    let budget = MemoryBudget::new(1 << 20);
    let policy = Arc::new(Waits(Stage::Message));
    let mut s = Session::new(
        Arc::new(SessionConfig::default()),
        policy.clone(),
        client(),
        1,
    );
    s.set_budget(budget.clone());
    s.greet(Instant::now());
    let now = Instant::now();
    s.feed(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
        now,
    );
    let body = vec![b'x'; 100_000];
    s.feed(&body, now);
    let out = s.feed(b"\r\n.\r\nQUIT\r\n", now);
    assert!(store_op(&out).is_some(), "the message's decision waits");
    assert!(s.is_suspended());
    // The server shuts down before the store answers.
    let out = s.shutdown();
    assert!(sent(&out).starts_with("421 4.3.2"));
    assert!(out.contains(&Output::Close(CloseReason::Shutdown)));
    assert!(!s.is_suspended());
    assert_eq!(budget.used(), 0, "the held message gave its memory back");
    // A late answer changes nothing.
    assert!(s.resume(count(1), Instant::now()).is_empty());
    drop(s);
    assert_eq!(Arc::strong_count(&policy), 1);

    // Dropped while waiting, without a shutdown.
    let mut s = Session::new(
        Arc::new(SessionConfig::default()),
        policy.clone(),
        client(),
        2,
    );
    s.set_budget(budget.clone());
    s.greet(now);
    s.feed(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
        now,
    );
    s.feed(&body, now);
    assert!(store_op(&s.feed(b"\r\n.\r\n", now)).is_some());
    drop(s);
    assert_eq!(budget.used(), 0);
    assert_eq!(Arc::strong_count(&policy), 1);
}

#[test]
fn a_message_decision_resumes_with_the_message() {
    let mut t = T::with(SessionConfig::default(), Arc::new(Waits(Stage::Message)));
    t.envelope();
    t.cmd("DATA", "354");
    t.feed(b"Subject: x\r\n\r\nhi\r\n.\r\nNOOP\r\n");
    assert!(store_op(&t.outputs).is_some());
    assert!(
        t.message().is_none(),
        "nothing captured before the decision"
    );
    let out = t.s.resume(count(1), Instant::now());
    assert_eq!(sent(&out), "550 5.7.1 first time\r\n250 2.0.0 Ok\r\n");
    let m = out
        .iter()
        .find_map(|o| match o {
            Output::Message(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert!(!m.accepted);
    assert_eq!(m.size, 18);
}

#[test]
fn commands_after_a_negative_greeting_keep_their_exact_replies() {
    let mut t = scripted(
        Stage::Connect,
        Outcome::Reply(Reply::parse("554 5.7.1 go away").unwrap()),
    );
    let refused = "503 5.5.1 Error: no SMTP service here, send QUIT\r\n";
    for line in [
        "HELO x",
        "RSET",
        "VRFY",
        "EXPN x",
        "HELP",
        "STARTTLS",
        "AUTH PLAIN",
        "DATA",
        "BOGUS",
    ] {
        assert_eq!(t.feed(format!("{line}\r\n").as_bytes()), refused, "{line}");
    }
    t.cmd("NOOP", "250 2.0.0 Ok");
    // Checks before the refusal keep their place: DATA's argument first.
    assert!(t.feed(b"DATA x\r\n").starts_with("501 5.5.4"));
}

/// A queue id is the process id's last five hex digits and the counter's
/// last seven, upper case, as it was when `format!` wrote it.
#[test]
fn queue_ids_are_twelve_hex_digits_of_process_and_counter() {
    for (seed, n) in [
        (0, 0),
        (1234, 1),
        (0xABCDE, 0xFFF_FFFF),
        (u64::MAX, u64::MAX),
        (0x12_3456, 0x1234_5678),
    ] {
        let expected = format!("{:05X}{:07X}", seed & 0xF_FFFF, n & 0xFFF_FFFF);
        assert_eq!(session::queue_id(seed, n), expected);
    }
    assert_eq!(session::queue_id(0x4D2, 0x2A), "004D2000002A");
}

/// The greeting, HELO and EHLO replies are built once per configuration
/// and kept in it; a copy starts without them, so a copy changed before
/// use answers with its own texts, and EHLO under TLS has its own reply.
#[test]
fn canned_replies_follow_the_configuration_they_were_built_from() {
    let first = Arc::new(SessionConfig {
        hostname: "first.test".into(),
        starttls: true,
        ..SessionConfig::default()
    });
    let mut s = Session::new(first.clone(), Arc::new(Healthy), client(), 1);
    assert!(sent(&s.greet(Instant::now())).starts_with("220 first.test "));
    let ehlo = sent(&s.feed(b"EHLO a\r\n", Instant::now()));
    assert!(ehlo.starts_with("250-first.test\r\n") && ehlo.contains("STARTTLS"));
    let mut copy = (*first).clone();
    copy.hostname = "copy.test".into();
    let mut t = T::with(copy, Arc::new(Healthy));
    assert!(t.sent().starts_with("220 copy.test "), "{}", t.sent());
    t.cmd("EHLO a", "250-copy.test\r\n");
    t.cmd("HELO a", "250 copy.test\r\n");
    // The first configuration's session under TLS: no STARTTLS offered.
    s.tls_established();
    let ehlo = sent(&s.feed(b"EHLO a\r\n", Instant::now()));
    assert!(
        ehlo.starts_with("250-first.test\r\n") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
}
