//! What a session concluded, as typed facts: who greeted, each MAIL and
//! RCPT with its answer, and how each transaction ended. The transcript
//! records them and the sender report folds over them, so nothing
//! downstream re-reads command text.

use serde::{Deserialize, Serialize};

use super::policy::{Stage, Tag};
use super::session::Output;

/// The reply that decided something, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: Option<u16>,
    /// The reply's last line (the one that carries its meaning), without CRLF.
    pub reply: String,
    pub rule: Option<String>,
    /// Set when a stateful rule (rate, greylist, reputation...) decided it.
    pub tag: Option<Tag>,
}

impl Answer {
    /// The first reply among `outputs` (what the command at hand got).
    pub fn find(outputs: &[Output]) -> Option<Answer> {
        outputs.iter().find_map(|o| match o {
            Output::Send {
                bytes,
                code,
                rule,
                tag,
                ..
            } => Some(Answer {
                code: *code,
                reply: String::from_utf8_lossy(bytes)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_end()
                    .to_string(),
                rule: rule.clone(),
                tag: tag.clone(),
            }),
            _ => None,
        })
    }

    pub fn positive(&self) -> bool {
        self.code.is_some_and(|c| c < 400)
    }
}

/// How a mail transaction ended (RFC 5321 §3.3: MAIL opens it; the reply
/// to the message, RSET, a new EHLO/HELO, or the connection's end closes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxEnd {
    /// 250 after the message.
    Delivered,
    /// A negative reply at DATA/BDAT or after the message.
    Refused,
    /// The client reset it (RSET, EHLO, HELO).
    Reset,
    /// The client left (QUIT) with the transaction open.
    Abandoned,
    /// The server ended the session with the transaction open (421, idle
    /// timeout, shutdown, a scripted disconnect).
    Dropped,
}

/// One typed fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// HELO/EHLO accepted: the name the client gave, and whether this reply
    /// offered PIPELINING (RFC 2920 §3).
    Greeted {
        helo: String,
        esmtp: bool,
        pipelining: bool,
    },
    /// The greeting, HELO or EHLO was refused.
    Refused { stage: Stage, answer: Answer },
    /// MAIL was answered; a positive answer opened a transaction.
    Mail { mail_from: String, answer: Answer },
    /// One recipient's result.
    Rcpt { rcpt: String, answer: Answer },
    /// A transaction ended: its accepted recipients, how, where, and the
    /// reply that ended it (none for a reset or a silent close).
    Transaction {
        mail_from: String,
        rcpts: Vec<String>,
        end: TxEnd,
        stage: Stage,
        answer: Option<Answer>,
    },
}
