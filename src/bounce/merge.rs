//! The merge of what each source says about a recipient: the report's
//! fields first, the prose's reply and stage where the report has none,
//! then what can be derived (the code and status from the reply), and
//! noise dropped.

use std::collections::HashMap;

use mail_parser::PartType;

use super::dsn::{Bounce, Failure};
use super::mime::{is_original_marker, mostly_text};
use super::prose::{first_address, status_word, Hit};
use super::rfc3464::{clean_addr, is_status};
use crate::proto::reply::ReadReply;

/// A failure whose recipient is an address and whose reply and reason read
/// as text. A report's `Final-Recipient` field is taken as the reporter
/// wrote it (a corpus may have blanked its local part); an address found in
/// prose must look like one, and a reply found there must be a failure.
pub(super) fn plausible(f: &Failure) -> bool {
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
pub(super) fn repair_address(f: &mut Failure) {
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
pub(super) fn address_like(a: &str) -> bool {
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
pub(super) fn plausible_reply(lines: &[String], codes: std::ops::RangeInclusive<u16>) -> bool {
    lines.len() <= 100
        && lines.iter().all(|l| l.len() <= 1024 && mostly_text(l))
        && lines
            .first()
            .and_then(|l| ReadReply::parse(l))
            .is_some_and(|r| codes.contains(&r.code))
}

pub(super) fn merge_text(
    bounce: &mut Bounce,
    hits: Vec<Hit>,
    msg: &mail_parser::Message<'_>,
    human: &str,
) {
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
pub(super) fn original_to_in_text(msg: &mail_parser::Message<'_>) -> Vec<String> {
    // The text parts in order (a non-MIME message is one part).
    let text = msg
        .parts
        .iter()
        .filter(|p| matches!(p.body, PartType::Text(_)))
        .map(|p| String::from_utf8_lossy(p.contents()))
        .collect::<Vec<_>>()
        .join("\n");
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

pub(super) fn original_recipients(msg: &mail_parser::Message<'_>) -> Vec<String> {
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
pub(super) fn finish(f: &mut Failure) {
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
