//! Which mail system wrote a bounce, one file per family, tried from one
//! ordered table ([`TABLE`]). A family says how to recognise its bounces
//! (its sender, subject, headers and fixed sentences) and may bring a
//! reader for a shape only it writes (Sendmail's session transcript,
//! Amazon SES's JSON by mail). Adding a mail system means adding one file
//! here and one row to the table.
//!
//! More specific families come first: a hosted service's bounce often also
//! carries the words of the MTA it runs (Office 365 is Exchange; Gmail's
//! relays say "Delivery Status Notification").

mod amazonses;
mod exchange;
mod exim;
mod gmail;
mod googlegroups;
mod mcafee;
mod mfilter;
mod mxlogic;
mod office365;
mod postfix;
mod qmail;
pub(super) mod sendmail;
mod yahoo;

pub(super) use amazonses::json_by_mail;

/// What a family looks at: the header block and the start of the text,
/// both lower-cased.
pub struct Seen<'a> {
    pub head: &'a str,
    pub body: &'a str,
}

/// One mail-system family.
pub struct MailSystem {
    /// A short id, as in the sample names (`lhost-postfix-01.eml`).
    pub id: &'static str,
    pub name: &'static str,
    pub recognise: fn(&Seen<'_>) -> bool,
    /// What the family's notices mean when their words name no reason
    /// (a group's "you may not post here" is the sender refused).
    pub default_reason: Option<&'static str>,
    /// A filtering gateway in front of the mailboxes: an unknown user it
    /// reports without an x.1.1 status is the filter's refusal
    /// (`filtered`), not proof that the address does not exist.
    pub filter: bool,
}

/// The families in the order they are tried.
pub const TABLE: &[MailSystem] = &[
    mcafee::SYSTEM,
    mfilter::SYSTEM,
    mxlogic::SYSTEM,
    amazonses::SYSTEM,
    office365::SYSTEM,
    exchange::SYSTEM,
    googlegroups::SYSTEM,
    gmail::SYSTEM,
    yahoo::SYSTEM,
    qmail::SYSTEM,
    exim::SYSTEM,
    postfix::SYSTEM,
    sendmail::SYSTEM,
];

/// How much of the text a family looks at (recognition is a few
/// substring checks, bounded whatever the message's size).
const LOOK: usize = 16 * 1024;

/// The family that wrote the bounce, when one recognises it.
pub fn identify(raw: &[u8], human: &str) -> Option<&'static MailSystem> {
    let end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(raw.len())
        .min(LOOK);
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let mut cut = human.len().min(LOOK);
    while !human.is_char_boundary(cut) {
        cut -= 1;
    }
    let body = human[..cut].to_lowercase();
    let seen = Seen {
        head: &head,
        body: &body,
    };
    TABLE.iter().find(|m| (m.recognise)(&seen))
}

/// A header's value appears in the header block (`name: ...value...`).
pub(crate) fn header_has(head: &str, name: &str, value: &str) -> bool {
    head.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
        .any(|l| l.contains(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family recognises at least two thirds of its own samples.
    #[test]
    fn each_family_recognises_its_samples() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bounces/samples");
        for m in TABLE {
            let (mut mine, mut right) = (0, 0);
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with(&format!("lhost-{}-", m.id)) {
                    continue;
                }
                mine += 1;
                let raw = crate::bounce::mime::normalize(&std::fs::read(&p).unwrap());
                let text = String::from_utf8_lossy(&raw).into_owned();
                let body = text.split_once("\n\n").map_or("", |x| x.1);
                let got = identify(&raw, body).map(|g| g.id);
                if got == Some(m.id) {
                    right += 1;
                } else {
                    eprintln!("{name}: {got:?}");
                }
            }
            assert!(mine > 0, "{}: no samples", m.id);
            assert!(right * 3 >= mine * 2, "{}: {right}/{mine} recognised", m.id);
        }
    }
}
