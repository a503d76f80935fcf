//! SMTP replies: a value type, its wire form, and the named default replies.
//!
//! Every reply the healthy-MTA fallback sends is a named constructor here, so
//! the texts live in one place and tests can compare against them.

use std::fmt;

use super::lossy;

/// An RFC 3463 enhanced status code (`class.subject.detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `X.Y.Z` (RFC 3463 §2: class 2, 4 or 5; subject and detail up to
    /// three digits). Returns `None` for anything else, including overflow.
    pub fn parse(s: &str) -> Option<Self> {
        StatusWord::parse(s).and_then(StatusWord::enhanced)
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply: a code, an optional enhanced status code, and one or more
/// lines of text. The enhanced code is repeated on every line, as Postfix and
/// Gmail do (RFC 2034 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub lines: Vec<String>,
}

/// Why a reply string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("a reply starts with a three-digit code from 200 to 599")]
    BadCode,
    #[error("reply code {code} is outside 200-599")]
    CodeOutOfRange { code: u16 },
    #[error("enhanced status code {enhanced} does not match reply code {code}: the class must be {}", code / 100)]
    ClassMismatch { code: u16, enhanced: EnhancedCode },
    #[error("enhanced status code class {0} is given on a {1}xx reply, which has none")]
    EnhancedOnIntermediate(u8, u16),
}

