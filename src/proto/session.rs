//! The SMTP session state machine, without I/O.
//!
//! [`Session::feed`] takes bytes as they arrived and returns [`Output`]s for
//! the driver to perform in order: wait, send, capture a message, close. The
//! session never sleeps, reads or writes. Which decoder eats the next bytes
//! (command lines, DATA, a BDAT chunk) is kept apart from the envelope facts.
//!
//! At every stage the [`Policy`] speaks first; the healthy-MTA checks are the
//! fallback (`Outcome::Accept`). A scripted positive reply makes the command
//! take effect (a 250 to MAIL starts the transaction), any other does not.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use super::auth::{self, AuthConfig, Exchange, Step};
use super::budget::MemoryBudget;
use super::command::{parse_bdat, parse_number, parse_path, Command, PathArg, PathError, Verb};
use super::data::{Body, DataDecoder};
use super::fact::{Answer, Fact, TxEnd};
use super::line::{Frame, LineFramer};
use super::lossy;
use super::policy::{Asked, Context, Cursor, Decision, Outcome, Policy, Stage, Tag};
use super::reply::{defaults, Reply};
use crate::state::{Done, Op, Unavailable};

/// What the session is configured with (from the scenario's `[server]`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub hostname: String,
    /// Text after `220 <hostname> `.
    pub greeting: String,
    /// Largest message accepted, in bytes (advertised as SIZE).
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub require_tls: bool,
    /// EHLO keywords, in order (`SIZE` gets the limit appended).
    pub extensions: Vec<String>,
    /// Offer STARTTLS (the driver has a TLS configuration).
    pub starttls: bool,
    /// Offer AUTH.
    pub auth: Option<Arc<AuthConfig>>,
    /// What a bare LF (one without CR before it) gets.
    pub bare_lf: BareLf,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    /// The healthy replies built from the fields above, once.
    pub canned: Canned,
}

/// Healthy replies that depend only on the configuration, built at first
/// use and shared by all its sessions: the EHLO reply alone was a dozen
/// allocations a connection. A clone of the configuration starts with
/// none, so a clone changed afterwards never answers with the old texts;
/// a configuration built from another's fields takes
/// `..SessionConfig::default()` for the rest, never `..other`, which
/// would carry the other's replies over (`server::slot` builds a new one
/// for every start, reload and scenario installed).
#[derive(Debug, Default)]
pub struct Canned {
    greeting: OnceLock<Reply>,
    helo: OnceLock<Reply>,
    /// Indexed by whether the session is under TLS (no STARTTLS then).
    ehlo: [OnceLock<Reply>; 2],
}

impl Clone for Canned {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl SessionConfig {
    fn greeting_reply(&self) -> &Reply {
        self.canned
            .greeting
            .get_or_init(|| defaults::greeting(&self.hostname, &self.greeting))
    }

    fn helo_reply(&self) -> &Reply {
        self.canned
            .helo
            .get_or_init(|| defaults::helo(&self.hostname))
    }

    fn ehlo_reply(&self, tls: bool) -> &Reply {
        self.canned.ehlo[usize::from(tls)].get_or_init(|| self.build_ehlo(tls))
    }

    fn build_ehlo(&self, tls: bool) -> Reply {
        let mut lines = vec![self.hostname.clone()];
        for ext in &self.extensions {
            if ext.eq_ignore_ascii_case("SIZE") && self.max_message_size > 0 {
                lines.push(format!("SIZE {}", self.max_message_size));
            } else {
                lines.push(ext.clone());
            }
        }
        if self.starttls && !tls {
            lines.push("STARTTLS".into());
        }
        if let Some(a) = &self.auth {
            let names: Vec<&str> = a.mechanisms.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        }
        Reply {
            code: 250,
            enhanced: None,
            lines,
        }
    }
}

/// The fixed-text healthy replies of the commands of every transaction
/// (MAIL, RCPT, DATA, QUIT, RSET and NOOP), built once: built per command,
/// each was two allocations and two frees. The rarer ones (VRFY, EXPN,
/// HELP, AUTH, STARTTLS) are still built when sent.
struct Fixed {
    ok: Reply,
    mail_ok: Reply,
    rcpt_ok: Reply,
    start_data: Reply,
    bye: Reply,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| Fixed {
    ok: defaults::ok(),
    mail_ok: defaults::mail_ok(),
    rcpt_ok: defaults::rcpt_ok(),
    start_data: defaults::start_data(),
    bye: defaults::bye(),
});

/// The reply a command gets from a healthy server, or the one a check
/// refuses it with: borrowed when it is one of the canned replies.
type HealthyReply<'a> = Result<Cow<'a, Reply>, Reply>;

/// `[server] bare_lf`: how a bare LF in a command line or in DATA is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Kept and flagged, never taken as a line end in DATA (the default;
    /// what most receivers did until 2024).
    #[default]
    Accept,
    /// Answered `521 5.5.2 <host> Error: bare <LF> received`, then the
    /// session closes: Postfix's `smtpd_forbid_bare_newline = reject`
    /// (the SMTP smuggling defence, CVE-2023-51764).
    Reject,
}

impl BareLf {
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "accept" => Some(Self::Accept),
            "reject" => Some(Self::Reject),
            _ => None,
        }
    }
}

/// Healthy-MTA defaults, shared with the scenario's `[server]`.
pub const DEFAULT_HOSTNAME: &str = "mailfault.test";
pub const DEFAULT_GREETING: &str = "ESMTP mailfault";
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 35_000_000;
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
pub const DEFAULT_EXTENSIONS: [&str; 7] = [
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "DSN",
];

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            hostname: DEFAULT_HOSTNAME.into(),
            greeting: DEFAULT_GREETING.into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            require_tls: false,
            extensions: DEFAULT_EXTENSIONS.map(String::from).to_vec(),
            starttls: false,
            auth: None,
            bare_lf: BareLf::Accept,
            max_line_length: super::line::MAX_COMMAND_LINE,
            canned: Canned::default(),
        }
    }
}

impl SessionConfig {
    /// An extension's keyword is the first word of its EHLO line.
    fn offers(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|e| {
            e.get(..keyword.len())
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
                && matches!(e.as_bytes().get(keyword.len()), None | Some(b' '))
        })
    }
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent QUIT.
    Quit,
    /// A reply that closes (421, or `close = true`).
    AfterReply(u16),
    /// A rule's `action = "disconnect"`.
    Disconnect,
    /// No command within the idle timeout.
    IdleTimeout,
    /// The server is shutting down.
    Shutdown,
    /// Bytes arrived after STARTTLS before the handshake (RFC 3207 §4.2
    /// command injection); they are never run.
    TlsInjection,
}

impl CloseReason {
    pub fn name(&self) -> String {
        match self {
            CloseReason::Quit => "quit".into(),
            CloseReason::AfterReply(code) => format!("reply {code}"),
            CloseReason::Disconnect => "disconnect".into(),
            CloseReason::IdleTimeout => "idle timeout".into(),
            CloseReason::Shutdown => "shutdown".into(),
            CloseReason::TlsInjection => "bytes pipelined after STARTTLS".into(),
        }
    }
}

/// A message that reached the end of DATA or the last BDAT chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub id: String,
    pub client: SocketAddr,
    pub helo: Option<String>,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub body: Vec<u8>,
    pub size: u64,
    pub tls: bool,
    pub bare_lf: bool,
    pub bare_cr: bool,
    pub chunked: bool,
    /// True when the reply to it was positive.
    pub accepted: bool,
    pub reply_code: Option<u16>,
}

