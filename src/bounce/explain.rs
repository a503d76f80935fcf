//! `explain`: what an SMTP reply means, from the RFCs, the registry and the
//! catalog of real providers' replies.

use serde::Serialize;

use super::category::{classify, Category};
use crate::proto::EnhancedCode;
use crate::scenario::presets;

/// A reply as read from a bounce or a log: lenient, so that what a server
/// really sent (a 4.x.x status on a 5xx reply, say) is kept and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadReply {
    pub code: u16,
    /// As written: `5.1.1`; any class digit is kept.
    pub status: Option<String>,
    /// Text lines without their `550-5.1.1 ` prefixes.
    pub lines: Vec<String>,
}

/// Parses `X.Y.Z` with any class digit (for reporting mismatches).
fn loose_status(word: &str) -> Option<(u8, u16, u16)> {
    let mut p = word.split('.');
    let (a, b, c) = (p.next()?, p.next()?, p.next()?);
    if p.next().is_some()
        || a.len() != 1
        || b.is_empty()
        || b.len() > 3
        || c.is_empty()
        || c.len() > 3
    {
        return None;
    }
    if !(a.bytes().chain(b.bytes()).chain(c.bytes())).all(|x| x.is_ascii_digit()) {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?, c.parse().ok()?))
}

impl ReadReply {
    /// Reads a reply: single or multi-line, with or without continuation
    /// prefixes, with text before the code ("host said: ...", "smtp; ").
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.replace("\r\n", "\n").replace('\r', "\n");
        let mut code = None;
        let mut status: Option<String> = None;
        let mut lines = vec![];
        for raw in input.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = match code {
                None => {
                    // The first code: at the start, or after "smtp;" or ": ".
                    let start = find_code(raw)?;
                    let l = &raw[start..];
                    code = l[..3].parse::<u16>().ok();
                    l
                }
                Some(_) => raw,
            };
            let c = code.unwrap_or(0).to_string();
            let rest = match line.strip_prefix(c.as_str()) {
                Some(r) if r.is_empty() || r.starts_with([' ', '-']) => r.get(1..).unwrap_or(""),
                _ => line,
            };
            let rest = rest.trim_start();
            let rest = rest.trim_start_matches([',', ' ']);
            // "554 554 5.7.0 ...": the code repeated by a relaying reporter.
            let rest = match rest.strip_prefix(c.as_str()) {
                Some(r) if r.starts_with(' ') && status.is_none() && lines.is_empty() => {
                    r.trim_start()
                }
                _ => rest,
            };
            let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let first = first.trim_start_matches(['\'', '"']);
            let rest = if loose_status(first).is_some() {
                if status.is_none() {
                    status = Some(first.to_string());
                }
                after
            } else {
                rest
            };
            lines.push(rest.to_string());
        }
        let code = code?;
        Some(Self {
            code,
            status,
            lines,
        })
    }

    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Byte offset of the first reply code in a line: at its start, or after
/// "smtp;", ":" or "said:".
pub(crate) fn find_code(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let is_code = |i: usize| {
        i + 3 <= b.len()
            && (b'2'..=b'5').contains(&b[i])
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && (i + 3 == b.len()
                || matches!(b[i + 3], b' ' | b'-' | b',')
                || (b[i + 3] == b':' && b.get(i + 4) == Some(&b' ')))
            && (i == 0 || matches!(b[i - 1], b' ' | b';' | b':' | b'\'' | b'"' | b'('))
    };
    (0..b.len()).find(|&i| is_code(i))
}

#[derive(Debug, Clone, Serialize)]
pub struct Text {
    pub en: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusExplained {
    pub code: String,
    pub class: Option<String>,
    pub subject: Option<String>,
    pub detail: Option<String>,
    pub registered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_basic_codes: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KnownReply {
    pub id: String,
    pub provider: String,
    pub stage: String,
}

/// Everything `explain` says about one reply.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub reply: ReadReply,
    /// success, intermediate, temporary, permanent.
    pub kind: &'static str,
    pub temporary: bool,
    pub class: Text,
    pub category_digit: Text,
    /// RFC 5321's words for the code.
    pub meaning: Option<String>,
    pub status: Option<StatusExplained>,
    /// Commands whose replies may carry this code.
    pub commands: Vec<String>,
    pub known: Vec<KnownReply>,
    pub category: Category,
    pub category_text: Text,
    pub advice: Text,
    pub inconsistencies: Vec<Text>,
}

fn class_text(code: u16) -> (&'static str, &'static str, &'static str) {
    match code / 100 {
        2 => (
            "success",
            "2yz positive completion: the command was accepted",
            "2yz 肯定完了：コマンドは受け付けられました",
        ),
        3 => (
            "intermediate",
            "3yz positive intermediate: the server waits for more",
            "3yz 肯定中間：サーバーは続きを待っています",
        ),
        4 => (
            "temporary",
            "4yz transient negative completion: try again later",
            "4yz 一時的否定完了：後から再試行してください",
        ),
        _ => (
            "permanent",
            "5yz permanent negative completion: do not retry as is",
            "5yz 恒久的否定完了：そのまま再試行しないでください",
        ),
    }
}

fn digit_text(code: u16) -> (&'static str, &'static str) {
    // RFC 5321 §4.2.1: the second digit.
    match (code / 10) % 10 {
        0 => ("x0z syntax", "x0z 構文"),
        1 => ("x1z information", "x1z 情報"),
        2 => ("x2z connections", "x2z 接続"),
        5 => ("x5z mail system", "x5z メールシステム"),
        _ => ("x3z/x4z unspecified", "x3z/x4z 未指定"),
    }
}

fn ja_class(class: u8) -> &'static str {
    match class {
        2 => "成功",
        4 => "一時的な失敗",
        _ => "恒久的な失敗",
    }
}

