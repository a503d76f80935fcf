//! Capture and transcripts: every session as structured events (connect,
//! each command as received, each reply as sent with the rule that decided
//! it, messages, close), kept in memory (bounded), offered live to
//! subscribers, and written as JSON Lines with `--events FILE` as they
//! happen (see [`writer`]); the messages that arrived, in the [`store`]
//! (bounded by bytes, and on disk with `--store DIR`); and the counters of
//! [`metrics`].

mod json;
mod live;
pub mod metrics;
pub mod store;
mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use live::Live;
pub use metrics::Metrics;
pub use store::{Filter, Message, Origin, Page, Store, StoreError};

use crate::proto::{Answer, Captured, Fact, Stage, Tag, TxEnd};

/// What happened in a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A listener started (session 0): which scenario file it serves, as
    /// an absolute path, and a hash of its text (see [`scenario_hash`]) so
    /// `report` can tell when the file changed since.
    Listen {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hash: Option<String>,
    },
    Connect {
        client: String,
    },
    /// A command line exactly as received (invalid UTF-8 replaced), and
    /// the stage it opened (none for a BDAT after the first, a line too long).
    Command {
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<Stage>,
        #[serde(default)]
        pipelined: bool,
    },
    /// A reply as sent.
    Reply {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u16>,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay_ms: Option<u64>,
        /// Set when a stateful rule (rate, concurrency, greylist,
        /// reputation) decided this reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<Limit>,
    },
    Message {
        id: String,
        mail_from: String,
        rcpt: Vec<String>,
        size: u64,
        accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_code: Option<u16>,
        tls: bool,
        chunked: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bare_lf: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bare_cr: bool,
    },
    /// HELO/EHLO accepted: the client's name, and whether PIPELINING was
    /// offered to it.
    Greeted {
        helo: String,
        esmtp: bool,
        pipelining: bool,
    },
    /// The greeting, HELO or EHLO was refused.
    Refused {
        stage: Stage,
        answer: Said,
    },
    /// MAIL answered; a positive answer opened a transaction.
    Mail {
        mail_from: String,
        answer: Said,
    },
    /// One recipient's result at RCPT.
    Rcpt {
        rcpt: String,
        answer: Said,
    },
    /// A transaction ended: its accepted recipients, how (delivered,
    /// refused, reset, abandoned, dropped), at which stage, and the reply
    /// that ended it.
    Transaction {
        mail_from: String,
        rcpts: Vec<String>,
        end: TxEnd,
        stage: Stage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<Said>,
    },
    /// The TLS handshake completed (STARTTLS or implicit TLS).
    Tls {
        version: String,
        cipher: String,
    },
    /// The server stopped reading and replying (`action = "hang"`).
    Hang {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
    },
    Close {
        /// `client` or `server`.
        by: String,
        reason: String,
    },
}

/// A deciding reply in a typed event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Said {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Its last line, the one that carries its meaning.
    pub reply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

impl From<Answer> for Said {
    fn from(a: Answer) -> Self {
        Self {
            code: a.code,
            reply: a.reply,
            rule: a.rule,
            limit: a.tag.map(Into::into),
        }
    }
}

impl From<Fact> for EventKind {
    fn from(f: Fact) -> Self {
        match f {
            Fact::Greeted {
                helo,
                esmtp,
                pipelining,
            } => EventKind::Greeted {
                helo,
                esmtp,
                pipelining,
            },
            Fact::Refused { stage, answer } => EventKind::Refused {
                stage,
                answer: answer.into(),
            },
            Fact::Mail { mail_from, answer } => EventKind::Mail {
                mail_from,
                answer: answer.into(),
            },
            Fact::Rcpt { rcpt, answer } => EventKind::Rcpt {
                rcpt,
                answer: answer.into(),
            },
            Fact::Transaction {
                mail_from,
                rcpts,
                end,
                stage,
                answer,
            } => EventKind::Transaction {
                mail_from,
                rcpts,
                end,
                stage,
                answer: answer.map(Into::into),
            },
        }
    }
}

/// What a stateful rule knew when it replied: the report uses it to judge
/// the sender (retried a greylisted delivery too early, ignored a rate).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Limit {
    Rate { max: u64, window_ms: u64 },
    Concurrent { max: u64 },
    Greylist { retry_after_ms: u64 },
    Reputation { attempts: u64, failures: u64 },
}

