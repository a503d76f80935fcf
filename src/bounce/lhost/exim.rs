//! Exim: "This message was created automatically by mail delivery
//! software", the `X-Failed-Recipients` header.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "exim",
    name: "Exim",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body
        .contains("this message was created automatically by mail delivery software")
        || (s.head.contains("\nx-failed-recipients:") && s.head.contains("exim"))
}
