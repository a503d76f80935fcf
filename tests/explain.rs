//! `explain` on every catalog entry and every registered status code, and
//! the command line.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::bin;
use mailfault::bounce::category::Category;
use mailfault::bounce::explain::{explain, ReadReply};
use mailfault::scenario::presets;

#[test]
fn every_catalog_entry_is_explained_and_recognised() {
    for p in presets::all() {
        let wire = String::from_utf8(p.reply().to_wire()).unwrap();
        let reply = ReadReply::parse(&wire).unwrap_or_else(|| panic!("{}", p.id));
        assert_eq!(reply.code, p.code, "{}", p.id);
        let e = explain(reply, true);
        assert!(
            e.known.iter().any(|k| k.id == p.id),
            "{} not recognised",
            p.id
        );
        assert_eq!(e.temporary, p.code / 100 == 4, "{}", p.id);
        assert_ne!(e.category, Category::Success, "{}", p.id);
        assert!(e.advice.ja.is_some());
        // What a provider really sends never contradicts itself; at most
        // the registry would pair the status with another code.
        assert!(
            e.inconsistencies.is_empty(),
            "{}: {:?}",
            p.id,
            e.inconsistencies
        );
        if let Some(s) = &e.status {
            assert!(s.class.is_some() && s.subject.is_some(), "{}: {s:?}", p.id);
        }
    }
}

#[test]
fn every_registered_status_has_its_names() {
    let codes = presets::registered_codes();
    assert_eq!(codes.len(), 81);
    for x in codes {
        for (class, code) in [(4, 450), (5, 550)] {
            let status = x.replacen('X', &class.to_string(), 1);
            let e = explain(
                ReadReply::parse(&format!("{code} {status} text")).unwrap(),
                false,
            );
            let s = e.status.unwrap();
            assert!(s.registered, "{status}");
            assert!(
                s.detail.is_some() && s.subject.is_some() && s.class.is_some(),
                "{status}"
            );
            assert!(
                !e.inconsistencies
                    .iter()
                    .any(|i| i.en.contains("not in the IANA registry")),
                "{status}"
            );
        }
    }
}

#[test]
fn categories_of_common_replies() {
    for (reply, cat) in [
        ("550 5.1.1 <x@y>: Recipient address rejected: User unknown in virtual alias table", Category::UserUnknown),
        ("452 4.2.2 The email account that you tried to reach is over quota.", Category::MailboxFull),
        ("450 4.2.0 Greylisted, see https://postgrey.schweikert.ch/help/x.html", Category::Greylisted),
        ("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", Category::RateLimited),
        ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", Category::Blocked),
        ("550 5.7.26 Unauthenticated email from example.test is not accepted due to domain's DMARC policy.", Category::SenderAuthentication),
        ("530 5.7.0 Must issue a STARTTLS command first.", Category::TlsRequired),
        ("535 5.7.8 Username and Password not accepted.", Category::Authentication),
        ("552 5.3.4 Message size exceeds fixed limit", Category::MessageTooBig),
        ("451 4.3.0 Mail server temporarily rejected message.", Category::SystemError),
        ("550 5.7.1 Relaying denied", Category::RelayDenied),
    ] {
        assert_eq!(explain(ReadReply::parse(reply).unwrap(), false).category, cat, "{reply}");
    }
}

