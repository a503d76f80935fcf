//! What the fuzz targets (fuzz/) found, kept as tests: each input is the
//! minimized one the fuzzer reported, and the assertion is the property the
//! target checks. See docs/robustness.md for the runs.

use mailfault::bounce::{dsn, reproduce};
use mailfault::scenario;

/// `from-bounce` then `check` on the scenario it wrote.
fn reproduced_scenario_loads(bounce: &[u8]) -> String {
    let b = dsn::parse(bounce).expect("read as a bounce");
    let text = reproduce::scenario(&b, "fuzz.eml");
    if let Err(e) = scenario::parse(&text, "generated.toml", "generated") {
        panic!("from-bounce wrote a scenario that does not load:\n{e}\n---\n{text}");
    }
    text
}

/// fuzz target `bounce`: a NUL in a free-text bounce went into a comment of
/// the generated scenario, and TOML refuses control characters in comments.
#[test]
fn control_characters_in_a_bounce_stay_out_of_comments() {
    let text = reproduced_scenario_loads(b"R:\n\nU@delivery has failed\0");
    // Never raw in a comment, and never sent: the reply has a space where
    // the bounce had the NUL (reply text is printable, RFC 5321 §4.2).
    assert!(!text.contains('\0'), "{text}");
    assert!(text.contains("reply = \"550 5.0.0 has failed \""), "{text}");
    for c in ["\u{1b}", "\u{7f}", "\u{8}", "\r"] {
        let bounce = format!("R:\n\nU@delivery has failed{c}x\n");
        reproduced_scenario_loads(bounce.as_bytes());
    }
}

/// fuzz target `bounce`: a bounce whose Diagnostic-Code quotes a success or
/// intermediate code (379 here) became `reply = "379 ..."` at `rcpt`, which
/// `check` refuses (RFC 5321 §4.3.2); it is sent raw now.
#[test]
fn a_success_code_in_a_diagnostic_is_sent_raw() {
    let bounce = b"From: MAILER-DAEMON@example.jp\n\
To: <sender@example.org>\n\
Subject: Returned mail\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\
\n\
--b\n\
Content-Type: text/plain\n\
\n\
Delivery failed.\n\
--b\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; mx.example.jp\n\
\n\
Final-Recipient: RFC822; userunknown@example.jp\n\
Action: failed\n\
Status: 5.1.1\n\
Diagnostic-Code: SMTP; 379 Return-Path: <>\n\
\n\
--b--\n";
    let text = reproduced_scenario_loads(bounce);
    assert!(
        text.contains("raw = \"379 Return-Path: <>\\r\\n\""),
        "{text}"
    );
}

/// fuzz target `bounce`: a free-text bounce whose only status is of the
/// success class ("(#2.0.5)") got the made-up reply "550 2.0.5 ...", whose
/// enhanced code does not match its class; it is sent raw now.
#[test]
fn a_made_up_reply_with_a_status_of_another_class_is_sent_raw() {
    let bounce = b"From: MAILER-DAEMON@example.org\n\
Subject: failure notice\n\
\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
\n\
<kijitora@example.org>:\n\
Sorry, no mailbox here by that name. (#2.0.5)\n";
    let text = reproduced_scenario_loads(bounce);
    assert!(text.contains("raw = \"550 2.0.5 "), "{text}");
}

/// fuzz target `bounce`: a recipient read from free text spanning several
/// lines ended the comment it was quoted in, and its next lines became
/// TOML keys.
#[test]
fn a_recipient_with_line_ends_stays_inside_its_comment() {
    let b = dsn::Bounce {
        failures: vec![dsn::Failure {
            recipient: "a@example.org\n[x]\nb = 1\r\n".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let text = reproduce::scenario(&b, "two\nlines.eml");
    if let Err(e) = scenario::parse(&text, "generated.toml", "generated") {
        panic!("{e}\n---\n{text}");
    }
}