impl Reply {
    pub fn new(code: u16, enhanced: Option<EnhancedCode>, text: impl Into<String>) -> Self {
        let text = text.into();
        // One line, the usual case, keeps the text it was given. (`memchr2`:
        // `str::contains` with a pattern of two chars cost more than the
        // rest of this function.)
        let lines = if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
            text.split('\n')
                .map(|l| l.trim_end_matches('\r').to_string())
                .collect()
        } else {
            vec![text]
        };
        Self {
            code,
            enhanced,
            lines,
        }
    }

    /// Parses the scenario notation `"550 5.1.1 text"`; a `\n` in the text
    /// makes a multi-line reply. Lines after the first may repeat the
    /// `550-5.1.1 ` / `550 5.1.1 ` prefix (as copied from a bounce); it is
    /// stripped so it is not sent twice.
    ///
    /// This is the strict use of the one reply reader ([`ReadReply`]): the
    /// code must start the text, and the status must agree with the code.
    pub fn parse(s: &str) -> Result<Self, ReplyError> {
        let s = s.trim_end_matches(['\r', '\n']);
        let b = s.as_bytes();
        if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::BadCode);
        }
        if b.len() > 3 && !matches!(b[3], b' ' | b'-' | b'\n' | b'\r') {
            return Err(ReplyError::BadCode);
        }
        let code: u16 = s[..3].parse().map_err(|_| ReplyError::BadCode)?;
        if !(200..=599).contains(&code) {
            return Err(ReplyError::CodeOutOfRange { code });
        }
        let read = read(s, Reading::Strict).ok_or(ReplyError::BadCode)?;
        let enhanced = read.enhanced();
        if let Some(e) = enhanced {
            check_status(code, e)?;
        }
        Ok(Self {
            code,
            enhanced,
            lines: read.lines,
        })
    }

    /// The reply as sent on the wire, every line CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.write_wire(&mut out);
        out
    }

    /// Every reply a session sends passes here: numbers are written with
    /// `itoa`, not through a `String` each, two allocations a line saved.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let n = self.lines.len();
        let mut num = itoa::Buffer::new();
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(num.format(self.code).as_bytes());
            let last = i + 1 == n;
            let sep = if last { b' ' } else { b'-' };
            match (&self.enhanced, line.is_empty()) {
                (Some(e), _) => {
                    out.push(sep);
                    out.extend_from_slice(num.format(e.class).as_bytes());
                    out.push(b'.');
                    out.extend_from_slice(num.format(e.subject).as_bytes());
                    out.push(b'.');
                    out.extend_from_slice(num.format(e.detail).as_bytes());
                    if !line.is_empty() {
                        out.push(b' ');
                        out.extend_from_slice(line.as_bytes());
                    }
                }
                (None, true) if last => {}
                (None, _) => {
                    out.push(sep);
                    out.extend_from_slice(line.as_bytes());
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The reply as one line of text for logs: `550 5.1.1 first line`.
    pub fn summary(&self) -> String {
        let wire = self.to_wire();
        let text = lossy(&wire);
        text.split("\r\n")
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// Whether a status agrees with its reply code: RFC 3463 §2 and RFC 2034 §4
/// (the class is the code's first digit; 3xx replies carry none).
pub fn check_status(code: u16, e: EnhancedCode) -> Result<(), ReplyError> {
    if e.class as u16 == code / 100 {
        return Ok(());
    }
    if code / 100 == 3 {
        return Err(ReplyError::EnhancedOnIntermediate(e.class, code / 100));
    }
    Err(ReplyError::ClassMismatch { code, enhanced: e })
}

/// A status word as written, `X.Y.Z` with any class digit, so that what a
/// server really sent (a `3.1.1`, a `9.0.0`) can be read and reported.
/// [`EnhancedCode`] is its valid subset (class 2, 4 or 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl StatusWord {
    /// One class digit, then subject and detail of one to three digits
    /// (RFC 3463 §2's lengths).
    pub fn parse(word: &str) -> Option<Self> {
        let mut p = word.split('.');
        let (a, b, c) = (p.next()?, p.next()?, p.next()?);
        let digits = |x: &str, max: usize| {
            !x.is_empty() && x.len() <= max && x.bytes().all(|d| d.is_ascii_digit())
        };
        if p.next().is_some() || !digits(a, 1) || !digits(b, 3) || !digits(c, 3) {
            return None;
        }
        Some(Self {
            class: a.parse().ok()?,
            subject: b.parse().ok()?,
            detail: c.parse().ok()?,
        })
    }

    /// The status as an RFC 3463 code, when its class is 2, 4 or 5.
    pub fn enhanced(self) -> Option<EnhancedCode> {
        matches!(self.class, 2 | 4 | 5)
            .then(|| EnhancedCode::new(self.class, self.subject, self.detail))
    }
}

/// A reply as read, before any check: the code, the status word as written
/// (any class digit is kept, so a mismatch can be reported), and the text
/// lines without their `550-5.1.1 ` prefixes.
///
/// This is the one reply reader. [`ReadReply::parse`] reads leniently, as
/// replies are found in bounces and logs (`explain`, `from-bounce`);
/// [`Reply::parse`] reads the scenario notation strictly with the same
/// reader and then checks the code and the status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadReply {
    pub code: u16,
    /// As written: `5.1.1`; any class digit is kept.
    pub status: Option<String>,
    /// Text lines without their `550-5.1.1 ` prefixes.
    pub lines: Vec<String>,
}

impl ReadReply {
    /// Reads a reply in any shape found in logs and bounces: single or
    /// multi-line, with or without continuation prefixes, with text before
    /// the code ("host said: ...", "smtp; "), a code repeated by a relaying
    /// reporter ("554 554 5.7.0 ..."), a quoted status. Lines are trimmed
    /// and blank lines dropped. `None` when there is no reply code.
    pub fn parse(input: &str) -> Option<Self> {
        read(input, Reading::Lenient)
    }

    /// The status word as numbers, any class digit.
    pub fn status_word(&self) -> Option<StatusWord> {
        self.status.as_deref().and_then(StatusWord::parse)
    }

    /// The status when it is a valid RFC 3463 code.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.status_word().and_then(StatusWord::enhanced)
    }

    /// The text lines joined by spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The scenario notation: the code starts the text, whitespace is kept,
    /// and only a valid status (class 2, 4 or 5) is taken from the text.
    Strict,
    /// Bounces and logs: see [`ReadReply::parse`].
    Lenient,
}

/// The reader. CR LF, a lone CR and LF all end a line.
fn read(input: &str, how: Reading) -> Option<ReadReply> {
    let input = input.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = ReadReply {
        code: 0,
        status: None,
        lines: vec![],
    };
    let mut code = None;
    for raw in input.split('\n') {
        let line = match how {
            Reading::Strict => raw,
            Reading::Lenient if raw.trim().is_empty() => continue,
            Reading::Lenient => raw.trim(),
        };
        let c = match code {
            Some(c) => c,
            None => {
                // The first code: at the start, or after prose (lenient).
                let start = match how {
                    Reading::Strict => 0,
                    Reading::Lenient => find_code(line)?,
                };
                let c: u16 = line.get(start..start + 3)?.parse().ok()?;
                out.code = c;
                code = Some(c);
                let line = &line[start..];
                if how == Reading::Strict {
                    let (status, text) = split_status(line.get(4..).unwrap_or(""));
                    out.status = status.map(str::to_string);
                    out.lines.push(text.to_string());
                    continue;
                }
                out.lines.push(lenient_line(line, c, &mut out.status, true));
                continue;
            }
        };
        let text = match how {
            Reading::Strict => strict_continuation(line, c, out.enhanced()).to_string(),
            Reading::Lenient => lenient_line(line, c, &mut out.status, false),
        };
        out.lines.push(text);
    }
    code.map(|_| out)
}

