//! Reading bounce messages: RFC 3464 delivery status notifications (parsed
//! with mail-parser for the MIME structure; the DSN fields are ours), and
//! the free-text bounces of Postfix, Exim, Sendmail, qmail, Exchange, Gmail
//! and others. Each failed recipient comes out with its status, the remote
//! server's reply word for word, the remote host and the SMTP stage, and
//! where each value was found.

use std::collections::HashMap;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::proto::reply::{find_code, unfold, ReadReply};

/// One failed recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub recipient: String,
    pub recipient_from: String,
    /// The enhanced status code (RFC 3463).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_from: Option<String>,
    /// The remote server's reply, line by line, each with its code.
    pub reply: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_from: Option<String>,
    /// connect, ehlo, mail, rcpt, data, message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The diagnostic text when it is not an SMTP reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
    /// Why it failed, in bounce analysers' shared vocabulary
    /// (`userunknown`, `mailboxfull`, ...; see data/bounce-reasons.toml).
    pub reason: String,
    /// The address itself is bad: stop sending to it.
    pub hard_bounce: bool,
}

/// A bounce: who reported it and who failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bounce {
    /// `dsn` (RFC 3464) or `text` (a free-text bounce).
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_mta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub failures: Vec<Failure>,
}

/// Why a message could not be read as a bounce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBounce {
    #[error("not a message")]
    NotMessage,
    #[error("not a bounce: no delivery status report and no failed recipient found")]
    NoFailure,
    #[error("a feedback report (ARF, RFC 5965), not a bounce")]
    Feedback,
    #[error("an auto-reply (RFC 3834), not a bounce")]
    AutoReply,
    #[error("a complaint notification from a sending service, not a bounce")]
    Complaint,
    #[error("JSON that is not a bounce notification (Amazon SES, SendGrid, Mailgun or Postmark)")]
    NotNotification,
    #[error("a mail log with no failed delivery (Postfix status=bounced|deferred, Exim **/==, Sendmail stat=)")]
    NoLogFailure,
}

/// Lines that start the copy of the original message in free-text bounces.
const ORIGINAL_MARKERS: &[&str] = &[
    "------ this is a copy of the message",
    "--- below this line is a copy of the message",
    "----- original message follows",
    "----- unsent message follows",
    "------ original message ------",
    "----- original message -----",
    "--- original message follows",
    "------- returned message --------",
    "----- message header follows -----",
    "-----original message-----",
    "original message headers:",
    "----- the following is a copy of the message",
    "--- the header of the original message is following. ---",
    "this is a copy of the headers that were received before the error was detected.",
    "message headers follow.",
];

fn normalize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\n');
                i += 2;
                continue;
            }
            b'\r' => out.push(b'\n'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Reads a bounce message (LF, CRLF or CR line ends).
pub fn parse(bytes: &[u8]) -> Result<Bounce, NotBounce> {
    let bytes = normalize(bytes);
    let msg = MessageParser::default()
        .parse(&bytes)
        .ok_or(NotBounce::NotMessage)?;
    if msg.headers().is_empty() {
        return Err(NotBounce::NotMessage);
    }
    if is_feedback_report(&msg) {
        return Err(NotBounce::Feedback);
    }
    let mut dsn_texts = vec![];
    let mut human = String::new();
    for part in msg.parts.iter() {
        let (ctype, sub) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_else(|| ("text".into(), "plain".into()));
        let body = String::from_utf8_lossy(part.contents()).into_owned();
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => dsn_texts.push(body),
            ("text", "plain") | ("text", "") if !matches!(part.body, PartType::Message(_)) => {
                human.push_str(&body);
                human.push('\n');
            }
            ("text", "html") if human.is_empty() => human.push_str(&strip_html(&body)),
            _ => {}
        }
    }
    // A multipart declared but never delimited: read the body as text.
    if human.trim().is_empty() && dsn_texts.is_empty() {
        let raw = String::from_utf8_lossy(&bytes);
        if let Some(i) = raw.find("\n\n") {
            human = raw[i + 2..].to_string();
        }
    }
    // Binary noise is no text to read: refusing it here keeps the reading
    // of a large attachment-like body to one pass (the prose readers below
    // try many patterns on every line).
    if !mostly_text(&human) {
        human.clear();
    }
    dsn_texts.retain(|t| mostly_text(t));
    // A sending service's JSON notification delivered by mail (Amazon SES
    // through an SNS email subscription).
    if dsn_texts.is_empty() && human.trim_start().starts_with('{') {
        // Lines longer than the mail system allows were broken with "!",
        // a line end and a space; a signature may follow the document.
        let joined = human.trim().replace("!\n ", "");
        match super::esp::parse_first(&joined) {
            Err(NotBounce::NotNotification) => {}
            other => return other,
        }
    }
    // Non-MIME bounces: a text part may also hold a DSN-like block.
    let human = cut_original(&human);
    let subject = msg.subject().map(str::to_string);
    let mut bounce = Bounce {
        format: if dsn_texts.is_empty() {
            "text".into()
        } else {
            "dsn".into()
        },
        subject,
        ..Bounce::default()
    };
    let mut hits = text_hits(&human);
    // Recipients with only a reason in prose count when the message is
    // clearly a bounce; otherwise an address in an ordinary message could
    // pass for a failure.
    if !hits.iter().any(|h| h.reply.is_some() || h.status.is_some())
        && !looks_like_bounce(&msg, &human)
    {
        hits.clear();
    }
    for dsn in &dsn_texts {
        read_dsn(dsn, &mut bounce);
    }
    if bounce.failures.is_empty() && dsn_texts.is_empty() {
        // A DSN-style block pasted into a text bounce.
        if human.to_ascii_lowercase().contains("final-recipient:") {
            read_dsn(&human, &mut bounce);
        }
    }
    merge_text(&mut bounce, hits, &msg, &human);
    for f in &mut bounce.failures {
        finish(f);
    }
    // Noise that happens to hold an "@" or a number is no failure.
    for f in &mut bounce.failures {
        repair_address(f);
    }
    bounce.failures.retain(plausible);
    if bounce.failures.is_empty() {
        return Err(if is_auto_reply(&msg) {
            NotBounce::AutoReply
        } else {
            NotBounce::NoFailure
        });
    }
    for f in &mut bounce.failures {
        super::reason::judge(f);
    }
    Ok(bounce)
}