/// One thing for the driver to do (or record), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A command line arrived (for the transcript). `pipelined` is true when
    /// more bytes followed it before its reply could have been sent.
    Command {
        line: String,
        stage: Option<Stage>,
        pipelined: bool,
    },
    /// Wait before the next output.
    Wait(Duration),
    /// Send these bytes (`drip`: a few at a time with that pause).
    Send {
        bytes: Vec<u8>,
        drip: Option<Duration>,
        code: Option<u16>,
        rule: Option<String>,
        tag: Option<Tag>,
    },
    /// A message arrived (accepted or not).
    Message(Box<Captured>),
    /// What the session concluded (for the transcript and the report).
    Fact(Fact),
    /// Begin the TLS handshake now.
    StartTls,
    /// Read nothing more and never reply; the driver closes after its idle
    /// timeout.
    Hang {
        rule: Option<String>,
    },
    Close(CloseReason),
    /// The decision at hand waits for this store operation: always the
    /// last output of its batch. Perform it, then give its answer to
    /// [`Session::resume`]; until then the session takes no input.
    Store(Op),
    /// A store operation nobody waits for (reputation outcomes): perform
    /// it in order, its answer is dropped.
    Effect(Op),
}

/// Which decoder eats the next bytes.
#[derive(Debug)]
enum Reader {
    Command,
    /// An AUTH exchange waits for the client's next line.
    Sasl(Exchange),
    Data(DataDecoder),
    /// Inside a BDAT chunk.
    Chunk(Box<Chunk>),
    /// After close, hang or STARTTLS: input is not processed.
    Stopped,
}

#[derive(Debug)]
struct Chunk {
    remaining: u64,
    last: bool,
    /// Outputs decided at the BDAT command, sent once the chunk is read.
    pending: Vec<Output>,
    /// The chunk's bytes belong to the message (false: drained).
    keep: bool,
}

#[derive(Debug, Default)]
struct Transaction {
    mail_from: String,
    rcpts: Vec<String>,
    /// Its end was recorded already (refused at DATA, the session goes on).
    ended: bool,
    rcpt_attempts: usize,
    /// MAIL carried SMTPUTF8 (RFC 6531 §3.4): non-ASCII addresses are fine.
    smtputf8: bool,
    /// MAIL's SIZE parameter, checked against the memory budget at DATA.
    declared_size: Option<u64>,
    /// BDAT has been used in this transaction: the body so far.
    chunks: Option<DataDecoder>,
}

/// What a suspended decision was part of, to run again (with the store's
/// answer) on [`Session::resume`]. Each handler asks the policy before it
/// changes anything, so running it again from its input is the
/// continuation.
#[derive(Debug)]
enum Replay {
    Greet,
    /// A command line (its `Output::Command` was already given).
    Line {
        line: Vec<u8>,
        pipelined: bool,
    },
    /// The end of an AUTH exchange.
    AuthDone {
        user: String,
        ok: bool,
    },
    /// The end of a message.
    Message {
        body: Body,
        chunked: bool,
        forced: Option<Reply>,
    },
}

/// A decision waits for the store (see [`Output::Store`]).
#[derive(Debug)]
struct Suspended;

static QUEUE_ID: AtomicU64 = AtomicU64::new(0);

fn next_queue_id() -> String {
    let n = QUEUE_ID.fetch_add(1, Ordering::Relaxed);
    // The process id, asked once: it is a system call, and this runs for
    // every message.
    static PID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *PID.get_or_init(|| u64::from(std::process::id()));
    queue_id(seed, n)
}

/// Twelve upper-case hex digits: five of the process id, seven of the
/// counter (Postfix's queue ids look alike). Written by hand: `format!`
/// with widths cost about 900 instructions a message.
pub(super) fn queue_id(seed: u64, n: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let v = (seed & 0xF_FFFF) << 28 | (n & 0xFFF_FFFF);
    let mut id = String::with_capacity(12);
    for i in (0..12).rev() {
        id.push(char::from(HEX[(v >> (i * 4)) as usize & 0xF]));
    }
    id
}

/// A decision that waits for the store, and what waits behind it.
struct Wait {
    /// Where the policy stopped.
    at: Cursor,
    /// What to run again when it is answered.
    replay: Option<Replay>,
    /// Input that arrived behind the suspended command, unprocessed.
    held: Vec<u8>,
}

/// One SMTP session.
pub struct Session {
    cfg: Arc<SessionConfig>,
    policy: Arc<dyn Policy>,
    client: SocketAddr,
    id: u64,
    now: Instant,
    reader: Reader,
    framer: LineFramer,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    authenticated: bool,
    auth_user: Option<String>,
    /// The greeting was negative: RFC 5321 §3.1, only QUIT is served.
    refused_at_connect: bool,
    tx: Option<Transaction>,
    /// The tag of the decision being sent (moved into its `Output::Send`).
    tag: Option<Tag>,
    out: Vec<Output>,
    /// The server's budget for message bytes in flight (None: unbounded).
    budget: Option<Arc<MemoryBudget>>,
    /// A decision waiting for the store (boxed: a session keeps it only
    /// while it waits, and sessions are many).
    wait: Option<Box<Wait>>,
    /// The store's answer, for the decision run again.
    answer: Option<Box<(Cursor, Result<Done, Unavailable>)>>,
    /// A command line runs again: its `Output::Command` was given.
    replaying: bool,
}

impl Session {
    pub fn new(
        cfg: Arc<SessionConfig>,
        policy: Arc<dyn Policy>,
        client: SocketAddr,
        id: u64,
    ) -> Self {
        let line_limit = cfg.max_line_length;
        Self {
            cfg,
            policy,
            client,
            id,
            now: Instant::now(),
            reader: Reader::Command,
            framer: LineFramer::new(line_limit),
            helo: None,
            esmtp: false,
            tls: false,
            authenticated: false,
            auth_user: None,
            refused_at_connect: false,
            tx: None,
            tag: None,
            out: Vec::new(),
            budget: None,
            wait: None,
            answer: None,
            replaying: false,
        }
    }

