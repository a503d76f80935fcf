//! Reading bounce messages: RFC 3464 delivery status notifications (parsed
//! with mail-parser for the MIME structure; the DSN fields are ours), and
//! the free-text bounces of Postfix, Exim, Sendmail, qmail, Exchange, Gmail
//! and others. Each failed recipient comes out with its status, the remote
//! server's reply word for word, the remote host and the SMTP stage, and
//! where each value was found.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use super::merge::{finish, merge_text, plausible, repair_address};
use super::mime::{
    cut_original, is_auto_reply, is_feedback_report, looks_like_bounce, mostly_text, normalize,
    strip_html,
};
use super::prose::text_hits;
use super::rfc3464::read_dsn;
use crate::proto::reply::unfold;

pub use super::merge::plausible_address;

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
    /// The mail system that wrote the bounce, when its family recognises it
    /// (src/bounce/lhost/).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_system: Option<String>,
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
    #[error(
        "a delivery notification from a sending service (the message was delivered), not a bounce"
    )]
    Delivered {
        /// The receiving server's reply as the notice quotes it (SES's
        /// `smtpResponse`, "250 2.6.0 Message received"): its status and code.
        status: Option<String>,
        code: Option<u16>,
    },
    #[error("JSON that is not a bounce notification (Amazon SES, SendGrid, Mailgun or Postmark)")]
    NotNotification,
    #[error("a mail log with no failed delivery (Postfix status=bounced|deferred, Exim **/==, Sendmail stat=)")]
    NoLogFailure,
    #[error("larger than 64 MiB, the most from-bounce reads from one input; split the mbox or log and give the parts")]
    TooBig,
}

impl NotBounce {
    /// The name bounce analysers give a notice that is no failure
    /// (sisimai's reasons `feedback`, `vacation`, `delivered`): such a
    /// notice is named, never read as a failure, and is never hard.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            NotBounce::Feedback | NotBounce::Complaint => Some("feedback"),
            NotBounce::AutoReply => Some("vacation"),
            NotBounce::Delivered { .. } => Some("delivered"),
            _ => None,
        }
    }
}

/// How deep a bounce forwarded inside another message is looked for (a
/// gateway's notice wrapping the report it received: one level in practice).
const MAX_FORWARDED: usize = 2;

/// Reads a bounce message (LF, CRLF or CR line ends).
pub fn parse(bytes: &[u8]) -> Result<Bounce, NotBounce> {
    parse_at(bytes, 0)
}

/// A delivery report attached whole (`message/rfc822` holding a
/// `multipart/report`): a gateway or a forwarding user passed on the
/// report it received. Only a report counts, never an original message.
fn forwarded_report(msg: &mail_parser::Message<'_>, depth: usize) -> Option<Bounce> {
    if depth >= MAX_FORWARDED {
        return None;
    }
    msg.parts.iter().find_map(|part| match &part.body {
        PartType::Message(inner)
            if inner.content_type().is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case("multipart")
                    && c.subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            }) =>
        {
            parse_at(inner.raw_message(), depth + 1).ok()
        }
        _ => None,
    })
}

fn parse_at(bytes: &[u8], depth: usize) -> Result<Bounce, NotBounce> {
    let bytes = normalize(bytes);
    // One message saved from an mbox keeps its "From " separator line
    // (RFC 4155), which is no header: the headers start after it.
    let bytes = match bytes.strip_prefix(b"From ") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(Vec::new(), |i| rest[i + 1..].to_vec()),
        None => bytes,
    };
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
        // A text part in its own charset (ISO-2022-JP from Japanese
        // carriers) read as the parser decoded it, not as raw bytes.
        let body = match (&part.body, ctype.as_str()) {
            (PartType::Text(t), "text") => t.to_string(),
            _ => String::from_utf8_lossy(part.contents()).into_owned(),
        };
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
    if dsn_texts.is_empty() {
        if let Some(r) = super::lhost::json_by_mail(&human) {
            return r;
        }
    }
    // Non-MIME bounces: a text part may also hold a DSN-like block.
    let human = cut_original(&human);
    let system = super::lhost::identify(&bytes, &human);
    let subject = msg.subject().map(str::to_string);
    let mut bounce = Bounce {
        format: if dsn_texts.is_empty() {
            "text".into()
        } else {
            "dsn".into()
        },
        subject,
        mail_system: system.map(|m| m.name.to_string()),
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
    // A report for one recipient whose fields quote no reply and no
    // diagnostic: the notice's own words say why (Gmail's "Address not
    // found ... the address couldn't be found").
    if let [f] = bounce.failures.as_mut_slice() {
        if f.reply.is_empty() && f.diagnostic.is_none() {
            let words = notice_words(&human);
            f.diagnostic = Some(words.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|d| !d.is_empty());
        }
    }
    if bounce.failures.is_empty() && looks_like_bounce(&msg, &human) {
        failed_recipients_header(&msg, &human, &mut bounce);
    }
    for f in &mut bounce.failures {
        finish(f);
    }
    // Noise that happens to hold an "@" or a number is no failure.
    for f in &mut bounce.failures {
        repair_address(f);
    }
    bounce.failures.retain(plausible);
    if bounce.failures.is_empty() {
        if let Some(b) = forwarded_report(&msg, depth) {
            return Ok(b);
        }
        return Err(if is_auto_reply(&msg) {
            NotBounce::AutoReply
        } else {
            NotBounce::NoFailure
        });
    }
    for f in &mut bounce.failures {
        super::reason::judge(f);
        // What a family's notices mean when their words name no reason.
        let explicit = f
            .status
            .as_deref()
            .is_some_and(|s| s.get(1..) == Some(".1.1"));
        if system.is_some_and(|m| m.filter) && f.reason == "userunknown" && !explicit {
            f.reason = "filtered".into();
            f.hard_bounce = false;
        }
        if let Some(r) = system.and_then(|m| m.default_reason) {
            if matches!(f.reason.as_str(), "onhold" | "undefined") {
                f.reason = r.to_string();
                f.hard_bounce = super::reason::hard(r, f.status.as_deref(), f.reply_code);
            }
        }
    }
    Ok(bounce)
}

/// A notice's first words (two paragraphs, at most 500 characters): its
/// reason when it quotes no reply.
fn notice_words(human: &str) -> String {
    human
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(500)
        .collect()
}

/// The recipients an MTA lists in `X-Failed-Recipients` (Exim, Gmail),
/// for a notice that quotes no reply and no report: each fails with the
/// notice's first words as the diagnostic.
fn failed_recipients_header(msg: &mail_parser::Message<'_>, human: &str, bounce: &mut Bounce) {
    // Without the header, the returned message's To: (a notice that
    // quotes no reply but returns the message, as MMS gateways do).
    let original = super::merge::original_to_in_text(msg);
    let (list, from) = match msg.header_raw("X-Failed-Recipients") {
        Some(l) => (l.to_string(), "X-Failed-Recipients header"),
        None if original.len() == 1 => (original[0].clone(), "To: of the returned message"),
        None => return,
    };
    let reason = notice_words(human);
    for a in list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .take(1000)
    {
        bounce.failures.push(Failure {
            recipient: a.trim_matches(['<', '>']).to_string(),
            recipient_from: from.into(),
            diagnostic: Some(reason.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|d| !d.is_empty()),
            ..Failure::default()
        });
    }
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
