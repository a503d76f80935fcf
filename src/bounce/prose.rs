//! Failures in prose: the free-text bounces of Postfix, Exim, qmail,
//! Exchange, Gmail and others, read line by line (a recipient, then its
//! reason), and the last resorts (a reply anywhere in the text).

use super::rfc3464::{clean_addr, is_status};
use crate::proto::reply::{find_code, unfold, ReadReply};

/// What the human-readable part says about one recipient.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hit {
    pub(crate) recipient: Option<String>,
    pub(crate) reply: Option<Vec<String>>,
    pub(crate) reply_from: &'static str,
    pub(crate) stage: Option<(&'static str, String)>,
    pub(crate) host: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) diagnostic: Option<String>,
}

/// The stage a phrase names, with the phrase.
pub(super) fn stage_of(text: &str) -> Option<(&'static str, String)> {
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

/// The stage a session transcript in a recipient's block names: the last
/// `>>> COMMAND` line before the reply (`>>> RCPT TO:<a@b>` then `<<< 550
/// ...`), as Sendmail, au/ezweb and others quote the session.
fn last_command(block: &[&str]) -> Option<(&'static str, String)> {
    let cmd = block.iter().rev().find_map(|l| l.strip_prefix(">>> "))?;
    let c = cmd.to_ascii_uppercase();
    let stage = if c.starts_with("RCPT") {
        "rcpt"
    } else if c.starts_with("MAIL") {
        "mail"
    } else if c == "DATA" {
        "data"
    } else if c == "." {
        "message"
    } else {
        return None;
    };
    Some((stage, format!(">>> {cmd}")))
}

/// A reply the reporter wrapped so that the next line starts with the
/// recipient again: Postfix folds "said: 550" and "<a@b>: User unknown"
/// onto two lines. That line continues the block, it starts no new one.
fn wrapped_reply(prev: Option<&str>, line: &str, addr: &str) -> bool {
    let Some(prev) = prev else { return false };
    let ends_with_code = prev
        .rsplit(' ')
        .next()
        .is_some_and(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()));
    (ends_with_code || prev.to_ascii_lowercase().ends_with(" said:"))
        && address_line(line).is_some_and(|a| a.eq_ignore_ascii_case(addr))
}

pub(super) fn find_status_hint(text: &str) -> Option<String> {
    // qmail: "(#5.5.0)"
    let i = text.find("(#")?;
    let s: String = text[i + 2..].chars().take_while(|c| *c != ')').collect();
    is_status(&s).then_some(s)
}

