//! `explain`: what an SMTP reply means, from the RFCs, the registry and the
//! catalog of real providers' replies.

use serde::Serialize;

use super::category::{classify, Category};
use crate::proto::reply::{check_status, StatusWord};
use crate::proto::EnhancedCode;
use crate::scenario::presets;

pub use crate::proto::reply::{find_code, ReadReply};

#[derive(Debug, Clone, Serialize)]
pub struct Text {
    pub en: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja: Option<String>,
}

impl Text {
    fn get(&self, lang: Lang) -> &str {
        match (lang, &self.ja) {
            (Lang::Ja, Some(j)) => j,
            _ => &self.en,
        }
    }
}

/// The language of the human text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    En,
    Ja,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusExplained {
    pub code: String,
    /// The registry's names (RFC 3463, IANA), in English as registered.
    pub class: Option<String>,
    pub subject: Option<String>,
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_ja: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_ja: Option<String>,
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
    /// Why it failed, in bounce analysers' vocabulary (`userunknown`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The address itself is bad: stop sending to it (hard), or retry later (soft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_bounce: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<Text>,
    /// The reply contradicts itself: its status's class is not its code's
    /// (RFC 3463 §2, RFC 2034 §4), or is no class at all.
    pub inconsistencies: Vec<Text>,
    /// Worth knowing, not an error: the registry pairs the status with
    /// another code (providers send it like this), an unregistered detail.
    pub notes: Vec<Text>,
    /// The language `render` writes.
    #[serde(skip)]
    pub lang: Lang,
}

/// Every label `render` writes, once per language.
pub struct Labels {
    pub reply_code: &'static str,
    pub digit: &'static str,
    pub rfc5321: &'static str,
    pub may_answer: &'static str,
    pub enhanced: &'static str,
    pub no_enhanced: &'static str,
    pub class: &'static str,
    pub subject: &'static str,
    pub detail: &'static str,
    pub unknown_class: &'static str,
    pub unknown_subject: &'static str,
    pub not_registered: &'static str,
    pub registry_name: &'static str,
    pub defined_in: &'static str,
    pub usually_with: &'static str,
    pub temp_or_perm: &'static str,
    pub temporary: &'static str,
    pub permanent: &'static str,
    pub success: &'static str,
    pub intermediate: &'static str,
    pub category: &'static str,
    pub what_to_do: &'static str,
    pub bounce: &'static str,
    pub known_reply: &'static str,
    pub at_stage: &'static str,
    pub reproduce_with: &'static str,
    pub inconsistency: &'static str,
    pub no_inconsistency: &'static str,
    pub note: &'static str,
    /// Opens and closes a parenthesis.
    pub open: &'static str,
    pub close: &'static str,
    pub colon: &'static str,
}

pub const LABELS_EN: Labels = Labels {
    reply_code: "Reply code",
    digit: "  category: ",
    rfc5321: "  RFC 5321: ",
    may_answer: "  may answer: ",
    enhanced: "Enhanced status",
    no_enhanced: "Enhanced status: none given",
    class: "  class:   ",
    subject: "  subject: ",
    detail: "  detail:  ",
    unknown_class: "(unknown class)",
    unknown_subject: "(unknown subject)",
    not_registered: "(not registered)",
    registry_name: "",
    defined_in: "  defined in ",
    usually_with: "; usually with ",
    temp_or_perm: "Temporary or permanent: ",
    temporary: "temporary (4xx): the sender should retry",
    permanent: "permanent (5xx): the sender must not retry as is",
    success: "success (2xx): nothing failed",
    intermediate: "intermediate (3xx): the server waits for more",
    category: "Category: ",
    what_to_do: "What to do: ",
    bounce: "Bounce: ",
    known_reply: "Known reply: ",
    at_stage: ", at ",
    reproduce_with: "; reproduce it with preset = ",
    inconsistency: "Inconsistency: ",
    no_inconsistency: "Inconsistencies: none",
    note: "Note: ",
    open: " (",
    close: ")",
    colon: ": ",
};

