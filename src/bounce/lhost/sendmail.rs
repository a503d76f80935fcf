//! Sendmail: "----- Transcript of session follows -----", the subject
//! "Returned mail: ...", and the session transcript itself (`>>> RCPT
//! To:<...>` then `<<< 550 ...`), which only Sendmail writes.

use super::{MailSystem, Seen};
use crate::bounce::prose::Hit;
use crate::proto::reply::ReadReply;

pub const SYSTEM: MailSystem = MailSystem {
    id: "sendmail",
    name: "Sendmail",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body.contains("----- transcript of session follows -----")
        || s.body.contains("the original message was received at")
        || super::header_has(s.head, "subject", "returned mail:")
}

/// The failures in a session transcript: each `>>> COMMAND` followed by
/// its `<<< reply` lines.
pub(in crate::bounce) fn transcript(text: &str) -> Vec<Hit> {
    let mut last_cmd = String::new();
    let mut reply: Vec<String> = vec![];
    let mut host = None;
    let mut found: Vec<Hit> = vec![];
    for line in text.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix("... while talking to ") {
            host = Some(h.trim_end_matches([':', '.']).to_string());
        }
        if let Some(c) = t.strip_prefix(">>> ") {
            if !reply.is_empty() {
                found.push(hit(&last_cmd, std::mem::take(&mut reply), host.clone()));
            }
            last_cmd = c.to_string();
        } else if let Some(r) = t.strip_prefix("<<< ") {
            // A reply ends at its final line ("550 ..."): what follows
            // answers another (pipelined) command.
            if reply
                .last()
                .is_some_and(|l| l.as_bytes().get(3) == Some(&b' '))
            {
                found.push(hit(&last_cmd, std::mem::take(&mut reply), host.clone()));
            }
            if ReadReply::parse(r).is_some_and(|x| x.code >= 400) {
                reply.push(r.to_string());
            } else if !reply.is_empty() {
                found.push(hit(&last_cmd, std::mem::take(&mut reply), host.clone()));
            }
        }
    }
    if !reply.is_empty() {
        found.push(hit(&last_cmd, reply, host));
    }
    found
}

/// Sendmail V5's session report: sessions opened by "While talking to
/// HOST:", the remote replies quoted after `<<<`, and one summary line
/// per recipient (`550 <a@b>... User unknown`). A recipient's summary takes
/// the reply its session quoted last, at the command that drew it;
/// without one, the summary's own words ("550 Host unknown") are the
/// reply. Several recipients, several sessions, one report.
pub(in crate::bounce) fn v5_session(text: &str) -> Vec<Hit> {
    if !text.lines().any(|l| l.starts_with("While talking to ")) {
        return vec![];
    }
    let (mut host, mut cmd) = (None, String::new());
    let mut pending: Option<Vec<String>> = None;
    let mut found = vec![];
    for line in text.lines() {
        let t = line.trim();
        if let Some(h) = line.strip_prefix("While talking to ") {
            host = Some(h.trim_end_matches([':', '.']).to_string());
            pending = None;
        } else if let Some(c) = t.strip_prefix(">>> ") {
            cmd = c.to_string();
            pending = None;
        } else if let Some(r) = t.strip_prefix("<<< ") {
            if ReadReply::parse(r).is_some_and(|x| x.code >= 400) {
                pending.get_or_insert_with(Vec::new).push(r.to_string());
            }
        } else if let Some((addr, rest)) = summary_line(t) {
            let mut h = match pending.take() {
                Some(reply) => hit(&cmd, reply, host.clone()),
                None => Hit {
                    reply: Some(vec![rest.to_string()]),
                    reply_from: "the text part (Sendmail's summary line for the recipient)",
                    ..Hit::default()
                },
            };
            h.recipient = Some(addr);
            found.push(h);
        }
    }
    // Only a report with summaries of its own; otherwise the other readers.
    found
}

/// "550 <a@b>... User unknown": the recipient, and the words after "... "
/// when they start with a reply code ("550 Host unknown"), else the line.
fn summary_line(t: &str) -> Option<(String, &str)> {
    let code = t
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))?;
    let rest = t.get(3..)?.strip_prefix(" <")?;
    let (addr, after) = rest.split_once(">... ")?;
    if !addr.contains('@') || !code.starts_with(['4', '5']) {
        return None;
    }
    let after = after.trim();
    let reply = if ReadReply::parse(after).is_some_and(|r| after.starts_with(&r.code.to_string())) {
        after
    } else {
        t
    };
    Some((addr.to_string(), reply))
}

fn hit(cmd: &str, reply: Vec<String>, host: Option<String>) -> Hit {
    crate::bounce::prose::sendmail_hit(cmd, reply, host)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_v5_report_gives_each_recipient_its_session_reply_or_its_summary() {
        let t = "While talking to mx.example.edu:\n>>> MAIL From:<s@example.jp>\n\
                 <<< 501 <s@example.jp>... no access\n554 <a@example.edu>... Remote protocol error\n\
                 550 <b@example.org>... 550 Host unknown (Authoritative answer from name server)\n\
                 While talking to mx.example.com:\n>>> RCPT To:<c@example.com>\n\
                 <<< 550 <c@example.com>... User unknown\n550 <c@example.com>... User unknown\n";
        let h = super::v5_session(t);
        let got: Vec<(&str, &str, Option<&str>)> = h
            .iter()
            .map(|h| {
                (
                    h.recipient.as_deref().unwrap(),
                    h.reply.as_ref().unwrap()[0].as_str(),
                    h.stage.as_ref().map(|s| s.0),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a@example.edu",
                    "501 <s@example.jp>... no access",
                    Some("mail")
                ),
                (
                    "b@example.org",
                    "550 Host unknown (Authoritative answer from name server)",
                    None
                ),
                (
                    "c@example.com",
                    "550 <c@example.com>... User unknown",
                    Some("rcpt")
                ),
            ]
        );
        // A V8 transcript ("... while talking to") is left to the others.
        assert!(super::v5_session("... while talking to mx:\n>>> DATA\n").is_empty());
    }

    #[test]
    fn a_transcript_gives_the_command_and_its_reply() {
        let t = "... while talking to mx.example.com.:\n>>> RCPT To:<a@example.com>\n<<< 550 5.1.1 <a@example.com>... User unknown\n";
        let h = super::transcript(t);
        assert_eq!(h.len(), 1);
        assert_eq!(
            h[0].reply.as_deref(),
            Some(&["550 5.1.1 <a@example.com>... User unknown".to_string()][..])
        );
        assert_eq!(h[0].stage.as_ref().map(|s| s.0), Some("rcpt"));
        assert_eq!(h[0].host.as_deref(), Some("mx.example.com"));
    }
}
