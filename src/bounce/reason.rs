//! Why a delivery failed, in the reason names bounce analysers share
//! (sisimai's vocabulary: `userunknown`, `mailboxfull`, ...), and whether
//! the failure is hard (the address is bad: stop sending to it) or soft
//! (retry later). The phrases and the status table are data
//! (`data/bounce-reasons.toml`), parsed once, so each row can be tested.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

const TABLE: &str = include_str!("../../data/bounce-reasons.toml");

#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    words: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Hard {
    always: Vec<String>,
    with_permanent: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Table {
    reason: Vec<Row>,
    status: HashMap<String, String>,
    hard: Hard,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        toml::from_str(TABLE)
            .unwrap_or_else(|e| panic!("built-in data/bounce-reasons.toml is invalid: {e}"))
    })
}

/// Every reason name the table can give, in its order of precedence.
pub fn names() -> Vec<&'static str> {
    table().reason.iter().map(|r| r.id.as_str()).collect()
}

/// What is known about one failure.
#[derive(Debug, Default, Clone, Copy)]
pub struct Facts<'a> {
    /// The enhanced status, e.g. "5.1.1".
    pub status: Option<&'a str>,
    pub code: Option<u16>,
    /// The reply and diagnostic text.
    pub text: &'a str,
    /// The SMTP stage: connect, ehlo, mail, rcpt, data, message.
    pub stage: Option<&'a str>,
    /// The report's Action field (delayed, failed, ...).
    pub action: Option<&'a str>,
}

/// The first reason whose phrase is in the text.
pub fn by_words(text: &str) -> Option<&'static str> {
    let t = text.to_lowercase();
    table()
        .reason
        .iter()
        .find(|r| r.words.iter().any(|w| t.contains(w.as_str())))
        .map(|r| r.id.as_str())
}

/// The reason the enhanced status names (its class ignored).
pub fn by_status(status: &str) -> Option<&'static str> {
    let rest = status.split_once('.')?.1;
    let t = table();
    if let Some(r) = t.status.get(rest) {
        return Some(r.as_str());
    }
    // A detail the table does not list: its subject's generic row.
    let subject = rest.split('.').next()?;
    t.status.get(&format!("{subject}.0")).map(String::as_str)
}