    /// Message buffers reserve their bytes in this budget.
    pub fn set_budget(&mut self, budget: Arc<MemoryBudget>) {
        self.budget = Some(budget);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The connection is under TLS from its first byte (implicit TLS).
    pub fn set_tls(&mut self) {
        self.tls = true;
    }

    /// True while message bytes (DATA or a BDAT chunk) are being read.
    pub fn in_body(&self) -> bool {
        matches!(self.reader, Reader::Data(_) | Reader::Chunk(_))
    }

    /// True once the session will process no more input.
    pub fn is_stopped(&self) -> bool {
        matches!(self.reader, Reader::Stopped)
    }

    /// True while a decision waits for the store: the driver performs the
    /// `Output::Store` and calls [`Session::resume`] before it reads more.
    pub fn is_suspended(&self) -> bool {
        self.wait.is_some()
    }

    /// Goes on with the decision that waited for the store, `done` being
    /// the answer to its `Output::Store`; then with the input held behind
    /// it. Outputs as `feed` gives them (another `Output::Store` may end
    /// them).
    pub fn resume(&mut self, done: Result<Done, Unavailable>, now: Instant) -> Vec<Output> {
        self.now = now;
        let Some(Wait {
            at,
            replay: Some(replay),
            held,
        }) = self.wait.take().map(|w| *w)
        else {
            return std::mem::take(&mut self.out);
        };
        self.answer = Some(Box::new((at, done)));
        match replay {
            Replay::Greet => self.greet_now(),
            Replay::Line { line, pipelined } => {
                self.replaying = true;
                self.on_line(line, pipelined);
                self.replaying = false;
            }
            Replay::AuthDone { user, ok } => self.auth_step(Step::Done { user, ok }),
            Replay::Message {
                body,
                chunked,
                forced,
            } => self.finish_message(body, chunked, forced),
        }
        self.answer = None;
        if let Some(w) = &mut self.wait {
            // Waiting again: what was held stays behind the new decision.
            w.held = held;
        } else if self.is_stopped() {
            if !held.is_empty() {
                self.after_stop(&held);
            }
        } else {
            self.feed_input(&held);
        }
        std::mem::take(&mut self.out)
    }

    /// A handler stopped at a decision that waits: keep what runs it again
    /// (unless a deeper one kept something more precise).
    fn suspended_at(&mut self, replay: impl FnOnce() -> Replay) {
        if let Some(w) = self.wait.as_mut().filter(|w| w.replay.is_none()) {
            w.replay = Some(replay());
        }
    }

    /// The greeting (stage `connect`).
    pub fn greet(&mut self, now: Instant) -> Vec<Output> {
        self.now = now;
        self.greet_now();
        std::mem::take(&mut self.out)
    }

    fn greet_now(&mut self) {
        let Ok(decision) = self.decide(Stage::Connect, None, Facts::default()) else {
            self.suspended_at(|| Replay::Greet);
            return;
        };
        let cfg = Arc::clone(&self.cfg);
        let positive = self.resolve(decision, Ok(Cow::Borrowed(cfg.greeting_reply())));
        if !positive {
            self.refused_at_connect = true;
            self.fact_after_reply(0, |answer| Fact::Refused {
                stage: Stage::Connect,
                answer,
            });
        }
    }

    /// Gives the session an empty vector to collect its next outputs in:
    /// a driver that hands back each batch's vector once performed reuses
    /// one allocation, where each batch grew a new one (three or four
    /// allocations a message). Ignored when the session already has room
    /// for outputs (never between batches: each takes its vector).
    pub fn lend(&mut self, mut buf: Vec<Output>) {
        if self.out.capacity() == 0 {
            buf.clear();
            self.out = buf;
        }
    }

    /// Processes bytes from the client.
    pub fn feed(&mut self, input: &[u8], now: Instant) -> Vec<Output> {
        self.now = now;
        if let Some(w) = &mut self.wait {
            // Not to be read before the decision in front of it.
            w.held.extend_from_slice(input);
        } else {
            self.feed_input(input);
        }
        std::mem::take(&mut self.out)
    }

    fn feed_input(&mut self, input: &[u8]) {
        let mut pos = 0;
        while pos < input.len() {
            if let Some(w) = &mut self.wait {
                // RFC 2920 §3.1: pipelined commands are taken in order; the
                // ones behind a waiting decision wait with it.
                w.held.extend_from_slice(&input[pos..]);
                break;
            }
            let rest = &input[pos..];
            match &mut self.reader {
                Reader::Stopped => break,
                Reader::Command | Reader::Sasl(_) => {
                    let (n, frame) = self.framer.push(rest);
                    pos += n;
                    let pipelined = pos < input.len();
                    match frame {
                        Some(Frame::Line(line)) if self.rejects_bare_lf() => {
                            self.out.push(Output::Command {
                                line: lossy(&line).into_owned(),
                                stage: None,
                                pipelined,
                            });
                            self.reject_bare_lf();
                        }
                        Some(Frame::Line(line)) => {
                            match std::mem::replace(&mut self.reader, Reader::Command) {
                                Reader::Sasl(state) => self.on_sasl_line(state, &line, pipelined),
                                other => {
                                    self.reader = other;
                                    self.on_line(line, pipelined);
                                }
                            }
                        }
                        Some(Frame::TooLong) => {
                            self.out.push(Output::Command {
                                line: format!(
                                    "[line longer than {} octets]",
                                    self.cfg.max_line_length
                                ),
                                stage: None,
                                pipelined,
                            });
                            self.send_reply(&defaults::line_too_long(), None, None);
                        }
                        None => {}
                    }
                    if matches!(self.reader, Reader::Stopped)
                        && pos < input.len()
                        && !self.is_suspended()
                    {
                        self.after_stop(&input[pos..]);
                    }
                }
                Reader::Data(_) => pos += self.feed_data(rest),
                Reader::Chunk(chunk) => {
                    let n = (chunk.remaining.min(rest.len() as u64)) as usize;
                    chunk.remaining -= n as u64;
                    pos += n;
                    if chunk.keep {
                        if let Some(d) = self.tx.as_mut().and_then(|t| t.chunks.as_mut()) {
                            d.push_raw(&rest[..n]);
                        }
                    }
                    if chunk.remaining == 0 {
                        self.end_chunk();
                    }
                }
            }
        }
    }

    /// The client sent nothing for the idle timeout.
    pub fn idle_timeout(&mut self) -> Vec<Output> {
        self.forget_suspended();
        if !matches!(self.reader, Reader::Stopped) {
            self.send_reply(
                &defaults::idle_timeout(&self.cfg.hostname),
                None,
                Some(false),
            );
            self.stop(CloseReason::IdleTimeout);
        }
        std::mem::take(&mut self.out)
    }

    /// The server is shutting down and the grace period is over.
    pub fn shutdown(&mut self) -> Vec<Output> {
        self.forget_suspended();
        if !matches!(self.reader, Reader::Stopped) {
            self.send_reply(
                &defaults::shutting_down(&self.cfg.hostname),
                None,
                Some(false),
            );
            self.stop(CloseReason::Shutdown);
        }
        std::mem::take(&mut self.out)
    }

    /// A decision that waited will not be resumed: what it held goes (a
    /// message body gives its memory back).
    fn forget_suspended(&mut self) {
        self.wait = None;
    }

    /// The TLS handshake completed: RFC 3207 §4.2, the server forgets what it
    /// knew (EHLO must be sent again).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.authenticated = false;
        self.auth_user = None;
        self.framer = LineFramer::new(self.cfg.max_line_length);
        self.reader = Reader::Command;
    }

    /// Message bytes after DATA; returns how many were used.
    fn feed_data(&mut self, input: &[u8]) -> usize {
        let Reader::Data(decoder) = &mut self.reader else {
            return 0;
        };
        let (n, body) = decoder.feed(input);
        let bare = decoder.saw_bare_lf() && self.cfg.bare_lf == BareLf::Reject;
        let body = match (body, bare) {
            // Refused at the first bare LF: the message ends there.
            (None, true) => match std::mem::replace(&mut self.reader, Reader::Command) {
                Reader::Data(d) => Some(d.into_body()),
                _ => None,
            },
            (body, _) => body,
        };
        if let Some(body) = body {
            self.reader = Reader::Command;
            if bare {
                let reply = defaults::bare_lf(&self.cfg.hostname);
                self.finish_message(body, false, Some(reply));
                self.stop(CloseReason::AfterReply(521));
            } else {
                self.on_message(body, false);
            }
        }
        n
    }

    /// The command line just framed ended in a bare LF and the scenario
    /// refuses that.
    fn rejects_bare_lf(&self) -> bool {
        self.cfg.bare_lf == BareLf::Reject && self.framer.ended_bare()
    }

    /// Postfix 3.9 `smtpd_forbid_bare_newline = reject`: answer and close.
    fn reject_bare_lf(&mut self) {
        let reply = defaults::bare_lf(&self.cfg.hostname);
        self.send_reply(&reply, None, Some(true));
    }

