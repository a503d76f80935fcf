//! What `from-bounce` reads, detected from the bytes: a bounce message, an
//! mbox of them, a JSON notification from a sending service, or an MTA log.
//! Many sources give one [`Bounce`] (one failure per distinct recipient and
//! reply), and a summary: hard and soft counts by reason, by receiving
//! provider and by recipient domain.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use serde::Serialize;

use super::dsn::{self, Bounce, NotBounce};
use super::{esp, mtalog};

/// What a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Mbox,
    Json,
    Log,
}

/// The most read from one input (a file or stdin): 64 MiB. A bounce, a day's
/// notifications or a log excerpt fits; more is refused with a message
/// rather than read into memory without bound.
pub const MAX_INPUT: u64 = 64 * 1024 * 1024;

/// Reads one input, at most [`MAX_INPUT`] bytes; a larger one is
/// [`NotBounce::TooBig`] (only one byte past the limit is read to know).
pub fn read_capped(r: impl std::io::Read) -> std::io::Result<Result<Vec<u8>, NotBounce>> {
    let mut v = vec![];
    std::io::Read::read_to_end(&mut r.take(MAX_INPUT + 1), &mut v)?;
    Ok(if v.len() as u64 > MAX_INPUT {
        Err(NotBounce::TooBig)
    } else {
        Ok(v)
    })
}

/// Guesses the kind from the first bytes.
pub fn detect(bytes: &[u8]) -> Kind {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(head);
    let start = text.trim_start();
    if start.starts_with('{') || start.starts_with('[') {
        return Kind::Json;
    }
    // RFC 4155: each message starts with a "From " line.
    if start.starts_with("From ") {
        return Kind::Mbox;
    }
    let first = start.lines().next().unwrap_or("");
    let header = first.split_once(':').is_some_and(|(n, _)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !header && mtalog::looks_like_log(&text) {
        return Kind::Log;
    }
    Kind::Message
}

/// The messages of an mbox (RFC 4155): split at lines starting "From ";
/// `>From ` quoting in bodies is left as it is (it does not matter here).
pub fn mbox_messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![];
    let mut at_line_start = true;
    for (i, w) in bytes.windows(5).enumerate() {
        if at_line_start && w == b"From " {
            starts.push(i);
        }
        at_line_start = w[0] == b'\n';
    }
    let mut out = vec![];
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(bytes.len());
        // Skip the "From " separator line itself.
        let body = &bytes[s..end];
        let skip = body
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| p + 1);
        out.push(&body[skip..]);
    }
    out
}

/// One source's result: a name (file, or file#n for an mbox message).
pub struct Read {
    pub name: String,
    pub result: Result<Bounce, NotBounce>,
}

/// Reads one source of any kind.
pub fn read(name: &str, bytes: &[u8]) -> Vec<Read> {
    let one = |result| {
        vec![Read {
            name: name.to_string(),
            result,
        }]
    };
    match detect(bytes) {
        Kind::Json => one(esp::parse(bytes)),
        Kind::Log => one(mtalog::parse(&String::from_utf8_lossy(bytes))),
        Kind::Message => one(dsn::parse(bytes)),
        Kind::Mbox => mbox_messages(bytes)
            .into_iter()
            .enumerate()
            .map(|(i, m)| Read {
                name: format!("{name}#{}", i + 1),
                result: dsn::parse(m),
            })
            .collect(),
    }
}

/// Joins the bounces read into one: failures in order, each distinct
/// recipient and reply once.
pub fn merge(mut bounces: Vec<Bounce>) -> Option<Bounce> {
    if bounces.len() <= 1 {
        let mut b = bounces.pop()?;
        let mut seen = HashSet::new();
        b.failures.retain(|f| {
            seen.insert((
                f.recipient.to_ascii_lowercase(),
                f.reply.clone(),
                f.diagnostic.clone(),
            ))
        });
        return Some(b);
    }
    let mut seen = HashSet::new();
    let mut out = Bounce {
        format: "many".into(),
        ..Bounce::default()
    };
    let mut formats = vec![];
    for b in bounces {
        if !formats.contains(&b.format) {
            formats.push(b.format.clone());
        }
        for f in b.failures {
            let key = (
                f.recipient.to_ascii_lowercase(),
                f.reply.clone(),
                f.diagnostic.clone(),
            );
            if seen.insert(key) {
                out.failures.push(f);
            }
        }
    }
    out.format = formats.join("+");
    Some(out)
}

/// Hard and soft counts under one heading.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub hard: usize,
    pub soft: usize,
}

