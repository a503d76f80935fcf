//! Postfix: "This is the mail system at host ...", the subject
//! "Undelivered Mail Returned to Sender", `X-Postfix-*` report fields.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "postfix",
    name: "Postfix",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body.contains("this is the mail system at host")
        || s.body.contains("x-postfix-queue-id")
        || super::header_has(s.head, "subject", "undelivered mail returned to sender")
}