impl From<Tag> for Limit {
    fn from(t: Tag) -> Self {
        match t {
            Tag::Rate { max, window } => Limit::Rate {
                max,
                window_ms: window.as_millis() as u64,
            },
            Tag::Concurrent { max } => Limit::Concurrent { max },
            Tag::Greylist { retry_after } => Limit::Greylist {
                retry_after_ms: retry_after.as_millis() as u64,
            },
            Tag::Reputation { attempts, failures } => Limit::Reputation { attempts, failures },
        }
    }
}

/// Every event type, as the `type` field names it.
pub const EVENT_TYPES: [&str; 13] = [
    "listen",
    "connect",
    "command",
    "reply",
    "message",
    "greeted",
    "refused",
    "mail",
    "rcpt",
    "transaction",
    "tls",
    "hang",
    "close",
];

impl EventKind {
    /// Its `type` field (one of [`EVENT_TYPES`]).
    pub fn type_name(&self) -> &'static str {
        EVENT_TYPES[self.type_index()]
    }

    /// Its type's place in [`EVENT_TYPES`].
    pub fn type_index(&self) -> usize {
        match self {
            EventKind::Listen { .. } => 0,
            EventKind::Connect { .. } => 1,
            EventKind::Command { .. } => 2,
            EventKind::Reply { .. } => 3,
            EventKind::Message { .. } => 4,
            EventKind::Greeted { .. } => 5,
            EventKind::Refused { .. } => 6,
            EventKind::Mail { .. } => 7,
            EventKind::Rcpt { .. } => 8,
            EventKind::Transaction { .. } => 9,
            EventKind::Tls { .. } => 10,
            EventKind::Hang { .. } => 11,
            EventKind::Close { .. } => 12,
        }
    }

    /// The Listen event for a listener serving `file` (None: the built-in
    /// scenario or inline text). The path is made absolute so `report` finds
    /// it from any folder.
    pub fn listen(file: Option<&Path>) -> Self {
        let Some(path) = file else {
            return EventKind::Listen {
                file: None,
                hash: None,
            };
        };
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let hash = std::fs::read(&abs).ok().map(|t| scenario_hash(&t));
        EventKind::Listen {
            file: Some(abs.display().to_string()),
            hash,
        }
    }
}

/// The hash of a scenario's text recorded in Listen events: FNV-1a, 16 hex
/// digits with an `fnv1a:` prefix (a stable hash, not a security measure).
pub fn scenario_hash(text: &[u8]) -> String {
    format!(
        "fnv1a:{:016x}",
        crate::state::fnv1a(crate::state::FNV_OFFSET, text)
    )
}

/// One transcript event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339, milliseconds, UTC. Shared by the events of the same
    /// millisecond on a thread (see [`timestamp`]).
    pub ts: Arc<str>,
    /// Shared by a session's events (see [`Capture::record_stamped`]).
    pub listener: Arc<str>,
    pub scenario: Arc<str>,
    pub session: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// Appends the event as one line of JSON (no line end): the events
    /// file's and SSE's form, the same as serde's (see [`json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json::write_event(self, out);
    }
}

thread_local! {
    // The names last recorded on this thread: a thread runs one session at
    // a time, and a session's events all name the same listener and
    // scenario, so they share one copy instead of two new strings an
    // event (which, scattered over the heap, were also what made encoding
    // events for a live stream slow).
    static LAST_LISTENER: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    static LAST_SCENARIO: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
    // The millisecond last stamped on this thread, and its text.
    static LAST_TS: std::cell::RefCell<(u64, Option<Arc<str>>)> = const { std::cell::RefCell::new((0, None)) };
}

/// `2026-12-01T10:31:37.123Z`: the milliseconds are bytes 20 to 22.
const STAMP_LEN: usize = 24;
const STAMP_MILLIS: usize = 20;

/// The time now as an event's timestamp.
pub fn stamp_now() -> Arc<str> {
    timestamp(SystemTime::now())
}

