//! Magic recipients (contract §7): the local part picks the fault, as a
//! mailbox simulator does. On in the default scenario, or with
//! `[server] magic_recipients = true`.
//!
//! | local part | answer |
//! |---|---|
//! | `550-5.1.1`, any `CODE-X.Y.Z` | that reply at RCPT, with the catalog's text |
//! | `421`, any `CODE` | that reply at RCPT, with the status [`bare_code_status`] picks |
//! | `greylist` | 450 4.2.0 until a retry 60 s after the first attempt |
//! | `tempfailN` | 451 4.3.0 after the message, N times per sender/recipient |
//! | `slow` | every reply of the transaction 10 s late |
//! | `drop` | connection closed without a reply after the message |

use std::time::{Duration, Instant};

use super::engine::Engine;
use super::presets;
use crate::proto::{Context, Decision, EnhancedCode, Outcome, Reply, Stage, Tag};
use crate::state::Greylist;

/// How late `slow@` replies are.
pub const SLOW_DELAY: Duration = Duration::from_secs(10);
/// How long `greylist@` makes a sender wait, and how long a known triplet
/// is remembered.
pub const GREYLIST_RETRY: Duration = Duration::from_secs(60);
pub const GREYLIST_EXPIRE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Magic {
    Reply(Reply),
    Greylist,
    Tempfail(u64),
    Slow,
    Drop,
}

/// Reads a recipient's local part as a magic address.
pub fn parse(rcpt: &str) -> Option<Magic> {
    let local = rcpt
        .rsplit_once('@')
        .map_or(rcpt, |(l, _)| l)
        .to_ascii_lowercase();
    match local.as_str() {
        "slow" => return Some(Magic::Slow),
        "drop" => return Some(Magic::Drop),
        "greylist" => return Some(Magic::Greylist),
        _ => {}
    }
    if let Some(n) = local.strip_prefix("tempfail") {
        let n: u64 = crate::proto::command::parse_number(n)?;
        return Some(Magic::Tempfail(n));
    }
    let (code, enhanced) = match local.split_once('-') {
        Some((c, e)) => (c, Some(EnhancedCode::parse(e)?)),
        None => (local.as_str(), None),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u16 = code.parse().ok()?;
    if !(200..=599).contains(&code) || enhanced.is_some_and(|e| e.class as u16 != code / 100) {
        return None;
    }
    let text = usual_text(code, enhanced);
    Some(Magic::Reply(Reply {
        code,
        enhanced: enhanced.or_else(|| bare_code_status(code)),
        lines: vec![text],
    }))
}

/// Codes whose defining document names their enhanced status.
const NAMED_STATUS: &[(u16, EnhancedCode)] = &[
    // RFC 4954 §6 (AUTH).
    (235, EnhancedCode::new(2, 7, 0)),
    (432, EnhancedCode::new(4, 7, 12)),
    (454, EnhancedCode::new(4, 7, 0)),
    (530, EnhancedCode::new(5, 7, 0)),
    (534, EnhancedCode::new(5, 7, 9)),
    (535, EnhancedCode::new(5, 7, 8)),
    (538, EnhancedCode::new(5, 7, 11)),
    // The IANA registry (RFC 5248) gives these basic codes with X.7.10
    // and X.7.13, and 556 with X.1.10 (RFC 7505, null MX).
    (523, EnhancedCode::new(5, 7, 10)),
    (525, EnhancedCode::new(5, 7, 13)),
    (556, EnhancedCode::new(5, 1, 10)),
];

/// The status a bare code (`550@`) answers with. EHLO advertises
/// ENHANCEDSTATUSCODES, so every 2xx, 4xx and 5xx reply carries one (RFC
/// 2034 §3 (4) and §4; 3xx replies carry none). The rule: the status the
/// code's own RFC or the registry names for it (`NAMED_STATUS`), else the
/// class's generic `X.0.0`, "Other undefined Status" (RFC 3463 §3.1), which
/// claims nothing the code does not say.
pub fn bare_code_status(code: u16) -> Option<EnhancedCode> {
    let class = (code / 100) as u8;
    if !matches!(class, 2 | 4 | 5) {
        return None;
    }
    let named = NAMED_STATUS.iter().find(|(c, _)| *c == code);
    Some(named.map_or(EnhancedCode::new(class, 0, 0), |(_, e)| *e))
}

/// With a status: the text a catalog reply with this code and status uses,
/// failing that the registry's name of the status. With a bare code: RFC
/// 5321's words for it.
pub fn usual_text(code: u16, enhanced: Option<EnhancedCode>) -> String {
    if let Some(e) = enhanced {
        let same = |p: &&presets::Preset| EnhancedCode::parse(&p.enhanced) == Some(e);
        if let Some(p) = presets::all()
            .iter()
            .filter(same)
            .find(|p| p.code == code && p.text.len() == 1)
        {
            return p.text[0].clone();
        }
        if let Some(name) = presets::status_name(e) {
            return format!("{name}.");
        }
    }
    presets::basic_meaning(code).unwrap_or_else(|| "Scripted reply.".into())
}

/// `greylist@`: postgrey's reply (as Postfix relays its DEFER_IF_PERMIT).
pub fn greylisted(domain: &str) -> Reply {
    // The domain comes from the client's RCPT: no control character of it
    // reaches the wire (a bare CR or LF would split the reply).
    let domain: String = domain.chars().filter(|c| !c.is_control()).collect();
    Reply::new(
        450,
        Some(EnhancedCode::new(4, 2, 0)),
        format!("Greylisted, see https://postgrey.schweikert.ch/help/{domain}.html"),
    )
}

/// `tempfailN@`: Gmail's temporary rejection after the message.
pub fn tempfail() -> Reply {
    Reply::new(
        451,
        Some(EnhancedCode::new(4, 3, 0)),
        "Mail server temporarily rejected message.",
    )
}

fn magic_rcpts<'a>(ctx: &'a Context<'_>) -> impl Iterator<Item = (&'a str, Magic)> + 'a {
    ctx.rcpts
        .iter()
        .filter_map(|r| parse(r).map(|m| (r.as_str(), m)))
}

