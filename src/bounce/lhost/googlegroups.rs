//! Google Groups (and Google Workspace groups): Gmail's delivery notice
//! for a post to a group that does not exist or does not let the sender
//! post, in the sender's language, with the group in
//! `X-Failed-Recipients`. It quotes no reply: the group refused the sender.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "googlegroups",
    name: "Google Groups",
    recognise,
    default_reason: Some("rejected"),
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    let failed = s
        .head
        .lines()
        .find(|l| l.starts_with("x-failed-recipients:"));
    failed.is_some()
        && (s.body.contains("groups.google.com") || s.body.contains("google groups"))
        && super::header_has(s.head, "from", "mailer-daemon@googlemail.com")
}
