//! qmail (and netqmail): "Hi. This is the qmail-send program at ...".

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "qmail",
    name: "qmail",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body.contains("this is the qmail-send program")
        || s.body.contains("this is the qmail program")
        || s.body.contains("qmail-send")
}