/// A reply in free text: after "said:", "returned '", "was:" and the like,
/// or a line that starts with a code and a status.
pub(super) fn reply_in(text: &str) -> Option<(Vec<String>, &'static str)> {
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
        (
            "with the following error message: ",
            "the text part (\"with the following error message\")",
        ),
    ];
    let lower = text.to_ascii_lowercase();
    for (lead, from) in LEADS {
        if let Some(i) = lower.find(lead) {
            let after = &text[i + lead.len()..];
            let after = after.split(" (in reply to").next().unwrap_or(after);
            // A reply in brackets ("error message: [554 5.4.6 ...]").
            let after = match after.strip_prefix('[') {
                Some(a) => a.split(']').next().unwrap_or(a),
                None => after,
            };
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
pub(super) fn multi(body: &str) -> Vec<String> {
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
pub(super) fn address_line(line: &str) -> Option<String> {
    let mut t = line.trim();
    for lead in [
        "recipient address:",
        "recipient:",
        "could not be delivered to:",
        "unknown user:",
        "user unknown:",
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
    // "Invalid final delivery userid: a@b": a reason of several words,
    // then the address alone (one word before the colon is a header line,
    // "To: a@b", not a reason).
    if let Some((lead, rest)) = t.split_once(": ") {
        let rest = rest.trim();
        if lead.split_whitespace().count() >= 2
            && lead.len() <= 80
            && lead.starts_with(|c: char| c.is_alphabetic())
            && !rest.contains(char::is_whitespace)
            && rest.contains('@')
        {
            t = rest;
        }
    }
    // A bulleted list of recipients ("* a@b", "- a@b", "• a@b").
    if let Some(rest) = t
        .strip_prefix("* ")
        .or_else(|| t.strip_prefix("- "))
        .or_else(|| t.strip_prefix("• "))
    {
        t = rest.trim_start();
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
pub(super) fn status_word(text: &str) -> Option<String> {
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
pub(super) fn text_hits(text: &str) -> Vec<Hit> {
    let v5 = super::lhost::sendmail::v5_session(text);
    if !v5.is_empty() {
        return v5;
    }
    let mut hits = vec![];
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let Some(addr) = address_line(lines[i]) else {
            i += 1;
            continue;
        };
        let before = i.checked_sub(1).map(|k| lines[k].trim()).filter(|l| {
            !l.is_empty() && !l.starts_with('-') && !l.ends_with(':') && address_line(l).is_none()
        });
        let at = i;
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
        while j < lines.len()
            && !lines[j].trim().is_empty()
            && (address_line(lines[j]).is_none()
                || wrapped_reply(block.last().copied(), lines[j], &addr))
        {
            block.push(lines[j].trim());
            j += 1;
        }
        // A lead that ends in a colon ("because:") has its reason in the
        // next paragraph (Lotus Notes / Domino).
        if block.len() > 1 && block.last().is_some_and(|l| l.ends_with(':')) {
            j = paragraph_after(&lines, j, &mut block);
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
            stage: stage_of(&joined).or_else(|| last_command(&block)),
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
            .filter(|d| !d.is_empty())
            // "Unknown user: a@b": the words before the address are the reason.
            .or_else(|| Some(joined.trim().to_string()).filter(|j| j.len() > addr.len() + 4))
            // An address alone under its reason (Lotus Notes).
            .or_else(|| before.map(str::to_string))
            // ... or under a paragraph of reasons and a lead (au/ezweb).
            .or_else(|| reason_above(&lines, at));
        }
        hits.push(h);
    }
    // Sendmail transcripts: ">>> COMMAND" then "<<< reply".
    if hits.iter().all(|h| h.reply.is_none()) {
        let found = super::lhost::sendmail::transcript(text);
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
            let recipient = r.first().and_then(|l| sole_address_around(&joined, l));
            hits.push(Hit {
                recipient,
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

/// The paragraph after blank lines from `j`, appended to `block`; where
/// reading stopped.
fn paragraph_after<'a>(lines: &[&'a str], mut j: usize, block: &mut Vec<&'a str>) -> usize {
    let mut k = j;
    while lines.get(k).is_some_and(|l| l.trim().is_empty()) {
        k += 1;
    }
    if lines.get(k).is_none_or(|l| address_line(l).is_some()) {
        return j;
    }
    j = k;
    while j < lines.len() && !lines[j].trim().is_empty() && address_line(lines[j]).is_none() {
        block.push(lines[j].trim());
        j += 1;
    }
    j
}

/// The reason written above an address that stands alone: the nearest
/// lines above it (blank lines and leads ending in a colon skipped), at
/// most a few, stopping at another address or a rule line. Japanese
/// carriers (au/ezweb) write the reason, then the list of recipients.
pub(super) fn reason_above(lines: &[&str], at: usize) -> Option<String> {
    const MOST: usize = 4;
    let mut found: Vec<&str> = vec![];
    for l in lines[..at].iter().rev().map(|l| l.trim()) {
        if address_line(l).is_some() || l.starts_with("--") || found.len() == MOST {
            break;
        }
        if l.is_empty() || l.ends_with(':') || !l.is_ascii() {
            continue;
        }
        found.push(l);
    }
    found.reverse();
    Some(found.join(" ")).filter(|t| !t.is_empty())
}

/// A line holding "CODE X.Y.Z" (a reply with an enhanced status).
pub(super) fn coded_line(l: &str) -> bool {
    let Some(r) = ReadReply::parse(l) else {
        return false;
    };
    r.code >= 400
        && r.status
            .as_deref()
            .is_some_and(|s| is_status(s) && s.starts_with(&(r.code / 100).to_string()))
}

pub(crate) fn sendmail_hit(cmd: &str, reply: Vec<String>, host: Option<String>) -> Hit {
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
/// The one address the paragraph quoting a reply names ("The following
/// recipients returned permanent errors: a@b. Reason: ... [550 ...]"):
/// the recipient the reply is about. None when it names none or several.
fn sole_address_around(text: &str, reply_line: &str) -> Option<String> {
    let probe = reply_line.get(..reply_line.len().min(24))?;
    let para = text.split("\n\n").find(|p| p.contains(probe))?;
    let mut found: Option<String> = None;
    for w in para.split_whitespace() {
        let a = clean_addr(w.trim_end_matches(['.', ',', ';', ':']));
        if !a.contains('@') || a.starts_with('@') || a.ends_with('@') || a.contains(['[', '(']) {
            continue;
        }
        match &found {
            Some(f) if !f.eq_ignore_ascii_case(&a) => return None,
            _ => found = Some(a),
        }
    }
    found
}

pub(super) fn first_address(text: &str) -> Option<String> {
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

pub(super) fn host_in(text: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_reply_and_a_quoted_session_stay_in_their_block() {
        // Postfix folds the reply so that its next line starts with the
        // recipient again.
        let t = "<a@example.jp>: host\n    mx.example.jp[192.0.2.22] said: 550\n    <a@example.jp>: User unknown\n";
        let h = text_hits(t);
        assert_eq!(h.len(), 1);
        assert_eq!(
            h[0].reply.as_deref(),
            Some(&["550 <a@example.jp>: User unknown".to_string()][..])
        );
        // A transcript in the block names the stage.
        let t = "Recipient: <a@example.jp>\n>>> RCPT TO:<a@example.jp>\n<<< 550 <a@example.jp>: User unknown\n";
        let h = text_hits(t);
        assert_eq!(h[0].stage.as_ref().map(|s| s.0), Some("rcpt"));
    }

    #[test]
    fn a_bracketed_reply_after_its_lead_names_its_recipient() {
        let t =
            "1 error(s):\n\nThe following recipients returned permanent errors: a@example.org. \
                 Reason: SMTP Server <192.0.2.1> refused to accept your message (DATA), with the \
                 following error message: [554 5.4.6 Hop count exceeded - possible mail loop]\n\n\
                 From: b@example.jp\n";
        let h = text_hits(t);
        assert_eq!(h[0].recipient.as_deref(), Some("a@example.org"));
        assert_eq!(
            h[0].reply.as_deref(),
            Some(&["554 5.4.6 Hop count exceeded - possible mail loop".to_string()][..])
        );
    }

    #[test]
    fn a_reason_after_a_lead_or_above_a_lone_address() {
        let notes = "was not delivered to:\n\n  a@example.jp\n\nbecause:\n\n  User a not listed in Domino Directory\n";
        let h = text_hits(notes);
        assert_eq!(h[0].recipient.as_deref(), Some("a@example.jp"));
        assert!(h[0]
            .diagnostic
            .as_deref()
            .unwrap()
            .contains("not listed in Domino"));
        let au = "The user(s) account is disabled.\n\n<b@ezweb.ne.jp>\n";
        let h = text_hits(au);
        assert_eq!(
            h[0].diagnostic.as_deref(),
            Some("The user(s) account is disabled.")
        );
    }
}