    fn after_stop(&mut self, rest: &[u8]) {
        if self.out.iter().any(|o| matches!(o, Output::StartTls)) {
            // RFC 3207 §4.2 / CVE-2011-0411: never run commands sent in the
            // clear before the handshake. Record them and close.
            self.out.retain(|o| !matches!(o, Output::StartTls));
            self.out.push(Output::Command {
                line: lossy(rest).into_owned(),
                stage: None,
                pipelined: true,
            });
            self.out.push(Output::Close(CloseReason::TlsInjection));
        }
    }

    fn stop(&mut self, reason: CloseReason) {
        self.reader = Reader::Stopped;
        if let Some(end) = self.end_tx(TxEnd::Dropped, self.stage_reached(), None) {
            self.out.push(end);
        }
        self.out.push(Output::Close(reason));
    }

    /// Where an open transaction got to: the message once DATA or BDAT
    /// was accepted, else its recipients.
    fn stage_reached(&self) -> Stage {
        match (&self.reader, &self.tx) {
            (Reader::Data(_) | Reader::Chunk(_), _) => Stage::Message,
            (_, Some(t)) if t.chunks.is_some() => Stage::Message,
            _ => Stage::Rcpt,
        }
    }

    /// Closes the open transaction, returning its Transaction fact (None:
    /// no transaction, or its end was recorded already).
    fn end_tx(&mut self, end: TxEnd, stage: Stage, answer: Option<Answer>) -> Option<Output> {
        let tx = self.tx.take()?;
        (!tx.ended).then_some(Output::Fact(Fact::Transaction {
            mail_from: tx.mail_from,
            rcpts: tx.rcpts,
            end,
            stage,
            answer,
        }))
    }

    /// Records a fact about the reply sent from `at` on, right after that
    /// reply (and before a close it caused).
    fn fact_after_reply(&mut self, at: usize, fact: impl FnOnce(Answer) -> Fact) {
        let Some(answer) = Answer::find(&self.out[at..]) else {
            return;
        };
        let pos = self.out[at..]
            .iter()
            .position(|o| matches!(o, Output::Send { .. }))
            .map_or(self.out.len(), |i| at + i + 1);
        self.out.insert(pos, Output::Fact(fact(answer)));
    }

    /// Asks the policy (or, running again after a suspension, resumes it
    /// with the store's answer). Err: the decision waits for the store; an
    /// `Output::Store` was given and the handler must stop unchanged.
    fn decide(
        &mut self,
        stage: Stage,
        command: Option<&Command>,
        facts: Facts<'_>,
    ) -> Result<Option<Decision>, Suspended> {
        let answer = self.answer.take().map(|a| *a);
        let ctx = self.context(stage, command, facts);
        let asked = match answer {
            Some((at, done)) => self.policy.resume(&ctx, self.now, at, done),
            None => self.policy.ask(&ctx, self.now),
        };
        match asked {
            Asked::Decided(d) => Ok(d),
            Asked::Suspend { at, op } => {
                self.out.push(Output::Store(op));
                self.wait = Some(Box::new(Wait {
                    at,
                    replay: None,
                    held: Vec::new(),
                }));
                Err(Suspended)
            }
        }
    }

