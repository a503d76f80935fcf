//! Gmail: "Delivery Status Notification (Failure)" from
//! mailer-daemon@googlemail.com, "The error that the other server returned
//! was:", "Technical details of permanent failure".

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "gmail",
    name: "Gmail",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    super::header_has(s.head, "from", "mailer-daemon@googlemail.com")
        || s.body
            .contains("the error that the other server returned was")
        || s.body.contains("technical details of permanent failure")
        || s.body.contains("technical details of temporary failure")
}