/// Why the delivery failed: a success is `delivered`; the words of the
/// reply decide first (they are the most specific), then the status, then
/// what the report says about the stage and the action.
pub fn reason(f: Facts<'_>) -> &'static str {
    if f.status.is_some_and(|s| s.starts_with("2.")) || f.code.is_some_and(|c| c / 100 == 2) {
        return "delivered";
    }
    if let Some(r) = by_words(f.text) {
        return if r == "userunknown" {
            unknown_user(f)
        } else {
            r
        };
    }
    if let Some(r) = f.status.and_then(by_status) {
        return r;
    }
    if f.action.is_some_and(|a| a.eq_ignore_ascii_case("delayed")) {
        return "expired";
    }
    if matches!(f.stage, Some("connect" | "ehlo")) {
        return "blocked";
    }
    match f.code {
        // After DATA the recipient was already accepted: a bare 550 there
        // refuses the message, not the address.
        Some(550 | 551 | 553) if matches!(f.stage, Some("data" | "message")) => "filtered",
        Some(550 | 551 | 553) => "userunknown",
        Some(552) => "mailboxfull",
        Some(500..=504) => "syntaxerror",
        Some(421) => "systemerror",
        _ if !f.text.trim().is_empty() => "onhold",
        _ => "undefined",
    }
}

/// "User unknown" in the words, read with the rest: refused at MAIL FROM
/// it is the sender that was refused; after DATA it is a content filter
/// speaking (the address was accepted at RCPT TO); a specific status about
/// something else (x.1.2, x.3.x-x.7.x) says more than the wrapper's words
/// (Postfix writes "Recipient address rejected:" before any reason); a
/// generic status (x.0.0, x.2.0) from a filter that names no cause.
fn unknown_user(f: Facts<'_>) -> &'static str {
    if f.status.is_some_and(|s| s.get(1..) == Some(".1.1")) {
        return "userunknown";
    }
    if f.stage == Some("mail") {
        return "rejected";
    }
    if domain_does_not_exist(f.text) {
        return "hostunknown";
    }
    if matches!(f.stage, Some("data" | "message")) {
        return "filtered";
    }
    let Some(status) = f.status else {
        // A remote server's reply quoted with neither a status nor the
        // command it answered: the words may come after DATA as well as at
        // RCPT TO, and bounce analysers (sisimai's documented rule: an
        // unknown user is an x.1.1 status or a refusal at RCPT) take it
        // for a filter's refusal. A reporter's own words (no reply code)
        // are its mailbox store speaking: an unknown user.
        return if f.code.is_some_and(|c| c >= 500) && f.stage.is_none() {
            "filtered"
        } else {
            "userunknown"
        };
    };
    let rest = status.get(2..).unwrap_or("");
    // A generic status with the reporter's own words (no quoted reply):
    // its mailbox store speaking, as with no status at all.
    if rest == "0.0" && f.code.is_none() {
        return "userunknown";
    }
    if matches!(rest, "0.0" | "2.0") {
        return "filtered";
    }
    let specific = rest == "1.2" || rest.starts_with(['3', '4', '5', '6', '7']);
    match by_status(status) {
        Some(r) if (specific && !rest.ends_with(".0")) || rest == "6.0" => r,
        _ => "userunknown",
    }
}

/// "example.com does not exist": what does not exist is a domain (a name
/// with dots and no "@"), not a mailbox.
fn domain_does_not_exist(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    let Some(i) = t.find(" does not exist") else {
        return false;
    };
    let word = t[..i].rsplit(char::is_whitespace).next().unwrap_or("");
    let word = word.trim_matches(['<', '>', '"', '\'', '(', ')', '[', ']']);
    word.contains('.')
        && !word.starts_with('.')
        && !word.ends_with('.')
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && word
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// Sets the failure's reason and hard flag from what was read.
pub fn judge(f: &mut super::dsn::Failure) {
    let text = format!(
        "{}\n{}",
        reply_text(&f.reply),
        f.diagnostic.as_deref().unwrap_or("")
    );
    let r = reason(Facts {
        status: f.status.as_deref(),
        code: f.reply_code,
        text: &text,
        stage: f.stage.as_deref(),
        action: f.action.as_deref(),
    });
    f.reason = r.to_string();
    f.hard_bounce = hard(r, f.status.as_deref(), f.reply_code);
}

/// A multi-line reply read as the one sentence it is: each continuation
/// line's code and status dropped (RFC 5321 section 4.2.1 repeats the code
/// on every line), so a phrase broken across lines is still found.
fn reply_text(lines: &[String]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let mut l = line.as_str();
        if i > 0 {
            l = strip_code(l);
            out.push(' ');
        }
        out.push_str(l);
    }
    out
}

/// A reply line without its leading "550-" or "550 5.7.1 ".
fn strip_code(line: &str) -> &str {
    let b = line.as_bytes();
    if b.len() < 4 || !b[..3].iter().all(u8::is_ascii_digit) || !matches!(b[3], b' ' | b'-') {
        return line;
    }
    let rest = &line[4..];
    match rest.split_once(' ') {
        Some((st, tail))
            if st.split('.').count() == 3
                && st
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())) =>
        {
            tail
        }
        _ => rest,
    }
}

/// True when the address itself is bad: a sender should stop sending to
/// it. Only an unknown user or domain (or a moved mailbox) is; a server
/// that accepts no mail is when it says so permanently.
pub fn hard(reason: &str, status: Option<&str>, code: Option<u16>) -> bool {
    let t = &table().hard;
    if t.always.iter().any(|r| r == reason) {
        return true;
    }
    // With neither status nor code, the notice itself is the final word
    // (it names the server as taking no mail): only a 4xx says "retry".
    let transient = status.map(|s| s.starts_with('4')).unwrap_or(false)
        || (status.is_none() && code.is_some_and(|c| c / 100 == 4));
    !transient && t.with_permanent.iter().any(|r| r == reason)
}

