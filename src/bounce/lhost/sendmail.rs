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

fn hit(cmd: &str, reply: Vec<String>, host: Option<String>) -> Hit {
    crate::bounce::prose::sendmail_hit(cmd, reply, host)
}

#[cfg(test)]
mod tests {
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
