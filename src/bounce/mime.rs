//! The message around a bounce: line ends made one, the MIME parts' text,
//! HTML made text, the copy of the original message cut off, and what kind
//! of message it is (a bounce, a feedback report, an auto-reply).

use mail_parser::MimeHeaders;

/// Lines that start the copy of the original message in free-text bounces.
pub(super) const ORIGINAL_MARKERS: &[&str] = &[
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
    "original message:",
];

pub(crate) fn normalize(bytes: &[u8]) -> Vec<u8> {
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

/// Text rather than binary noise: at most one character in ten a control
/// character or a byte that was not UTF-8. Text in a charset that did not
/// decode (Japanese carriers label EUC-JP as ISO-2022-JP) is many U+FFFD
/// but almost no control characters, which binary noise always has: it is
/// text, and its ASCII lines are read.
pub(super) fn mostly_text(s: &str) -> bool {
    let (mut all, mut ctrl, mut bad) = (0usize, 0usize, 0usize);
    for c in s.chars() {
        all += 1;
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{1b}') {
            ctrl += 1;
        } else if c == '\u{fffd}' {
            bad += 1;
        }
    }
    ctrl * 10 <= all && (ctrl * 100 <= all || (ctrl + bad) * 10 <= all)
}

/// Signs that a message is a bounce, for messages that quote no SMTP reply.
/// A feedback report (RFC 5965 §3): `multipart/report` with
/// `report-type=feedback-report`, or a `message/feedback-report` part.
pub(super) fn is_feedback_report(msg: &mail_parser::Message<'_>) -> bool {
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
pub(super) fn is_auto_reply(msg: &mail_parser::Message<'_>) -> bool {
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

pub(super) fn looks_like_bounce(msg: &mail_parser::Message<'_>, human: &str) -> bool {
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

pub(super) fn strip_html(s: &str) -> String {
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
pub(super) fn is_original_marker(line: &str) -> bool {
    let l = line
        .trim()
        .trim_start_matches(['-', ' '])
        .to_ascii_lowercase();
    !l.is_empty()
        && ORIGINAL_MARKERS
            .iter()
            .any(|m| l.starts_with(m.trim_start_matches(['-', ' '])))
}

pub(super) fn cut_original(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecoded_charset_is_text_and_noise_is_not() {
        let mislabelled = "\u{fffd}\u{fffd}\u{fffd}\u{fffd}\n\nThe user(s) account is disabled.\n";
        assert!(mostly_text(mislabelled));
        let noise: String = (0u8..=255).map(char::from).cycle().take(4096).collect();
        assert!(!mostly_text(&noise));
    }
}
