//! Turns a bounce into a scenario that reproduces each failure at its stage
//! for its recipient, with a comment block saying where each value came
//! from.

use std::fmt::Write;

use super::dsn::{Bounce, Failure};
use crate::proto::Reply;

/// TOML string literal (basic string, escaped).
fn quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A recipient as a `when.rcpt` pattern: exact, even with glob characters.
fn rcpt_pattern(addr: &str) -> String {
    if addr.contains(['*', '?']) {
        format!("/^{}$/", regex::escape(addr))
    } else {
        addr.to_string()
    }
}

/// The reply to serve: the bounce's own when it has one; otherwise one
/// made from the status (and said so).
fn reply_for(f: &Failure) -> (String, String, bool) {
    if !f.reply.is_empty() {
        let text = f.reply.join("\n");
        // Valid replies are checked; the others (a 4.x.x status on a 550,
        // say) are sent raw, exactly as the bounce shows them.
        return match Reply::parse(&text) {
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
        .unwrap_or_else(|| "Delivery failed".into());
    // A status of another class (2.0.5 taken from the text) would not
    // match the code, and `check` refuses that: such a reply is sent raw.
    let raw = !matches!(status.as_bytes().first(), Some(b'4' | b'5'));
    (
        format!("{code} {status} {words}"),
        format!("made from the status: the bounce quotes no SMTP reply, so {code} was chosen for a {} status", status.get(..1).unwrap_or("?")),
        raw,
    )
}

/// The scenario text.
pub fn scenario(b: &Bounce, source: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Reproduces the bounce {}", one_line(source));
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
            .map(|m| format!(" from {m}"))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "#");
    for f in &b.failures {
        let (reply, how, _) = reply_for(f);
        let _ = writeln!(
            o,
            "# {}  (from {})",
            one_line(&f.recipient),
            f.recipient_from
        );
        if let Some(s) = &f.status {
            let _ = writeln!(
                o,
                "#   status      {s}  (from {})",
                f.status_from.as_deref().unwrap_or("the bounce")
            );
        }
        let _ = writeln!(o, "#   reply       {}", reply.lines().next().unwrap_or(""));
        for l in reply.lines().skip(1) {
            let _ = writeln!(o, "#               {l}");
        }
        let _ = writeln!(
            o,
            "#               ({how}{})",
            f.reply_from
                .as_ref()
                .map(|r| format!("; found in {r}"))
                .unwrap_or_default()
        );
        match (&f.stage, &f.stage_from) {
            (Some(s), Some(from)) => {
                let _ = writeln!(o, "#   stage       {s}  (from {from})");
            }
            _ => {
                let _ = writeln!(o, "#   stage       rcpt  (the bounce does not say; RCPT is where most recipients are refused)");
            }
        }
        if let Some(h) = &f.remote_host {
            let _ = writeln!(o, "#   remote host {}", one_line(h));
        }
    }
    let first = b
        .failures
        .first()
        .map(|f| one_line(&f.recipient))
        .unwrap_or_default();
    let _ = writeln!(o, "#");
    let _ = writeln!(o, "# Serve it and send to the recipient:");
    let _ = writeln!(o, "#   mailfault serve --scenario THIS-FILE.toml");
    let _ = writeln!(o, "#   swaks --server 127.0.0.1:2525 --to {first}");
    let _ = writeln!(o);
    if let Some(h) = b.failures.iter().find_map(|f| f.remote_host.as_ref()) {
        let host: String = h
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect();
        if host.contains('.') && !host.starts_with('.') {
            let _ = writeln!(o, "[server]\nhostname = {}\n", quote(&host));
        }
    }
    let mut done: Vec<String> = vec![];
    for f in &b.failures {
        // A recipient reported twice: its first failure is reproduced (a
        // later one could never be reached after the first refusal).
        if done.iter().any(|d| d.eq_ignore_ascii_case(&f.recipient)) {
            let _ = writeln!(
                o,
                "# {} is reported again; the first report above is the one reproduced.\n",
                one_line(&f.recipient)
            );
            continue;
        }
        done.push(f.recipient.clone());
        let (reply, _, raw) = reply_for(f);
        let stage = f.stage.clone().unwrap_or_else(|| "rcpt".into());
        let _ = writeln!(o, "[[rule]]");
        let _ = writeln!(
            o,
            "name = {}",
            quote(&format!("bounce for {}", f.recipient))
        );
        let _ = writeln!(o, "on = {}", quote(&stage));
        if stage != "connect" && stage != "ehlo" && stage != "mail" {
            let _ = writeln!(
                o,
                "when = {{ rcpt = {} }}",
                quote(&rcpt_pattern(&f.recipient))
            );
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
    printable_comments(&o)
}

/// A value quoted in a comment, on one line: a line end in it (a recipient
/// read from free text can hold one) would end the comment.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], "\u{FFFD}")
}

/// TOML 1.0 allows no control character but tab in a comment, and a
/// bounce's text may hold one (a NUL in a diagnostic): `check` would refuse
/// the file. In comments they are shown as U+FFFD; values are escaped by
/// [`quote`].
fn printable_comments(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(body) if body.starts_with('#') => {
                let mut l: String = body
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\t' {
                            '\u{FFFD}'
                        } else {
                            c
                        }
                    })
                    .collect();
                l.push('\n');
                l
            }
            _ => line.to_string(),
        })
        .collect()
}