/// Completes failures read from any source (a notification, a log line):
/// the code and status from the reply, noise dropped, the reason judged.
pub fn complete(failures: &mut Vec<Failure>) {
    for f in failures.iter_mut() {
        finish(f);
        repair_address(f);
    }
    failures.retain(plausible);
    for f in failures.iter_mut() {
        super::reason::judge(f);
    }
}

/// Puts a diagnostic text (`smtp; 550 5.1.1 ...` or prose) where it
/// belongs: the reply when it is one, the diagnostic otherwise.
pub fn diagnose(f: &mut Failure, d: &str, from: &str) {
    let d = match d.split_once(';') {
        Some((t, rest)) if t.trim().len() < 16 && !t.trim().contains(' ') => rest.trim(),
        _ => d.trim(),
    };
    match unfold(d) {
        Some(lines) => {
            f.reply = lines;
            f.reply_from = Some(from.to_string());
        }
        None if !d.is_empty() => f.diagnostic = Some(d.to_string()),
        None => {}
    }
}

/// A failure whose recipient is an address and whose reply and reason read
/// as text. A report's `Final-Recipient` field is taken as the reporter
/// wrote it (a corpus may have blanked its local part); an address found in
/// prose must look like one, and a reply found there must be a failure.
fn plausible(f: &Failure) -> bool {
    let from_report = f.recipient_from == "Final-Recipient";
    let recipient = if from_report {
        address_like(&f.recipient)
    } else {
        plausible_address(&f.recipient)
    };
    let codes = if from_report { 200..=599 } else { 400..=599 };
    recipient
        && (f.reply.is_empty() || plausible_reply(&f.reply, codes))
        && f.diagnostic.as_deref().is_none_or(mostly_text)
}

/// An address found in prose and run into the next words ("a@example.jp您好，"):
/// cut after the domain's last ASCII character when that makes an address.
fn repair_address(f: &mut Failure) {
    if f.recipient_from == "Final-Recipient" || plausible_address(&f.recipient) {
        return;
    }
    let Some((local, domain)) = f.recipient.rsplit_once('@') else {
        return;
    };
    let end = domain
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        .unwrap_or(domain.len());
    let cut = format!("{local}@{}", domain[..end].trim_end_matches('.'));
    if plausible_address(&cut) {
        f.recipient = cut;
    }
}

/// Something with an `@`, of a path's length (RFC 5321 §4.5.3.1.3), with
/// no space, control character or byte that was not UTF-8.
fn address_like(a: &str) -> bool {
    a.contains('@')
        && a.len() <= 256
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\u{fffd}')
}

/// `local@domain` as RFC 5321 §4.1.2 writes it (a dot-atom or a quoted
/// local part; RFC 6531 allows UTF-8), within the lengths of §4.5.3.1: a
/// local part of at most 64 octets, a path of at most 256. The domain is
/// labels of letters, digits and hyphens, or an address literal.
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    let local_ok = !local.is_empty() && local.len() <= 64 && (quoted || local.chars().all(atext));
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    };
    let literal = domain.len() > 2
        && domain.starts_with('[')
        && domain.ends_with(']')
        && domain[1..domain.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:".contains(c));
    address_like(a) && local_ok && (literal || domain.split('.').all(label))
}

/// An SMTP reply as a reporter quotes it: a code, lines of text of a
/// sensible length (RFC 5321 §4.5.3.1.5 allows 512 octets; reporters refold,
/// so twice that), not too many of them.
fn plausible_reply(lines: &[String], codes: std::ops::RangeInclusive<u16>) -> bool {
    lines.len() <= 100
        && lines.iter().all(|l| l.len() <= 1024 && mostly_text(l))
        && lines
            .first()
            .and_then(|l| ReadReply::parse(l))
            .is_some_and(|r| codes.contains(&r.code))
}