    fn context<'a>(
        &'a self,
        stage: Stage,
        command: Option<&'a Command>,
        facts: Facts<'a>,
    ) -> Context<'a> {
        let tx = self.tx.as_ref();
        Context {
            stage,
            session_id: self.id,
            command,
            client_ip: self.client.ip(),
            helo: facts.helo.or(self.helo.as_deref()),
            mail_from: facts.mail_from.or(tx.map(|t| t.mail_from.as_str())),
            rcpt: facts.rcpt,
            rcpts: tx.map_or(&[][..], |t| &t.rcpts[..]),
            tls: self.tls,
            authenticated: self.authenticated,
            auth_user: facts.auth_user.or(self.auth_user.as_deref()),
            size: facts.size,
            message: facts.message,
        }
    }

    /// Performs a decision: sends the scripted or the healthy reply. Returns
    /// true when the command takes effect (a positive reply).
    fn resolve(&mut self, decision: Option<Decision>, healthy: HealthyReply<'_>) -> bool {
        let mut d = decision.unwrap_or_else(Decision::accept);
        self.tag = d.tag.take();
        if !d.delay.is_zero() {
            self.out.push(Output::Wait(d.delay));
        }
        match d.outcome {
            Outcome::Accept => {
                let (reply, ok) = match healthy {
                    Ok(r) => (r, true),
                    Err(r) => (Cow::Owned(r), false),
                };
                let ok = ok && reply.is_positive();
                self.send_reply(&reply, d.rule.clone().map(|r| (r, d.drip)), d.close);
                ok
            }
            Outcome::Reply(reply) => {
                let ok = reply.is_positive();
                self.send_reply(&reply, Some((d.rule.unwrap_or_default(), d.drip)), d.close);
                ok
            }
            Outcome::Raw(bytes) => {
                let code = raw_code(&bytes);
                self.out.push(Output::Send {
                    bytes,
                    drip: d.drip,
                    code,
                    rule: d.rule,
                    tag: self.tag.take(),
                });
                let close = d.close.unwrap_or(code == Some(421));
                if close {
                    self.stop(CloseReason::AfterReply(code.unwrap_or(0)));
                }
                code.is_some_and(|c| c < 400)
            }
            Outcome::Disconnect => {
                self.stop(CloseReason::Disconnect);
                false
            }
            Outcome::Hang => {
                self.reader = Reader::Stopped;
                self.out.push(Output::Hang { rule: d.rule });
                false
            }
        }
    }

    fn send_reply(
        &mut self,
        reply: &Reply,
        rule: Option<(String, Option<Duration>)>,
        close: Option<bool>,
    ) {
        let (rule, drip) = match rule {
            Some((r, drip)) => (Some(r).filter(|r| !r.is_empty()), drip),
            None => (None, None),
        };
        let code = reply.code;
        self.out.push(Output::Send {
            bytes: reply.to_wire(),
            drip,
            code: Some(code),
            rule,
            tag: self.tag.take(),
        });
        if close.unwrap_or(code == 421) {
            self.stop(CloseReason::AfterReply(code));
        }
    }

    /// One command line: shown in the transcript, then run. When its
    /// decision waits for the store, the line is kept to run again.
    fn on_line(&mut self, line: Vec<u8>, pipelined: bool) {
        let cmd = Command::parse(line);
        let row = &COMMANDS[cmd.verb as usize];
        debug_assert_eq!(row.verb, cmd.verb, "COMMANDS follows the order of Verb");
        // A BDAT after the first of a transaction is no stage of its own:
        // its chunk belongs to the message.
        let stage = (cmd.verb != Verb::Bdat || !self.chunking()).then_some(row.stage);
        // Credentials never reach the transcript: an initial response on
        // the AUTH line is hidden.
        let hidden = (cmd.verb == Verb::Auth
            && cmd.args().split(' ').filter(|w| !w.is_empty()).count() > 1)
            .then(|| {
                format!(
                    "{} {} [initial response hidden]",
                    cmd.verb_text(),
                    cmd.args().split(' ').next().unwrap_or("")
                )
            });
        // The line is filled in once the command is done with it: it is
        // the command's own buffer then, not a copy.
        let shown = (!self.replaying).then(|| {
            self.out.push(Output::Command {
                line: String::new(),
                stage,
                pipelined,
            });
            self.out.len() - 1
        });
        self.run_command(&cmd, row);
        // Kept to run again when the decision waits for the store (rare).
        let replay = self.is_suspended().then(|| cmd.raw().to_vec());
        if let Some(at) = shown {
            let text = hidden.unwrap_or_else(|| cmd.into_line());
            if let Some(Output::Command { line, .. }) = self.out.get_mut(at) {
                *line = text;
            }
        }
        if let Some(line) = replay {
            self.suspended_at(|| Replay::Line { line, pipelined });
        }
    }

    fn run_command(&mut self, cmd: &Command, row: &Row) {
        if cmd.raw().is_empty() {
            let Ok(d) = self.decide(Stage::Unknown, Some(cmd), Facts::default()) else {
                return;
            };
            self.resolve(d, Err(defaults::empty_line()));
            return;
        }
        let pre = row.checks.iter().try_for_each(|check| check(self, cmd));
        (row.proceed)(self, cmd, row.stage, pre);
    }

    /// BDAT was used in this transaction.
    fn chunking(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| t.chunks.is_some())
    }

    /// A command refused because the greeting was negative (RFC 5321 §3.1).
    fn refused(&self) -> Option<Reply> {
        self.refused_at_connect.then(defaults::refused_session)
    }

    fn on_helo(&mut self, cmd: &Command, stage: Stage, pre: Result<(), Reply>) {
        let config = Arc::clone(&self.cfg);
        let arg = cmd.args().split(' ').next().unwrap_or("").to_string();
        // The EHLO argument is what `helo` matches at this very command.
        let Ok(d) = self.decide(
            stage,
            Some(cmd),
            Facts {
                helo: Some(&arg),
                ..Facts::default()
            },
        ) else {
            return;
        };
        let healthy = if let Err(r) = pre {
            Err(r)
        } else if arg.is_empty() {
            Err(defaults::syntax(if stage == Stage::Ehlo {
                "EHLO hostname"
            } else {
                "HELO hostname"
            }))
        } else if stage == Stage::Ehlo {
            Ok(Cow::Borrowed(config.ehlo_reply(self.tls)))
        } else {
            Ok(Cow::Borrowed(config.helo_reply()))
        };
        let at = self.out.len();
        if self.resolve(d, healthy) {
            // RFC 5321 §4.1.4: EHLO/HELO also resets the transaction.
            if let Some(end) = self.end_tx(TxEnd::Reset, stage, None) {
                self.out.insert(at, end);
            }
            let pipelining = stage == Stage::Ehlo && self.cfg.offers("PIPELINING");
            self.out.push(Output::Fact(Fact::Greeted {
                helo: arg.clone(),
                esmtp: stage == Stage::Ehlo,
                pipelining,
            }));
            self.helo = Some(arg);
            self.esmtp = stage == Stage::Ehlo;
        } else {
            self.fact_after_reply(at, |answer| Fact::Refused { stage, answer });
        }
    }

    fn on_mail(&mut self, cmd: &Command, _: Stage, pre: Result<(), Reply>) {
        let (path, err) = parse_path(cmd.args(), "FROM:");
        let declared = path
            .params
            .iter()
            .find(|p| p.keyword == "SIZE")
            .and_then(|p| p.value.as_deref().and_then(parse_number));
        let Ok(d) = self.decide(
            Stage::Mail,
            Some(cmd),
            Facts {
                mail_from: Some(&path.address),
                size: declared,
                ..Facts::default()
            },
        ) else {
            return;
        };
        let healthy = pre
            .and_then(|()| self.check_mail(&path, err))
            .and_then(|r| {
                self.check_ascii(&path, self.mail_smtputf8(&path))
                    .map(|()| r)
            });
        let at = self.out.len();
        let ok = self.resolve(d, healthy);
        self.fact_after_reply(at, |answer| Fact::Mail {
            mail_from: path.address.clone(),
            answer,
        });
        if ok {
            self.tx = Some(Transaction {
                smtputf8: self.mail_smtputf8(&path),
                declared_size: declared,
                mail_from: path.address,
                ..Transaction::default()
            });
        }
    }

    /// MAIL asked for SMTPUTF8 and it is offered.
    fn mail_smtputf8(&self, path: &PathArg) -> bool {
        path.params.iter().any(|p| p.keyword == "SMTPUTF8") && self.cfg.offers("SMTPUTF8")
    }

    /// RFC 6531: a non-ASCII address needs SMTPUTF8 on MAIL (§3.4), or
    /// gets 553 with X.6.7 (§3.7.4.1, RFC 5248).
    fn check_ascii(&self, path: &PathArg, smtputf8: bool) -> Result<(), Reply> {
        if !smtputf8 && !path.address.is_ascii() {
            return Err(defaults::non_ascii_address());
        }
        Ok(())
    }

    /// MAIL's own checks, after the state checks of its row.
    fn check_mail(&self, path: &PathArg, err: Option<PathError>) -> HealthyReply<'static> {
        match err {
            Some(PathError::Syntax) => return Err(defaults::syntax("MAIL FROM:<address>")),
            Some(PathError::BadAddress) => return Err(defaults::bad_sender()),
            None => {}
        }
        for p in &path.params {
            let v = p.value.as_deref();
            let ok = match p.keyword.as_str() {
                "SIZE" if self.cfg.offers("SIZE") => {
                    let Some(n) = v.and_then(parse_number) else {
                        return Err(defaults::bad_parameter("SIZE"));
                    };
                    if self.cfg.max_message_size > 0 && n > self.cfg.max_message_size {
                        return Err(defaults::size_exceeded());
                    }
                    true
                }
                "BODY" => match v.map(str::to_ascii_uppercase).as_deref() {
                    Some("7BIT") => true,
                    Some("8BITMIME") => self.cfg.offers("8BITMIME"),
                    Some("BINARYMIME") => {
                        self.cfg.offers("BINARYMIME") && self.cfg.offers("CHUNKING")
                    }
                    _ => return Err(defaults::bad_parameter("BODY")),
                },
                "SMTPUTF8" => v.is_none() && self.cfg.offers("SMTPUTF8"),
                "RET" => {
                    self.cfg.offers("DSN")
                        && matches!(
                            v.map(str::to_ascii_uppercase).as_deref(),
                            Some("FULL" | "HDRS")
                        )
                }
                "ENVID" => self.cfg.offers("DSN") && v.is_some(),
                "AUTH" => v.is_some(),
                _ => false,
            };
            if !ok {
                return Err(defaults::unknown_parameter(&p.keyword));
            }
        }
        Ok(Cow::Borrowed(&FIXED.mail_ok))
    }

    fn on_rcpt(&mut self, cmd: &Command, _: Stage, pre: Result<(), Reply>) {
        let (path, err) = parse_path(cmd.args(), "TO:");
        let Ok(d) = self.decide(
            Stage::Rcpt,
            Some(cmd),
            Facts {
                rcpt: Some(&path.address),
                ..Facts::default()
            },
        ) else {
            return;
        };
        let smtputf8 = self.tx.as_ref().is_some_and(|t| t.smtputf8);
        let healthy = pre
            .and_then(|()| self.check_rcpt(&path, err))
            .and_then(|r| self.check_ascii(&path, smtputf8).map(|()| r));
        if let Some(tx) = self.tx.as_mut() {
            tx.rcpt_attempts += 1;
        }
        let at = self.out.len();
        let tag = d.as_ref().and_then(|d| d.tag.clone());
        let ok = self.resolve(d, healthy);
        let code = self.out[at..].iter().find_map(|o| match o {
            Output::Send { code, .. } => *code,
            _ => None,
        });
        if let Some(code) = code {
            let facts = Facts {
                rcpt: Some(&path.address),
                ..Facts::default()
            };
            let effect = self.policy.observe_rcpt(
                &self.context(Stage::Rcpt, Some(cmd), facts),
                code,
                tag.as_ref(),
                self.now,
            );
            self.out.extend(effect.map(Output::Effect));
        }
        self.fact_after_reply(at, |answer| Fact::Rcpt {
            rcpt: path.address.clone(),
            answer,
        });
        if ok {
            self.tx
                .get_or_insert_with(Transaction::default)
                .rcpts
                .push(path.address);
        }
    }

    /// RCPT's own checks, after the state checks of its row.
    fn check_rcpt(&self, path: &PathArg, err: Option<PathError>) -> HealthyReply<'static> {
        let Some(tx) = &self.tx else {
            return Err(defaults::need_mail());
        };
        match err {
            Some(PathError::Syntax) => return Err(defaults::syntax("RCPT TO:<address>")),
            Some(PathError::BadAddress) => return Err(defaults::bad_recipient()),
            None if path.address.is_empty() => return Err(defaults::bad_recipient()),
            None => {}
        }
        for p in &path.params {
            let ok = match p.keyword.as_str() {
                "NOTIFY" | "ORCPT" => self.cfg.offers("DSN") && p.value.is_some(),
                _ => false,
            };
            if !ok {
                return Err(defaults::unknown_parameter(&p.keyword));
            }
        }
        if tx.rcpts.len() >= self.cfg.max_recipients {
            return Err(defaults::too_many_recipients());
        }
        Ok(Cow::Borrowed(&FIXED.rcpt_ok))
    }

    /// Checks shared by DATA and the first BDAT.
    fn check_data(&self, cmd: &Command) -> Result<(), Reply> {
        [served, greeted, in_tx, has_rcpts]
            .iter()
            .try_for_each(|check| check(self, cmd))
    }

    /// The memory budget has room for the message MAIL announced (or, with
    /// no SIZE, for a first byte): else 452 4.3.1 at once (RFC 1870 §6.1
    /// gives the same reply for a SIZE that exceeds temporary capacity).
    fn check_memory(&self, _: &Command) -> Result<(), Reply> {
        let Some(b) = &self.budget else { return Ok(()) };
        let declared = self.tx.as_ref().and_then(|t| t.declared_size);
        let want = declared.unwrap_or(0).min(self.limit()).max(1);
        if want > b.available() {
            return Err(defaults::insufficient_storage());
        }
        Ok(())
    }

    fn new_decoder(&self) -> DataDecoder {
        DataDecoder::with_budget(self.limit(), self.budget.clone())
    }

    fn on_data(&mut self, cmd: &Command, _: Stage, pre: Result<(), Reply>) {
        let Ok(d) = self.decide(Stage::Data, Some(cmd), Facts::default()) else {
            return;
        };
        let healthy = pre.map(|()| Cow::Borrowed(&FIXED.start_data));
        let at = self.out.len();
        if self.resolve(d, healthy) && !self.is_stopped() {
            self.reader = Reader::Data(self.new_decoder());
        } else if let Some(tx) = self.tx.as_mut().filter(|t| !t.ended) {
            // Refused at DATA: the transaction stays open (RFC 5321 §4.1.1.4
            // leaves it to RSET), but this attempt has its answer.
            tx.ended = true;
            let (mail_from, rcpts) = (tx.mail_from.clone(), tx.rcpts.clone());
            self.fact_after_reply(at, |answer| Fact::Transaction {
                mail_from,
                rcpts,
                end: TxEnd::Refused,
                stage: Stage::Data,
                answer: Some(answer),
            });
        }
    }

    fn limit(&self) -> u64 {
        match self.cfg.max_message_size {
            0 => u64::MAX,
            n => n,
        }
    }

    /// BDAT keeps its checks here: which apply depends on whether it is
    /// the transaction's first chunk, and its syntax comes first (RFC 3030
    /// §2: without a valid size the chunk cannot be found).
    fn on_bdat(&mut self, cmd: &Command, _: Stage, _: Result<(), Reply>) {
        let first = !self.chunking();
        let Some(arg) = parse_bdat(cmd.args()) else {
            // Without a valid size the chunk cannot be found: answer as a
            // syntax error and keep reading commands.
            let d = if first {
                let Ok(d) = self.decide(Stage::Data, Some(cmd), Facts::default()) else {
                    return;
                };
                d
            } else {
                None
            };
            self.resolve(d, Err(defaults::syntax("BDAT size [LAST]")));
            return;
        };
        if !self.cfg.offers("CHUNKING") {
            self.resolve(None, Err(defaults::not_available("BDAT")));
            return;
        }
        let d = if first {
            let Ok(d) = self.decide(Stage::Data, Some(cmd), Facts::default()) else {
                return;
            };
            d
        } else {
            None
        };
        // Whatever the answer, the chunk's bytes must be read first (RFC 3030
        // §2): the reply decided now is held until then.
        let outer = std::mem::take(&mut self.out);
        let keep = if first {
            let mut decoder = self.new_decoder();
            let healthy = self.check_data(cmd).and_then(|()| {
                // The chunk's size is known: reserve it before saying yes.
                match decoder.reserve(arg.size) {
                    true => Ok(Cow::Owned(defaults::chunk_ok(arg.size))),
                    false => Err(defaults::insufficient_storage()),
                }
            });
            let ok = self.resolve(d, healthy);
            if ok {
                if let Some(tx) = self.tx.as_mut() {
                    tx.chunks = Some(decoder);
                }
            }
            ok && self.tx.is_some()
        } else {
            let room = self
                .tx
                .as_mut()
                .and_then(|t| t.chunks.as_mut())
                .is_none_or(|d| d.reserve(arg.size));
            match room {
                true => self.resolve(None, Ok(Cow::Owned(defaults::chunk_ok(arg.size)))),
                false => self.resolve(None, Err(defaults::insufficient_storage())),
            }
        };
        let pending = std::mem::replace(&mut self.out, outer);
        if self.is_stopped() {
            // A disconnect or hang decided at BDAT happens at once.
            self.out.extend(pending);
            return;
        }
        let mut pending = pending;
        if !keep {
            // RFC 3030 §2: an error reply to BDAT ends the transaction.
            let answer = Answer::find(&pending);
            if let Some(end) = self.end_tx(TxEnd::Refused, Stage::Data, answer) {
                pending.push(end);
            }
        }
        let chunk = Chunk {
            remaining: arg.size,
            last: arg.last,
            pending,
            keep,
        };
        self.reader = Reader::Chunk(Box::new(chunk));
        if arg.size == 0 {
            self.end_chunk();
        }
    }

    fn end_chunk(&mut self) {
        let Reader::Chunk(chunk) = std::mem::replace(&mut self.reader, Reader::Command) else {
            return;
        };
        if chunk.keep && chunk.last {
            // The reply to BDAT LAST is the reply to the message; only the
            // waits decided at the command are kept.
            self.out.extend(
                chunk
                    .pending
                    .into_iter()
                    .filter(|o| matches!(o, Output::Wait(_))),
            );
            let body = self
                .tx
                .as_mut()
                .and_then(|t| t.chunks.take())
                .map(DataDecoder::into_body);
            if let Some(body) = body {
                self.on_message(body, true);
            }
        } else {
            self.out.extend(chunk.pending);
        }
    }

    fn on_message(&mut self, body: Body, chunked: bool) {
        // Out of memory, the bytes are gone: no rule can accept them.
        let forced = (body.no_memory && !body.too_big).then(defaults::insufficient_storage);
        self.finish_message(body, chunked, forced);
    }

    /// Answers a complete (or abandoned) message: `forced` is a refusal
    /// the server makes itself, without asking the scenario.
    fn finish_message(&mut self, body: Body, chunked: bool, forced: Option<Reply>) {
        let d = match forced {
            Some(_) => None,
            None => {
                let facts = Facts {
                    size: Some(body.size),
                    message: Some(&body.bytes),
                    ..Facts::default()
                };
                match self.decide(Stage::Message, None, facts) {
                    Ok(d) => d,
                    Err(Suspended) => {
                        self.suspended_at(|| Replay::Message {
                            body,
                            chunked,
                            forced,
                        });
                        return;
                    }
                }
            }
        };
        let id = next_queue_id();
        let healthy = match forced {
            Some(reply) => Err(reply),
            None if body.too_big => Err(defaults::too_big()),
            None => Ok(Cow::Owned(defaults::queued(&id))),
        };
        // Record the message before the reply goes out, so a client that
        // saw 250 always finds it captured. The transaction ends here, even
        // if the reply also closes the session.
        let at = self.out.len();
        let tx = self.tx.take().unwrap_or_default();
        let accepted = self.resolve(d, healthy);
        let reply_code = self.out[at..].iter().find_map(|o| match o {
            Output::Send { code, .. } => *code,
            _ => None,
        });
        let (mail_from, rcpts) = (tx.mail_from.clone(), tx.rcpts.clone());
        self.fact_after_reply(at, |answer| Fact::Transaction {
            mail_from,
            rcpts,
            end: if accepted {
                TxEnd::Delivered
            } else {
                TxEnd::Refused
            },
            stage: Stage::Message,
            answer: Some(answer),
        });
        let captured = Captured {
            id,
            client: self.client,
            helo: self.helo.clone(),
            mail_from: tx.mail_from,
            rcpts: tx.rcpts,
            size: body.size,
            body: if accepted { body.bytes } else { Vec::new() },
            tls: self.tls,
            bare_lf: body.bare_lf,
            bare_cr: body.bare_cr,
            chunked,
            accepted,
            reply_code,
        };
        self.out.insert(at, Output::Message(Box::new(captured)));
    }

    fn on_quit(&mut self, cmd: &Command, _: Stage, _: Result<(), Reply>) {
        let Ok(d) = self.decide(Stage::Quit, Some(cmd), Facts::default()) else {
            return;
        };
        if !cmd.args().is_empty() && d.is_none() {
            // RFC 5321 §4.1.1.10: QUIT takes no arguments.
            self.resolve(None, Err(defaults::no_arguments("QUIT")));
            return;
        }
        // The client leaves with a transaction open: it gave it up.
        if let Some(end) = self.end_tx(TxEnd::Abandoned, self.stage_reached(), None) {
            self.out.push(end);
        }
        self.resolve(d, Ok(Cow::Borrowed(&FIXED.bye)));
        if !self.is_stopped() {
            self.stop(CloseReason::Quit);
        }
    }

    fn on_starttls(&mut self, cmd: &Command, _: Stage, pre: Result<(), Reply>) {
        let Ok(d) = self.decide(Stage::Starttls, Some(cmd), Facts::default()) else {
            return;
        };
        let healthy = pre.map(|()| Cow::Owned(defaults::ready_for_tls()));
        if self.resolve(d, healthy) && !self.is_stopped() {
            // RFC 3207 §4.2: nothing more is read in the clear.
            self.out.push(Output::StartTls);
            self.reader = Reader::Stopped;
        }
    }

    fn on_auth(&mut self, cmd: &Command, _: Stage, checked: Result<(), Reply>) {
        let mut words = cmd.args().split(' ').filter(|w| !w.is_empty());
        let mech = words.next().and_then(auth::Mechanism::from_name);
        let initial = words.next().map(str::to_string);
        let cfg = self.cfg.auth.clone();
        let pre = match (&cfg, mech) {
            _ if checked.is_err() => checked.err(),
            (Some(c), Some(m)) if !c.mechanisms.contains(&m) => Some(defaults::unknown_mechanism()),
            (_, None) => Some(defaults::unknown_mechanism()),
            (Some(c), Some(m)) if m.sends_password() && !self.tls && !c.allow_plaintext => {
                Some(defaults::encryption_required())
            }
            _ => None,
        };
        if let Some(r) = pre {
            let Ok(d) = self.decide(Stage::Auth, Some(cmd), Facts::default()) else {
                return;
            };
            self.resolve(d, Err(r));
            return;
        }
        let (Some(cfg), Some(mech)) = (cfg, mech) else {
            return;
        };
        let nonce = format!(
            "{}.{}@{}",
            self.id,
            QUEUE_ID.fetch_add(1, Ordering::Relaxed),
            self.cfg.hostname
        );
        let step = auth::start(mech, initial.as_deref(), &cfg, &nonce);
        self.auth_step(step);
    }

    fn on_sasl_line(&mut self, state: Exchange, line: &[u8], pipelined: bool) {
        self.out.push(Output::Command {
            line: "[SASL response hidden]".into(),
            stage: Some(Stage::Auth),
            pipelined,
        });
        let Some(cfg) = self.cfg.auth.clone() else {
            return;
        };
        let step = auth::respond(state, &lossy(line), &cfg);
        self.auth_step(step);
    }

    fn auth_step(&mut self, step: Step) {
        match step {
            Step::Challenge(state, text) => {
                self.out.push(Output::Send {
                    bytes: format!("334 {text}\r\n").into_bytes(),
                    drip: None,
                    code: Some(334),
                    rule: None,
                    tag: None,
                });
                self.reader = Reader::Sasl(state);
            }
            Step::Error(reply) => {
                self.resolve(None, Err(reply));
            }
            Step::Done { user, ok } => {
                // The scenario decides once the user is known.
                let facts = Facts {
                    auth_user: Some(&user),
                    ..Facts::default()
                };
                let Ok(d) = self.decide(Stage::Auth, None, facts) else {
                    self.suspended_at(|| Replay::AuthDone { user, ok });
                    return;
                };
                let healthy = if ok {
                    Ok(Cow::Owned(defaults::auth_ok()))
                } else {
                    Err(defaults::auth_failed())
                };
                if self.resolve(d, healthy) {
                    self.authenticated = true;
                    self.auth_user = Some(user);
                }
            }
        }
    }

    /// Commands whose row's checks are all there is to them.
    fn on_simple(&mut self, cmd: &Command, stage: Stage, pre: Result<(), Reply>) {
        let Ok(d) = self.decide(stage, Some(cmd), Facts::default()) else {
            return;
        };
        let healthy = pre.and_then(|()| match stage {
            Stage::Rset | Stage::Noop => Ok(Cow::Borrowed(&FIXED.ok)),
            Stage::Vrfy => Ok(Cow::Owned(defaults::vrfy())),
            Stage::Expn => Ok(Cow::Owned(defaults::expn())),
            Stage::Help => Ok(Cow::Owned(defaults::help())),
            _ => Err(defaults::unknown_command()),
        });
        let at = self.out.len();
        if self.resolve(d, healthy) && stage == Stage::Rset {
            if let Some(end) = self.end_tx(TxEnd::Reset, Stage::Rset, None) {
                self.out.insert(at, end);
            }
        }
    }
}