#[test]
fn cli_text_json_japanese_and_stdin() {
    let out = Command::new(bin())
        .args([
            "explain",
            "550 5.1.1 The email account that you tried to reach does not exist.",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("Reply code 550: 5yz permanent negative completion"),
        "{text}"
    );
    assert!(
        text.contains("detail:  Bad destination mailbox address"),
        "{text}"
    );
    assert!(text.contains("Category: user unknown"), "{text}");
    assert!(
        text.contains("Known reply: Gmail / Google Workspace (gmail.user_unknown, at rcpt)"),
        "{text}"
    );

    let out = Command::new(bin())
        .args(["explain", "--lang", "ja", "450 4.2.1 slow down"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("一時的否定完了"), "{text}");

    let out = Command::new(bin())
        .args(["explain", "--json", "550 4.1.1 mixed"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["category"], "user_unknown");
    assert!(v["inconsistencies"][0]["en"]
        .as_str()
        .unwrap()
        .contains("4.1.1 is a temporary status on a 5xx reply"));

    let mut child = Command::new(bin())
        .args(["explain"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"421-4.7.0 [192.0.2.1] Our system has detected an unusual rate of\n421-4.7.0 unsolicited mail originating from your IP address.\n421 4.7.0 Try later - gsmtp\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Category: rate limited"), "{text}");
    assert!(text.contains("Temporary or permanent: temporary"), "{text}");

    let out = Command::new(bin())
        .args(["explain", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn explain_cli(args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_provider_pairing_is_a_note_and_a_class_mismatch_is_an_inconsistency() {
    let text = explain_cli(&["452 4.2.2 The email account that you tried to reach is over quota."]);
    assert!(text.contains("Inconsistencies: none"), "{text}");
    assert!(
        text.contains("Note: the registry pairs 4.2.2 with 552, not 452; providers send it like this (Gmail / Google Workspace); not an error"),
        "{text}"
    );
    let text = explain_cli(&["421 4.7.0 TLS required for RCPT domain, closing connection."]);
    assert!(text.contains("Inconsistencies: none"), "{text}");
    assert!(
        text.contains("Note: the registry pairs 4.7.0 with"),
        "{text}"
    );
    let text = explain_cli(&["450 5.2.2 mailbox full"]);
    assert!(
        text.contains("Inconsistency: 5.2.2 is a permanent status on a 4xx reply"),
        "{text}"
    );
    assert!(!text.contains("Note:"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&explain_cli(&[
        "--json",
        "452 4.2.2 The email account that you tried to reach is over quota.",
    ]))
    .unwrap();
    assert_eq!(v["inconsistencies"].as_array().unwrap().len(), 0);
    assert_eq!(v["notes"].as_array().unwrap().len(), 1);
}

#[test]
fn japanese_output_has_no_english_label() {
    use mailfault::bounce::explain::{LABELS_EN, LABELS_JA};
    for reply in [
        "550 5.1.1 The email account that you tried to reach does not exist.",
        "452 4.2.2 The email account that you tried to reach is over quota.",
        "450 5.2.2 mailbox full",
        "550 5.1.99 odd",
        "421 Service not available",
        "250 2.0.0 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "550 9.1.1 odd class",
        "550 5.9.1 odd subject",
    ] {
        let ja = explain_cli(&["--lang", "ja", reply]);
        let en = explain_cli(&[reply]);
        for label in LABELS_EN.all() {
            let label = label.trim();
            if label.len() < 3 {
                continue; // punctuation: " (", ")"
            }
            assert!(
                !ja.contains(label),
                "{reply}: ja output has {label:?}:\n{ja}"
            );
        }
        for label in LABELS_JA.all() {
            let label = label.trim();
            if !label.is_empty() {
                assert!(
                    !en.contains(label),
                    "{reply}: en output has {label:?}:\n{en}"
                );
            }
        }
        for word in [
            "Temporary or permanent",
            "Known reply",
            "may answer",
            "What to do",
            "Category",
            "Inconsistenc",
            "Note:",
            "Reply code",
            "Enhanced status",
        ] {
            assert!(!ja.contains(word), "{reply}: {word:?} in\n{ja}");
        }
        // Every line after the reply itself is Japanese.
        for line in ja
            .lines()
            .skip_while(|l| !l.is_empty())
            .filter(|l| !l.trim().is_empty())
        {
            assert!(
                line.chars().any(|c| c as u32 >= 0x3000),
                "{reply}: line not in Japanese: {line}"
            );
        }
    }
}

#[test]
fn hard_or_soft_in_english_japanese_and_json() {
    for (reply, reason, hard) in [
        ("550 5.1.1 The email account that you tried to reach does not exist.", "userunknown", true),
        ("550 5.1.2 Host or domain name not found", "hostunknown", true),
        ("452 4.2.2 The email account that you tried to reach is over quota.", "mailboxfull", false),
        ("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "blocked", false),
        ("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", "badreputation", false),
        ("450 4.2.1 The user you are trying to contact is receiving mail too quickly.", "speeding", false),
    ] {
        let e = explain(ReadReply::parse(reply).unwrap(), true);
        assert_eq!((e.reason, e.hard_bounce), (Some(reason), Some(hard)), "{reply}");
        let en = explain_cli(&[reply]);
        let want = if hard {
            "Bounce: hard: stop sending to this address"
        } else {
            "Bounce: soft: retry later"
        };
        assert!(en.contains(&format!("{want} ({reason})")), "{en}");
        let ja = explain_cli(&["--lang", "ja", reply]);
        let want = if hard { "ハードエラー" } else { "ソフトエラー" };
        assert!(ja.contains(&format!("バウンス：{want}")), "{ja}");
        let json: serde_json::Value = serde_json::from_str(&explain_cli(&["--json", reply])).unwrap();
        assert_eq!(json["hard_bounce"], hard);
        assert_eq!(json["reason"], reason);
    }
    // A success is no bounce.
    let e = explain(ReadReply::parse("250 2.0.0 OK").unwrap(), false);
    assert_eq!(e.hard_bounce, None);
    assert!(!explain_cli(&["250 2.0.0 OK"]).contains("Bounce:"));
}
