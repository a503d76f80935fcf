//! m-FILTER (Digital Arts): a filtering gateway; `X-Mailer: m-FILTER`.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "mfilter",
    name: "m-FILTER",
    recognise,
    default_reason: None,
    filter: true,
};

fn recognise(s: &Seen<'_>) -> bool {
    super::header_has(s.head, "x-mailer", "m-filter")
}
