//! What a session concluded, as typed facts: who greeted, each MAIL and
//! RCPT with its answer, and how each transaction ended. The transcript
//! records them and the sender report folds over them, so nothing
//! downstream re-reads command text.

use serde::{Deserialize, Serialize};

use super::lossy;
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

/// The last line of a reply as sent (without its line end), found from
/// the end: only it is read as text.
fn last_line(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    memchr::memrchr(b'\n', body).map_or(body, |i| &body[i + 1..])
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
                reply: lossy(last_line(bytes)).trim_end().to_string(),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::proto::{Policy, Session, SessionConfig};
    use crate::scenario::{parse, Engine};

    #[test]
    fn the_answer_is_the_last_line_of_the_reply() {
        for (sent, last) in [
            (&b"250 2.1.0 Ok\r\n"[..], "250 2.1.0 Ok"),
            (b"550-5.1.1 a\r\n550 5.1.1 b\r\n", "550 5.1.1 b"),
            (b"421 bye", "421 bye"),
            (b"250-a\n250 b \r\n", "250 b"),
            (b"250 a\r\n\r\n", ""),
            (b"", ""),
            (b"250 \xff\r\n", "250 \u{fffd}"),
        ] {
            let out = [Output::Send {
                bytes: sent.to_vec(),
                drip: None,
                code: Some(250),
                rule: None,
                tag: None,
            }];
            assert_eq!(Answer::find(&out).unwrap().reply, last, "{sent:?}");
        }
    }

    /// Facts (and closes) a session emits for these reads.
    fn facts(toml: &str, reads: &[&str]) -> Vec<String> {
        let s = parse(toml, "t.toml", "t").unwrap();
        let policy: Arc<dyn Policy> = Arc::new(Engine::new(Arc::new(s), Instant::now()));
        let peer = "192.0.2.1:40000".parse().unwrap();
        let mut session = Session::new(Arc::new(SessionConfig::default()), policy, peer, 1);
        let mut out = session.greet(Instant::now());
        for r in reads {
            out.extend(session.feed(r.replace('\n', "\r\n").as_bytes(), Instant::now()));
        }
        out.into_iter()
            .filter_map(|o| match o {
                Output::Fact(Fact::Greeted {
                    helo, pipelining, ..
                }) => Some(format!("greeted {helo} pipelining={pipelining}")),
                Output::Fact(Fact::Refused { stage, answer }) => {
                    Some(format!("refused {} {}", stage.name(), answer.reply))
                }
                Output::Fact(Fact::Mail { mail_from, answer }) => {
                    Some(format!("mail {mail_from} {:?}", answer.code))
                }
                Output::Fact(Fact::Rcpt { rcpt, answer }) => {
                    Some(format!("rcpt {rcpt} {:?}", answer.code))
                }
                Output::Fact(Fact::Transaction {
                    rcpts,
                    end,
                    stage,
                    answer,
                    ..
                }) => Some(format!(
                    "tx {end:?} at {} {rcpts:?} {:?}",
                    stage.name(),
                    answer.and_then(|a| a.code)
                )),
                Output::Close(_) => Some("close".into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_delivered_transaction_and_a_reset() {
        let got = facts(
            "",
            &[
                "EHLO c.test\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<x@y.test>\n",
                "DATA\n",
                "hi\n.\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<z@y.test>\n",
                "RSET\n",
            ],
        );
        assert_eq!(
            got,
            [
                "greeted c.test pipelining=true",
                "mail a@b.test Some(250)",
                "rcpt x@y.test Some(250)",
                "tx Delivered at message [\"x@y.test\"] Some(250)",
                "mail a@b.test Some(250)",
                "rcpt z@y.test Some(250)",
                "tx Reset at rset [\"z@y.test\"] None",
            ]
        );
    }

    #[test]
    fn a_421_at_rcpt_drops_the_transaction_before_the_close() {
        let got = facts(
            "[[rule]]\non = \"rcpt\"\nwhen = { rcpt = \"b*\" }\nreply = \"421 4.7.0 bye\"\n",
            &[
                "HELO c\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<a@y.test>\n",
                "RCPT TO:<b@y.test>\n",
            ],
        );
        assert_eq!(
            got,
            [
                "greeted c pipelining=false",
                "mail a@b.test Some(250)",
                "rcpt a@y.test Some(250)",
                "rcpt b@y.test Some(421)",
                "tx Dropped at rcpt [\"a@y.test\"] None",
                "close",
            ]
        );
    }

    #[test]
    fn refused_at_data_is_recorded_once_and_quit_abandons() {
        let got = facts(
            "[[rule]]\non = \"data\"\nreply = \"554 5.7.1 no\"\n",
            &[
                "EHLO c\n",
                "MAIL FROM:<a@b.test>\n",
                "RCPT TO:<x@y.test>\n",
                "DATA\n",
                "RSET\n",
                "MAIL FROM:<a@b.test>\n",
                "QUIT\n",
            ],
        );
        assert_eq!(
            got,
            [
                "greeted c pipelining=true",
                "mail a@b.test Some(250)",
                "rcpt x@y.test Some(250)",
                "tx Refused at data [\"x@y.test\"] Some(554)",
                "mail a@b.test Some(250)",
                "tx Abandoned at rcpt [] None",
                "close",
            ]
        );
    }

    #[test]
    fn a_refused_greeting_and_helo() {
        let got = facts(
            "[[rule]]\non = \"connect\"\nreply = \"554 5.7.1 go away\"\n",
            &["EHLO c\n"],
        );
        assert_eq!(
            got,
            [
                "refused connect 554 5.7.1 go away",
                "refused ehlo 503 5.5.1 Error: no SMTP service here, send QUIT"
            ]
        );
    }
}