/// Text rather than binary noise: at most one character in ten a control
/// character or a byte that was not UTF-8.
fn mostly_text(s: &str) -> bool {
    let (mut all, mut odd) = (0usize, 0usize);
    for c in s.chars() {
        all += 1;
        if (c.is_control() && c != '\t' && c != '\n') || c == '\u{fffd}' {
            odd += 1;
        }
    }
    odd * 10 <= all
}

/// Signs that a message is a bounce, for messages that quote no SMTP reply.
/// A feedback report (RFC 5965 §3): `multipart/report` with
/// `report-type=feedback-report`, or a `message/feedback-report` part.
fn is_feedback_report(msg: &mail_parser::Message<'_>) -> bool {
    let ctype = msg
        .header_raw("Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    ctype.contains("feedback-report")
        || msg.parts.iter().any(|p| {
            p.content_type().is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case("message")
                    && c.subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("feedback-report"))
            })
        })
}

/// An automatic reply (RFC 3834 §5: `Auto-Submitted: auto-replied`), or
/// the headers vacation responders use in its place.
fn is_auto_reply(msg: &mail_parser::Message<'_>) -> bool {
    let h = |n: &str| msg.header_raw(n).unwrap_or("").trim().to_ascii_lowercase();
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    h("Auto-Submitted").starts_with("auto-replied")
        || !h("X-Autoreply").is_empty()
        || !h("X-Autorespond").is_empty()
        || h("Precedence") == "auto_reply"
        || [
            "out of office",
            "auto-reply",
            "autoreply",
            "automatic reply",
            "vacation",
        ]
        .iter()
        .any(|w| subject.contains(w))
}