/// `now` as an event's timestamp. A busy server records a hundred events a
/// millisecond on each thread; they share one formatted text instead of
/// formatting and allocating one each. A new millisecond of the same
/// second only has its three digits written into a copy of the last text:
/// the date and time are formatted once a second.
fn timestamp(now: SystemTime) -> Arc<str> {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    LAST_TS.with_borrow_mut(|last| {
        let same_second = last.0 / 1000 == ms / 1000;
        let ts = match &last.1 {
            Some(ts) if last.0 == ms => return ts.clone(),
            Some(ts) if same_second => with_millis(ts, ms),
            _ => None,
        }
        .unwrap_or_else(|| rfc3339_millis(now));
        *last = (ms, Some(ts.clone()));
        ts
    })
}

/// `stamp` (of the same second) with the milliseconds of `ms`; None when
/// it is not in the usual 24-byte form.
fn with_millis(stamp: &str, ms: u64) -> Option<Arc<str>> {
    let mut text = <[u8; STAMP_LEN]>::try_from(stamp.as_bytes()).ok()?;
    let digits = &mut text[STAMP_MILLIS..STAMP_MILLIS + 3];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let m = (ms % 1000) as u16;
    for (b, d) in digits.iter_mut().zip([m / 100, m / 10 % 10, m % 10]) {
        *b = b'0' + d as u8;
    }
    std::str::from_utf8(&text).ok().map(Arc::from)
}

/// `now` as RFC 3339 text with milliseconds (`2026-12-01T10:31:37.123Z`,
/// 24 bytes), formatted on the stack: one allocation, the shared text's.
fn rfc3339_millis(now: SystemTime) -> Arc<str> {
    use std::io::Write;
    let mut buf = [0u8; 32];
    let mut rest = &mut buf[..];
    let written = write!(rest, "{}", humantime::format_rfc3339_millis(now)).is_ok();
    let len = 32 - rest.len();
    match std::str::from_utf8(&buf[..len]) {
        Ok(text) if written => Arc::from(text),
        _ => Arc::from(humantime::format_rfc3339_millis(now).to_string()),
    }
}

/// `s` as a shared string: the one in `last` when it is the same.
fn shared(last: &std::cell::RefCell<Option<Arc<str>>>, s: &str) -> Arc<str> {
    let mut last = last.borrow_mut();
    match last.as_ref() {
        Some(l) if **l == *s => l.clone(),
        _ => {
            let new: Arc<str> = Arc::from(s);
            *last = Some(new.clone());
            new
        }
    }
}

/// Where a session's events come from: its listener and scenario, shared
/// by all of them.
#[derive(Debug, Clone)]
pub struct Source {
    pub listener: Arc<str>,
    pub scenario: Arc<str>,
}

impl Source {
    /// The names, shared with the last ones used on this thread when they
    /// are the same: the sessions of a listener share one copy, in their
    /// events and in the ring.
    pub fn new(listener: &str, scenario: &str) -> Self {
        Self {
            listener: LAST_LISTENER.with(|l| shared(l, listener)),
            scenario: LAST_SCENARIO.with(|l| shared(l, scenario)),
        }
    }
}

/// How many events are kept in memory: enough for the transcripts the API
/// serves and the report of a test run; at a few hundred bytes an event,
/// tens of MB at most.
pub const KEEP_EVENTS: usize = 50_000;
/// Live events waiting for a slow subscriber (an SSE client) before it
/// skips some; the SMTP side never waits for subscribers. Enough for the
/// events of a busy server while a reader gathers them (a few hundred
/// thousand a second, for 25 ms).
pub const LIVE_BACKLOG: usize = 16_384;

/// An event of `source` in the allocation of the event the full ring just
/// evicted, when nothing else holds that one (no reader, the events file
/// written): once the ring is full, a server records an event without
/// allocating and freeing a block for it (about a thousand instructions
/// fewer a kept message: `bench/instructions.sh --warm 5000`), and writes
/// its fields straight into the block instead of building the event
/// first and moving it there (a copy of ~200 bytes fewer an event).
fn in_place_of(
    evicted: Option<Arc<Event>>,
    source: &Source,
    session: u64,
    ts: Arc<str>,
    kind: EventKind,
) -> Arc<Event> {
    if let Some(mut old) = evicted {
        if let Some(e) = Arc::get_mut(&mut old) {
            e.ts = ts;
            e.listener.clone_from(&source.listener);
            e.scenario.clone_from(&source.scenario);
            e.session = session;
            e.kind = kind;
            return old;
        }
    }
    Arc::new(Event {
        ts,
        listener: source.listener.clone(),
        scenario: source.scenario.clone(),
        session,
        kind,
    })
}

