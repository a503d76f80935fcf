//! Yahoo Mail: "Sorry, we were unable to deliver your message to the
//! following address." from MAILER-DAEMON at yahoo.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "yahoo",
    name: "Yahoo Mail",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body
        .contains("sorry, we were unable to deliver your message to the following address")
        || (super::header_has(s.head, "from", "mailer-daemon@yahoo"))
}