/// The list-hygiene view: counts by reason, provider and domain, and the
/// addresses to remove (hard bounces).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub total: Counts,
    pub by_reason: BTreeMap<String, Counts>,
    pub by_provider: BTreeMap<String, Counts>,
    pub by_domain: BTreeMap<String, Counts>,
    pub remove: Vec<String>,
}

/// The receiving provider: the last two labels of the remote host (three
/// under a two-letter country zone such as co.jp), else the recipient's
/// domain.
pub fn provider(host: Option<&str>, recipient: &str) -> String {
    let domain = recipient.rsplit_once('@').map_or("", |x| x.1);
    let h = host
        .filter(|h| h.contains('.'))
        .unwrap_or(domain)
        .to_ascii_lowercase();
    let labels: Vec<&str> = h.trim_end_matches('.').split('.').collect();
    let keep = if labels.len() >= 3
        && labels[labels.len() - 2].len() <= 3
        && labels[labels.len() - 1].len() == 2
    {
        3
    } else {
        2
    };
    let n = labels.len().saturating_sub(keep);
    let p = labels[n..].join(".");
    if p.is_empty() {
        "unknown".into()
    } else {
        p
    }
}

pub fn summarize(b: &Bounce) -> Summary {
    let mut s = Summary::default();
    let mut removed = HashSet::new();
    for f in &b.failures {
        let domain = f
            .recipient
            .rsplit_once('@')
            .map_or("", |x| x.1)
            .to_ascii_lowercase();
        let prov = provider(f.remote_host.as_deref(), &f.recipient);
        for c in [
            &mut s.total,
            s.by_reason.entry(f.reason.clone()).or_default(),
            s.by_provider.entry(prov).or_default(),
            s.by_domain.entry(domain).or_default(),
        ] {
            if f.hard_bounce {
                c.hard += 1;
            } else {
                c.soft += 1;
            }
        }
        if f.hard_bounce && removed.insert(f.recipient.to_ascii_lowercase()) {
            s.remove.push(f.recipient.clone());
        }
    }
    s
}

/// The summary as text tables.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} failures: {} hard (stop sending to these addresses), {} soft (retry later)",
        s.total.hard + s.total.soft,
        s.total.hard,
        s.total.soft
    );
    for (title, map) in [
        ("reason", &s.by_reason),
        ("provider", &s.by_provider),
        ("domain", &s.by_domain),
    ] {
        let width = map
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0)
            .max(title.len());
        let _ = writeln!(o, "\n{title:<width$}  {:>5}  {:>5}", "hard", "soft");
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort_by(|a, b| {
            (b.1.hard + b.1.soft)
                .cmp(&(a.1.hard + a.1.soft))
                .then(a.0.cmp(b.0))
        });
        for (k, c) in rows {
            let _ = writeln!(
                o,
                "{:<width$}  {:>5}  {:>5}",
                super::reproduce::shown(k),
                c.hard,
                c.soft
            );
        }
    }
    if !s.remove.is_empty() {
        let _ = writeln!(o, "\naddresses to remove (hard bounces):");
        for a in &s.remove {
            let _ = writeln!(o, "  {}", super::reproduce::shown(a));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(detect(b"  {\"a\":1}"), Kind::Json);
        assert_eq!(
            detect(b"From MAILER-DAEMON Mon Jan  5 10:00:00 2026\nFrom: x\n"),
            Kind::Mbox
        );
        assert_eq!(
            detect(b"From: a@example.com\nSubject: x\n\nbody"),
            Kind::Message
        );
        let log = b"Jan  5 10:00:01 mx postfix/smtp[42]: 4F3A1: to=<a@example.com>, relay=none, dsn=4.4.1, status=deferred (connect to example.com: Connection timed out)\n";
        assert_eq!(detect(log), Kind::Log);
    }

    #[test]
    fn an_mbox_splits_at_from_lines() {
        let m = b"From a Mon\nSubject: 1\n\nx\nFrom b Tue\nSubject: 2\n\ny\n";
        let parts = mbox_messages(m);
        assert_eq!(parts.len(), 2);
        assert!(parts[1].starts_with(b"Subject: 2"));
    }

    #[test]
    fn providers_are_registrable_domains() {
        assert_eq!(
            provider(Some("gmail-smtp-in.l.google.com"), "a@gmail.com"),
            "google.com"
        );
        assert_eq!(provider(None, "a@mail.example.co.jp"), "example.co.jp");
        assert_eq!(provider(None, "nobody"), "unknown");
    }
}
