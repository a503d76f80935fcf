//! Command lines: the verb, the raw arguments, and MAIL/RCPT/BDAT arguments
//! parsed best-effort.
//!
//! A command always keeps the line exactly as it arrived. Parsing never
//! throws information away: an unknown parameter is reported while the
//! address before it is still returned, so rules and transcripts see both.

use std::fmt;

use super::lossy;

/// The SMTP verbs mailfault knows. Anything else is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Help,
    Quit,
    Starttls,
    Auth,
    Unknown,
}

impl Verb {
    fn from_word(w: &[u8]) -> Self {
        const VERBS: [(&[u8], Verb); 14] = [
            (b"EHLO", Verb::Ehlo),
            (b"HELO", Verb::Helo),
            (b"MAIL", Verb::Mail),
            (b"RCPT", Verb::Rcpt),
            (b"DATA", Verb::Data),
            (b"BDAT", Verb::Bdat),
            (b"RSET", Verb::Rset),
            (b"NOOP", Verb::Noop),
            (b"VRFY", Verb::Vrfy),
            (b"EXPN", Verb::Expn),
            (b"HELP", Verb::Help),
            (b"QUIT", Verb::Quit),
            (b"STARTTLS", Verb::Starttls),
            (b"AUTH", Verb::Auth),
        ];
        VERBS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(w))
            .map_or(Verb::Unknown, |(_, v)| *v)
    }
}

/// One command line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The line without its line ending, as text (invalid UTF-8 replaced).
    text: String,
    /// The line byte for byte, only when it is not UTF-8 (rare).
    invalid: Option<Vec<u8>>,
    pub verb: Verb,
    /// Where the arguments start in `text`.
    args_at: usize,
}

impl Command {
    /// Reads a line (without its line ending). A UTF-8 line (nearly every
    /// one) becomes the command's text without a copy, and its arguments
    /// are a slice of it.
    pub fn parse(line: impl Into<Vec<u8>>) -> Self {
        let (text, invalid) = match String::from_utf8(line.into()) {
            Ok(text) => (text, None),
            Err(e) => (lossy(e.as_bytes()).into_owned(), Some(e.into_bytes())),
        };
        let end = memchr::memchr(b' ', text.as_bytes()).unwrap_or(text.len());
        let verb = Verb::from_word(&text.as_bytes()[..end]);
        let spaces = text.as_bytes()[end..]
            .iter()
            .take_while(|&&b| b == b' ')
            .count();
        Self {
            text,
            invalid,
            verb,
            args_at: end + spaces,
        }
    }

    /// The line byte for byte.
    pub fn raw(&self) -> &[u8] {
        self.invalid.as_deref().unwrap_or(self.text.as_bytes())
    }

    /// The line is UTF-8 (RFC 6531 §3.3 allows nothing else).
    pub fn is_utf8(&self) -> bool {
        self.invalid.is_none()
    }

    /// Everything after the verb and the spaces that follow it (invalid
    /// UTF-8 replaced).
    pub fn args(&self) -> &str {
        &self.text[self.args_at..]
    }

    /// The line as text for logs and transcripts (invalid UTF-8 replaced).
    pub fn into_line(self) -> String {
        self.text
    }

    /// The verb as sent, upper-cased (for unknown commands too).
    pub fn verb_text(&self) -> String {
        let end = memchr::memchr(b' ', self.text.as_bytes()).unwrap_or(self.text.len());
        self.text[..end].to_ascii_uppercase()
    }
}

/// A MAIL or RCPT parameter, `KEYWORD[=value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
}

/// The parsed argument of MAIL FROM or RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathArg {
    /// The address without angle brackets or source route; `""` is the null
    /// reverse-path.
    pub address: String,
    pub params: Vec<Param>,
}

/// What is wrong with a MAIL/RCPT argument. The address found so far, if
/// any, travels with the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// No `FROM:` / `TO:`.
    Syntax,
    /// The address is not a mailbox.
    BadAddress,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Syntax => f.write_str("syntax"),
            PathError::BadAddress => f.write_str("bad address"),
        }
    }
}

