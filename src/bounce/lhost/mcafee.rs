//! McAfee Email (and Web) Security Appliance: a filtering gateway; its
//! notices carry `X-NAI-Header: Modified by McAfee ...`.

use super::{MailSystem, Seen};

pub const SYSTEM: MailSystem = MailSystem {
    id: "mcafee",
    name: "McAfee Email Gateway",
    recognise,
    default_reason: None,
    filter: true,
};

fn recognise(s: &Seen<'_>) -> bool {
    s.head.contains("\nx-nai-header:") && s.head.contains("mcafee")
}
