//! The interface between the session and whatever decides its replies.
//!
//! The session asks a [`Policy`] at every stage; the scenario engine is the
//! real implementation, [`Healthy`] the empty one. Keeping this a trait keeps
//! `proto/` free of scenario and state concerns.
//!
//! A decision that needs I/O (a counter in Redis) does not block: the policy
//! answers [`Asked::Suspend`] with the store operation to perform and a
//! [`Cursor`] saying where it stopped. The session carries both without
//! reading them (an [`Output::Store`](super::Output::Store)), and the policy
//! continues from the cursor in [`Policy::resume`] once the driver has the
//! answer.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::command::Command;
use super::reply::Reply;
use crate::state::{Answer, Done, Op};

/// A point in the SMTP dialogue where a scenario rule can act. Serialised
/// by its [`Stage::name`] (transcripts).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connect,
    Ehlo,
    Helo,
    Starttls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Message,
    Rset,
    Noop,
    Vrfy,
    Expn,
    Help,
    Quit,
    Unknown,
}

impl Stage {
    pub const ALL: [Stage; 16] = [
        Stage::Connect,
        Stage::Ehlo,
        Stage::Helo,
        Stage::Starttls,
        Stage::Auth,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Message,
        Stage::Rset,
        Stage::Noop,
        Stage::Vrfy,
        Stage::Expn,
        Stage::Help,
        Stage::Quit,
        Stage::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Ehlo => "ehlo",
            Stage::Helo => "helo",
            Stage::Starttls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Message => "message",
            Stage::Rset => "rset",
            Stage::Noop => "noop",
            Stage::Vrfy => "vrfy",
            Stage::Expn => "expn",
            Stage::Help => "help",
            Stage::Quit => "quit",
            Stage::Unknown => "unknown",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.name() == s)
    }

    /// True for stages that are a command from the client (what `any`
    /// covers): not the connection itself, nor the end of a message.
    pub fn is_command(self) -> bool {
        !matches!(self, Stage::Connect | Stage::Message)
    }
}

/// What the session knows when it asks for a decision.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub stage: Stage,
    pub session_id: u64,
    pub command: Option<&'a Command>,
    pub client_ip: IpAddr,
    pub helo: Option<&'a str>,
    /// The reverse-path of this transaction (at `mail`: of this command).
    pub mail_from: Option<&'a str>,
    /// At `rcpt`: the recipient of this command.
    pub rcpt: Option<&'a str>,
    /// Recipients accepted so far in this transaction.
    pub rcpts: &'a [String],
    pub tls: bool,
    pub authenticated: bool,
    /// The user name of AUTH: at `auth` the one just given, later the one
    /// that authenticated.
    pub auth_user: Option<&'a str>,
    /// At `mail`: the declared SIZE=; at `message`: the real size.
    pub size: Option<u64>,
    /// At `message`: the message as received (up to the size limit).
    pub message: Option<&'a [u8]>,
}

/// What to do instead of (or around) the healthy reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The healthy server's reply (syntax and sequence errors included).
    Accept,
    Reply(Reply),
    /// Bytes sent exactly as given.
    Raw(Vec<u8>),
    /// Close without a reply.
    Disconnect,
    /// Read nothing more and never reply.
    Hang,
}

/// Why a stateful rule applied, for transcripts and the sender report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Over a rate limit of `max` per `window`.
    Rate { max: u64, window: Duration },
    /// `max` sessions of this key were already open.
    Concurrent { max: u64 },
    /// Greylisted: retry after this long from the first attempt.
    Greylist { retry_after: Duration },
    /// The key's recipients in the window: `failures` of `attempts` refused.
    Reputation { attempts: u64, failures: u64 },
}

/// A decision for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The rule that decided, for transcripts.
    pub rule: Option<String>,
    pub outcome: Outcome,
    /// Wait this long before acting.
    pub delay: Duration,
    /// Close after the reply; `None` means "only after a 421".
    pub close: Option<bool>,
    /// Send the reply a few bytes at a time with this pause.
    pub drip: Option<Duration>,
    pub tag: Option<Tag>,
}

impl Decision {
    pub fn accept() -> Self {
        Self {
            rule: None,
            outcome: Outcome::Accept,
            delay: Duration::ZERO,
            close: None,
            drip: None,
            tag: None,
        }
    }
}

/// Where a suspended decision goes on: only the policy that made it reads
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub u32);

/// A policy's answer to [`Policy::ask`] or [`Policy::resume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// Decided (None: the healthy reply).
    Decided(Option<Decision>),
    /// Perform `op`, then call [`Policy::resume`] with `at` and its answer,
    /// with the same context.
    Suspend { at: Cursor, op: Op },
}

/// Decides replies. Implementations must be cheap: this is called for every
/// command.
pub trait Policy: Send + Sync {
    fn ask(&self, ctx: &Context<'_>, now: Instant) -> Asked;

    /// Goes on with a decision suspended at `at`, `done` being the answer
    /// to its op. `ctx` is the context of the `ask` that suspended.
    fn resume(&self, _ctx: &Context<'_>, _now: Instant, _at: Cursor, _done: Answer<Done>) -> Asked {
        Asked::Decided(None)
    }

    /// The reply a recipient got at RCPT (`tag`: the stateful rule that
    /// decided it, if any). Used to keep reputation. Returns what is left
    /// to perform (a side effect whose answer nobody waits for).
    fn observe_rcpt(
        &self,
        _ctx: &Context<'_>,
        _code: u16,
        _tag: Option<&Tag>,
        _now: Instant,
    ) -> Option<Op> {
        None
    }

    /// The session ended (counts of open sessions go down). Returns what is
    /// left to perform.
    fn session_closed(&self, _session_id: u64) -> Option<Op> {
        None
    }
}

/// A policy with no rules: the healthy MTA.
#[derive(Debug, Default, Clone, Copy)]
pub struct Healthy;

impl Policy for Healthy {
    fn ask(&self, _: &Context<'_>, _: Instant) -> Asked {
        Asked::Decided(None)
    }
}