pub const LABELS_JA: Labels = Labels {
    reply_code: "応答コード",
    digit: "  第2桁：",
    rfc5321: "  RFC 5321 の定義：",
    may_answer: "  この応答を返しうるコマンド：",
    enhanced: "拡張ステータス",
    no_enhanced: "拡張ステータス：なし",
    class: "  クラス：",
    subject: "  サブジェクト：",
    detail: "  詳細：",
    unknown_class: "（不明なクラス）",
    unknown_subject: "（不明なサブジェクト）",
    not_registered: "（未登録）",
    registry_name: "（IANAレジストリの名称）",
    defined_in: "  定義：",
    usually_with: "。通常の組み合わせ：",
    temp_or_perm: "一時的か恒久的か：",
    temporary: "一時的（4xx）：送信側は再試行すべきです",
    permanent: "恒久的（5xx）：そのまま再試行してはいけません",
    success: "成功（2xx）：失敗ではありません",
    intermediate: "中間応答（3xx）：サーバーは続きを待っています",
    category: "障害の種類：",
    what_to_do: "対処：",
    bounce: "バウンス：",
    known_reply: "既知の応答：",
    at_stage: "、段階 ",
    reproduce_with: "。再現するには preset = ",
    inconsistency: "矛盾：",
    no_inconsistency: "矛盾：なし",
    note: "注記：",
    open: "（",
    close: "）",
    colon: "：",
};

impl Labels {
    /// Every label, for checks that a language uses only its own.
    pub fn all(&self) -> [&'static str; 31] {
        [
            self.reply_code,
            self.digit,
            self.rfc5321,
            self.may_answer,
            self.enhanced,
            self.no_enhanced,
            self.class,
            self.subject,
            self.detail,
            self.unknown_class,
            self.unknown_subject,
            self.not_registered,
            self.registry_name,
            self.defined_in,
            self.usually_with,
            self.temp_or_perm,
            self.temporary,
            self.permanent,
            self.success,
            self.intermediate,
            self.category,
            self.what_to_do,
            self.known_reply,
            self.at_stage,
            self.reproduce_with,
            self.inconsistency,
            self.no_inconsistency,
            self.note,
            self.open,
            self.close,
            self.colon,
        ]
    }
}

impl Lang {
    pub fn labels(self) -> &'static Labels {
        match self {
            Lang::En => &LABELS_EN,
            Lang::Ja => &LABELS_JA,
        }
    }
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

/// RFC 5321 §4.2.2's words for the basic codes (and the extensions'), in
/// Japanese; the English comes from data/reply-codes.tsv.
fn basic_meaning_ja(code: u16) -> Option<&'static str> {
    Some(match code {
        211 => "システム状態、またはシステムのヘルプ応答",
        214 => "ヘルプメッセージ",
        220 => "サービス準備完了",
        221 => "サービスは通信路を閉じます",
        235 => "認証に成功しました",
        250 => "要求されたメール操作は完了しました",
        251 => "ローカルのユーザーではありません。転送します",
        252 => "ユーザーを確認できませんが、メッセージを受け付けて配送を試みます",
        334 => "サーバーからのチャレンジ",
        354 => "メール入力を開始してください。<CRLF>.<CRLF> で終わります",
        421 => "サービスを提供できません。通信路を閉じます",
        432 => "パスワードの移行が必要です",
        450 => "要求された操作は実行されませんでした：メールボックスが利用できません",
        451 => "要求された操作は中止されました：処理中のローカルエラー",
        452 => "要求された操作は実行されませんでした：システムの記憶領域が不足しています",
        454 => "一時的な認証失敗",
        455 => "サーバーはパラメーターに対応できません",
        500 => "構文エラー、コマンドを認識できません",
        501 => "パラメーターまたは引数の構文エラー",
        502 => "コマンドは実装されていません",
        503 => "コマンドの順序が誤っています",
        504 => "コマンドのパラメーターは実装されていません",
        521 => "このホストはメールを一切受け付けません",
        523 => "暗号化が必要です",
        525 => "ユーザーアカウントは無効です",
        530 => "認証が必要です",
        534 => "認証方式が弱すぎます",
        535 => "認証情報が無効です",
        538 => "要求された認証方式には暗号化が必要です",
        550 => "要求された操作は実行されませんでした：メールボックスが利用できません",
        551 => "ローカルのユーザーではありません",
        552 => "要求されたメール操作は中止されました：記憶領域の割り当てを超えました",
        553 => "要求された操作は実行されませんでした：メールボックス名が許可されていません",
        554 => "トランザクションは失敗しました",
        555 => "MAIL FROM/RCPT TO のパラメーターを認識できないか、実装されていません",
        556 => "このドメインはメールを受け付けません",
        _ => return None,
    })
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

