//! Office 365 (Exchange Online): Exchange's report sent from
//! `*.outlook.com` / `*.protection.outlook.com`, "Your message to ...
//! couldn't be delivered".

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "office365",
    name: "Office 365",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    let hosted = s.head.contains("prod.outlook.com") || s.head.contains("protection.outlook.com");
    hosted
        && (s.body.contains("delivery has failed to these recipients")
            || s.body.contains("couldn't be delivered")
            || s.body.contains("diagnostic information for administrators")
            || s.head.contains("\nx-ms-exchange-"))
}