fn decision(name: &str, outcome: Outcome, delay: Duration) -> Decision {
    Decision {
        rule: Some(format!("magic recipient {name}")),
        outcome,
        delay,
        close: None,
        drip: None,
        tag: None,
    }
}

pub fn decide(engine: &Engine, ctx: &Context<'_>, now: Instant) -> Option<Decision> {
    let slow = magic_rcpts(ctx).any(|(_, m)| m == Magic::Slow);
    match ctx.stage {
        Stage::Rcpt => match parse(ctx.rcpt?)? {
            Magic::Reply(r) => Some(decision(ctx.rcpt?, Outcome::Reply(r), Duration::ZERO)),
            Magic::Greylist => {
                let rcpt = ctx.rcpt?;
                // The classic triplet: client IP, sender, recipient.
                let key = format!(
                    "magic grey\u{1e}{}\u{1f}{}\u{1f}{}",
                    ctx.client_ip,
                    ctx.mail_from.unwrap_or("").to_ascii_lowercase(),
                    rcpt.to_ascii_lowercase()
                );
                match engine
                    .store()
                    .greylist(&key, GREYLIST_RETRY, GREYLIST_EXPIRE, now)
                {
                    Err(_) => engine.unavailable(rcpt.to_string()),
                    Ok(Greylist::Passed) => {
                        slow.then(|| decision("slow", Outcome::Accept, SLOW_DELAY))
                    }
                    Ok(Greylist::Refused { .. }) => {
                        let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
                        let mut d =
                            decision(rcpt, Outcome::Reply(greylisted(domain)), Duration::ZERO);
                        d.tag = Some(Tag::Greylist {
                            retry_after: GREYLIST_RETRY,
                        });
                        Some(d)
                    }
                }
            }
            Magic::Slow => Some(decision("slow", Outcome::Accept, SLOW_DELAY)),
            _ if slow => Some(decision("slow", Outcome::Accept, SLOW_DELAY)),
            _ => None,
        },
        Stage::Data => slow.then(|| decision("slow", Outcome::Accept, SLOW_DELAY)),
        Stage::Message => {
            let delay = if slow { SLOW_DELAY } else { Duration::ZERO };
            if magic_rcpts(ctx).any(|(_, m)| m == Magic::Drop) {
                return Some(decision("drop", Outcome::Disconnect, delay));
            }
            let mut fail = None;
            for (rcpt, m) in magic_rcpts(ctx) {
                if let Magic::Tempfail(n) = m {
                    let key = format!(
                        "magic tempfail\u{1e}{}\u{1f}{}",
                        ctx.mail_from.unwrap_or("").to_ascii_lowercase(),
                        rcpt.to_ascii_lowercase()
                    );
                    match engine.store().incr(&key) {
                        Ok(count) if count <= n => {
                            fail.get_or_insert(rcpt);
                        }
                        Ok(_) => {}
                        Err(_) => return engine.unavailable(rcpt.to_string()),
                    }
                }
            }
            if let Some(rcpt) = fail {
                return Some(decision(rcpt, Outcome::Reply(tempfail()), delay));
            }
            slow.then(|| decision("slow", Outcome::Accept, delay))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let r = |s| match parse(s) {
            Some(Magic::Reply(r)) => String::from_utf8(r.to_wire()).unwrap(),
            other => format!("{other:?}"),
        };
        assert!(r("550-5.1.1@x.test")
            .starts_with("550 5.1.1 The email account that you tried to reach does not exist."));
        assert_eq!(
            r("421@x.test"),
            "421 4.0.0 Service not available, closing transmission channel\r\n"
        );
        assert_eq!(
            r("550@x.test"),
            "550 5.0.0 Requested action not taken: mailbox unavailable\r\n"
        );
        assert_eq!(
            r("535@x.test"),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
        assert_eq!(
            r("250@x.test"),
            "250 2.0.0 Requested mail action okay, completed\r\n"
        );
        assert!(r("556@x.test").starts_with("556 5.1.10 "));
        // RFC 2034 §4: 3xx replies carry no status.
        assert!(r("354@x.test").starts_with("354 Start mail input"));
        assert_eq!(parse("tempfail2@x"), Some(Magic::Tempfail(2)));
        assert_eq!(parse("SLOW@x"), Some(Magic::Slow));
        assert_eq!(parse("drop@x"), Some(Magic::Drop));
        assert_eq!(parse("450-5.1.1@x"), None);
        assert_eq!(parse("600@x"), None);
        assert_eq!(parse("alice@x"), None);
        assert_eq!(parse("tempfail99999999999999999999999@x"), None);
        assert!(r("550-5.7.30@x").starts_with("550 5.7.30 REQUIRETLS support required."));
    }
}