fn looks_like_bounce(msg: &mail_parser::Message<'_>, human: &str) -> bool {
    let from = msg.header_raw("From").unwrap_or("").to_ascii_lowercase();
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    let ctype = msg
        .header_raw("Content-Type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = human.to_ascii_lowercase();
    from.contains("mailer-daemon")
        || from.contains("postmaster")
        || from.trim() == "<>"
        || ctype.contains("multipart/report")
        || [
            "undeliver",
            "delivery status",
            "delivery failure",
            "delivery failed",
            "returned mail",
            "failure notice",
            "not delivered",
            "could not be delivered",
            "delivery notification",
            "mail delivery failed",
            "nondeliver",
        ]
        .iter()
        .any(|w| subject.contains(w))
        || [
            "could not be delivered",
            "did not reach",
            "unable to deliver",
            "delivery has failed",
            "permanent error",
            "undeliverable",
            "was not delivered",
            "couldn't be delivered",
        ]
        .iter()
        .any(|w| text.contains(w))
}

fn strip_html(s: &str) -> String {
    let mut out = String::new();
    let mut tag = false;
    for c in s.chars() {
        match c {
            '<' => tag = true,
            '>' => {
                tag = false;
                out.push(' ');
            }
            _ if !tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// True for a line that starts the copy of the original message (the
/// number of dashes around it varies between mailers).
fn is_original_marker(line: &str) -> bool {
    let l = line
        .trim()
        .trim_start_matches(['-', ' '])
        .to_ascii_lowercase();
    !l.is_empty()
        && ORIGINAL_MARKERS
            .iter()
            .any(|m| l.starts_with(m.trim_start_matches(['-', ' '])))
}

fn cut_original(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if is_original_marker(line) {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// DSN fields: paragraphs of `Name: value` with folded lines.
fn read_dsn(text: &str, bounce: &mut Bounce) {
    let mut paragraphs: Vec<Vec<(String, String)>> = vec![];
    let mut cur: Vec<(String, String)> = vec![];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                paragraphs.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        paragraphs.push(cur);
    }
    let field =
        |p: &[(String, String)], k: &str| p.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    // The value after "type;" (rfc822; dns; smtp;).
    let typed = |v: String| match v.split_once(';') {
        Some((_, rest)) => rest.trim().to_string(),
        None => v.trim().to_string(),
    };
    for p in &paragraphs {
        if let Some(m) = field(p, "reporting-mta") {
            bounce.reporting_mta.get_or_insert(typed(m));
        }
        let recipient = field(p, "final-recipient").or_else(|| field(p, "original-recipient"));
        let Some(recipient) = recipient else { continue };
        let action = field(p, "action").map(|a| a.to_ascii_lowercase());
        if action
            .as_deref()
            .is_some_and(|a| matches!(a, "delivered" | "relayed" | "expanded"))
        {
            continue;
        }
        let mut f = Failure {
            recipient: clean_addr(&typed(recipient)),
            recipient_from: "Final-Recipient".into(),
            action,
            ..Failure::default()
        };
        if let Some(s) = field(p, "status") {
            let s = s.split_whitespace().next().unwrap_or("").to_string();
            if is_status(&s) {
                f.status = Some(s);
                f.status_from = Some("Status field".into());
            }
        }
        if let Some(m) = field(p, "remote-mta") {
            f.remote_host = typed(m).split_whitespace().next().map(str::to_string);
        }
        if let Some(d) = field(p, "diagnostic-code") {
            let d = typed(d);
            // "554 4.4.7 Message expired ...<421 4.4.2 Connection timed out>":
            // the remote server's own reply sits inside the reporter's.
            if let Some(inner) = nested_reply(&d) {
                if let Some(st) = ReadReply::parse(&inner)
                    .and_then(|r| r.status)
                    .filter(|x| is_status(x))
                {
                    f.status = Some(st);
                    f.status_from = Some("the remote reply inside Diagnostic-Code".into());
                }
                f.reply = vec![inner];
                f.reply_from = Some("the remote reply inside Diagnostic-Code".into());
            } else {
                match unfold(&d) {
                    Some(lines) => {
                        f.reply = lines;
                        f.reply_from = Some("Diagnostic-Code field".into());
                    }
                    None => f.diagnostic = Some(d),
                }
            }
        }
        bounce.failures.push(f);
    }
}

/// A reply in angle brackets after the reporter's own: `...<421 4.4.2 text>`.
fn nested_reply(d: &str) -> Option<String> {
    let i = d.find('<')?;
    if i == 0 {
        return None;
    }
    let inner = d[i + 1..].trim_end().strip_suffix('>')?;
    let r = ReadReply::parse(inner)?;
    (inner.starts_with(&r.code.to_string()) && r.status.is_some()).then(|| inner.to_string())
}

fn is_status(s: &str) -> bool {
    crate::proto::EnhancedCode::parse(s).is_some()
}

fn clean_addr(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches(['>', '.', ',', ':', ';'])
        .trim()
        .to_string()
}

/// What the human-readable part says about one recipient.
#[derive(Debug, Clone, Default)]
struct Hit {
    recipient: Option<String>,
    reply: Option<Vec<String>>,
    reply_from: &'static str,
    stage: Option<(&'static str, String)>,
    host: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
}

/// The stage a phrase names, with the phrase.
fn stage_of(text: &str) -> Option<(&'static str, String)> {
    let l = text.to_ascii_lowercase();
    const PHRASES: &[(&str, &str)] = &[
        ("in reply to rcpt to", "rcpt"),
        ("after rcpt to", "rcpt"),
        ("rcpt to response", "rcpt"),
        ("in reply to end of data", "message"),
        ("after end of data", "message"),
        ("after the end of data", "message"),
        ("in reply to data", "data"),
        ("after data", "data"),
        ("in reply to mail from", "mail"),
        ("after mail from", "mail"),
        ("mail from response", "mail"),
        ("in reply to ehlo", "ehlo"),
        ("in reply to helo", "ehlo"),
        ("after ehlo", "ehlo"),
        ("after helo", "ehlo"),
        ("after initial connection", "connect"),
        ("refused to talk to me", "connect"),
        ("in reply to the greeting", "connect"),
        ("connection greeting", "connect"),
        ("did not like our final data", "message"),
        ("did not like our rcpt", "rcpt"),
        ("did not like our mail", "mail"),
        ("did not like our data", "data"),
        ("after pipelined rcpt to", "rcpt"),
        ("after pipelined data", "data"),
        ("after pipelined mail from", "mail"),
    ];
    PHRASES
        .iter()
        .find(|(p, _)| l.contains(p))
        .map(|(p, s)| (*s, p.to_string()))
}

fn find_status_hint(text: &str) -> Option<String> {
    // qmail: "(#5.5.0)"
    let i = text.find("(#")?;
    let s: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
    is_status(&s).then_some(s)
}

/// A reply in free text: after "said:", "returned '", "was:" and the like,
/// or a line that starts with a code and a status.
fn reply_in(text: &str) -> Option<(Vec<String>, &'static str)> {
    const LEADS: &[(&str, &str)] = &[
        (" said: ", "the text part (\"said:\")"),
        (
            "refused to talk to me: ",
            "the text part (\"refused to talk to me\")",
        ),
        (
            "remote server returned '",
            "the text part (\"Remote Server returned\")",
        ),
        (
            "remote server returned \"",
            "the text part (\"Remote Server returned\")",
        ),
        (
            "the response from the remote server was:",
            "the text part (\"The response from the remote server was\")",
        ),
        (
            "the error that the other server returned was:",
            "the text part (\"The error that the other server returned was\")",
        ),
        ("server replied: ", "the text part (\"Server replied\")"),
        ("remote host said: ", "the text part (\"Remote host said\")"),
        (" failed with: ", "the text part (\"failed with\")"),
    ];
    let lower = text.to_ascii_lowercase();
    for (lead, from) in LEADS {
        if let Some(i) = lower.find(lead) {
            let after = &text[i + lead.len()..];
            let after = after.split(" (in reply to").next().unwrap_or(after);
            let after = after.trim_end_matches(['\'', '"']).trim();
            let after = after
                .split("' ")
                .next()
                .unwrap_or(after)
                .trim_end_matches('\'');
            if let Some(r) = ReadReply::parse(after) {
                if let Some(start) = after.find(&r.code.to_string()) {
                    let body = after[start..]
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n");
                    let lines = multi(&body);
                    return Some((lines, from));
                }
            }
        }
    }
    None
}

/// Lines of a reply quoted in free text: prefixed continuation lines stay
/// lines; unprefixed ones (refolded by the reporter) are joined.
fn multi(body: &str) -> Vec<String> {
    let Some(r) = ReadReply::parse(body) else {
        return vec![];
    };
    let code = r.code.to_string();
    let mut out: Vec<String> = vec![];
    for l in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let continued = l.starts_with(&format!("{code}-")) || l.starts_with(&format!("{code} "));
        match out.last_mut() {
            Some(last) if !continued => {
                last.push(' ');
                last.push_str(l);
            }
            _ => out.push(l.to_string()),
        }
        if continued && l.starts_with(&format!("{code} ")) {
            // The final line: stop at it, what follows is prose.
            break;
        }
    }
    // One folded line with embedded continuations.
    if out.len() == 1 {
        if let Some(split) = unfold(&out[0]) {
            return split;
        }
    }
    out
}

/// The address at the start of a line (`<a@b>:`, `a@b ...`, `"a@b":`,
/// `Recipient address: a@b`): a recipient block starts there.
fn address_line(line: &str) -> Option<String> {
    let mut t = line.trim();
    for lead in [
        "recipient address:",
        "recipient:",
        "original-recipient:",
        "final-recipient:",
        "rfc822;",
    ] {
        if t.get(..lead.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(lead))
        {
            t = t[lead.len()..].trim_start();
        }
    }
    let word = t.split_whitespace().next()?;
    let w = word
        .trim_matches(['"', '\''])
        .trim_end_matches([':', ','])
        .trim_matches(['"', '\'']);
    let w = w.trim_start_matches('<');
    let w = match w.find('>') {
        Some(i) => &w[..i],
        None => w,
    };
    if !w.contains('@')
        || w.starts_with('@')
        || w.ends_with('@')
        || w.contains(['(', ')', '[', '/', '='])
    {
        return None;
    }
    Some(clean_addr(w))
}

/// A status code word anywhere in a text (`5.1.1`, `(#5.5.0)`, `:5.1.1`).
fn status_word(text: &str) -> Option<String> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '(' | ')' | '#' | ':' | ',' | '<' | '>' | '\'' | '"' | '['
            )
    })
    .find(|w| is_status(w.trim_end_matches('.')) && w.len() >= 5)
    .map(|w| w.trim_end_matches('.').to_string())
}

/// Recipient blocks of the human part: a line holding an address, and the
/// lines after it up to a blank line or the next address.
fn text_hits(text: &str) -> Vec<Hit> {
    let mut hits = vec![];
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(addr) = address_line(lines[i]) else {
            i += 1;
            continue;
        };
        let mut block = vec![lines[i].trim()];
        let mut j = i + 1;
        // An address alone on its line: its reason may follow after blank
        // lines.
        if lines.get(j).is_some_and(|l| l.trim().is_empty()) {
            let mut k = j;
            while lines.get(k).is_some_and(|l| l.trim().is_empty()) {
                k += 1;
            }
            if lines.get(k).is_some_and(|l| address_line(l).is_none()) {
                j = k;
            }
        }
        while j < lines.len() && !lines[j].trim().is_empty() && address_line(lines[j]).is_none() {
            block.push(lines[j].trim());
            j += 1;
        }
        i = j;
        // The same address again inside its own block (Exim repeats it
        // after "RCPT TO:"): one block.
        if hits.last().is_some_and(|p: &Hit| {
            p.recipient.as_deref() == Some(addr.as_str()) && p.reply.is_none()
        }) {
            hits.pop();
        }
        let joined = block.join(" ");
        let after_addr = joined.split_once(&addr).map(|(_, r)| r).unwrap_or(&joined);
        let mut h = Hit {
            recipient: Some(addr.clone()),
            stage: stage_of(&joined),
            host: host_in(&joined),
            ..Hit::default()
        };
        let body = block[..].join("\n");
        if let Some((r, from)) = reply_in(&joined).or_else(|| reply_in(&body)) {
            h.reply = Some(r);
            h.reply_from = from;
        } else if let Some(start) = find_code(after_addr) {
            // A code after the address: "<a@b>: 550 ...", "host h [ip]: 550".
            let tail = &after_addr[start..];
            let tail = tail.split(" (in reply to").next().unwrap_or(tail);
            h.reply = Some(multi(tail));
            h.reply_from = "the text part (the reply after the recipient)";
        }
        h.status = find_status_hint(&joined).or_else(|| {
            if h.reply.is_none() {
                status_word(after_addr)
            } else {
                None
            }
        });
        if h.reply.is_none() {
            h.diagnostic = Some(
                after_addr
                    .trim_start_matches(['>', ':', ' ', '"', '.'])
                    .trim()
                    .to_string(),
            )
            .filter(|d| !d.is_empty());
        }
        hits.push(h);
    }
    // Sendmail transcripts: ">>> COMMAND" then "<<< reply".
    if hits.iter().all(|h| h.reply.is_none()) {
        let mut last_cmd = String::new();
        let mut reply: Vec<String> = vec![];
        let mut host = None;
        let mut found: Vec<Hit> = vec![];
        for line in text.lines() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix("... while talking to ") {
                host = Some(h.trim_end_matches([':', '.']).to_string());
            }
            if let Some(c) = t.strip_prefix(">>> ") {
                if !reply.is_empty() {
                    found.push(sendmail_hit(
                        &last_cmd,
                        std::mem::take(&mut reply),
                        host.clone(),
                    ));
                }
                last_cmd = c.to_string();
            } else if let Some(r) = t.strip_prefix("<<< ") {
                // A reply ends at its final line ("550 ..."): what follows
                // answers another (pipelined) command.
                if reply
                    .last()
                    .is_some_and(|l| l.as_bytes().get(3) == Some(&b' '))
                {
                    found.push(sendmail_hit(
                        &last_cmd,
                        std::mem::take(&mut reply),
                        host.clone(),
                    ));
                }
                if ReadReply::parse(r).is_some_and(|x| x.code >= 400) {
                    reply.push(r.to_string());
                } else if !reply.is_empty() {
                    found.push(sendmail_hit(
                        &last_cmd,
                        std::mem::take(&mut reply),
                        host.clone(),
                    ));
                }
            }
        }
        if !reply.is_empty() {
            found.push(sendmail_hit(&last_cmd, reply, host));
        }
        if !found.is_empty() {
            hits.retain(|h| h.reply.is_some());
            hits.extend(found);
        }
    }
    // Anything else: a "said:"-style lead, or a line with a code and a
    // status, anywhere in the text. Recipients found without a reply keep
    // theirs for later.
    let named: Vec<Hit> = if hits.iter().any(|h| h.reply.is_some() || h.status.is_some()) {
        vec![]
    } else {
        std::mem::take(&mut hits)
    };
    if hits.is_empty() {
        let joined = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
        if let Some((r, from)) = reply_in(&joined.replace('\n', " ")).or_else(|| reply_in(&joined))
        {
            hits.push(Hit {
                reply: Some(r),
                reply_from: from,
                stage: stage_of(&joined),
                host: host_in(&joined),
                ..Hit::default()
            });
        } else if let Some(idx) = joined.lines().position(coded_line) {
            let lines: Vec<&str> = joined.lines().collect();
            let first = lines[idx];
            let start = find_code(first).unwrap_or(0);
            let code = &first[start..start + 3];
            let mut block = vec![first[start..].trim().to_string()];
            if first[start..].starts_with(&format!("{code}-")) {
                for l in &lines[idx + 1..] {
                    if l.trim().is_empty() {
                        continue;
                    }
                    if l.starts_with(&format!("{code}-")) || l.starts_with(&format!("{code} ")) {
                        block.push(l.trim().to_string());
                        if l.starts_with(&format!("{code} ")) {
                            break;
                        }
                    } else {
                        break;
                    }
                }
            }
            hits.push(Hit {
                recipient: first_address(&joined),
                reply: Some(block),
                reply_from: "the text part (a line with a reply code and status)",
                stage: stage_of(&joined),
                status: find_status_hint(&joined),
                host: host_in(&joined),
                ..Hit::default()
            });
        } else if let Some(line) = joined.lines().find(|l| {
            // "550 unknown user <a@b>", "550 - no such user": a line that
            // starts with a failure code.
            ReadReply::parse(l)
                .is_some_and(|r| r.code >= 400 && l.trim_start().starts_with(&r.code.to_string()))
        }) {
            let rcpt_to = joined.lines().find_map(|l| {
                let t = l.trim();
                let v = t
                    .get(..8)
                    .filter(|h| h.eq_ignore_ascii_case("rcpt to:"))
                    .map(|_| t[8..].trim())?;
                Some(clean_addr(v)).filter(|a| a.contains('@'))
            });
            hits.push(Hit {
                recipient: first_address(line).or(rcpt_to),
                reply: Some(vec![line.trim().to_string()]),
                reply_from: "the text part (a line with a reply code)",
                stage: stage_of(&joined),
                ..Hit::default()
            });
        } else if let Some(s) = find_status_hint(&joined) {
            hits.push(Hit {
                status: Some(s),
                ..Hit::default()
            });
        }
    }
    // A reply found in the text belongs to the one recipient named.
    if named.len() == 1
        && hits.len() == 1
        && hits[0]
            .recipient
            .as_ref()
            .is_none_or(|r| named[0].recipient.as_ref() == Some(r))
    {
        hits[0].recipient = named[0].recipient.clone();
    } else if hits.is_empty() {
        hits = named;
    }
    hits
}

