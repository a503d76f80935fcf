//! RFC 3464 delivery status fields: per-recipient paragraphs of
//! `Final-Recipient`, `Action`, `Status`, `Remote-MTA`, `Diagnostic-Code`.

use super::dsn::{Bounce, Failure};
use crate::proto::reply::{unfold, ReadReply};

/// DSN fields: paragraphs of `Name: value` with folded lines.
pub(super) fn read_dsn(text: &str, bounce: &mut Bounce) {
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
pub(super) fn nested_reply(d: &str) -> Option<String> {
    let i = d.find('<')?;
    if i == 0 {
        return None;
    }
    let inner = d[i + 1..].trim_end().strip_suffix('>')?;
    let r = ReadReply::parse(inner)?;
    (inner.starts_with(&r.code.to_string()) && r.status.is_some()).then(|| inner.to_string())
}

pub(super) fn is_status(s: &str) -> bool {
    crate::proto::EnhancedCode::parse(s).is_some()
}

pub(super) fn clean_addr(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches(['>', '.', ',', ':', ';'])
        .trim()
        .to_string()
}