/// Where events and messages go. Shared by every session of a server.
pub struct Capture {
    // A thread of its own writes the file: sessions only queue.
    events_file: Option<writer::Writer>,
    store: Store,
    // A bounded ring: memory stays flat however long the server runs.
    events: Mutex<VecDeque<Arc<Event>>>,
    /// Events as they happen, for live readers (SSE, wait-for).
    live: broadcast::Sender<Arc<Event>>,
    /// Which types live readers want: only those are sent.
    interest: Arc<live::Interest>,
    metrics: Metrics,
}

impl Capture {
    /// Events to `events` (JSON Lines) if given; messages in memory with
    /// the default bound, and in `store_dir` if given.
    pub fn new(events: Option<&Path>, store_dir: Option<&Path>) -> std::io::Result<Self> {
        Self::with_store(events, Store::new(store_dir, store::DEFAULT_MAX_BYTES)?)
    }

    /// Events to `events` if given, messages in `store`.
    pub fn with_store(events: Option<&Path>, store: Store) -> std::io::Result<Self> {
        let events_file = match events {
            Some(p) => Some(writer::Writer::start(File::create(p)?)?),
            None => None,
        };
        Ok(Self {
            events_file,
            store,
            events: Mutex::new(VecDeque::new()),
            live: broadcast::channel(LIVE_BACKLOG).0,
            interest: Arc::default(),
            metrics: Metrics::default(),
        })
    }

    /// A capture that keeps everything in memory only.
    pub fn in_memory() -> Self {
        Self::with_store(
            None,
            Store::new(None, store::DEFAULT_MAX_BYTES).expect("no folder"),
        )
        .expect("no events file")
    }

    pub fn record(&self, listener: &str, scenario: &str, session: u64, kind: EventKind) {
        let source = Source::new(listener, scenario);
        self.record_stamped(&source, session, stamp_now(), kind);
    }

    /// Records an event of a session whose listener and scenario names
    /// are already shared (a session records a few dozen events, and
    /// sharing its names once saves looking them up for each), with a
    /// timestamp taken before (see [`stamp_now`]): the events one batch of
    /// a session's outputs records in the same instant share one, instead
    /// of reading the clock for each.
    pub fn record_stamped(&self, source: &Source, session: u64, ts: Arc<str>, kind: EventKind) {
        self.metrics.observe(&source.scenario, &kind);
        let mut ring = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = if ring.len() == KEEP_EVENTS {
            ring.pop_front()
        } else {
            None
        };
        let event = in_place_of(evicted, source, session, ts, kind);
        ring.push_back(event.clone());
        drop(ring);
        if let Some(w) = &self.events_file {
            w.send(event.clone());
        }
        // No reader is the usual case, and then nothing is sent.
        if self.interest.wants(event.kind.type_index()) {
            let _ = self.live.send(event);
        }
    }

    /// Keeps a message that arrived in session `origin` (see
    /// [`Store::put`]: with a folder, on disk before this returns). An
    /// error means it is kept nowhere: the message must not get a 250.
    pub async fn keep(&self, m: Captured, origin: Origin) -> Result<Arc<Message>, StoreError> {
        let m = Message::new(m, origin, SystemTime::now());
        self.store.put(m).await
    }

    /// Messages kept, oldest first.
    pub fn messages(&self) -> Vec<Arc<Message>> {
        self.store.all()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Changes each time the store changes (a message kept, deleted,
    /// cleared). Subscribe, then read [`Capture::messages`], then await
    /// `changed()`: nothing is missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.store.subscribe()
    }

    /// Events from now on, as they are recorded. A reader that falls
    /// [`LIVE_BACKLOG`] events behind skips ahead (and is told how many it
    /// missed).
    pub fn live(&self) -> Live {
        self.live_of(&EVENT_TYPES)
    }

    /// Events of these types (names from [`EVENT_TYPES`]) from now on: a
    /// session sends an event to live readers only when one wants its type.
    /// Unknown names are ignored.
    pub fn live_of(&self, types: &[&str]) -> Live {
        let places = EVENT_TYPES
            .iter()
            .enumerate()
            .filter(|(_, t)| types.contains(t))
            .map(|(i, _)| i)
            .collect();
        Live::new(&self.live, self.interest.clone(), places)
    }

    /// Forgets the messages and events kept in memory (files already
    /// written stay).
    pub fn clear(&self) {
        self.store.clear();
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// True when events were dropped from the in-memory ring.
    pub fn events_truncated(&self) -> bool {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).len() == KEEP_EVENTS
    }

    /// Events kept, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| (**e).clone())
            .collect()
    }