/// A line holding "CODE X.Y.Z" (a reply with an enhanced status).
fn coded_line(l: &str) -> bool {
    let Some(r) = ReadReply::parse(l) else {
        return false;
    };
    r.code >= 400
        && r.status
            .as_deref()
            .is_some_and(|s| is_status(s) && s.starts_with(&(r.code / 100).to_string()))
}

fn sendmail_hit(cmd: &str, reply: Vec<String>, host: Option<String>) -> Hit {
    let c = cmd.to_ascii_uppercase();
    let stage = if c.starts_with("RCPT") {
        Some(("rcpt", format!(">>> {cmd}")))
    } else if c.starts_with("MAIL") {
        Some(("mail", format!(">>> {cmd}")))
    } else if c == "DATA" {
        Some(("data", format!(">>> {cmd}")))
    } else if c == "." {
        Some(("message", ">>> .".into()))
    } else if c.starts_with("EHLO") || c.starts_with("HELO") {
        Some(("ehlo", format!(">>> {cmd}")))
    } else {
        None
    };
    let recipient = cmd
        .find('<')
        .filter(|_| c.starts_with("RCPT"))
        .map(|i| clean_addr(&cmd[i..cmd.find('>').map_or(cmd.len(), |j| j + 1)]))
        .or_else(|| {
            let r = reply.first()?;
            let i = r.find('<')?;
            let j = r[i..].find('>')? + i;
            Some(clean_addr(&r[i..=j]))
        })
        .filter(|a| a.contains('@'));
    Hit {
        recipient,
        reply: Some(reply),
        reply_from: "the text part (Sendmail's session transcript \"<<<\")",
        stage,
        host,
        ..Hit::default()
    }
}