/// Parses `FROM:<addr> params` (with `prefix = "FROM:"`) or `TO:<addr> params`.
/// Returns what could be read, and an error when something was wrong.
pub fn parse_path(args: &str, prefix: &str) -> (PathArg, Option<PathError>) {
    let mut out = PathArg::default();
    let Some(head) = args.get(..prefix.len()) else {
        return (out, Some(PathError::Syntax));
    };
    if !head.eq_ignore_ascii_case(prefix) {
        return (out, Some(PathError::Syntax));
    }
    // Postfix and Exim tolerate a space after the colon; so do we.
    let rest = args[prefix.len()..].trim_start();
    let (path, after, bracketed) = if let Some(inner) = rest.strip_prefix('<') {
        match find_close(inner) {
            Some(i) => (&inner[..i], &inner[i + 1..], true),
            None => return (out, Some(PathError::BadAddress)),
        }
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        (&rest[..end], &rest[end..], false)
    };
    // RFC 5321 §4.1.2: a source route "@a,@b:" before the mailbox is ignored.
    let address = match path.strip_prefix('@') {
        Some(_) => path.split_once(':').map_or(path, |(_, m)| m),
        None => path,
    };
    out.address = address.to_string();
    for word in after.split(' ').filter(|w| !w.is_empty()) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (word, None),
        };
        out.params.push(Param {
            keyword: k.to_ascii_uppercase(),
            value: v,
        });
    }
    let error = if (!bracketed && address.is_empty()) || !valid_mailbox(address) {
        Some(PathError::BadAddress)
    } else {
        None
    };
    (out, error)
}

/// Finds the `>` closing a path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// A light check of RFC 5321 §4.1.2 Mailbox: `""` (null path) is fine here,
/// callers refuse it where it is not allowed; otherwise no controls or
/// unquoted spaces, and `local@domain` with both parts present, or a bare
/// local part (RFC 5321 §4.5.1 `<postmaster>`).
fn valid_mailbox(addr: &str) -> bool {
    if addr.is_empty() {
        return true;
    }
    // Byte by byte where the address is ASCII (nearly always): the same
    // answers as decoding chars, a few times faster.
    let control = match addr.is_ascii() {
        true => addr.bytes().any(|b| b.is_ascii_control()),
        false => addr.chars().any(char::is_control),
    };
    if control {
        return false;
    }
    let (local, domain) = match memchr::memrchr(b'@', addr.as_bytes()) {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    };
    if local.is_empty() {
        return false;
    }
    let quoted = local.starts_with('"') && local.ends_with('"') && local.len() >= 2;
    // All ASCII: no byte of a multi-byte UTF-8 sequence is one of them.
    let special = |b| {
        matches!(
            b,
            b' ' | b'<' | b'>' | b'(' | b')' | b',' | b';' | b':' | b'\\' | b'[' | b']'
        )
    };
    if !quoted && local.bytes().any(special) {
        return false;
    }
    match domain {
        None => local.eq_ignore_ascii_case("postmaster"),
        Some(d) => {
            !d.is_empty()
                && !d.contains([' ', '@', '<', '>'])
                && (d.starts_with('[') == d.ends_with(']'))
        }
    }
}

/// Parses a decimal number without overflow: `None` for anything that is
/// not all digits or does not fit in a u64.
pub fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The arguments of BDAT (RFC 3030 §2): a chunk size and an optional LAST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BdatArg {
    pub size: u64,
    pub last: bool,
}