/// `5.1.1 text` -> the status and the text after one space (strict: only a
/// valid RFC 3463 status counts; anything else is text).
fn split_status(text: &str) -> (Option<&str>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match StatusWord::parse(word).and_then(StatusWord::enhanced) {
        Some(_) => (Some(word), rest),
        None => (None, text),
    }
}

/// A continuation line of the scenario notation: a copied `550-5.1.1 ` /
/// `550 5.1.1 ` prefix of the same code and status is stripped.
fn strict_continuation(line: &str, code: u16, enhanced: Option<EnhancedCode>) -> &str {
    let code_s = code.to_string();
    let Some(rest) = line.strip_prefix(code_s.as_str()) else {
        return line;
    };
    let Some(rest) = rest.strip_prefix(['-', ' ']) else {
        return line;
    };
    match enhanced {
        Some(e) => {
            let e = e.to_string();
            match rest.strip_prefix(e.as_str()) {
                Some(r) => r.strip_prefix(' ').unwrap_or(r),
                None => rest,
            }
        }
        None => rest,
    }
}

/// A line read leniently: its code prefix, a repeated code (first line), a
/// quoted status word; the first status seen is kept.
fn lenient_line(line: &str, code: u16, status: &mut Option<String>, first: bool) -> String {
    let c = code.to_string();
    let rest = match line.strip_prefix(c.as_str()) {
        Some(r) if r.is_empty() || r.starts_with([' ', '-']) => r.get(1..).unwrap_or(""),
        _ => line,
    };
    let rest = rest.trim_start().trim_start_matches([',', ' ']);
    // "554 554 5.7.0 ...": the code repeated by a relaying reporter.
    let rest = match rest.strip_prefix(c.as_str()) {
        Some(r) if r.starts_with(' ') && status.is_none() && first => r.trim_start(),
        _ => rest,
    };
    let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let word = word.trim_start_matches(['\'', '"']);
    if StatusWord::parse(word).is_none() {
        return rest.to_string();
    }
    if status.is_none() {
        *status = Some(word.to_string());
    }
    after.to_string()
}

/// Byte offset of the first reply code in a line: at its start, or after
/// a space, `;`, `:`, a quote or `(` ("smtp; 550", "said: 550", "'550").
pub fn find_code(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let is_code = |i: usize| {
        i + 3 <= b.len()
            && (b'2'..=b'5').contains(&b[i])
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && (i + 3 == b.len()
                || matches!(b[i + 3], b' ' | b'-' | b',')
                || (b[i + 3] == b':' && b.get(i + 4) == Some(&b' ')))
            && (i == 0 || matches!(b[i - 1], b' ' | b';' | b':' | b'\'' | b'"' | b'('))
    };
    (0..b.len()).find(|&i| is_code(i))
}