/// What the status says against the code: true inconsistencies (the class
/// disagrees with the reply's) and notes (not errors).
#[derive(Default)]
struct Findings {
    inconsistencies: Vec<(String, String)>,
    notes: Vec<(String, String)>,
}

fn judge_status(code: u16, s: &str, w: StatusWord) -> Findings {
    let mut f = Findings::default();
    let Some(e) = w.enhanced() else {
        f.inconsistencies.push((
            format!("{s}: an enhanced status class is 2, 4 or 5 (RFC 3463 §2)"),
            format!("{s}：拡張ステータスのクラスは2・4・5のいずれかです（RFC 3463 §2）"),
        ));
        return f;
    };
    if check_status(code, e).is_err() {
        let (en, ja) = match (code / 100, e.class) {
            (3, _) => (
                format!("{s} is given on a 3xx reply, which carries no status (RFC 2034 §4)"),
                format!("{s} が3xx応答に付いていますが、3xx応答は拡張ステータスを持ちません（RFC 2034 §4）"),
            ),
            (_, c) => (
                format!(
                    "{s} is a {} status on a {}xx reply (RFC 3463 §2: the class must match the reply code's first digit)",
                    match c {
                        4 => "temporary",
                        5 => "permanent",
                        _ => "success",
                    },
                    code / 100
                ),
                format!(
                    "{s} は{}ですが、応答コードは{}xxです（RFC 3463 §2：クラスは応答コードの最初の桁と一致する必要があります）",
                    ja_class(c),
                    code / 100
                ),
            ),
        };
        f.inconsistencies.push((en, ja));
        return f;
    }
    match presets::status_row(e) {
        None if w.subject <= 7 => f.notes.push((
            format!("{s}: detail {} is not in the IANA registry for subject {}; providers use their own codes like this", w.detail, w.subject),
            format!("{s}：詳細コード{}はIANAレジストリに登録されていません。事業者はこのように独自のコードを使います", w.detail),
        )),
        None => f.notes.push((
            format!("{s}: subject {} is not in the IANA registry (it has subjects 0 to 7)", w.subject),
            format!("{s}：サブジェクト{}はIANAレジストリにありません（登録は0から7まで）", w.subject),
        )),
        Some(r) if !registry_allows(r.usual_basic_codes, code) => {
            let usual = r.usual_basic_codes;
            let who = providers_sending(code, e);
            let (who_en, who_ja) = if who.is_empty() {
                ("providers send it like this".to_string(), "事業者はこのように送ります".to_string())
            } else {
                (format!("providers send it like this ({who})"), format!("事業者はこのように送ります（{who}）"))
            };
            f.notes.push((
                format!("the registry pairs {s} with {usual}, not {code}; {who_en}; not an error"),
                format!("レジストリでは {s} は {usual} と組み合わせるもので、{code} ではありません。{who_ja}。誤りではありません"),
            ));
        }
        _ => {}
    }
    f
}

/// Whether the registry's "associated basic status code" column allows
/// `code` ("Any", "5XX", "other 4XX or 5XX codes are allowed", a list).
fn registry_allows(usual: &str, code: u16) -> bool {
    let listed = usual.len() >= 3 && usual.starts_with(|c: char| c.is_ascii_digit());
    !listed
        || usual.contains(&code.to_string())
        || usual.contains(&format!("{}XX", code / 100))
        || usual.contains("other")
}

/// The catalog's providers that send this code with this status.
fn providers_sending(code: u16, e: EnhancedCode) -> String {
    let mut names: Vec<&str> = vec![];
    for p in presets::all() {
        if p.code == code
            && EnhancedCode::parse(&p.enhanced) == Some(e)
            && !names.contains(&p.provider.as_str())
        {
            names.push(&p.provider);
        }
    }
    names.join(", ")
}