/// The first `<local@domain>` in a text.
fn first_address(text: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find('<') {
        let at = from + i;
        let end = text[at..].find('>').map(|j| at + j)?;
        let a = clean_addr(&text[at..=end]);
        if a.contains('@') && !a.contains(' ') {
            return Some(a);
        }
        from = at + 1;
    }
    None
}

fn host_in(text: &str) -> Option<String> {
    let l = text.to_ascii_lowercase();
    for lead in ["host ", "remote host "] {
        let mut from = 0;
        while let Some(i) = l[from..].find(lead) {
            let at = from + i + lead.len();
            let word: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ':')
                .collect();
            if word.contains('.') || word.contains('[') {
                return Some(word.trim_end_matches(',').to_string());
            }
            from = at;
        }
    }
    None
}

fn merge_text(bounce: &mut Bounce, hits: Vec<Hit>, msg: &mail_parser::Message<'_>, human: &str) {
    let apply = |f: &mut Failure, h: &Hit| {
        if let Some(r) = &h.reply {
            // Prefer the text part's reply when it has the stage or more
            // lines; Diagnostic-Code folds everything on one line.
            if f.reply.is_empty()
                || r.len() > f.reply.len()
                || (h.stage.is_some() && f.reply.len() == r.len())
            {
                f.reply = r.clone();
                f.reply_from = Some(h.reply_from.to_string());
            }
        }
        // "Delivery time expired" (X.4.7) says when the reporter gave up;
        // the last reply it got says why.
        if f.status.as_deref().is_some_and(|s| s.ends_with(".4.7")) {
            if let Some(r) = h
                .reply
                .as_ref()
                .and_then(|r| r.first())
                .and_then(|l| ReadReply::parse(l))
            {
                if let Some(st) = r.status.filter(|x| is_status(x) && !x.ends_with(".4.7")) {
                    f.status = Some(st);
                    f.status_from = Some("the last reply quoted in the text part (the report's X.4.7 only says it expired)".into());
                    f.reply = h.reply.clone().unwrap_or_default();
                    f.reply_from = Some(h.reply_from.to_string());
                }
            }
        }
        if let Some((s, phrase)) = &h.stage {
            f.stage = Some(s.to_string());
            f.stage_from = Some(format!("\"{phrase}\" in the text part"));
        }
        if f.remote_host.is_none() {
            f.remote_host = h.host.clone();
        }
        if f.status.is_none() {
            if let Some(s) = &h.status {
                f.status = Some(s.clone());
                f.status_from = Some("the text part (\"(#X.Y.Z)\")".into());
            }
        }
        if f.diagnostic.is_none() && f.reply.is_empty() {
            f.diagnostic = h.diagnostic.clone();
        }
    };
    if !bounce.failures.is_empty() {
        let single = bounce.failures.len() == 1;
        // The first hit of each recipient, by lower-cased address: a map, so
        // that matching stays linear in the number of recipients.
        let mut by_rcpt: HashMap<String, usize> = HashMap::with_capacity(hits.len());
        for (i, h) in hits.iter().enumerate() {
            if let Some(r) = &h.recipient {
                by_rcpt.entry(r.to_ascii_lowercase()).or_insert(i);
            }
        }
        for f in &mut bounce.failures {
            let h = by_rcpt
                .get(&f.recipient.to_ascii_lowercase())
                .map(|&i| &hits[i])
                .or_else(|| {
                    if single && hits.len() == 1 {
                        hits.first()
                    } else {
                        None
                    }
                })
                .or_else(|| {
                    if single {
                        hits.iter().find(|h| h.recipient.is_none())
                    } else {
                        None
                    }
                });
            if let Some(h) = h {
                apply(f, h);
            }
        }
        return;
    }
    // A free-text bounce: the recipients come from the text, or from the
    // headers that name them.
    let header_rcpt = msg
        .header_raw("X-Failed-Recipients")
        .map(|v| {
            v.split(',')
                .map(clean_addr)
                .filter(|a| a.contains('@'))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut original_to = original_recipients(msg);
    if original_to.is_empty() {
        original_to = original_to_in_text(msg);
    }
    // Failures by lower-cased recipient, as in the report case above.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(hits.len());
    for (i, h) in hits.iter().enumerate() {
        if h.reply.is_none() && h.status.is_none() && h.diagnostic.is_none() {
            continue;
        }
        // The same recipient twice (an address repeated in the reason):
        // keep the mention with a reply.
        if let Some(r) = &h.recipient {
            if let Some(&j) = seen.get(&r.to_ascii_lowercase()) {
                let prev = &mut bounce.failures[j];
                if prev.reply.is_empty() && h.reply.is_some() {
                    apply(prev, h);
                }
                continue;
            }
        }
        let (recipient, from) = match (
            &h.recipient,
            header_rcpt.get(i).or(header_rcpt.first()),
            original_to.first(),
        ) {
            (Some(r), _, _) => (r.clone(), "the text part"),
            (None, Some(r), _) => (r.clone(), "X-Failed-Recipients header"),
            (None, None, Some(r)) => (r.clone(), "To: of the returned message"),
            _ => match first_address(human) {
                Some(r) => (r, "the first address in the text part"),
                None => continue,
            },
        };
        let mut f = Failure {
            recipient,
            recipient_from: from.into(),
            ..Failure::default()
        };
        apply(&mut f, h);
        seen.entry(f.recipient.to_ascii_lowercase())
            .or_insert(bounce.failures.len());
        bounce.failures.push(f);
    }
}

/// The `To:` of a returned message quoted after the marker of a non-MIME
/// bounce.
fn original_to_in_text(msg: &mail_parser::Message<'_>) -> Vec<String> {
    let text = String::from_utf8_lossy(msg.parts.first().map(|p| p.contents()).unwrap_or(b""))
        .into_owned();
    let mut after = false;
    for line in text.lines() {
        let l = line.trim().to_ascii_lowercase();
        if is_original_marker(line) {
            after = true;
            continue;
        }
        if after && l.starts_with("to:") {
            let v = line.trim()[3..].trim();
            let a = match (v.find('<'), v.find('>')) {
                (Some(i), Some(j)) if j > i => clean_addr(&v[i..=j]),
                _ => clean_addr(v.split(',').next().unwrap_or(v)),
            };
            return Some(a).filter(|a| a.contains('@')).into_iter().collect();
        }
    }
    vec![]
}

fn original_recipients(msg: &mail_parser::Message<'_>) -> Vec<String> {
    for part in &msg.parts {
        if let PartType::Message(inner) = &part.body {
            if let Some(to) = inner.header_raw("To") {
                return to
                    .split(',')
                    .filter_map(|a| {
                        let a = a.trim();
                        let a = match (a.find('<'), a.find('>')) {
                            (Some(i), Some(j)) if j > i => &a[i..=j],
                            _ => a,
                        };
                        Some(clean_addr(a)).filter(|x| x.contains('@'))
                    })
                    .collect();
            }
        }
    }
    vec![]
}

/// Fills what can be derived: the code from the reply, the status from the
/// reply when the report had none.
fn finish(f: &mut Failure) {
    if let Some(r) = f.reply.first().and_then(|l| ReadReply::parse(l)) {
        f.reply_code = Some(r.code);
        // A generic X.0.0 in the report, or X.4.7 (it expired in the
        // reporter's queue), says less than the remote reply's own status.
        let vague = |s: &str| s.ends_with(".0.0") || s.ends_with(".4.7");
        let generic = f.status.as_deref().is_some_and(vague);
        let specific = r
            .status
            .as_deref()
            .is_some_and(|s| is_status(s) && !vague(s));
        if generic
            && specific
            && r.status.as_deref().map(|s| &s[..1]) == f.status.as_deref().map(|s| &s[..1])
        {
            f.status = None;
        }
        if f.status.is_none() {
            if let Some(s) = r.status.filter(|s| is_status(s)) {
                f.status = Some(s);
                f.status_from = Some("the reply's enhanced status code".into());
            }
        }
        if f.status.is_none() {
            // "ERROR_CODE :550, ERROR_CODE :5.1.1": a status later in the text.
            let class = (r.code / 100).to_string();
            if let Some(s) = status_word(&f.reply.join(" ")).filter(|s| s.starts_with(&class)) {
                f.status = Some(s);
                f.status_from = Some("a status code in the reply text".into());
            }
        }
    }
    if f.remote_host.as_deref().is_some_and(|h| h.is_empty()) {
        f.remote_host = None;
    }
}
