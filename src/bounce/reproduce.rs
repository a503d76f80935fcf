//! Turns a bounce into a scenario that reproduces each failure at its stage
//! for its recipient, with a comment block saying where each value came
//! from.

use std::collections::HashSet;
use std::fmt::Write;

use super::dsn::{Bounce, Failure};
use crate::proto::reply::MAX_REPLY_LINE;
use crate::proto::Reply;

/// Characters never copied as they are: controls (TOML forbids them in
/// comments, and a CR or LF would end the comment), the Unicode line and
/// paragraph separators (line ends to some editors), and the bidirectional
/// controls (they make text read differently from what it is).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{feff}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// TOML basic string (TOML 1.0 §String): quote and backslash escaped, the
/// hidden characters as `\uXXXX`.
fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Text from the bounce for a comment: one line, the hidden characters
/// shown as `\u{XXXX}` (TOML comments allow no control character but tab).
pub(crate) fn shown(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if hidden(c) {
            let _ = write!(o, "\\u{{{:04X}}}", c as u32);
        } else {
            o.push(c);
        }
    }
    o
}

/// A word for a POSIX shell: as it is when it is plain, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "@._+-=%,/:".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A recipient as a `when.rcpt` pattern: exact, even with glob characters.
fn rcpt_pattern(addr: &str) -> String {
    if addr.contains(['*', '?']) || (addr.starts_with('/') && addr.ends_with('/')) {
        format!("/^{}$/", regex::escape(addr))
    } else {
        addr.to_string()
    }
}

/// The reply to serve: the bounce's own when it has one; otherwise one
/// made from the status (and said so).
fn reply_for(f: &Failure) -> (String, String, bool) {
    if !f.reply.is_empty() {
        let text = printable(&f.reply.join("\n"));
        // Valid replies are checked; the others (a 4.x.x status on a 550,
        // say) are sent raw, exactly as the bounce shows them.
        return match Reply::parse(&text) {
            Ok(r) if too_long(&r) => (text, format!("the remote server's reply, sent raw because a line is over the {MAX_REPLY_LINE} octets of RFC 5321 §4.5.3.1.5"), true),
            Ok(r) if r.code >= 400 => (text, "the remote server's reply as the bounce quotes it".into(), false),
            // `check` refuses a success code the stage cannot answer.
            Ok(r) => (text, format!("the remote server's reply, sent raw because {} is not a failure code", r.code), true),
            Err(e) => (text, format!("the remote server's reply, sent raw because it is not a well-formed reply ({e})"), true),
        };
    }
    let status = f.status.clone().unwrap_or_else(|| "5.0.0".into());
    let code = if status.starts_with('4') { 450 } else { 550 };
    let words = f
        .diagnostic
        .clone()
        .filter(|d| !d.is_empty())
        .map_or_else(|| "Delivery failed".into(), |d| printable(&d));
    // A status of another class (2.0.5 taken from the text) would not
    // match the code, and `check` refuses that: such a reply is sent raw.
    let raw = !matches!(status.as_bytes().first(), Some(b'4' | b'5'));
    (
        fold(format!("{code} {status} {words}")),
        format!("made from the status: the bounce quotes no SMTP reply, so {code} was chosen for a {} status", status.get(..1).unwrap_or("?")),
        raw,
    )
}

/// Control characters in quoted words are what decoding left of something
/// else, and reply text may not hold them (RFC 5321 §4.2): each becomes a
/// space. Line ends between lines and tabs stay.
fn printable(text: &str) -> String {
    text.replace(|c: char| c.is_control() && c != '\n' && c != '\t', " ")
}

/// A reply line longer than RFC 5321 §4.5.3.1.5 allows (`check` refuses
/// it in `reply`).
fn too_long(r: &Reply) -> bool {
    r.to_wire()
        .split_inclusive(|&b| b == b'\n')
        .any(|l| l.len() > MAX_REPLY_LINE)
}

/// Folds a made-up reply at spaces so every line fits in 512 octets.
fn fold(text: String) -> String {
    let Ok(r) = Reply::parse(&text) else {
        return text;
    };
    if !too_long(&r) {
        return text;
    }
    let head = match r.enhanced {
        Some(e) => format!("{} {e} ", r.code),
        None => format!("{} ", r.code),
    };
    // "550-5.0.0 " + text + CRLF.
    let room = MAX_REPLY_LINE - head.len() - 2;
    let mut lines = vec![];
    for line in &r.lines {
        let mut rest = line.as_str();
        while rest.len() > room {
            let mut cut = room;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let at = rest[..cut].rfind(' ').filter(|&i| i > 0).unwrap_or(cut);
            lines.push(rest[..at].to_string());
            rest = rest[at..].trim_start_matches(' ');
        }
        lines.push(rest.to_string());
    }
    format!("{head}{}", lines.join("\n"))
}