/// What a sender should do, in English and Japanese.
pub fn advice(hard: bool) -> (&'static str, &'static str) {
    if hard {
        (HARD_EN, HARD_JA)
    } else {
        (SOFT_EN, SOFT_JA)
    }
}

pub const HARD_EN: &str = "hard: stop sending to this address";
pub const SOFT_EN: &str = "soft: retry later";
pub const HARD_JA: &str = "ハードエラー：このアドレスへの送信を止めてください";
pub const SOFT_JA: &str = "ソフトエラー：時間をおいて再送してください";

#[cfg(test)]
mod tests {
    use super::*;

    fn r(status: Option<&str>, code: Option<u16>, text: &str) -> &'static str {
        reason(Facts {
            status,
            code,
            text,
            ..Facts::default()
        })
    }

    #[test]
    fn the_table_parses_and_every_row_has_words() {
        for row in &table().reason {
            assert!(!row.words.is_empty(), "{}", row.id);
            for w in &row.words {
                assert_eq!(w, &w.to_lowercase(), "{}: {w}", row.id);
            }
        }
        for v in table().status.values() {
            assert!(names().contains(&v.as_str()) || v == "contenterror", "{v}");
        }
    }

    #[test]
    fn each_row_is_reached_by_its_own_words() {
        // A row whose every phrase is caught by an earlier row is dead.
        for row in &table().reason {
            assert!(
                row.words
                    .iter()
                    .any(|w| by_words(w) == Some(row.id.as_str())),
                "{} is shadowed by earlier rows",
                row.id
            );
        }
    }

    #[test]
    fn widely_used_phrases_name_their_reason() {
        // qmail's give-up notice, RFC 5321's 554 texts (section 4.2.3), Amazon SES's
        // unverified sender, Japanese ISPs' port 25 blocking, IMail.
        for (text, want) in [
            (
                "I'm not going to try again; this message has been in the queue too long.",
                "expired",
            ),
            ("554 Service currently unavailable", "systemerror"),
            ("554 Transaction failed", "systemerror"),
            (
                "554 Message rejected: Email address is not verified.",
                "norelaying",
            ),
            (
                "550 5.7.0 Please use the smtp server of your ISP.",
                "blocked",
            ),
            ("Invalid final delivery userid: a@example.jp", "userunknown"),
            // A local delivery program's own failure, whatever it says next.
            (
                "procmail: Couldn't create \"/var/spool/mail/a\" id: No such user",
                "mailererror",
            ),
            // cPanel's Exim: the sender (or recipient) address is listed.
            (
                "Sorry, you are sending to/from an address that has been blacklisted",
                "rejected",
            ),
            // Google Workspace: the sender's alias is misconfigured.
            (
                "You're sending this from a different address or alias using the 'Send mail as' feature.",
                "rejected",
            ),
        ] {
            assert_eq!(r(None, None, text), want, "{text}");
        }
        // Many servers send 5.2.1 with "User unknown": the words decide.
        assert_eq!(
            r(Some("5.2.1"), Some(550), "550 5.2.1 User Unknown"),
            "userunknown"
        );
    }

    #[test]
    fn spam_named_as_the_cause_comes_before_spf_advice() {
        let t = "Your email to group a@example.com was rejected due to spam classification. \
                 * Set up SPF records for your sending domain";
        assert_eq!(r(Some("5.0.0"), None, t), "spamdetected");
        // cPanel's Exim notice names the domain first.
        let t = "The account or domain may not exist, they may be blacklisted, \
                 or missing the proper dns entries.";
        assert_eq!(r(None, None, t), "hostunknown");
    }

    #[test]
    fn an_unknown_user_without_status_or_stage_is_a_filter_when_quoted() {
        let at = |stage, code, text| {
            reason(Facts {
                code,
                text,
                stage,
                ..Facts::default()
            })
        };
        // A remote reply quoted with no status and no command.
        assert_eq!(at(None, Some(550), "550 No such user here"), "filtered");
        // The same at RCPT TO, or in the reporter's own words.
        assert_eq!(
            at(Some("rcpt"), Some(550), "550 No such user here"),
            "userunknown"
        );
        assert_eq!(
            at(None, None, "The recipient name is not recognized"),
            "userunknown"
        );
    }

    #[test]
    fn a_generic_status_or_a_bare_code_read_with_who_speaks_and_when() {
        let f = |status, code, stage, text| {
            reason(Facts {
                status,
                code,
                text,
                stage,
                ..Facts::default()
            })
        };
        // Gmail's own notice under a 5.0.0 report: the mailbox store.
        assert_eq!(
            f(Some("5.0.0"), None, None, "** Address not found **"),
            "userunknown"
        );
        // A quoted reply under 5.0.0: a filter, maybe.
        assert_eq!(
            f(Some("5.0.0"), Some(550), None, "550 user unknown"),
            "filtered"
        );
        // A bare 550 after DATA refuses the message, not the address.
        assert_eq!(f(None, Some(550), Some("data"), "550 go away"), "filtered");
        assert_eq!(
            f(None, Some(550), Some("rcpt"), "550 go away"),
            "userunknown"
        );
    }

    #[test]
    fn a_domain_that_does_not_exist_is_an_unknown_host() {
        assert_eq!(
            r(None, Some(553), "553 mx.example.com does not exist"),
            "hostunknown"
        );
        assert_eq!(
            r(
                Some("5.1.1"),
                Some(550),
                "550 5.1.1 a@example.com does not exist"
            ),
            "userunknown"
        );
        assert_eq!(
            r(
                Some("5.1.1"),
                Some(550),
                "550 5.1.1 Mailbox does not exist."
            ),
            "userunknown"
        );
    }

    #[test]
    fn words_then_status_then_code() {
        assert_eq!(
            r(Some("5.1.1"), Some(550), "550 5.1.1 User unknown"),
            "userunknown"
        );
        assert_eq!(
            r(Some("5.2.2"), Some(552), "552 5.2.2 Mailbox full"),
            "mailboxfull"
        );
        assert_eq!(r(Some("5.1.2"), Some(550), "550 5.1.2 bad"), "hostunknown");
        assert_eq!(
            r(
                Some("5.7.26"),
                Some(550),
                "550 5.7.26 Unauthenticated email"
            ),
            "authfailure"
        );
        assert_eq!(r(Some("4.4.7"), None, ""), "expired");
        assert_eq!(r(None, Some(550), "go away"), "userunknown");
        assert_eq!(r(Some("2.0.0"), Some(250), "ok"), "delivered");
        assert_eq!(r(None, None, ""), "undefined");
    }

    #[test]
    fn hard_only_for_bad_addresses() {
        assert!(hard("userunknown", Some("5.1.1"), Some(550)));
        assert!(hard("hostunknown", Some("5.1.2"), None));
        assert!(hard("notaccept", Some("5.1.10"), Some(556)));
        assert!(!hard("notaccept", Some("4.3.2"), Some(421)));
        assert!(!hard("mailboxfull", Some("5.2.2"), Some(552)));
        assert!(!hard("blocked", Some("5.7.1"), Some(554)));
        assert!(hard("notaccept", None, None));
        assert!(!hard("notaccept", None, Some(421)));
    }

    #[test]
    fn continuation_lines_read_as_one_sentence() {
        let lines = vec![
            "550-5.7.1 Messages with multiple".to_string(),
            "550 5.7.1 addresses in From: header are not accepted.".to_string(),
        ];
        assert_eq!(
            reply_text(&lines),
            "550-5.7.1 Messages with multiple addresses in From: header are not accepted."
        );
        assert_eq!(by_words(&reply_text(&lines)), Some("notcompliantrfc"));
        assert_eq!(strip_code("550 no such user"), "no such user");
        assert_eq!(strip_code("hello"), "hello");
    }
}
