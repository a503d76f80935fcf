//! Amazon SES: its bounces by mail come from `amazonses.com` hosts; a
//! notification subscribed by email is the JSON document itself in the
//! body (lines longer than the mail system allows broken with "!", a line
//! end and a space), followed by an unsubscribe footer.

use super::{MailSystem, Seen};
use crate::bounce::dsn::{Bounce, NotBounce};

pub const SYSTEM: MailSystem = MailSystem {
    id: "amazonses",
    name: "Amazon SES",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.head.contains("amazonses.com")
        || s.head.contains("\nx-amz-sns-message-id:")
        || s.body.contains("\"notificationtype\"")
}

/// The notification in a message's text, when the text is one; `None`
/// when it is no JSON notification.
pub(in crate::bounce) fn json_by_mail(human: &str) -> Option<Result<Bounce, NotBounce>> {
    if !human.trim_start().starts_with('{') {
        return None;
    }
    let joined = human.trim().replace("!\n ", "");
    match crate::bounce::esp::parse_first(&joined) {
        Err(NotBounce::NotNotification) => None,
        other => Some(other),
    }
}
