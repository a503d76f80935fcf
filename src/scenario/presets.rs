//! The built-in catalog of real providers' replies, from
//! `data/provider-replies.toml` (sources and attribution in docs/presets.md).

use std::sync::LazyLock;

use serde::Deserialize;

use crate::proto::{EnhancedCode, Reply};

const CATALOG: &str = include_str!("../../data/provider-replies.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Preset {
    pub id: String,
    pub provider: String,
    pub stage: String,
    pub code: u16,
    pub enhanced: String,
    pub text: Vec<String>,
    pub meaning: String,
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Preset {
    /// The reply exactly as the provider sends it.
    pub fn reply(&self) -> Reply {
        Reply {
            code: self.code,
            enhanced: EnhancedCode::parse(&self.enhanced),
            lines: self.text.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Catalog {
    reply: Vec<Preset>,
}

static PRESETS: LazyLock<Vec<Preset>> = LazyLock::new(|| {
    toml::from_str::<Catalog>(CATALOG)
        .map(|c| c.reply)
        .unwrap_or_else(|e| panic!("built-in catalog data/provider-replies.toml is invalid: {e}"))
});

/// Every preset, in catalog order.
pub fn all() -> &'static [Preset] {
    &PRESETS
}

pub fn find(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

const STATUS_REGISTRY: &str = include_str!("../../data/enhanced-status-codes.tsv");
const REPLY_CODES: &str = include_str!("../../data/reply-codes.tsv");

/// The registry's name of an enhanced status code (RFC 3463 / IANA), e.g.
/// 5.1.1 -> "Bad destination mailbox address".
pub fn status_name(e: EnhancedCode) -> Option<&'static str> {
    status_row(e).map(|r| r.name)
}

/// One row of the enhanced status code registry.
#[derive(Debug, Clone, Copy)]
pub struct StatusRow {
    pub name: &'static str,
    pub defined_in: &'static str,
    /// The registry's "associated basic status code" column, verbatim.
    pub usual_basic_codes: &'static str,
}

fn registry_rows() -> impl Iterator<Item = Vec<&'static str>> {
    STATUS_REGISTRY
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
}

/// The registry's row for `X.subject.detail`.
pub fn status_row(e: EnhancedCode) -> Option<StatusRow> {
    let want = format!("X.{}.{}", e.subject, e.detail);
    registry_rows()
        .find(|c| c.first() == Some(&want.as_str()) && c.get(1) == Some(&"enumerated"))
        .map(|c| StatusRow {
            name: c.get(2).copied().unwrap_or(""),
            defined_in: c.get(3).copied().unwrap_or(""),
            usual_basic_codes: c.get(4).copied().unwrap_or(""),
        })
}

/// The registry's name of a subject (`X.1.YYY` -> "Addressing Status").
pub fn subject_name(subject: u16) -> Option<&'static str> {
    let want = format!("X.{subject}.YYY");
    registry_rows()
        .find(|c| c.first() == Some(&want.as_str()))
        .and_then(|c| c.get(2).copied())
}

/// The registry's name of a class (`5` -> "Permanent Failure").
pub fn class_name(class: u8) -> Option<&'static str> {
    let want = format!("{class}.XXX.YYY");
    registry_rows()
        .find(|c| c.first() == Some(&want.as_str()))
        .and_then(|c| c.get(2).copied())
}

/// Every enumerated code of the registry, as `X.s.d` strings.
pub fn registered_codes() -> Vec<&'static str> {
    registry_rows()
        .filter(|c| c.get(1) == Some(&"enumerated"))
        .filter_map(|c| c.first().copied())
        .collect()
}

/// The commands whose replies may legitimately carry this code (RFC 5321
/// §4.3.2 and the extensions' RFCs).
pub fn commands_for(code: u16) -> Vec<&'static str> {
    let code = code.to_string();
    let mut out: Vec<&'static str> = REPLY_CODES
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c.get(1) == Some(&code.as_str()) && c.first().is_some_and(|x| *x != "*"))
        .filter_map(|c| c.first().copied())
        .collect();
    out.dedup();
    out
}

/// RFC 5321's words for a basic reply code, without placeholders.
pub fn basic_meaning(code: u16) -> Option<String> {
    let code = code.to_string();
    let meaning = REPLY_CODES
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&"*") && cols.get(1) == Some(&code.as_str()))
        .and_then(|cols| cols.get(3).copied())?;
    let meaning = meaning
        .trim_start_matches("<domain> ")
        .trim_start_matches("(paraphrase) ");
    let meaning = meaning.split(" (").next().unwrap_or(meaning);
    Some(meaning.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_reply() {
        assert!(all().len() >= 118);
        for p in all() {
            let wire = String::from_utf8(p.reply().to_wire()).unwrap();
            let reparsed = Reply::parse(&wire.replace("\r\n", "\n"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.id));
            assert_eq!(reparsed, p.reply(), "{}", p.id);
            if !p.enhanced.is_empty() {
                assert!(EnhancedCode::parse(&p.enhanced).is_some(), "{}", p.id);
            }
        }
        assert_eq!(
            all().iter().filter(|p| p.id.starts_with("gmail.")).count(),
            41
        );
    }

    #[test]
    fn texts_carry_no_corpus_placeholders() {
        // Names from test corpora and documentation templates: a user
        // pasting a preset's text must not carry them into a scenario.
        const PLACEHOLDERS: &[&str] = &[
            "kijitora",
            "neko",
            "nyaan",
            "libsisimai",
            "sisimai",
            "example.jp",
            "example.org",
            "****",
            "x.x.x.x",
            "domain-name",
            "ip-address",
            "pseudo-local-part",
            "eaxmple",
        ];
        for p in all() {
            let text = p.text.join("\n").to_ascii_lowercase();
            for bad in PLACEHOLDERS {
                assert!(!text.contains(bad), "{}: {bad:?} in {text:?}", p.id);
            }
        }
    }

    #[test]
    fn registry_lookups() {
        assert_eq!(
            status_name(EnhancedCode::new(5, 1, 1)),
            Some("Bad destination mailbox address")
        );
        assert_eq!(status_name(EnhancedCode::new(5, 9, 9)), None);
        assert_eq!(
            basic_meaning(421).as_deref(),
            Some("Service not available, closing transmission channel")
        );
        assert_eq!(
            basic_meaning(550).as_deref(),
            Some("Requested action not taken: mailbox unavailable")
        );
    }

    #[test]
    fn gmail_user_unknown() {
        let r = find("gmail.user_unknown").unwrap().reply();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, EnhancedCode::parse("5.1.1"));
    }
}