    /// Events kept, oldest first, shared (cheap: no event is copied).
    pub fn shared_events(&self) -> Vec<Arc<Event>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Events kept now (at most [`KEEP_EVENTS`]).
    pub fn events_kept(&self) -> usize {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until every event recorded so far is in the events file.
    pub fn flush(&self) {
        if let Some(w) = &self.events_file {
            w.flush();
            if w.dropped() > 0 {
                tracing::warn!(
                    dropped = w.dropped(),
                    "the events file misses {} event(s): its writer could not keep up",
                    w.dropped()
                );
            }
        }
    }

    /// Events the file missed because its writer could not keep up.
    pub fn events_dropped(&self) -> u64 {
        self.events_file.as_ref().map_or(0, writer::Writer::dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_timestamp_is_the_rfc3339_text_humantime_writes() {
        for ms in [0, 1_764_585_097_123, 1_764_585_097_999, 253_402_300_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let want = humantime::format_rfc3339_millis(t).to_string();
            assert_eq!(&*rfc3339_millis(t), want);
        }
        assert_eq!(
            &*rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_764_585_097_123)),
            "2025-12-01T10:31:37.123Z"
        );
    }

    #[test]
    fn a_full_ring_keeps_the_newest_events_and_leaves_held_ones_alone() {
        let capture = Capture::in_memory();
        let source = Source::new("smtp", "healthy");
        let command = |n: u64| EventKind::Command {
            line: format!("NOOP {n}"),
            stage: None,
            pipelined: false,
        };
        for n in 0..KEEP_EVENTS as u64 {
            capture.record_stamped(&source, n, stamp_now(), command(n));
        }
        // A reader holds the oldest events while the ring evicts them: the
        // evicted allocations it shares must not be written over.
        let held = capture.shared_events();
        let extra = 1_000u64;
        for n in 0..extra {
            let n = KEEP_EVENTS as u64 + n;
            capture.record_stamped(&source, n, stamp_now(), command(n));
        }
        assert_eq!(held[0].session, 0);
        assert_eq!(held[0].kind, command(0));
        // Then with no reader: the next eviction reuses its allocation.
        drop(held);
        let oldest = Arc::as_ptr(&capture.shared_events()[0]);
        let n = KEEP_EVENTS as u64 + extra;
        capture.record_stamped(&source, n, stamp_now(), command(n));
        let newest = capture.shared_events().last().map(Arc::as_ptr);
        assert_eq!(newest, Some(oldest));
        for n in 1..extra {
            let n = KEEP_EVENTS as u64 + extra + n;
            capture.record_stamped(&source, n, stamp_now(), command(n));
        }
        let events = capture.shared_events();
        assert_eq!(events.len(), KEEP_EVENTS);
        assert!(capture.events_truncated());
        let first = 2 * extra;
        for (i, e) in events.iter().enumerate() {
            let n = first + i as u64;
            assert_eq!((e.session, &e.kind), (n, &command(n)), "event {i}");
        }
    }

    #[test]
    fn a_stamp_of_a_new_millisecond_is_the_text_humantime_writes() {
        // Milliseconds of one second (only their digits are written into the
        // last text), the next seconds, the same millisecond again, and
        // back in time (a clock set back).
        let base = 1_764_585_097_000;
        let day = 86_400_000;
        for ms in [5, 6, 99, 100, 999, 1_000, 1_007, 61_010, 61_010, 0, day + 1] {
            let t = UNIX_EPOCH + Duration::from_millis(base + ms);
            let want = humantime::format_rfc3339_millis(t).to_string();
            assert_eq!(&*timestamp(t), want, "{ms}");
        }
    }
}