fn ja_subject(subject: u16) -> &'static str {
    match subject {
        0 => "その他・未定義",
        1 => "アドレス",
        2 => "メールボックス",
        3 => "メールシステム",
        4 => "ネットワーク・ルーティング",
        5 => "配送プロトコル",
        6 => "メッセージ内容・メディア",
        7 => "セキュリティ・ポリシー",
        _ => "不明",
    }
}

fn normalize(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// Explains a reply. `ja` adds Japanese to every human text.
pub fn explain(reply: ReadReply, ja: bool) -> Explanation {
    let code = reply.code;
    let (kind, class_en, class_ja) = class_text(code);
    let temporary = code / 100 == 4;
    let text = reply.text();
    let parsed_status = reply.status.as_deref().and_then(loose_status);
    let mut issues: Vec<(String, String)> = vec![];

    let status = reply.status.as_ref().map(|s| {
        let (c, subj, det) = parsed_status.unwrap_or((0, 0, 0));
        let row = EnhancedCode::parse(&format!("{}.{}.{}", if matches!(c, 2 | 4 | 5) { c } else { 5 }, subj, det)).and_then(presets::status_row);
        if !matches!(c, 2 | 4 | 5) {
            issues.push((format!("{s}: an enhanced status class is 2, 4 or 5"), format!("{s}：拡張ステータスのクラスは2・4・5のいずれかです")));
        } else if c as u16 != code / 100 {
            issues.push((
                format!("{s} is a {} status on a {}xx reply (RFC 3463 §2: the class must match the reply code's first digit)", if c == 4 { "temporary" } else if c == 5 { "permanent" } else { "success" }, code / 100),
                format!("{s} は{}ですが、応答コードは{}xxです（RFC 3463 §2：クラスは応答コードの最初の桁と一致する必要があります）", ja_class(c), code / 100),
            ));
        }
        if row.is_none() && subj <= 7 {
            issues.push((
                format!("{s}: detail {det} is not in the IANA registry for subject {subj}"),
                format!("{s}：詳細コード{det}はIANAレジストリに登録されていません"),
            ));
        }
        if let Some(r) = row.filter(|_| c as u16 == code / 100) {
            let usual = r.usual_basic_codes;
            if usual.len() >= 3 && usual.chars().next().is_some_and(|c| c.is_ascii_digit()) && !usual.contains(&code.to_string()) && !usual.contains(&format!("{}XX", code / 100)) && !usual.contains("other") {
                issues.push((
                    format!("the registry pairs {s} with {usual}, not {code}"),
                    format!("レジストリでは {s} は {usual} と組み合わせるもので、{code} ではありません"),
                ));
            }
        }
        StatusExplained {
            code: s.clone(),
            class: presets::class_name(c).map(|n| if ja { format!("{n} / {}", ja_class(c)) } else { n.to_string() }),
            subject: presets::subject_name(subj).map(|n| if ja { format!("{n} / {}", ja_subject(subj)) } else { n.to_string() }),
            detail: row.map(|r| r.name.to_string()),
            registered: row.is_some(),
            defined_in: row.map(|r| r.defined_in.replace(';', ", ")),
            usual_basic_codes: row.map(|r| r.usual_basic_codes.to_string()).filter(|u| !u.is_empty()),
        }
    });

    let t = normalize(&text);
    let known: Vec<KnownReply> = presets::all()
        .iter()
        .filter(|p| p.code == code)
        .filter(|p| {
            let pt = normalize(&p.text.join(" "));
            !pt.is_empty()
                && (t.contains(&pt) || (pt.len() > 24 && pt.contains(&t) && t.len() > 24))
        })
        .map(|p| KnownReply {
            id: p.id.clone(),
            provider: p.provider.clone(),
            stage: p.stage.clone(),
        })
        .collect();

    let category = classify(code, parsed_status, &text);
    let (cat_en, cat_ja) = category.describe();
    let (adv_en, adv_ja) = category.advice(temporary);
    let (dig_en, dig_ja) = digit_text(code);
    let text_of = |en: &str, jp: &str| Text {
        en: en.to_string(),
        ja: ja.then(|| jp.to_string()),
    };
    Explanation {
        kind,
        temporary,
        class: text_of(class_en, class_ja),
        category_digit: text_of(dig_en, dig_ja),
        meaning: presets::basic_meaning(code),
        status,
        commands: presets::commands_for(code)
            .into_iter()
            .map(String::from)
            .collect(),
        known,
        category,
        category_text: text_of(cat_en, cat_ja),
        advice: text_of(adv_en, adv_ja),
        inconsistencies: issues.iter().map(|(e, j)| text_of(e, j)).collect(),
        reply,
    }
}

/// The explanation as text for people.
pub fn render(e: &Explanation) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let both = |t: &Text| match &t.ja {
        Some(j) => format!("{}\n    {j}", t.en),
        None => t.en.clone(),
    };
    let status = e
        .reply
        .status
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "{}{status} {}",
        e.reply.code,
        e.reply.lines.first().map(String::as_str).unwrap_or("")
    );
    for l in e.reply.lines.iter().skip(1) {
        let _ = writeln!(o, "    {l}");
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Reply code {}: {}", e.reply.code, both(&e.class));
    let _ = writeln!(o, "  category: {}", both(&e.category_digit));
    if let Some(m) = &e.meaning {
        let _ = writeln!(o, "  RFC 5321: {m}");
    }
    if !e.commands.is_empty() {
        let _ = writeln!(o, "  may answer: {}", e.commands.join(", "));
    }
    match &e.status {
        Some(s) => {
            let _ = writeln!(o, "Enhanced status {}:", s.code);
            let _ = writeln!(
                o,
                "  class:   {}",
                s.class.as_deref().unwrap_or("(unknown class)")
            );
            let _ = writeln!(
                o,
                "  subject: {}",
                s.subject.as_deref().unwrap_or("(unknown subject)")
            );
            let _ = writeln!(
                o,
                "  detail:  {}",
                s.detail.as_deref().unwrap_or("(not registered)")
            );
            if let Some(d) = &s.defined_in {
                let _ = writeln!(
                    o,
                    "  defined in {d}{}",
                    s.usual_basic_codes
                        .as_ref()
                        .map(|u| format!("; usually with {u}"))
                        .unwrap_or_default()
                );
            }
        }
        None => {
            let _ = writeln!(o, "Enhanced status: none given");
        }
    }
    let _ = writeln!(
        o,
        "Temporary or permanent: {}",
        if e.temporary {
            "temporary (4xx): the sender should retry"
        } else if e.kind == "permanent" {
            "permanent (5xx): the sender must not retry as is"
        } else {
            e.kind
        }
    );
    let _ = writeln!(o, "Category: {}", both(&e.category_text));
    let _ = writeln!(o, "What to do: {}", both(&e.advice));
    for k in &e.known {
        let _ = writeln!(
            o,
            "Known reply: {} ({}, at {}); reproduce it with preset = \"{}\"",
            k.provider, k.id, k.stage, k.id
        );
    }
    if e.inconsistencies.is_empty() {
        let _ = writeln!(o, "Inconsistencies: none");
    } else {
        for i in &e.inconsistencies {
            let _ = writeln!(o, "Inconsistency: {}", both(i));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replies_in_every_shape() {
        let r = ReadReply::parse("550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n550-5.1.1 double-checking the recipient's email address for typos or\r\n550 5.1.1 unnecessary spaces.").unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.lines.len(), 3);
        assert_eq!(r.lines[2], "unnecessary spaces.");
        let r = ReadReply::parse("host mx.example.test[192.0.2.1] said: 450 4.2.1 slow down (in reply to RCPT TO command)").unwrap();
        assert_eq!((r.code, r.status.as_deref()), (450, Some("4.2.1")));
        let r = ReadReply::parse("smtp; 421 Service not available").unwrap();
        assert_eq!((r.code, r.status), (421, None));
        assert!(ReadReply::parse("no code here").is_none());
    }

    #[test]
    fn explains_and_flags_mismatches() {
        let e = explain(
            ReadReply::parse("550 5.1.1 The email account that you tried to reach does not exist.")
                .unwrap(),
            true,
        );
        assert_eq!(e.category, Category::UserUnknown);
        assert!(!e.temporary);
        assert_eq!(
            e.status.as_ref().unwrap().detail.as_deref(),
            Some("Bad destination mailbox address")
        );
        assert!(e.commands.contains(&"RCPT".to_string()));
        assert!(e.known.iter().any(|k| k.id == "gmail.user_unknown"));
        assert!(e.inconsistencies.is_empty());
        assert!(e.advice.ja.is_some());
        let e = explain(ReadReply::parse("450 5.2.2 mailbox full").unwrap(), false);
        assert_eq!(e.inconsistencies.len(), 1);
        assert!(e.inconsistencies[0]
            .en
            .starts_with("5.2.2 is a permanent status on a 4xx reply"));
        let e = explain(ReadReply::parse("550 5.1.99 odd").unwrap(), false);
        assert!(e
            .inconsistencies
            .iter()
            .any(|i| i.en.contains("not in the IANA registry")));
    }
}
