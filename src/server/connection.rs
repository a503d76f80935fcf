//! The per-connection driver: moves bytes between the socket and the
//! sans-I/O session, performs its outputs (wait, send, drip, close), and
//! applies the idle timeout and shutdown. It decides nothing about SMTP.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::limits::Shared as Limits;
use super::slot::Active;
use crate::capture::{stamp_now, Capture, EventKind, Origin, Source};
use crate::proto::lossy;
use crate::proto::reply::defaults;
use crate::proto::{Answer, Captured, CloseReason, Fact, Output, Policy, Session, Stage, TxEnd};
use crate::scenario::Engine;
use crate::state::Op;

/// Bytes per piece when a reply drips.
pub const DRIP_CHUNK: usize = 4;
/// Most bytes one read takes. No session has a read buffer of its own:
/// each read borrows its worker thread's buffer for one poll and feeds the
/// session before it returns, so an idle session, in the clear or under
/// TLS, holds no read buffer (rustls keeps its own record buffers).
const READ_BUFFER: usize = 16 * 1024;

thread_local! {
    /// The read buffer the sessions of this worker thread share.
    static READ: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; READ_BUFFER].into_boxed_slice());
    /// The vector of the last batch of outputs performed on this thread,
    /// empty, lent to the next session fed (see `Session::lend`): one
    /// allocation serves every batch, and no idle session holds one. One
    /// longer than `SPARE_MAX` (a client that pipelined thousands of
    /// commands at once) is freed, not kept.
    static SPARE: std::cell::RefCell<Vec<Output>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Waits for bytes and feeds them to the session: its outputs and the