/// The scenario text.
pub fn scenario(b: &Bounce, source: &str) -> String {
    let mut o = String::new();
    write_header(&mut o, b, source);
    if let Some(h) = b.failures.iter().find_map(|f| f.remote_host.as_ref()) {
        let host: String = h
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect();
        if host.contains('.') && !host.starts_with('.') {
            let _ = writeln!(o, "[server]\nhostname = {}\n", quote(&host));
        }
    }
    // Lower-cased recipients already given a rule: a set, so that the
    // check stays linear in the number of recipients.
    let mut done: HashSet<String> = HashSet::with_capacity(b.failures.len());
    for f in &b.failures {
        // A recipient reported twice: its first failure is reproduced (a
        // later one could never be reached after the first refusal).
        if !done.insert(f.recipient.to_ascii_lowercase()) {
            let _ = writeln!(
                o,
                "# {} is reported again; the first report above is the one reproduced.\n",
                shown(&f.recipient)
            );
            continue;
        }
        write_rule(&mut o, f);
    }
    o
}

/// The comment block: where the bounce came from, each failure with where
/// each value was found, and how to serve the scenario.
fn write_header(o: &mut String, b: &Bounce, source: &str) {
    let _ = writeln!(o, "# Reproduces the bounce {}", shown(source));
    let _ = writeln!(
        o,
        "# ({} report{}).",
        if b.format == "dsn" {
            "an RFC 3464 delivery status"
        } else {
            "a free-text bounce"
        },
        b.reporting_mta
            .as_ref()
            .map(|m| format!(" from {}", shown(m)))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "#");
    for f in &b.failures {
        write_provenance(o, f);
    }
    let first = b.failures.first().map_or("", |f| f.recipient.as_str());
    let _ = writeln!(o, "#");
    let _ = writeln!(o, "# Serve it and send to the recipient:");
    let _ = writeln!(o, "#   mailfault serve --scenario THIS-FILE.toml");
    let _ = writeln!(
        o,
        "#   swaks --server 127.0.0.1:2525 --to {}",
        shown(&shell_word(first))
    );
    let _ = writeln!(o);
}

fn write_provenance(o: &mut String, f: &Failure) {
    let (reply, how, _) = reply_for(f);
    let _ = writeln!(o, "# {}  (from {})", shown(&f.recipient), f.recipient_from);
    if let Some(s) = &f.status {
        let from = f.status_from.as_deref().unwrap_or("the bounce");
        let _ = writeln!(o, "#   status      {}  (from {from})", shown(s));
    }
    if !f.reason.is_empty() {
        let (advice, _) = super::reason::advice(f.hard_bounce);
        let _ = writeln!(o, "#   reason      {}  ({advice})", shown(&f.reason));
    }
    let mut lines = reply.split('\n');
    let _ = writeln!(o, "#   reply       {}", shown(lines.next().unwrap_or("")));
    for l in lines {
        let _ = writeln!(o, "#               {}", shown(l));
    }
    let found = f
        .reply_from
        .as_ref()
        .map(|r| format!("; found in {r}"))
        .unwrap_or_default();
    let _ = writeln!(o, "#               ({}{found})", shown(&how));
    match (&f.stage, &f.stage_from) {
        (Some(s), Some(from)) => {
            let _ = writeln!(o, "#   stage       {s}  (from {})", shown(from));
        }
        _ => {
            let _ = writeln!(o, "#   stage       rcpt  (the bounce does not say; RCPT is where most recipients are refused)");
        }
    }
    if let Some(h) = &f.remote_host {
        let _ = writeln!(o, "#   remote host {}", shown(h));
    }
}

/// One failure's rule: its stage, its recipient, its reply.
fn write_rule(o: &mut String, f: &Failure) {
    let (reply, _, raw) = reply_for(f);
    let stage = f.stage.as_deref().unwrap_or("rcpt");
    let _ = writeln!(o, "[[rule]]");
    let name = format!("bounce for {}", f.recipient);
    let _ = writeln!(o, "name = {}", quote(&name));
    let _ = writeln!(o, "on = {}", quote(stage));
    if !matches!(stage, "connect" | "ehlo" | "mail") {
        let pattern = rcpt_pattern(&f.recipient);
        let _ = writeln!(o, "when = {{ rcpt = {} }}", quote(&pattern));
    }
    if raw {
        // Exactly the lines the bounce quotes; only a last line marked
        // as a continuation is turned into a last line.
        let n = reply.lines().count();
        let wire: String = reply
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let mut l = l.to_string();
                if i + 1 == n && l.as_bytes().get(3) == Some(&b'-') {
                    l.replace_range(3..4, " ");
                }
                format!("{l}\r\n")
            })
            .collect();
        let _ = writeln!(o, "raw = {}", quote(&wire));
        if reply.starts_with("421") {
            let _ = writeln!(o, "close = true");
        }
    } else {
        let _ = writeln!(o, "reply = {}", quote(&reply));
    }
    let _ = writeln!(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_made_up_replies_are_folded_to_512_octets() {
        let words = "word ".repeat(300);
        let folded = fold(format!("550 5.0.0 {words}"));
        let r = Reply::parse(&folded).unwrap();
        assert!(!too_long(&r));
        assert!(r.lines.len() >= 3);
        assert_eq!(r.lines.join(" ").trim_end(), words.trim_end());
        let short = "550 5.0.0 Delivery failed".to_string();
        assert_eq!(fold(short.clone()), short);
    }
}