/// A state a command needs before it proceeds; a failed check is the
/// reply. Checks are pure and run in the order their row lists them.
type Check = fn(&Session, &Command) -> Result<(), Reply>;

/// What runs a command once its checks are made (`pre`: the first failed
/// check's reply): it asks the policy first, then answers.
type Proceed = fn(&mut Session, &Command, Stage, Result<(), Reply>);

/// One command: its verb, the stage its rules match, the checks the
/// healthy server makes in order, and what runs it (as OpenSMTPD's
/// `smtp_commands` table does).
struct Row {
    verb: Verb,
    stage: Stage,
    checks: &'static [Check],
    proceed: Proceed,
}

/// One row per command, in the order of [`Verb`] (a verb is its index).
const COMMANDS: [Row; 15] = [
    Row {
        verb: Verb::Ehlo,
        stage: Stage::Ehlo,
        checks: &[served],
        proceed: Session::on_helo,
    },
    Row {
        verb: Verb::Helo,
        stage: Stage::Helo,
        checks: &[served],
        proceed: Session::on_helo,
    },
    Row {
        verb: Verb::Mail,
        stage: Stage::Mail,
        checks: &[
            utf8,
            served,
            greeted,
            no_tx,
            tls_if_required,
            auth_if_required,
        ],
        proceed: Session::on_mail,
    },
    Row {
        verb: Verb::Rcpt,
        stage: Stage::Rcpt,
        checks: &[utf8, served, greeted, in_tx],
        proceed: Session::on_rcpt,
    },
    Row {
        verb: Verb::Data,
        stage: Stage::Data,
        checks: &[
            no_args,
            not_after_bdat,
            served,
            greeted,
            in_tx,
            has_rcpts,
            Session::check_memory,
        ],
        proceed: Session::on_data,
    },
    Row {
        verb: Verb::Bdat,
        stage: Stage::Data,
        checks: &[],
        proceed: Session::on_bdat,
    },
    Row {
        verb: Verb::Rset,
        stage: Stage::Rset,
        checks: &[served, no_args],
        proceed: Session::on_simple,
    },
    // RFC 5321 §3.1: after a negative greeting NOOP is still served.
    Row {
        verb: Verb::Noop,
        stage: Stage::Noop,
        checks: &[],
        proceed: Session::on_simple,
    },
    Row {
        verb: Verb::Vrfy,
        stage: Stage::Vrfy,
        checks: &[served, vrfy_arg],
        proceed: Session::on_simple,
    },
    Row {
        verb: Verb::Expn,
        stage: Stage::Expn,
        checks: &[served, expn_arg],
        proceed: Session::on_simple,
    },
    Row {
        verb: Verb::Help,
        stage: Stage::Help,
        checks: &[served],
        proceed: Session::on_simple,
    },
    // QUIT's argument check depends on the decision: see `on_quit`.
    Row {
        verb: Verb::Quit,
        stage: Stage::Quit,
        checks: &[],
        proceed: Session::on_quit,
    },
    Row {
        verb: Verb::Starttls,
        stage: Stage::Starttls,
        checks: &[served, starttls_offered, not_tls, no_args],
        proceed: Session::on_starttls,
    },
    Row {
        verb: Verb::Auth,
        stage: Stage::Auth,
        checks: &[
            served,
            auth_offered,
            greeted,
            not_authenticated,
            no_tx_for_auth,
        ],
        proceed: Session::on_auth,
    },
    Row {
        verb: Verb::Unknown,
        stage: Stage::Unknown,
        checks: &[served],
        proceed: Session::on_simple,
    },
];

