//! MX Logic (McAfee SaaS Email Protection): a filtering service; its notices
//! come from `mxlogic.net` hosts or carry `X-MXL-*` headers.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "mxlogic",
    name: "MX Logic",
    recognise,
    default_reason: None,
    filter: true,
};

fn recognise(s: &Seen<'_>) -> bool {
    super::header_has(s.head, "from", "mxlogic.net") || s.head.contains("\nx-mxl-")
}
