//! Capture and transcripts: every session as structured events (connect,
//! each command as received, each reply as sent with the rule that decided
//! it, messages, close), written as JSON Lines with `--events FILE` as they
//! happen (see [`writer`]), and the
//! messages that arrived, kept in memory (bounded) and optionally as `.eml`
//! files with `--capture-dir`.

mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

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

impl EventKind {
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
    /// RFC 3339, milliseconds, UTC.
    pub ts: String,
    pub listener: String,
    pub scenario: String,
    pub session: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// How many messages and events are kept in memory.
pub const KEEP_MESSAGES: usize = 1000;
pub const KEEP_EVENTS: usize = 10_000;

/// Where events and messages go. Shared by every session of a server.
pub struct Capture {
    // A thread of its own writes the file: sessions only queue.
    events_file: Option<writer::Writer>,
    capture_dir: Option<PathBuf>,
    // Bounded rings: memory stays flat however long the server runs.
    messages: Mutex<VecDeque<Arc<Captured>>>,
    events: Mutex<VecDeque<Event>>,
    /// Messages captured so far: waiters subscribe before they look, so a
    /// message arriving in between still wakes them (no lost wake-up).
    arrived: tokio::sync::watch::Sender<u64>,
}

impl Capture {
    pub fn new(events: Option<&Path>, capture_dir: Option<&Path>) -> std::io::Result<Self> {
        let events_file = match events {
            Some(p) => Some(writer::Writer::start(File::create(p)?)?),
            None => None,
        };
        if let Some(d) = capture_dir {
            std::fs::create_dir_all(d)?;
        }
        Ok(Self {
            events_file,
            capture_dir: capture_dir.map(Path::to_path_buf),
            messages: Mutex::new(VecDeque::new()),
            events: Mutex::new(VecDeque::new()),
            arrived: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A capture that keeps everything in memory only.
    pub fn in_memory() -> Self {
        Self {
            events_file: None,
            capture_dir: None,
            messages: Mutex::new(VecDeque::new()),
            events: Mutex::new(VecDeque::new()),
            arrived: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time a message is captured. Subscribe, then read
    /// [`Capture::messages`], then await `changed()`: nothing is missed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.arrived.subscribe()
    }

    /// Forgets the messages and events kept in memory (files already
    /// written stay).
    pub fn clear(&self) {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn record(&self, listener: &str, scenario: &str, session: u64, kind: EventKind) {
        let event = Event {
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            listener: listener.to_string(),
            scenario: scenario.to_string(),
            session,
            kind,
        };
        if let Some(w) = &self.events_file {
            w.send(event.clone());
        }
        let mut ring = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP_EVENTS {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    pub fn message(&self, m: Captured) {
        if m.accepted {
            if let Some(dir) = &self.capture_dir {
                let path = dir.join(format!("{}.eml", m.id));
                if let Err(e) = std::fs::write(&path, &m.body) {
                    tracing::warn!("cannot write {}: {e}", path.display());
                }
            }
        }
        let mut ring = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == KEEP_MESSAGES {
            ring.pop_front();
        }
        ring.push_back(Arc::new(m));
        drop(ring);
        self.arrived.send_modify(|n| *n += 1);
    }

    /// Messages kept, oldest first.
    pub fn messages(&self) -> Vec<Arc<Captured>> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
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
            .cloned()
            .collect()
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