/// RFC 5321 §3.1: after a negative greeting only QUIT (and NOOP) is served.
fn served(s: &Session, _: &Command) -> Result<(), Reply> {
    s.refused().map_or(Ok(()), Err)
}

fn greeted(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.helo {
        Some(_) => Ok(()),
        None => Err(defaults::need_helo()),
    }
}

fn in_tx(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.tx {
        Some(_) => Ok(()),
        None => Err(defaults::need_mail()),
    }
}

fn no_tx(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.tx {
        Some(_) => Err(defaults::nested_mail()),
        None => Ok(()),
    }
}

/// RFC 4954 §4: AUTH is not permitted during a mail transaction.
fn no_tx_for_auth(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.tx {
        Some(_) => Err(defaults::auth_in_transaction()),
        None => Ok(()),
    }
}

fn has_rcpts(s: &Session, _: &Command) -> Result<(), Reply> {
    match &s.tx {
        Some(t) if t.rcpts.is_empty() && t.rcpt_attempts > 0 => {
            Err(defaults::no_valid_recipients())
        }
        Some(t) if t.rcpts.is_empty() => Err(defaults::need_rcpt()),
        _ => Ok(()),
    }
}

/// RFC 3030 §3: DATA may not follow BDAT in a transaction.
fn not_after_bdat(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.chunking() {
        true => Err(defaults::data_after_bdat()),
        false => Ok(()),
    }
}

