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

use super::engine::{Engine, AT_MAGIC_GREYLIST, AT_MAGIC_TEMPFAIL};
use super::presets;
use crate::proto::{Asked, Context, Decision, EnhancedCode, Outcome, Reply, Stage, Tag};
use crate::state::{Answer, Done, GateOp, Op};

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

/// The classic greylist triplet of `greylist@`: client IP, sender, recipient.
fn grey_key(ctx: &Context<'_>, rcpt: &str) -> String {
    format!(
        "magic grey\u{1e}{}\u{1f}{}\u{1f}{}",
        ctx.client_ip,
        ctx.mail_from.unwrap_or("").to_ascii_lowercase(),
        rcpt.to_ascii_lowercase()
    )
}

/// The `tempfailN@` recipients of the transaction, with N and their
/// counter keys (per sender and recipient).
fn tempfails<'a>(ctx: &'a Context<'_>) -> impl Iterator<Item = (&'a str, u64, String)> + 'a {
    magic_rcpts(ctx).filter_map(|(rcpt, m)| match m {
        Magic::Tempfail(n) => {
            let key = format!(
                "magic tempfail\u{1e}{}\u{1f}{}",
                ctx.mail_from.unwrap_or("").to_ascii_lowercase(),
                rcpt.to_ascii_lowercase()
            );
            Some((rcpt, n, key))
        }
        _ => None,
    })
}

pub fn decide(engine: &Engine, ctx: &Context<'_>, now: Instant) -> Asked {
    let slow = magic_rcpts(ctx).any(|(_, m)| m == Magic::Slow);
    let decided = match ctx.stage {
        Stage::Rcpt => match ctx.rcpt.and_then(|r| parse(r).map(|m| (r, m))) {
            None => None,
            Some((rcpt, Magic::Reply(r))) => {
                Some(decision(rcpt, Outcome::Reply(r), Duration::ZERO))
            }
            Some((rcpt, Magic::Greylist)) => {
                let op = Op::Rule {
                    gate: Some(GateOp::Greylist {
                        key: grey_key(ctx, rcpt),
                        retry_after: GREYLIST_RETRY,
                        expire: GREYLIST_EXPIRE,
                    }),
                    count: None,
                };
                return engine.now_or_suspend(op, AT_MAGIC_GREYLIST, now, |done| {
                    resume(engine, ctx, AT_MAGIC_GREYLIST, done)
                });
            }
            Some((_, Magic::Slow)) => Some(decision("slow", Outcome::Accept, SLOW_DELAY)),
            Some(_) if slow => Some(decision("slow", Outcome::Accept, SLOW_DELAY)),
            Some(_) => None,
        },
        Stage::Data => slow.then(|| decision("slow", Outcome::Accept, SLOW_DELAY)),
        Stage::Message => {
            let delay = if slow { SLOW_DELAY } else { Duration::ZERO };
            if magic_rcpts(ctx).any(|(_, m)| m == Magic::Drop) {
                return Asked::Decided(Some(decision("drop", Outcome::Disconnect, delay)));
            }
            let keys: Vec<String> = tempfails(ctx).map(|(_, _, k)| k).collect();
            if keys.is_empty() {
                slow.then(|| decision("slow", Outcome::Accept, delay))
            } else {
                return engine.now_or_suspend(Op::Incr(keys), AT_MAGIC_TEMPFAIL, now, |done| {
                    resume(engine, ctx, AT_MAGIC_TEMPFAIL, done)
                });
            }
        }
        _ => None,
    };
    Asked::Decided(decided)
}

/// Goes on with a magic decision once the store answered.
pub fn resume(engine: &Engine, ctx: &Context<'_>, at: u32, done: Answer<Done>) -> Asked {
    let slow = magic_rcpts(ctx).any(|(_, m)| m == Magic::Slow);
    let decided = if at == AT_MAGIC_GREYLIST {
        let rcpt = ctx.rcpt.unwrap_or("");
        match done {
            Ok(Done::Rule { applies: false, .. }) => {
                slow.then(|| decision("slow", Outcome::Accept, SLOW_DELAY))
            }
            Ok(Done::Rule { applies: true, .. }) => {
                let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
                let mut d = decision(rcpt, Outcome::Reply(greylisted(domain)), Duration::ZERO);
                d.tag = Some(Tag::Greylist {
                    retry_after: GREYLIST_RETRY,
                });
                Some(d)
            }
            _ => engine.unavailable(rcpt.to_string()),
        }
    } else {
        let delay = if slow { SLOW_DELAY } else { Duration::ZERO };
        let counts = match done {
            Ok(Done::Counts(n)) => n,
            _ => {
                let first = tempfails(ctx).next().map(|(r, _, _)| r).unwrap_or("");
                return Asked::Decided(engine.unavailable(first.to_string()));
            }
        };
        let fail = tempfails(ctx)
            .zip(counts)
            .find(|((_, n, _), count)| count <= n)
            .map(|((rcpt, _, _), _)| rcpt);
        match fail {
            Some(rcpt) => Some(decision(rcpt, Outcome::Reply(tempfail()), delay)),
            None => slow.then(|| decision("slow", Outcome::Accept, delay)),
        }
    };
    Asked::Decided(decided)
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
