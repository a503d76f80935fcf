//! Microsoft Exchange (on premises, 2003 to 2019): "Delivery has failed
//! to these recipients or groups", "Diagnostic information for
//! administrators", the MSEXCH codes, `X-MS-Exchange-*` headers.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "exchange2007",
    name: "Microsoft Exchange",
    recognise,
    default_reason: None,
    filter: false,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.body
        .contains("delivery has failed to these recipients or groups")
        || s.body.contains("diagnostic information for administrators")
        || s.body.contains("msexch:")
        || s.body
            .contains("the following recipient(s) cannot be reached")
        || s.head.contains("\nx-ms-exchange-")
        || s.head.contains("\nx-mailer: internet mail service")
}
