//! Bounce categories: what kind of failure a reply reports, and what a
//! sender should do about it, in English and Japanese.

use serde::Serialize;

/// What kind of failure a reply reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Success,
    UserUnknown,
    MailboxFull,
    MailboxDisabled,
    BadDomain,
    Greylisted,
    RateLimited,
    Blocked,
    Spam,
    SenderAuthentication,
    TlsRequired,
    Authentication,
    RelayDenied,
    MessageTooBig,
    Policy,
    Protocol,
    SystemError,
    Other,
}

impl Category {
    pub fn id(self) -> &'static str {
        match self {
            Category::Success => "success",
            Category::UserUnknown => "user_unknown",
            Category::MailboxFull => "mailbox_full",
            Category::MailboxDisabled => "mailbox_disabled",
            Category::BadDomain => "bad_domain",
            Category::Greylisted => "greylisted",
            Category::RateLimited => "rate_limited",
            Category::Blocked => "blocked",
            Category::Spam => "spam",
            Category::SenderAuthentication => "sender_authentication",
            Category::TlsRequired => "tls_required",
            Category::Authentication => "authentication",
            Category::RelayDenied => "relay_denied",
            Category::MessageTooBig => "message_too_big",
            Category::Policy => "policy",
            Category::Protocol => "protocol",
            Category::SystemError => "system_error",
            Category::Other => "other",
        }
    }

    /// (English, Japanese) description.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Category::Success => ("success: nothing failed", "成功（失敗ではありません）"),
            Category::UserUnknown => (
                "user unknown: the recipient address does not exist",
                "宛先不明：受信者のアドレスが存在しません",
            ),
            Category::MailboxFull => (
                "mailbox full: the recipient is over quota",
                "メールボックス容量超過：受信者の容量が上限に達しています",
            ),
            Category::MailboxDisabled => (
                "mailbox disabled: the account is suspended or closed",
                "メールボックス停止：アカウントが停止または閉鎖されています",
            ),
            Category::BadDomain => (
                "bad domain: the recipient's domain cannot receive mail",
                "ドメイン不正：受信者のドメインはメールを受け取れません",
            ),
            Category::Greylisted => (
                "greylisted: the first attempt from an unknown sender is deferred",
                "グレイリスティング：未知の送信元からの最初の配送が保留されました",
            ),
            Category::RateLimited => (
                "rate limited: too many messages or connections",
                "送信レート制限：メールまたは接続が多すぎます",
            ),
            Category::Blocked => (
                "blocked: the sending IP or domain is blocklisted or has a poor reputation",
                "ブロック：送信元IPまたはドメインがブロックリスト掲載、または評判が低い状態です",
            ),
            Category::Spam => (
                "spam: the message was judged unsolicited or suspicious",
                "迷惑メール判定：メッセージが迷惑メールまたは不審と判断されました",
            ),
            Category::SenderAuthentication => (
                "sender authentication: SPF, DKIM or DMARC failed",
                "送信ドメイン認証の失敗：SPF・DKIM・DMARCが通りませんでした",
            ),
            Category::TlsRequired => (
                "TLS required: the receiver wants an encrypted connection",
                "TLS必須：受信側は暗号化された接続を要求しています",
            ),
            Category::Authentication => (
                "authentication failure: SMTP AUTH was refused or is required",
                "SMTP認証の失敗：認証が拒否されたか、認証が必要です",
            ),
            Category::RelayDenied => (
                "relay denied: this server does not accept mail for that domain from you",
                "中継拒否：このサーバーはその宛先への中継を受け付けません",
            ),
            Category::MessageTooBig => (
                "message too big: the message exceeds a size limit",
                "サイズ超過：メッセージがサイズ上限を超えています",
            ),
            Category::Policy => (
                "policy: refused by the receiver's policy",
                "ポリシーによる拒否：受信側のポリシーにより拒否されました",
            ),
            Category::Protocol => (
                "protocol: a syntax or command-sequence error",
                "プロトコルエラー：構文またはコマンド順序の誤りです",
            ),
            Category::SystemError => (
                "system error: a problem on the receiving side",
                "システムエラー：受信側の問題です",
            ),
            Category::Other => (
                "other: not enough information to classify",
                "その他：分類するには情報が足りません",
            ),
        }
    }

    /// (English, Japanese) advice for a sender, given whether the reply was
    /// temporary.
    pub fn advice(self, temporary: bool) -> (&'static str, &'static str) {
        if temporary {
            return match self {
                Category::Greylisted => (
                    "retry the same message after a few minutes (not seconds); it will be accepted",
                    "数分後（数秒後ではなく）に同じメッセージを再送してください。受け付けられます",
                ),
                Category::RateLimited => (
                    "slow down: retry later with exponential backoff and send fewer messages per connection and per minute",
                    "送信ペースを落としてください：指数バックオフで後から再送し、接続あたり・分あたりの通数を減らしてください",
                ),
                Category::TlsRequired => ("retry over TLS (STARTTLS); check the certificate and TLS versions", "TLS（STARTTLS）で再送してください。証明書とTLSバージョンを確認してください"),
                Category::Authentication => ("retry later; if it persists, check the credentials and mechanism", "後から再試行してください。続く場合は認証情報と方式を確認してください"),
                Category::Blocked | Category::Spam => (
                    "retry with backoff, and check the sending IP's reputation and complaint rates before it becomes a block",
                    "バックオフして再送し、ブロックに変わる前に送信IPの評判と苦情率を確認してください",
                ),
                _ => ("retry later with exponential backoff; give up after the queue lifetime (days)", "指数バックオフで後から再送してください。キューの保持期間（数日）を過ぎたら諦めてください"),
            };
        }
        match self {
            Category::Success => ("nothing to do", "対応は不要です"),
            Category::UserUnknown => (
                "stop sending to this recipient: remove or correct the address; retrying damages your reputation",
                "この宛先への送信を止めてください：アドレスを削除または修正してください。再送は送信元の評判を損ないます",
            ),
            Category::MailboxFull => (
                "do not retry this message; suppress the address after repeated full-mailbox bounces",
                "このメッセージは再送しないでください。容量超過が続く場合はアドレスを配信停止にしてください",
            ),
            Category::MailboxDisabled => ("stop sending to this recipient and remove it from your list", "この宛先への送信を止め、リストから削除してください"),
            Category::BadDomain => ("fix the domain (typo?) or remove the address", "ドメインを修正（入力ミス？）するか、アドレスを削除してください"),
            Category::Greylisted | Category::RateLimited => (
                "stop retrying this message now; lower your sending rate before sending again",
                "このメッセージの再送は止めてください。送信レートを下げてから送り直してください",
            ),
            Category::Blocked => (
                "stop sending from this IP/domain to this provider; find the listing or reputation problem and ask for delisting",
                "このIP・ドメインからの送信を止め、ブロックリスト掲載や評判の問題を調べて解除を依頼してください",
            ),
            Category::Spam => ("do not retry; review the content, links and list hygiene", "再送しないでください。内容・リンク・リストの質を見直してください"),
            Category::SenderAuthentication => (
                "fix SPF, DKIM signing and DMARC alignment for the sending domain, then send again",
                "送信ドメインのSPF・DKIM署名・DMARCのアライメントを修正してから送り直してください",
            ),
            Category::TlsRequired => ("send over TLS (STARTTLS or implicit TLS) with a valid certificate setup", "TLS（STARTTLSまたは暗黙のTLS）で送信してください"),
            Category::Authentication => ("fix the SMTP credentials, mechanism or TLS before AUTH", "SMTP認証情報・方式、またはAUTH前のTLSを修正してください"),
            Category::RelayDenied => ("send to the recipient's own MX, or authenticate to your relay", "受信者のMXに直接送るか、中継サーバーで認証してください"),
            Category::MessageTooBig => ("send a smaller message (link large attachments instead)", "メッセージを小さくしてください（大きな添付はリンクにしてください）"),
            Category::Policy => ("do not retry unchanged; read the text and contact the receiver's postmaster", "そのまま再送せず、本文を読み受信側のpostmasterに連絡してください"),
            Category::Protocol => ("fix the sending software: it sent a command the server did not accept", "送信ソフトを修正してください：サーバーが受け付けないコマンドを送っています"),
            Category::SystemError | Category::Other => ("do not retry unchanged; read the text for the reason", "そのまま再送せず、本文から理由を確認してください"),
        }
    }
}