/// `require_tls` (RFC 3207 §4): MAIL before STARTTLS is refused.
fn tls_if_required(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.cfg.require_tls && !s.tls {
        true => Err(defaults::must_starttls()),
        false => Ok(()),
    }
}

fn auth_if_required(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.cfg.auth.as_ref().is_some_and(|a| a.required) && !s.authenticated {
        true => Err(defaults::auth_required()),
        false => Ok(()),
    }
}

fn starttls_offered(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.cfg.starttls {
        true => Ok(()),
        false => Err(defaults::not_available("STARTTLS")),
    }
}

fn not_tls(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.tls {
        true => Err(defaults::tls_already_active()),
        false => Ok(()),
    }
}

fn auth_offered(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.cfg.auth {
        Some(_) => Ok(()),
        None => Err(defaults::not_available("AUTH")),
    }
}

fn not_authenticated(s: &Session, _: &Command) -> Result<(), Reply> {
    match s.authenticated {
        true => Err(defaults::already_authenticated()),
        false => Ok(()),
    }
}

/// RFC 5321 §4.1.1: RSET, DATA, STARTTLS and QUIT take no argument.
fn no_args(_: &Session, cmd: &Command) -> Result<(), Reply> {
    match cmd.args().is_empty() {
        true => Ok(()),
        false => Err(defaults::no_arguments(&cmd.verb_text())),
    }
}

fn vrfy_arg(_: &Session, cmd: &Command) -> Result<(), Reply> {
    match cmd.args().is_empty() {
        true => Err(defaults::syntax("VRFY address")),
        false => Ok(()),
    }
}

fn expn_arg(_: &Session, cmd: &Command) -> Result<(), Reply> {
    match cmd.args().is_empty() {
        true => Err(defaults::syntax("EXPN mailing-list")),
        false => Ok(()),
    }
}

/// Facts of the command at hand that the session does not hold yet.
#[derive(Default, Clone, Copy)]
struct Facts<'a> {
    helo: Option<&'a str>,
    mail_from: Option<&'a str>,
    auth_user: Option<&'a str>,
    rcpt: Option<&'a str>,
    size: Option<u64>,
    message: Option<&'a [u8]>,
}

/// RFC 6531 §3.3 allows UTF-8, never other bytes: a MAIL or RCPT line that
/// is not UTF-8 is a syntax error before anything else (as Postfix does).
fn utf8(_: &Session, cmd: &Command) -> Result<(), Reply> {
    match cmd.is_utf8() {
        true => Ok(()),
        false => Err(defaults::bad_utf8()),
    }
}

/// The reply code at the start of raw bytes, if there is one.
fn raw_code(bytes: &[u8]) -> Option<u16> {
    let head = bytes.get(..3)?;
    if !head.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(head).ok()?.parse().ok()
}