fn explain_status(s: &str, w: Option<StatusWord>) -> StatusExplained {
    let (c, subj) = w.map_or((0, 0), |w| (w.class, w.subject));
    let row = w
        .map(|w| EnhancedCode::new(5, w.subject, w.detail))
        .and_then(presets::status_row);
    let valid = matches!(c, 2 | 4 | 5);
    StatusExplained {
        code: s.to_string(),
        class: presets::class_name(c).map(str::to_string),
        subject: presets::subject_name(subj).map(str::to_string),
        detail: row.map(|r| r.name.to_string()),
        class_ja: valid.then(|| ja_class(c).to_string()),
        subject_ja: presets::subject_name(subj).map(|_| ja_subject(subj).to_string()),
        registered: row.is_some(),
        defined_in: row.map(|r| r.defined_in.replace(';', ", ")),
        usual_basic_codes: row
            .map(|r| r.usual_basic_codes.to_string())
            .filter(|u| !u.is_empty()),
    }
}

/// The catalog's replies whose text this reply quotes (or that quote it).
fn known_replies(code: u16, text: &str) -> Vec<KnownReply> {
    let t = normalize(text);
    presets::all()
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
        .collect()
}

/// Explains a reply. `ja` adds Japanese to every human text (and makes
/// `render` write Japanese).
pub fn explain(reply: ReadReply, ja: bool) -> Explanation {
    let code = reply.code;
    let (kind, class_en, class_ja) = class_text(code);
    let text = reply.text();
    let word = reply.status_word();
    let findings = match (&reply.status, word) {
        (Some(s), Some(w)) => judge_status(code, s, w),
        _ => Findings::default(),
    };
    let status = reply.status.as_deref().map(|s| explain_status(s, word));
    let category = classify(code, word.map(|w| (w.class, w.subject, w.detail)), &text);
    let (cat_en, cat_ja) = category.describe();
    let (adv_en, adv_ja) = category.advice(code / 100 == 4);
    let (dig_en, dig_ja) = digit_text(code);
    // Hard or soft only for a failure (4xx, 5xx).
    let reason = (code >= 400).then(|| {
        super::reason::reason(super::reason::Facts {
            status: reply.status.as_deref(),
            code: Some(code),
            text: &text,
            ..Default::default()
        })
    });
    let hard_bounce = reason.map(|r| super::reason::hard(r, reply.status.as_deref(), Some(code)));
    let text_of = |en: &str, jp: &str| Text {
        en: en.to_string(),
        ja: ja.then(|| jp.to_string()),
    };
    Explanation {
        kind,
        temporary: code / 100 == 4,
        class: text_of(class_en, class_ja),
        category_digit: text_of(dig_en, dig_ja),
        meaning: presets::basic_meaning(code),
        status,
        commands: presets::commands_for(code)
            .into_iter()
            .map(String::from)
            .collect(),
        known: known_replies(code, &text),
        category,
        category_text: text_of(cat_en, cat_ja),
        advice: text_of(adv_en, adv_ja),
        reason,
        hard_bounce,
        bounce: hard_bounce.map(|h| {
            let (en, jp) = super::reason::advice(h);
            text_of(en, jp)
        }),
        inconsistencies: findings
            .inconsistencies
            .iter()
            .map(|(e, j)| text_of(e, j))
            .collect(),
        notes: findings.notes.iter().map(|(e, j)| text_of(e, j)).collect(),
        lang: if ja { Lang::Ja } else { Lang::En },
        reply,
    }
}

/// The explanation as text for people, in its language.
pub fn render(e: &Explanation) -> String {
    let mut o = String::new();
    render_reply(&mut o, e);
    render_code(&mut o, e);
    render_status(&mut o, e);
    render_verdict(&mut o, e);
    o
}

fn render_reply(o: &mut String, e: &Explanation) {
    use std::fmt::Write;
    let status = e
        .reply
        .status
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let first = e.reply.lines.first().map(String::as_str).unwrap_or("");
    let _ = writeln!(o, "{}{status} {first}", e.reply.code);
    for l in e.reply.lines.iter().skip(1) {
        let _ = writeln!(o, "    {l}");
    }
    let _ = writeln!(o);
}

fn render_code(o: &mut String, e: &Explanation) {
    use std::fmt::Write;
    let (l, lang) = (e.lang.labels(), e.lang);
    let code = e.reply.code;
    let _ = writeln!(o, "{} {code}{}{}", l.reply_code, l.colon, e.class.get(lang));
    let _ = writeln!(o, "{}{}", l.digit, e.category_digit.get(lang));
    let meaning = match lang {
        Lang::Ja => basic_meaning_ja(code).map(str::to_string),
        Lang::En => e.meaning.clone(),
    };
    if let Some(m) = meaning {
        let _ = writeln!(o, "{}{m}", l.rfc5321);
    }
    if !e.commands.is_empty() {
        let _ = writeln!(o, "{}{}", l.may_answer, e.commands.join(", "));
    }
}