fn has(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Classifies a reply: the words of the text first (they are the most
/// specific), then the enhanced status, then the basic code.
pub fn classify(code: u16, status: Option<(u8, u16, u16)>, text: &str) -> Category {
    let t = text.to_ascii_lowercase();
    if code / 100 == 2 || status.is_some_and(|s| s.0 == 2) {
        return Category::Success;
    }
    if has(
        &t,
        &[
            "greylist",
            "graylist",
            "grey-list",
            "try again later, greylisted",
        ],
    ) {
        return Category::Greylisted;
    }
    if has(
        &t,
        &[
            "dmarc",
            "spf",
            "dkim",
            "unauthenticated email",
            "authentication information",
            "not authenticated",
            "sender authentication",
        ],
    ) && !t.contains("smtp auth")
    {
        return Category::SenderAuthentication;
    }
    if has(
        &t,
        &[
            "tls required",
            "must issue a starttls",
            "starttls",
            "tls is required",
            "requiretls",
            "not sent over tls",
            "legacy tls",
            "encryption required",
        ],
    ) {
        return Category::TlsRequired;
    }
    if has(
        &t,
        &[
            "too quickly",
            "rate limit",
            "rate-limit",
            "ratelimit",
            "too many messages",
            "too many connections",
            "too many concurrent",
            "frequency limited",
            "unusual rate",
            "exceeded the rate",
            "sending limit",
            "rate of",
            "throttl",
            "[tss04]",
            "[ts03]",
            "try again later (tss",
            "excessive volume",
            "maximum number of",
        ],
    ) {
        return Category::RateLimited;
    }
    if has(
        &t,
        &[
            "spamhaus",
            "blocklist",
            "blacklist",
            "block list",
            "black list",
            "listed at",
            "listed on",
            "dnsbl",
            "rbl",
            "reputation",
            "banned",
            "blocked using",
            "poor reputation",
            "ip not in whitelist",
            "not authorized to send",
            "[bl21]",
            "access denied",
        ],
    ) {
        return Category::Blocked;
    }
    if has(
        &t,
        &[
            "spam",
            "unsolicited",
            "suspicious",
            "phish",
            "virus",
            "malware",
            "junk",
        ],
    ) {
        return Category::Spam;
    }
    if has(&t, &["relay", "relaying"]) && !has(&t, &["user unknown", "does not exist"]) {
        return Category::RelayDenied;
    }
    if has(
        &t,
        &[
            "over quota",
            "quota exceeded",
            "mailbox full",
            "mailbox is full",
            "exceeded storage",
            "insufficient storage",
            "mailbox size limit",
            "over its storage",
            "storage allocation",
            "is over quota",
        ],
    ) {
        return Category::MailboxFull;
    }
    if has(
        &t,
        &[
            "disabled",
            "suspended",
            "inactive",
            "deactivated",
            "not active",
            "has been closed",
            "no longer active",
            "account closed",
            "expired account",
        ],
    ) {
        return Category::MailboxDisabled;
    }
    if has(
        &t,
        &[
            "user unknown",
            "unknown user",
            "does not exist",
            "no such user",
            "no such recipient",
            "no mailbox",
            "mailbox unavailable",
            "mailbox not found",
            "recipient not found",
            "invalid recipient",
            "unknown recipient",
            "address rejected",
            "no longer available",
            "not a valid mailbox",
            "doesn't exist",
            "user not found",
            "unrouteable address",
            "recipient address rejected",
            "undeliverable address",
            "bad recipient",
            "unknown address",
            "no valid recipients",
            "not listed in",
        ],
    ) {
        return Category::UserUnknown;
    }
    if has(
        &t,
        &[
            "message size",
            "too large",
            "too big",
            "size limit",
            "exceeds the maximum",
            "message length exceeds",
        ],
    ) {
        return Category::MessageTooBig;
    }
    if has(
        &t,
        &[
            "authentication required",
            "authentication failed",
            "username and password",
            "credentials",
            "auth ",
        ],
    ) {
        return Category::Authentication;
    }
    if has(
        &t,
        &[
            "domain not found",
            "host not found",
            "unknown domain",
            "no mx",
            "null mx",
            "domain does not accept",
            "unable to find the recipient domain",
            "recipient domain",
            "name service error",
        ],
    ) && !t.contains("tls")
    {
        return Category::BadDomain;
    }
    if let Some((_, subject, detail)) = status {
        match (subject, detail) {
            (1, 1) | (1, 0) | (1, 3) | (1, 6) => return Category::UserUnknown,
            (1, 2) | (1, 10) | (4, 4) => return Category::BadDomain,
            (1, 8) | (1, 7) => return Category::Policy,
            (2, 1) => return Category::MailboxDisabled,
            (2, 2) | (3, 1) => return Category::MailboxFull,
            (2, 3) | (3, 4) => return Category::MessageTooBig,
            (4, 5) | (7, 28) => return Category::RateLimited,
            (5, _) => return Category::Protocol,
            (7, 8) | (7, 9) | (7, 11) | (7, 12) | (7, 0)
                if code == 530 || code == 535 || code == 534 || code == 538 =>
            {
                return Category::Authentication
            }
            (7, 8) | (7, 9) | (7, 11) | (7, 12) => return Category::Authentication,
            (7, 10) | (7, 29) | (7, 30) => return Category::TlsRequired,
            (7, 23) | (7, 24) | (7, 25) | (7, 26) | (7, 27) | (7, 20) | (7, 21) | (7, 22) => {
                return Category::SenderAuthentication
            }
            (7, 1) => return Category::Blocked,
            (7, _) => return Category::Policy,
            (3, _) | (4, _) => return Category::SystemError,
            (6, _) => return Category::Policy,
            _ => {}
        }
    }
    match code {
        530 | 535 | 534 | 538 | 454 if t.contains("auth") => Category::Authentication,
        500..=504 | 555 => Category::Protocol,
        550 | 551 | 553 => Category::UserUnknown,
        552 => Category::MessageTooBig,
        521 | 554 | 556 => Category::Policy,
        421 | 450 | 451 | 452 | 454 => Category::SystemError,
        _ => Category::Other,
    }
}