/// Splits a reply folded onto one line ("550-5.1.1 a 550-5.1.1 b 550 5.1.1
/// c", as a Diagnostic-Code field carries it) into its lines, each with its
/// prefix. `None` when the text holds no reply code.
pub fn unfold(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    let start = find_code(text)?;
    let text = &text[start..];
    let code = &text[..3];
    if !text.starts_with(&format!("{code}-")) {
        return Some(vec![text.to_string()]);
    }
    let (cont, last) = (format!(" {code}-"), format!(" {code} "));
    let mut lines = vec![];
    let mut rest = text;
    loop {
        let next = [rest.find(cont.as_str()), rest.find(last.as_str())]
            .into_iter()
            .flatten()
            .min();
        let Some(i) = next else {
            lines.push(rest.trim().to_string());
            break;
        };
        lines.push(rest[..i].trim().to_string());
        rest = &rest[i + 1..];
        if rest.starts_with(&format!("{code} ")) {
            lines.push(rest.trim().to_string());
            break;
        }
    }
    Some(lines)
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// RFC 5321 §4.5.3.1.5: the longest reply line, code and CRLF included.
pub const MAX_REPLY_LINE: usize = 512;

const fn ec(class: u8, subject: u16, detail: u16) -> Option<EnhancedCode> {
    Some(EnhancedCode::new(class, subject, detail))
}

/// The replies of the healthy-MTA fallback. Texts follow Postfix where it has
/// one, since that is what most senders meet.
pub mod defaults {
    use super::{ec, Reply};

    pub fn greeting(hostname: &str, text: &str) -> Reply {
        Reply::new(220, None, format!("{hostname} {text}"))
    }
    pub fn helo(hostname: &str) -> Reply {
        Reply::new(250, None, hostname)
    }
    pub fn ok() -> Reply {
        Reply::new(250, ec(2, 0, 0), "Ok")
    }
    pub fn mail_ok() -> Reply {
        Reply::new(250, ec(2, 1, 0), "Ok")
    }
    pub fn rcpt_ok() -> Reply {
        Reply::new(250, ec(2, 1, 5), "Ok")
    }
    pub fn start_data() -> Reply {
        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }
    pub fn queued(id: &str) -> Reply {
        Reply::new(250, ec(2, 0, 0), ["Ok: queued as ", id].concat())
    }
    /// The message could not be kept (the store failed): Postfix's reply
    /// when it cannot write its queue file.
    pub fn not_stored() -> Reply {
        Reply::new(451, ec(4, 3, 0), "Error: queue file write error")
    }
    pub fn chunk_ok(n: u64) -> Reply {
        Reply::new(250, ec(2, 0, 0), format!("Ok: {n} octets received"))
    }
    pub fn vrfy() -> Reply {
        // RFC 5321 §3.5.3: 252 when the server will not verify.
        Reply::new(
            252,
            ec(2, 0, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn expn() -> Reply {
        // RFC 5321 §7.3 lets a site refuse to expand lists; 252 says so
        // without claiming the list does or does not exist.
        Reply::new(252, ec(2, 0, 0), "Cannot EXPN list")
    }
    pub fn help() -> Reply {
        Reply::new(
            214,
            ec(2, 0, 0),
            "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY EXPN HELP QUIT",
        )
    }
    pub fn bye() -> Reply {
        Reply::new(221, ec(2, 0, 0), "Bye")
    }
    pub fn unknown_command() -> Reply {
        Reply::new(502, ec(5, 5, 1), "Error: command not recognized")
    }
    pub fn not_available(what: &str) -> Reply {
        Reply::new(502, ec(5, 5, 1), format!("Error: {what} not available"))
    }
    pub fn empty_line() -> Reply {
        Reply::new(500, ec(5, 5, 2), "Error: bad syntax")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, ec(5, 5, 2), "Error: line too long")
    }
    pub fn syntax(usage: &str) -> Reply {
        Reply::new(501, ec(5, 5, 4), format!("Syntax: {usage}"))
    }
    pub fn no_arguments(verb: &str) -> Reply {
        Reply::new(501, ec(5, 5, 4), format!("Syntax: {verb} (no arguments)"))
    }
    pub fn bad_sender() -> Reply {
        Reply::new(501, ec(5, 1, 7), "Bad sender address syntax")
    }
    pub fn bad_recipient() -> Reply {
        Reply::new(501, ec(5, 1, 3), "Bad recipient address syntax")
    }
    pub fn bad_parameter(what: &str) -> Reply {
        Reply::new(501, ec(5, 5, 4), format!("Bad {what} parameter syntax"))
    }
    pub fn unknown_parameter(name: &str) -> Reply {
        Reply::new(555, ec(5, 5, 4), format!("Unsupported option: {name}"))
    }
    pub fn need_helo() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: send HELO/EHLO first")
    }
    pub fn need_mail() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: need MAIL command")
    }
    pub fn need_rcpt() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: need RCPT command")
    }
    pub fn refused_session() -> Reply {
        // RFC 5321 §3.1: after a negative greeting only QUIT is served.
        Reply::new(503, ec(5, 5, 1), "Error: no SMTP service here, send QUIT")
    }
    pub fn nested_mail() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: nested MAIL command")
    }
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, ec(5, 5, 1), "Error: no valid recipients")
    }
    pub fn data_after_bdat() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: DATA after BDAT")
    }
    pub fn too_big() -> Reply {
        Reply::new(552, ec(5, 3, 4), "Error: message file too big")
    }
    pub fn size_exceeded() -> Reply {
        Reply::new(552, ec(5, 3, 4), "Message size exceeds fixed limit")
    }
    pub fn insufficient_storage() -> Reply {
        // RFC 5321 §4.2.2 452; RFC 3463 §3.4 X.3.1 "mail system full": the
        // global message memory budget (--max-message-memory) has no room.
        Reply::new(452, ec(4, 3, 1), "Insufficient system storage")
    }
    pub fn bare_lf(hostname: &str) -> Reply {
        // Postfix 3.9 smtpd_forbid_bare_newline = reject (its reply text);
        // 521 (RFC 7504) because the session closes right after.
        Reply::new(
            521,
            ec(5, 5, 2),
            format!("{hostname} Error: bare <LF> received"),
        )
    }
    pub fn bad_utf8() -> Reply {
        // Postfix with smtputf8_enable: a command that is not UTF-8.
        Reply::new(501, ec(5, 5, 2), "Error: bad UTF-8 syntax")
    }
    pub fn non_ascii_address() -> Reply {
        // RFC 6531 §3.7.4.1: 553, and X.6.7 (RFC 5248) "Non-ASCII addresses
        // not permitted for that sender/recipient"; MAIL lacked SMTPUTF8.
        Reply::new(
            553,
            ec(5, 6, 7),
            "Non-ASCII addresses not permitted without SMTPUTF8",
        )
    }
    pub fn too_many_sessions_per_ip(hostname: &str) -> Reply {
        Reply::new(
            421,
            ec(4, 7, 0),
            format!("{hostname} Error: too many connections from your address"),
        )
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, ec(4, 5, 3), "Error: too many recipients")
    }
    pub fn cannot_decode() -> Reply {
        Reply::new(501, ec(5, 5, 2), "Cannot decode response")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, ec(5, 0, 0), "Authentication aborted")
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, ec(2, 7, 0), "Authentication successful")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, ec(5, 7, 8), "Error: authentication failed")
    }
    pub fn auth_required() -> Reply {
        Reply::new(530, ec(5, 7, 0), "Authentication required")
    }
    pub fn encryption_required() -> Reply {
        Reply::new(
            538,
            ec(5, 7, 11),
            "Encryption required for requested authentication mechanism",
        )
    }
    pub fn unknown_mechanism() -> Reply {
        Reply::new(504, ec(5, 5, 4), "Unrecognized authentication type")
    }
    pub fn already_authenticated() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: already authenticated")
    }
    pub fn auth_in_transaction() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: MAIL transaction in progress")
    }
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, ec(2, 0, 0), "Ready to start TLS")
    }
    pub fn tls_already_active() -> Reply {
        Reply::new(503, ec(5, 5, 1), "Error: TLS already active")
    }
    pub fn must_starttls() -> Reply {
        Reply::new(530, ec(5, 7, 0), "Must issue a STARTTLS command first")
    }
    pub fn idle_timeout(hostname: &str) -> Reply {
        Reply::new(
            421,
            ec(4, 4, 2),
            format!("{hostname} Error: timeout exceeded"),
        )
    }
    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::new(
            421,
            ec(4, 3, 2),
            format!("{hostname} Service shutting down, closing transmission channel"),
        )
    }
    pub fn too_many_connections(hostname: &str) -> Reply {
        Reply::new(
            421,
            ec(4, 7, 0),
            format!("{hostname} Error: too many connections"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        let r = Reply::parse("550 5.1.1 The account does not exist.").unwrap();
        assert_eq!(r.to_wire(), b"550 5.1.1 The account does not exist.\r\n");
    }

    #[test]
    fn new_splits_lines_and_drops_their_carriage_returns() {
        assert_eq!(Reply::new(250, None, "Ok").lines, ["Ok"]);
        assert_eq!(Reply::new(250, None, "a\r\nb\n").lines, ["a", "b", ""]);
        assert_eq!(Reply::new(250, None, "a\r").lines, ["a"]);
        assert_eq!(Reply::new(250, None, "a\rb").lines, ["a\rb"]);
    }

    #[test]
    fn multi_line_prefixes_every_line() {
        let r = Reply::parse("550 5.1.1 first\nsecond\nthird").unwrap();
        assert_eq!(
            String::from_utf8(r.to_wire()).unwrap(),
            "550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n"
        );
    }

    #[test]
    fn copied_continuation_prefix_is_not_doubled() {
        let r = Reply::parse("550-5.1.1 first\n550-5.1.1 second\n550 5.1.1 third").unwrap();
        assert_eq!(r.lines, ["first", "second", "third"]);
    }

    #[test]
    fn no_enhanced_code() {
        let r = Reply::parse("421 Service not available").unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.to_wire(), b"421 Service not available\r\n");
        assert_eq!(Reply::parse("250").unwrap().to_wire(), b"250\r\n");
    }

    #[test]
    fn errors() {
        assert_eq!(Reply::parse("99 x"), Err(ReplyError::BadCode));
        assert_eq!(Reply::parse("abc"), Err(ReplyError::BadCode));
        assert_eq!(Reply::parse("2500 x"), Err(ReplyError::BadCode));
        assert_eq!(
            Reply::parse("600 x"),
            Err(ReplyError::CodeOutOfRange { code: 600 })
        );
        assert!(matches!(
            Reply::parse("450 5.1.1 x"),
            Err(ReplyError::ClassMismatch { .. })
        ));
    }

    #[test]
    fn enhanced_code_parse() {
        assert_eq!(
            EnhancedCode::parse("4.7.26"),
            Some(EnhancedCode::new(4, 7, 26))
        );
        assert_eq!(EnhancedCode::parse("3.1.1"), None);
        assert_eq!(EnhancedCode::parse("5.1"), None);
        assert_eq!(EnhancedCode::parse("5.1.99999999999999999999"), None);
    }

    #[test]
    fn lenient_reading_of_logs_and_bounces() {
        let r = ReadReply::parse("550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third").unwrap();
        assert_eq!((r.code, r.status.as_deref()), (550, Some("5.1.1")));
        assert_eq!(r.lines, ["first", "second", "third"]);
        let r =
            ReadReply::parse("host mx.example.test[192.0.2.1] said: 450 4.2.1 slow down").unwrap();
        assert_eq!((r.code, r.status.as_deref()), (450, Some("4.2.1")));
        let r = ReadReply::parse("smtp; 554 554 '5.7.0 refused").unwrap();
        assert_eq!(
            (r.code, r.status.as_deref(), r.text()),
            (554, Some("5.7.0"), "refused".into())
        );
        // What a server really sent is kept, to be reported.
        let r = ReadReply::parse("550 4.1.1 mixed").unwrap();
        assert_eq!(
            r.status_word(),
            Some(StatusWord {
                class: 4,
                subject: 1,
                detail: 1
            })
        );
        assert!(ReadReply::parse("no code here").is_none());
    }

    #[test]
    fn strict_and_lenient_read_a_well_formed_reply_alike() {
        for s in [
            "550 5.1.1 The account does not exist.",
            "550-5.1.1 first\n550-5.1.1 second\n550 5.1.1 third",
            "421 Service not available",
            "250",
        ] {
            let strict = Reply::parse(s).unwrap();
            let lenient = ReadReply::parse(s).unwrap();
            assert_eq!(strict.code, lenient.code, "{s}");
            assert_eq!(strict.enhanced, lenient.enhanced(), "{s}");
            assert_eq!(strict.lines, lenient.lines, "{s}");
        }
        // Strict keeps the text's own spacing and blank lines.
        let r = Reply::parse("550 5.7.26 a\n550-5.7.26  two spaces\n\nlast").unwrap();
        assert_eq!(r.lines, ["a", " two spaces", "", "last"]);
        // A lone CR ends a line, as in the lenient reading.
        assert_eq!(Reply::parse("550 a\rb").unwrap().lines, ["a", "b"]);
        // A word that is no RFC 3463 status stays text.
        assert_eq!(Reply::parse("550 3.1.1 x").unwrap().lines, ["3.1.1 x"]);
    }

    #[test]
    fn unfolds_a_reply_folded_on_one_line() {
        assert_eq!(
            unfold("smtp; 550-5.1.1 a 550-5.1.1 b 550 5.1.1 c").unwrap(),
            ["550-5.1.1 a", "550-5.1.1 b", "550 5.1.1 c"]
        );
        assert_eq!(unfold("550 5.1.1 one").unwrap(), ["550 5.1.1 one"]);
        assert!(unfold("no code").is_none());
    }
}