fn render_status(o: &mut String, e: &Explanation) {
    use std::fmt::Write;
    let l = e.lang.labels();
    let Some(s) = &e.status else {
        let _ = writeln!(o, "{}", l.no_enhanced);
        return;
    };
    // The registry's English names, with the Japanese before them in ja.
    let named = |ja: &Option<String>, en: &Option<String>, unknown: &str| match (e.lang, ja, en) {
        (Lang::Ja, Some(j), Some(n)) => format!("{j}{}{n}{}", l.open, l.close),
        (_, _, Some(n)) => n.clone(),
        _ => unknown.to_string(),
    };
    let _ = writeln!(o, "{} {}{}", l.enhanced, s.code, l.colon.trim_end());
    let _ = writeln!(
        o,
        "{}{}",
        l.class,
        named(&s.class_ja, &s.class, l.unknown_class)
    );
    let _ = writeln!(
        o,
        "{}{}",
        l.subject,
        named(&s.subject_ja, &s.subject, l.unknown_subject)
    );
    let detail = match &s.detail {
        Some(d) if e.lang == Lang::Ja => format!("「{d}」{}", l.registry_name),
        Some(d) => d.clone(),
        None => l.not_registered.to_string(),
    };
    let _ = writeln!(o, "{}{detail}", l.detail);
    if let Some(d) = &s.defined_in {
        let usual = s
            .usual_basic_codes
            .as_ref()
            .map(|u| format!("{}{u}", l.usually_with))
            .unwrap_or_default();
        let _ = writeln!(o, "{}{d}{usual}", l.defined_in);
    }
}

fn render_verdict(o: &mut String, e: &Explanation) {
    use std::fmt::Write;
    let (l, lang) = (e.lang.labels(), e.lang);
    let kind = match e.kind {
        "temporary" => l.temporary,
        "permanent" => l.permanent,
        "success" => l.success,
        _ => l.intermediate,
    };
    let _ = writeln!(o, "{}{kind}", l.temp_or_perm);
    let _ = writeln!(o, "{}{}", l.category, e.category_text.get(lang));
    let _ = writeln!(o, "{}{}", l.what_to_do, e.advice.get(lang));
    if let (Some(b), Some(r)) = (&e.bounce, e.reason) {
        let _ = writeln!(o, "{}{}{}{r}{}", l.bounce, b.get(lang), l.open, l.close);
    }
    for k in &e.known {
        let _ = writeln!(
            o,
            "{}{}{}{}{}{}{}{}\"{}\"",
            l.known_reply,
            k.provider,
            l.open,
            k.id,
            l.at_stage,
            k.stage,
            l.close,
            l.reproduce_with,
            k.id
        );
    }
    if e.inconsistencies.is_empty() {
        let _ = writeln!(o, "{}", l.no_inconsistency);
    }
    for i in &e.inconsistencies {
        let _ = writeln!(o, "{}{}", l.inconsistency, i.get(lang));
    }
    for n in &e.notes {
        let _ = writeln!(o, "{}{}", l.note, n.get(lang));
    }
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
        assert!(e.inconsistencies.is_empty());
        assert!(e.notes[0].en.contains("not in the IANA registry"));
    }

    #[test]
    fn a_provider_pairing_is_a_note_not_an_inconsistency() {
        let e = explain(
            ReadReply::parse("452 4.2.2 The email account that you tried to reach is over quota.")
                .unwrap(),
            false,
        );
        assert!(e.inconsistencies.is_empty());
        assert_eq!(
            e.notes[0].en,
            "the registry pairs 4.2.2 with 552, not 452; providers send it like this (Gmail / Google Workspace); not an error"
        );
        let e = explain(ReadReply::parse("354 2.0.0 go ahead").unwrap(), false);
        assert!(e.inconsistencies[0]
            .en
            .contains("3xx reply, which carries no status"));
        let e = explain(ReadReply::parse("250 9.0.0 odd").unwrap(), false);
        assert!(e.inconsistencies[0].en.contains("class is 2, 4 or 5"));
    }
}