pub fn parse_bdat(args: &str) -> Option<BdatArg> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = parse_number(words.next()?)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(BdatArg { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive_and_keep_the_line() {
        let c = Command::parse(b"mail FROM:<a@b> SIZE=10");
        assert_eq!(c.verb, Verb::Mail);
        assert_eq!(c.args(), "FROM:<a@b> SIZE=10");
        assert_eq!(c.raw(), b"mail FROM:<a@b> SIZE=10");
        let u = Command::parse(b"XYZZY magic words");
        assert_eq!(u.verb, Verb::Unknown);
        assert_eq!(u.verb_text(), "XYZZY");
        assert_eq!(u.args(), "magic words");
        assert_eq!(Command::parse(b"\x00\xff\xfe").verb, Verb::Unknown);
    }

    #[test]
    fn mail_paths() {
        let (p, e) = parse_path("FROM:<a@b.test> SIZE=100 BODY=8BITMIME", "FROM:");
        assert_eq!(e, None);
        assert_eq!(p.address, "a@b.test");
        assert_eq!(p.params.len(), 2);
        assert_eq!(p.params[0].keyword, "SIZE");
        assert_eq!(p.params[0].value.as_deref(), Some("100"));
        assert_eq!(parse_path("FROM:<>", "FROM:"), (PathArg::default(), None));
        assert_eq!(parse_path("from: <x@y>", "FROM:").0.address, "x@y");
        assert_eq!(parse_path("FROM:x@y", "FROM:").0.address, "x@y");
        assert_eq!(parse_path("TO:<@r1,@r2:u@d>", "TO:").0.address, "u@d");
        assert_eq!(parse_path("TO:<\"a >b\"@d>", "TO:").0.address, "\"a >b\"@d");
        assert_eq!(parse_path("TO:<Postmaster>", "TO:").1, None);
    }

    #[test]
    fn bad_paths_keep_what_was_read() {
        assert_eq!(parse_path("<a@b>", "FROM:").1, Some(PathError::Syntax));
        assert_eq!(
            parse_path("FROM:<a@b", "FROM:").1,
            Some(PathError::BadAddress)
        );
        assert_eq!(
            parse_path("TO:<a b@c>", "TO:").1,
            Some(PathError::BadAddress)
        );
        assert_eq!(parse_path("TO:<@>", "TO:").1, Some(PathError::BadAddress));
        let (p, e) = parse_path("TO:<joe> FOO=1", "TO:");
        assert_eq!(e, Some(PathError::BadAddress));
        assert_eq!(p.address, "joe");
        assert_eq!(p.params[0].keyword, "FOO");
    }

    /// Control characters (C0, DEL and C1) and the specials of RFC 5322
    /// §3.2.3 outside quotes make an address bad, in ASCII addresses and
    /// in non-ASCII ones alike; a quoted local part may hold specials.
    #[test]
    fn control_characters_and_specials_are_refused_in_any_address() {
        for bad in ["a\x01b@c", "ab@c\x7f", "\u{e9}\u{85}@c", "\u{e9}\x09@c"] {
            assert!(!valid_mailbox(bad), "{bad:?}");
        }
        for c in [' ', '<', '>', '(', ')', ',', ';', ':', '\\', '[', ']'] {
            assert!(!valid_mailbox(&format!("a{c}b@c")), "{c:?}");
            assert!(!valid_mailbox(&format!("\u{e9}{c}@c")), "{c:?} non-ASCII");
            assert!(valid_mailbox(&format!("\"a{c}b\"@c")), "{c:?} quoted");
        }
        for good in [
            "a@c",
            "\u{e9}l\u{e8}ve@\u{e9}cole.test",
            "postmaster",
            "a@[192.0.2.1]",
        ] {
            assert!(valid_mailbox(good), "{good:?}");
        }
    }

    #[test]
    fn numbers_never_wrap() {
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number("18446744073709551616"), None);
        assert_eq!(parse_number("99999999999999999999999999"), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn bdat_args() {
        assert_eq!(
            parse_bdat("10 LAST"),
            Some(BdatArg {
                size: 10,
                last: true
            })
        );
        assert_eq!(
            parse_bdat("0"),
            Some(BdatArg {
                size: 0,
                last: false
            })
        );
        assert_eq!(parse_bdat("10 FIRST"), None);
        assert_eq!(parse_bdat("184467440737095516160"), None);
        assert_eq!(parse_bdat(""), None);
    }
}