/// time they were fed at, or None at the end of the stream. Cancel-safe:
/// bytes read are fed in the same poll (a pending read keeps no bytes:
/// tokio's `AsyncRead` contract).
async fn read_feed(
    stream: &mut Stream,
    session: &mut Session,
) -> std::io::Result<Option<(Vec<Output>, Instant)>> {
    std::future::poll_fn(|cx| {
        READ.with_borrow_mut(|buf| {
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(match read.filled() {
                    [] => None,
                    bytes => {
                        lent(session);
                        let now = Instant::now();
                        Some((session.feed(bytes, now.into_std()), now))
                    }
                })),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// The session, lent this thread's spare output vector for the batch it
/// is about to produce (see `Session::lend`).
fn lent(session: &mut Session) -> &mut Session {
    session.lend(SPARE.take());
    session
}

/// `a` as `Display` writes it (`192.0.2.1:25`, `[::1]:25`), IPv4 by hand
/// with `itoa`: `Display` took about 1,600 instructions a connection.
pub(super) fn addr_text(a: &SocketAddr) -> String {
    let SocketAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut out = String::with_capacity(21);
    let mut num = itoa::Buffer::new();
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(num.format(octet));
    }
    out.push(':');
    out.push_str(num.format(v4.port()));
    out
}

/// Awaits `f`, and says whether it had to wait for it (it was pending at
/// least once), which a batch's shared timestamp must know.
async fn waited<F: std::future::Future>(f: F) -> (F::Output, bool) {
    let mut f = std::pin::pin!(f);
    let mut pending = false;
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready((out, pending)),
        Poll::Pending => {
            pending = true;
            Poll::Pending
        }
    })
    .await
}

/// The most outputs a kept spare vector has room for: a batch of one
/// command holds a handful.
const SPARE_MAX: usize = 64;

/// No session lives longer than this, whatever it does.
pub const MAX_SESSION: Duration = Duration::from_secs(3600);

pub struct Conn {
    pub listener: String,
    pub capture: Arc<Capture>,
    /// Cancelled when the grace period after a shutdown request is over.
    pub hard_stop: CancellationToken,
    /// The message memory budget, sessions per IP, session lifetime.
    pub limits: Arc<Limits>,
    /// Connections start with a PROXY protocol header (see `proxy`).
    pub proxy: bool,
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

enum Flow {
    Continue,
    Closed,
    Hang,
    StartTls,
    /// The session waits for this store operation (boxed: only a store
    /// with I/O waits, and the flow lives in every idle session's future).
    Store(Box<Op>),
}

/// The connection, in the clear or under TLS (after STARTTLS or from the
/// first byte).
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the handshake owns the socket.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    /// In the clear there is nothing to do: every shutdown here is followed
    /// at once by dropping the stream, whose close sends the same FIN, so
    /// a `shutdown(2)` call would only cost a system call per connection.
    /// Under TLS it sends the close_notify alert (RFC 8446 §6.1).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(_) => Poll::Ready(Ok(())),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// How far [`Driver::perform_now`] got with a batch.
enum Performed {
    /// The whole batch, which ends with this flow.
    All(Flow),
    /// Up to an output that must wait.
    Until(Rest),
}

/// What is left of a batch when an output must wait: that output, and
/// the outputs after it.
struct Rest {
    first: Awaits,
    outs: VecDeque<Output>,
}

/// What [`Driver::settle`] did with an output.
enum Settled {
    Done,
    /// The batch ends with this flow.
    End(Flow),
    /// Not done: it may have to wait.
    Awaits(Awaits),
}

/// The outputs that may have to wait.
enum Awaits {
    Wait(Duration),
    Send(Sending),
    Message(Box<Captured>),
    Effect(Op),
    Close(CloseReason),
}

/// A reply to send, and how much of it is already written.
struct Sending {
    bytes: Vec<u8>,
    drip: Option<Duration>,
    code: Option<u16>,
    rule: Option<String>,
    tag: Option<crate::proto::Tag>,
    /// The scripted wait before it, for its event.
    delay_ms: Option<u64>,
    sent: usize,
}

struct Driver<'a> {
    conn: &'a Conn,
    stream: Stream,
    /// The listener's and scenario's names, shared by the session's events.
    source: Source,
    id: u64,
    client: SocketAddr,
    /// The stage the next reply answers, for the refusal log and metrics.
    stage: Stage,
    /// Whose store performs the session's store operations.
    engine: Arc<Engine>,
    /// The timestamp of the batch of outputs being performed, shared by
    /// the events it records (a clock read and a lookup an event saved);
    /// none outside a batch, and from the first output of the batch that
    /// had to wait (see [`waited`]) on.
    stamp: Option<Arc<str>>,
}

impl Driver<'_> {
    fn record(&self, kind: EventKind) {
        let ts = self.stamp.clone().unwrap_or_else(stamp_now);
        self.conn
            .capture
            .record_stamped(&self.source, self.id, ts, kind);
    }

    fn closed(&self, by: &str, reason: &str) {
        tracing::debug!(session = self.id, by, reason, "close");
        self.record(EventKind::Close {
            by: by.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Logs a reply that refuses (code 400 and up) at info: users grep their
    /// logs for what the server turned down, at any stage. A raw reply
    /// without a parsed code counts by its first three digits.
    fn log_refusal(&self, code: Option<u16>, text: &str, rule: Option<&str>) {
        let code = code.or_else(|| text.get(..3).and_then(|c| c.parse().ok()));
        let Some(code) = code.filter(|c| *c >= 400) else {
            return;
        };
        tracing::info!(
            session = self.id,
            client = %self.client,
            stage = %self.stage.name(),
            code,
            reply = text.trim_end(),
            rule,
            "refused"
        );
    }

    /// Performs a batch of outputs in order, its events stamped with the
    /// time it started (a batch takes microseconds unless it waits): at
    /// once what needs no waiting ([`Self::perform_now`]), the rest in a
    /// box of its own, so an idle session's future holds none of its state.
    async fn run(&mut self, outputs: Vec<Output>) -> Flow {
        match self.perform_now(outputs) {
            Performed::All(flow) => flow,
            Performed::Until(rest) => Box::pin(self.perform(rest)).await,
        }
    }

    /// Performs the outputs that are done without waiting: events, replies
    /// a plain socket takes whole at once, a close in the clear. Most
    /// batches are only these, and then nothing is boxed or polled (before,
    /// every batch was a box of some 660 bytes: four a kept message).
    /// Returns the rest from the first output that must wait.
    fn perform_now(&mut self, outputs: Vec<Output>) -> Performed {
        self.stamp = Some(stamp_now());
        let mut outs = VecDeque::from(outputs);
        let flow = loop {
            let first = match self.next_awaits(&mut outs) {
                Ok(first) => first,
                Err(flow) => break flow,
            };
            match self.now(first) {
                Ok(None) => {}
                Ok(Some(flow)) => break flow,
                Err(first) => return Performed::Until(Rest { first, outs }),
            }
        };
        self.done(outs);
        Performed::All(flow)
    }

    /// Settles the batch's outputs up to the next that may have to wait,
    /// and hands that one back; or the flow the batch ends with (`Continue`
    /// when none is left).
    fn next_awaits(&mut self, outs: &mut VecDeque<Output>) -> Result<Awaits, Flow> {
        while let Some(out) = outs.pop_front() {
            match self.settle(out) {
                Settled::Done => {}
                Settled::End(flow) => return Err(flow),
                Settled::Awaits(awaits) => return Ok(awaits),
            }
        }
        Err(Flow::Continue)
    }

    /// Performs an output that never waits, the same in either path;
    /// hands back one that may.
    fn settle(&mut self, out: Output) -> Settled {
        let awaits = match out {
            Output::Command {
                line,
                stage,
                pipelined,
            } => {
                tracing::debug!(session = self.id, "<- {line}");
                self.stage = stage.unwrap_or(Stage::Unknown);
                self.record(EventKind::Command {
                    line,
                    stage,
                    pipelined,
                });
                return Settled::Done;
            }
            Output::Fact(f) => {
                self.record(f.into());
                return Settled::Done;
            }
            Output::Hang { rule } => {
                self.record(EventKind::Hang { rule });
                return Settled::End(Flow::Hang);
            }
            Output::StartTls => return Settled::End(Flow::StartTls),
            // Always the last of its batch: the session waits for it.
            Output::Store(op) => return Settled::End(Flow::Store(Box::new(op))),
            Output::Wait(d) => Awaits::Wait(d),
            Output::Send {
                bytes,
                drip,
                code,
                rule,
                tag,
            } => Awaits::Send(Sending {
                bytes,
                drip,
                code,
                rule,
                tag,
                delay_ms: None,
                sent: 0,
            }),
            Output::Message(m) => Awaits::Message(m),
            Output::Effect(op) => Awaits::Effect(op),
            Output::Close(reason) => Awaits::Close(reason),
        };
        Settled::Awaits(awaits)
    }

    /// Performs an output that may wait, when it need not: a reply the
    /// plain socket takes whole (`try_write`), a close in the clear (no
    /// `shutdown(2)`: see `poll_shutdown`). `Some` ends the batch. Hands
    /// the output back otherwise, with what of a reply was written.
    fn now(&mut self, awaits: Awaits) -> Result<Option<Flow>, Awaits> {
        let Stream::Plain(tcp) = &self.stream else {
            return Err(awaits);
        };
        match awaits {
            Awaits::Send(mut s) if s.drip.is_none() => match tcp.try_write(&s.bytes) {
                Ok(n) if n == s.bytes.len() => Ok(self.sent(s, Ok(()))),
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Ok(self.sent(s, Err(e))),
                written => {
                    s.sent = written.unwrap_or(0);
                    Err(Awaits::Send(s))
                }
            },
            Awaits::Close(reason) => {
                self.closed("server", &reason.name());
                Ok(Some(Flow::Closed))
            }
            awaits => Err(awaits),
        }
    }

    /// The batch is over: its stamp goes, and its emptied vector serves
    /// this thread's next batch.
    fn done(&mut self, outs: VecDeque<Output>) {
        self.stamp = None;
        let mut spent = Vec::from(outs);
        if spent.capacity() <= SPARE_MAX {
            spent.clear();
            SPARE.set(spent);
        }
    }

    /// Performs the rest of a batch from its first output that must wait
    /// (see [`Self::run`]). Waits end early at hard stop.
    async fn perform(&mut self, rest: Rest) -> Flow {
        let Rest { first, mut outs } = rest;
        let mut next = Some(first);
        let mut delay_ms = None;
        let flow = loop {
            let awaits = match next.take().map_or_else(|| self.next_awaits(&mut outs), Ok) {
                Ok(awaits) => awaits,
                Err(flow) => break flow,
            };
            match awaits {
                Awaits::Wait(d) => {
                    delay_ms = Some(d.as_millis() as u64);
                    let ((), w) = waited(self.wait(d)).await;
                    self.unstamp_if(w);
                }
                Awaits::Send(mut s) => {
                    s.delay_ms = delay_ms.take();
                    if self.send(s).await.is_some() {
                        break Flow::Closed;
                    }
                }
                Awaits::Message(m) => {
                    // A store with a folder fsyncs before it answers.
                    let (kept, w) = waited(Box::pin(self.keep(*m))).await;
                    self.unstamp_if(w);
                    if !kept {
                        outs = not_kept(outs.drain(..).collect()).into();
                    }
                }
                Awaits::Effect(op) => {
                    // Awaited in order: the next decision sees its effect.
                    let (_, w) = waited(self.store(op)).await;
                    self.unstamp_if(w);
                }
                Awaits::Close(reason) => {
                    let (_, w) = waited(self.stream.shutdown()).await;
                    self.unstamp_if(w);
                    self.closed("server", &reason.name());
                    break Flow::Closed;
                }
            }
        };
        self.done(outs);
        flow
    }

    /// The events after an output that had to wait are stamped with their
    /// own time, not the batch's.
    fn unstamp_if(&mut self, waited: bool) {
        if waited {
            self.stamp = None;
        }
    }

    /// A scripted delay, cut short when the shutdown's grace period ends:
    /// the rest of the batch goes on, so its reply is sent and a reply
    /// that closes still closes (the shutdown's 421 follows otherwise).
    async fn wait(&self, d: Duration) {
        tokio::select! {
            _ = Box::pin(sleep(d)) => {}
            _ = self.conn.hard_stop.cancelled() => {}
        }
    }

    /// Sends the rest of a reply (all at once, or dripped) and records it;
    /// `Some` (closed) when the write failed, which ends the session.
    async fn send(&mut self, s: Sending) -> Option<Flow> {
        // A client that reads slowly makes the write wait, as a drip does.
        let (result, w) = waited(async {
            match s.drip {
                Some(pause) => Box::pin(self.drip(&s.bytes, pause)).await,
                None => self.stream.write_all(&s.bytes[s.sent..]).await,
            }
        })
        .await;
        self.unstamp_if(w);
        self.sent(s, result)
    }

    /// A reply was written (or its write failed): it is logged, counted
    /// and recorded as sent; a failed write closes the session (`Some`).
    fn sent(&mut self, s: Sending, result: std::io::Result<()>) -> Option<Flow> {
        let text = self.note_reply(s.bytes, s.code, s.rule.as_deref());
        self.record(EventKind::Reply {
            code: s.code,
            text,
            rule: s.rule,
            delay_ms: s.delay_ms,
            limit: s.tag.map(Into::into),
        });
        let e = result.err()?;
        self.closed("client", &format!("write failed: {e}"));
        Some(Flow::Closed)
    }

    /// Performs a store operation without blocking this worker: a store
    /// in this process answers at once, Redis within its deadlines.
    async fn store(&self, op: Op) -> Result<crate::state::Done, crate::state::Unavailable> {
        let now = Instant::now().into_std();
        self.engine.store().perform(op, now).await
    }

    /// Logs and counts a reply sent. Returns its text for the event: the
    /// buffer itself (one UTF-8 check), or, for a raw reply that is not
    /// UTF-8, a copy with the invalid bytes replaced.
    fn note_reply(&self, bytes: Vec<u8>, code: Option<u16>, rule: Option<&str>) -> String {
        let shown = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => lossy(e.as_bytes()).into_owned(),
        };
        tracing::debug!(session = self.id, rule, "-> {}", shown.trim_end());
        self.log_refusal(code, &shown, rule);
        self.conn.capture.metrics().reply(self.stage, code, &shown);
        shown
    }

    /// The session ended: its open-session counts go down.
    async fn release(&self) {
        if let Some(op) = self.engine.session_closed(self.id) {
            let _ = Box::pin(self.store(op)).await;
        }
    }

    /// Records a message and keeps it in the store; with `--store DIR` it
    /// is on disk when this returns. False when it could not be kept.
    async fn keep(&mut self, m: Captured) -> bool {
        self.stage = Stage::Message;
        // At debug: a line per message cost the server about a sixth of its
        // CPU per message on kept connections (docs/performance.md), and the
        // messages are in the API and the transcript anyway. Refusals stay
        // at info (`log_refusal`).
        tracing::debug!(
            session = self.id,
            id = %m.id,
            from = %m.mail_from,
            rcpt = ?m.rcpts,
            size = m.size,
            accepted = m.accepted,
            "message"
        );
        let mut event = EventKind::Message {
            id: m.id.clone(),
            mail_from: m.mail_from.clone(),
            rcpt: m.rcpts.clone(),
            size: m.size,
            accepted: m.accepted,
            reply_code: m.reply_code,
            tls: m.tls,
            chunked: m.chunked,
            bare_lf: m.bare_lf,
            bare_cr: m.bare_cr,
        };
        let origin = Origin {
            session: self.id,
            listener: self.source.listener.clone(),
            scenario: self.source.scenario.clone(),
        };
        let kept = self.conn.capture.keep(m, origin).await;
        if let Err(e) = &kept {
            tracing::error!(session = self.id, "{e}; answering 451 4.3.0 instead");
            if let EventKind::Message {
                accepted,
                reply_code,
                ..
            } = &mut event
            {
                *accepted = false;
                *reply_code = Some(defaults::not_stored().code);
            }
        }
        self.record(event);
        kept.is_ok()
    }

    /// Performs a TLS handshake on the plain socket. Returns false (and
    /// records why) when it failed.
    async fn handshake(&mut self, config: Option<&Arc<rustls::ServerConfig>>) -> bool {
        let Some(config) = config else {
            self.closed(
                "server",
                "STARTTLS accepted by a rule, but this listener has no [tls]",
            );
            return false;
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            self.closed("server", "TLS already active");
            return false;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        let result = tokio::select! {
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
            _ = self.conn.hard_stop.cancelled() => return false,
        };
        match result {
            Ok(Ok(tls)) => {
                let (_, state) = tls.get_ref();
                let version = state
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                let cipher = state
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                tracing::debug!(session = self.id, version, cipher, "TLS established");
                self.record(EventKind::Tls { version, cipher });
                self.stream = Stream::Tls(Box::new(tls));
                true
            }
            Ok(Err(e)) => {
                self.closed("client", &format!("TLS handshake failed: {e}"));
                false
            }
            Err(_) => {
                self.closed("client", "TLS handshake timed out");
                false
            }
        }
    }

    /// `--max-sessions-per-ip` reached: 421 before the greeting (as
    /// Postfix's anvil limit does), and close.
    async fn refuse_per_ip(&mut self, hostname: &str) {
        let reply = defaults::too_many_sessions_per_ip(hostname);
        let text = lossy(&reply.to_wire()).into_owned();
        tracing::info!(
            session = self.id,
            client = %self.client,
            stage = %"connect",
            code = reply.code,
            reply = text.trim_end(),
            reason = "--max-sessions-per-ip reached",
            "refused"
        );
        let _ = self.stream.write_all(&reply.to_wire()).await;
        self.record(EventKind::Reply {
            code: Some(reply.code),
            text,
            rule: None,
            delay_ms: None,
            limit: None,
        });
        let _ = self.stream.shutdown().await;
        self.closed("server", "too many connections from this IP");
    }

    async fn drip(&mut self, bytes: &[u8], pause: Duration) -> std::io::Result<()> {
        for (i, piece) in bytes.chunks(DRIP_CHUNK).enumerate() {
            if i > 0 {
                tokio::select! {
                    _ = sleep(pause) => {}
                    _ = self.conn.hard_stop.cancelled() => {}
                }
            }
            self.stream.write_all(piece).await?;
            self.stream.flush().await?;
        }
        Ok(())
    }
}

/// The rest of a batch after a message the store could not keep: its reply
/// (whatever the scenario said) becomes `451 4.3.0` and its transaction is
/// refused, since a 250 promises the message is kept (RFC 5321 §4.2.5: the
/// server takes responsibility on 250; 451 asks the client to retry later).
fn not_kept(rest: Vec<Output>) -> Vec<Output> {
    let reply = defaults::not_stored();
    let answer = Answer {
        code: Some(reply.code),
        reply: lossy(&reply.to_wire()).trim_end().to_string(),
        rule: None,
        tag: None,
    };
    let mut replaced = false;
    rest.into_iter()
        .map(|o| match o {
            Output::Send { .. } if !replaced => {
                replaced = true;
                Output::Send {
                    bytes: reply.to_wire(),
                    drip: None,
                    code: Some(reply.code),
                    rule: None,
                    tag: None,
                }
            }
            Output::Fact(Fact::Transaction {
                mail_from,
                rcpts,
                stage,
                ..
            }) => Output::Fact(Fact::Transaction {
                mail_from,
                rcpts,
                end: TxEnd::Refused,
                stage,
                answer: Some(answer.clone()),
            }),
            o => o,
        })
        .collect()
}

/// Serves one connection to the end.
///
/// This future is what an idle session costs beyond its socket, so it is
/// the task itself (no wrapper holding copies of its arguments), and the
/// steps that are not the read wait are boxed: the PROXY header, the TLS
/// handshake, a store operation, and the part of a batch of outputs that
/// must wait (`Driver::run`; inside it storing a message, drips and
/// scripted waits are boxed again: unboxed, the batch's box grew and a
/// kept message cost 2,600 instructions more). Most batches need no box:
/// they are performed within the poll that read their command. It is one
/// function, longer than the rest: with the read loop in an async function
/// of its own, an idle session took about 110 bytes more (2.90–2.91
/// against 2.74–2.80 KiB with 5,000 held). It keeps one timer and one stop
/// waiter for the whole session, not a pair per read: with the batches
/// boxed they fit, and they saved about 4,000 instructions a kept message
/// (docs/performance.md).
pub async fn serve(
    conn: Arc<Conn>,
    mut stream: TcpStream,
    mut peer: SocketAddr,
    active: Arc<Active>,
    id: u64,
    implicit_tls: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    if conn.proxy {
        let header = Box::pin(super::proxy::read_header(
            &mut stream,
            peer,
            super::proxy::HEADER_TIMEOUT,
        ));
        match header.await {
            Ok(client) => peer = client,
            Err(e) => {
                tracing::info!(session = id, peer = %peer, listener = %conn.listener, "closed: {e}");
                return;
            }
        }
    }
    let limits = conn.limits.clone();
    let mut d = Driver {
        conn: &conn,
        stream: Stream::Plain(stream),
        source: Source::new(&conn.listener, active.scenario_name()),
        id,
        client: peer,
        stage: Stage::Connect,
        engine: active.engine.clone(),
        stamp: None,
    };
    tracing::debug!(session = id, client = %peer, "connect");
    d.record(EventKind::Connect {
        client: addr_text(&peer),
    });
    // Counted until this function returns, however the session ends.
    let Some(_ip_slot) = limits.per_ip.enter(peer.ip()) else {
        Box::pin(d.refuse_per_ip(&active.session.hostname)).await;
        d.release().await;
        return;
    };
    let mut session = Session::new(active.session.clone(), active.engine.clone(), peer, id);
    session.set_budget(limits.budget.clone());
    if implicit_tls {
        if !Box::pin(d.handshake(active.tls.as_ref())).await {
            d.release().await;
            return;
        }
        session.set_tls();
    }
    let idle = active.idle_timeout;
    let session_end = Instant::now() + limits.lifetime;
    let mut flow = d
        .run(lent(&mut session).greet(Instant::now().into_std()))
        .await;
    let mut deadline = Instant::now() + idle;
    // One timer and one shutdown waiter for the whole session; a timeout
    // and a waiter made for each read were each registered and removed
    // again. A command moves only `deadline`, not the timer: the timer
    // may come early, never late (the deadline only moves later), and when
    // it comes early it is set to the deadline then, once an idle period
    // instead of once a command. Both live in every idle session's future;
    // a batch that must wait is performed in a box of its own, so its
    // state does not, and the future is smaller than it was.
    let timer = sleep_until(deadline.min(session_end));
    tokio::pin!(timer);
    let stop = conn.hard_stop.cancelled();
    tokio::pin!(stop);
    loop {
        match flow {
            Flow::Continue => {}
            Flow::StartTls => {
                if !Box::pin(d.handshake(active.tls.as_ref())).await {
                    flow = Flow::Closed;
                    break;
                }
                session.tls_established();
                deadline = Instant::now() + idle;
            }
            Flow::Closed | Flow::Hang => break,
            Flow::Store(op) => {
                // A decision waits for the store: nothing more is read
                // until the session has its answer.
                let done = Box::pin(d.store(*op)).await;
                let outputs = lent(&mut session).resume(done, Instant::now().into_std());
                deadline = Instant::now() + idle;
                flow = d.run(outputs).await;
                continue;
            }
        }
        if conn.hard_stop.is_cancelled() {
            flow = d.run(lent(&mut session).shutdown()).await;
            continue;
        }
        // In this order: bytes that arrived are taken before the timer or
        // the shutdown is looked at.
        let read = tokio::select! {
            biased;
            r = read_feed(&mut d.stream, &mut session) => Ok(r),
            _ = &mut stop => {
                // Not the last flow again (a handshake already done).
                flow = Flow::Continue;
                continue;
            }
            _ = &mut timer => Err(deadline.min(session_end)),
        };
        flow = match read {
            Err(due) if Instant::now() < due => {
                // Early: commands came since it was set (see `timer`).
                timer.as_mut().reset(due);
                Flow::Continue
            }
            Err(_) => d.run(lent(&mut session).idle_timeout()).await,
            Ok(Ok(None)) => {
                d.closed("client", "eof");
                Flow::Closed
            }
            Ok(Ok(Some((outputs, fed_at)))) => {
                // The idle timeout counts from the last command (or from the
                // last bytes of a message): a client dribbling a command one
                // byte at a time still times out.
                if session.in_body()
                    || outputs
                        .iter()
                        .any(|o| matches!(o, Output::Command { .. } | Output::Message(_)))
                {
                    deadline = fed_at + idle;
                }
                d.run(outputs).await
            }
            Ok(Err(e)) => {
                d.closed("client", &format!("read failed: {e}"));
                Flow::Closed
            }
        };
    }
    if let Flow::Hang = flow {
        // Never reply; end the session after the idle timeout anyway.
        tokio::select! {
            _ = sleep(idle) => {}
            _ = conn.hard_stop.cancelled() => {}
        }
        let _ = d.stream.shutdown().await;
        d.closed("server", &CloseReason::IdleTimeout.name());
    }
    d.release().await;
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::server::slot::{CaStore, Slot, Source as Scenario, TlsOptions};
    use tokio::io::AsyncReadExt;

    /// A listener's connection settings with an in-memory capture.
    pub(in crate::server) fn conn() -> Conn {
        Conn {
            listener: "test".into(),
            capture: Arc::new(Capture::in_memory()),
            hard_stop: CancellationToken::new(),
            limits: Arc::new(Limits {
                budget: crate::proto::MemoryBudget::new(1 << 20),
                per_ip: super::super::limits::PerIp::new(0),
                lifetime: MAX_SESSION,
            }),
            proxy: false,
        }
    }

    /// A slot serving the built-in default scenario.
    pub(in crate::server) fn default_slot() -> Slot {
        Slot::new(
            Scenario::Default,
            None,
            TlsOptions::default(),
            Arc::new(CaStore::new(None)),
            crate::state::Backend::Memory,
        )
        .unwrap()
    }

    /// A connected pair whose server side cannot take one more byte: the
    /// client reads nothing until the test says. Returns the client, the
    /// server side, the client's address and how many bytes are queued.
    async fn full_socket() -> (TcpStream, TcpStream, SocketAddr, usize) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (client, (server, peer)) = (client.unwrap(), accepted.unwrap());
        server.writable().await.unwrap();
        let filler = vec![b'x'; 64 * 1024];
        let mut queued = 0;
        loop {
            match server.try_write(&filler) {
                Ok(n) => queued += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        (client, server, peer, queued)
    }

    fn driver<'a>(conn: &'a Conn, server: TcpStream, peer: SocketAddr) -> Driver<'a> {
        Driver {
            conn,
            stream: Stream::Plain(server),
            source: Source::new("test", "default"),
            id: 1,
            client: peer,
            stage: Stage::Connect,
            engine: default_slot().current().engine.clone(),
            stamp: None,
        }
    }

    fn ok_reply() -> Output {
        Output::Send {
            bytes: b"250 2.0.0 Ok\r\n".to_vec(),
            drip: None,
            code: Some(250),
            rule: None,
            tag: None,
        }
    }

    /// A reply the socket refuses from its first byte (its send buffer is
    /// full: the client reads nothing yet) is left to the async path, and
    /// sent, once and after what was queued before it, when the client reads.
    #[tokio::test]
    async fn a_reply_a_full_socket_refuses_waits_for_room() {
        let (mut client, server, peer, queued) = full_socket().await;
        let conn = conn();
        let mut d = driver(&conn, server, peer);
        let Performed::Until(rest) = d.perform_now(vec![ok_reply()]) else {
            panic!("a full socket took the reply at once");
        };
        assert!(matches!(&rest.first, Awaits::Send(s) if s.sent == 0));
        let read = async {
            let mut got = vec![0u8; queued + 14];
            client.read_exact(&mut got).await.unwrap();
            got
        };
        let (flow, got) = tokio::join!(d.perform(rest), read);
        assert!(matches!(flow, Flow::Continue));
        assert!(got[..queued].iter().all(|&b| b == b'x'));
        assert_eq!(&got[queued..], b"250 2.0.0 Ok\r\n");
        let texts: Vec<_> = conn
            .capture
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Reply { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["250 2.0.0 Ok\r\n"]);
    }

    /// The events of a batch share the time it started, but a reply that
    /// waited for a slow reader is recorded with the time it was written.
    #[tokio::test]
    async fn a_reply_a_slow_reader_held_up_is_stamped_when_written() {
        let (mut client, server, peer, queued) = full_socket().await;
        let conn = conn();
        let mut d = driver(&conn, server, peer);
        let command = Output::Command {
            line: "NOOP".into(),
            stage: None,
            pipelined: false,
        };
        let Performed::Until(rest) = d.perform_now(vec![command, ok_reply()]) else {
            panic!("a full socket took the reply at once");
        };
        let read = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = vec![0u8; queued + 14];
            client.read_exact(&mut got).await.unwrap();
        };
        tokio::join!(d.perform(rest), read);
        let at = |want: fn(&EventKind) -> bool| {
            let events = conn.capture.events();
            let e = events.iter().find(|e| want(&e.kind)).unwrap();
            humantime::parse_rfc3339(&e.ts).unwrap()
        };
        let asked = at(|k| matches!(k, EventKind::Command { .. }));
        let answered = at(|k| matches!(k, EventKind::Reply { .. }));
        let after = answered.duration_since(asked).unwrap_or_default();
        assert!(
            after >= Duration::from_millis(299),
            "stamped {after:?} after"
        );
    }
}
