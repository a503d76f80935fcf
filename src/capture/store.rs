//! The message store: every message that reached the end of DATA or BDAT,
//! kept in memory up to a total number of bytes (the oldest go first), and,
//! with a folder, written there as `<id>.eml` with its envelope beside it as
//! `<id>.json`, both fsynced before the server answers (see [`Store::put`]).
//!
//! The bound is on bytes, not on messages: a ring of 1,000 messages of
//! 35 MB each would hold 35 GB. The folder is an archive: the memory bound,
//! `delete` and `clear` never remove files there.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

use crate::proto::Captured;

/// The default memory bound: 256 MB (decimal, as `--store-max-bytes` reads
/// sizes).
pub const DEFAULT_MAX_BYTES: u64 = 256_000_000;

/// What a kept message costs besides its body: the envelope strings and the
/// bookkeeping. A flat estimate keeps the accounting cheap and still bounds
/// memory when many empty messages arrive.
const OVERHEAD: u64 = 512;

/// Where a message came from: its session.
#[derive(Debug, Clone)]
pub struct Origin {
    pub session: u64,
    /// Shared with the session's events (see [`super::Source`]).
    pub listener: Arc<str>,
    pub scenario: Arc<str>,
}

/// A message in the store. The body is not serialized: the API serves it
/// apart (`/raw`).
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub session: u64,
    pub listener: Arc<str>,
    pub scenario: Arc<str>,
    /// When the message ended; serialized as `received`, RFC 3339 with
    /// milliseconds, UTC.
    pub received_at: SystemTime,
    pub client: SocketAddr,
    pub helo: Option<String>,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The decoded Subject header, read from the body when first asked for
    /// (see [`Message::subject`]).
    subject: OnceLock<Option<String>>,
    pub size: u64,
    pub tls: bool,
    pub chunked: bool,
    pub bare_lf: bool,
    pub bare_cr: bool,
    /// True when the reply to it was positive (the body is kept only then).
    pub accepted: bool,
    pub reply_code: Option<u16>,
    pub body: Vec<u8>,
}

/// How a message reads in JSON (the API, `<id>.json`): its envelope and
/// the decoded Subject, not the body.
#[derive(Serialize)]
struct MessageJson<'a> {
    id: &'a str,
    session: u64,
    listener: &'a str,
    scenario: &'a str,
    received: String,
    client: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    helo: Option<&'a str>,
    mail_from: &'a str,
    rcpts: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    size: u64,
    tls: bool,
    chunked: bool,
    bare_lf: bool,
    bare_cr: bool,
    accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_code: Option<u16>,
}

impl Serialize for Message {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MessageJson {
            id: &self.id,
            session: self.session,
            listener: &self.listener,
            scenario: &self.scenario,
            received: humantime::format_rfc3339_millis(self.received_at).to_string(),
            client: self.client,
            helo: self.helo.as_deref(),
            mail_from: &self.mail_from,
            rcpts: &self.rcpts,
            subject: self.subject(),
            size: self.size,
            tls: self.tls,
            chunked: self.chunked,
            bare_lf: self.bare_lf,
            bare_cr: self.bare_cr,
            accepted: self.accepted,
            reply_code: self.reply_code,
        }
        .serialize(s)
    }
}

impl Message {
    pub fn new(mut m: Captured, origin: Origin, received_at: SystemTime) -> Self {
        // The buffer grew by doubling from 4 KiB while the message came in;
        // kept as it is, a 1 KB message would hold four times its size,
        // which the store's byte bound (it counts the length) would not see.
        m.body.shrink_to_fit();
        Self {
            id: m.id,
            session: origin.session,
            listener: origin.listener,
            scenario: origin.scenario,
            received_at,
            client: m.client,
            helo: m.helo,
            mail_from: m.mail_from,
            rcpts: m.rcpts,
            subject: OnceLock::new(),
            size: m.size,
            tls: m.tls,
            chunked: m.chunked,
            bare_lf: m.bare_lf,
            bare_cr: m.bare_cr,
            accepted: m.accepted,
            reply_code: m.reply_code,
            body: m.body,
        }
    }

    /// The decoded Subject header, if any. Read from the body the first
    /// time it is asked for (a listing, a filter, the JSON), so a store in
    /// memory does not decode it while the session waits for its 250 (a
    /// store folder does: the `<id>.json` written before it carries the
    /// Subject). Most messages of a load test are never looked at one by
    /// one.
    pub fn subject(&self) -> Option<&str> {
        self.subject
            .get_or_init(|| subject_of(&self.body))
            .as_deref()
    }

    /// What this message counts against the memory bound.
    pub fn cost(&self) -> u64 {
        self.body.len() as u64 + OVERHEAD
    }
}

fn subject_of(body: &[u8]) -> Option<String> {
    // Only the Subject is decoded (RFC 2047 words and all); every other
    // header is kept raw, which is cheaper than the default parser's work
    // on dates, addresses and message ids the store never reads.
    static PARSER: std::sync::LazyLock<mail_parser::MessageParser> =
        std::sync::LazyLock::new(|| {
            mail_parser::MessageParser::new().header_text(mail_parser::HeaderName::Subject)
        });
    let parsed = PARSER.parse_headers(body)?;
    parsed.subject().map(str::to_string)
}

/// Which messages a listing wants. Every field that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Substring of MAIL FROM, case-insensitive.
    pub from: Option<String>,
    /// Substring of one recipient, case-insensitive.
    pub rcpt: Option<String>,
    /// Substring of the subject, case-insensitive.
    pub subject: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    pub session: Option<u64>,
    pub accepted: Option<bool>,
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(&needle.to_lowercase())
}

impl Filter {
    pub fn matches(&self, m: &Message) -> bool {
        self.from.as_ref().is_none_or(|f| contains(&m.mail_from, f))
            && self
                .rcpt
                .as_ref()
                .is_none_or(|r| m.rcpts.iter().any(|x| contains(x, r)))
            && self
                .subject
                .as_ref()
                .is_none_or(|s| m.subject().is_some_and(|x| contains(x, s)))
            && self.since.is_none_or(|t| m.received_at >= t)
            && self.until.is_none_or(|t| m.received_at <= t)
            && self.session.is_none_or(|s| m.session == s)
            && self.accepted.is_none_or(|a| m.accepted == a)
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matching messages in all.
    pub total: usize,
    /// This page, newest first.
    pub items: Vec<Arc<Message>>,
}

/// Why a message could not be kept.
#[derive(Debug, thiserror::Error)]
#[error("cannot store message {id} in {dir}: {source}")]
pub struct StoreError {
    pub id: String,
    pub dir: String,
    #[source]
    pub source: std::io::Error,
}

struct Kept {
    messages: VecDeque<Arc<Message>>,
    bytes: u64,
}

/// The store. Shared by every session of a server.
pub struct Store {
    dir: Option<PathBuf>,
    max_bytes: u64,
    // One lock for the queue and its byte count: a put is a push and a few
    // pops, a listing a scan of at most the bound's worth of messages.
    kept: Mutex<Kept>,
    /// Messages evicted to stay under the bound, for the metrics.
    evicted: AtomicU64,
    /// Bumped on every put, delete and clear: waiters subscribe, look, then
    /// await a change, so nothing arriving in between is missed.
    changed: watch::Sender<u64>,
}

impl Store {
    /// A store bounded by `max_bytes`, writing to `dir` when given (made if
    /// missing).
    pub fn new(dir: Option<&Path>, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(d) = dir {
            std::fs::create_dir_all(d)?;
        }
        Ok(Self {
            dir: dir.map(Path::to_path_buf),
            max_bytes,
            kept: Mutex::new(Kept {
                messages: VecDeque::new(),
                bytes: 0,
            }),
            evicted: AtomicU64::new(0),
            changed: watch::Sender::new(0),
        })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Keeps a message. With a folder and an accepted message, the files
    /// are written and fsynced (the files and the folder) first, on a
    /// blocking thread; an error means the message is not kept anywhere
    /// and the server must not say 250.
    pub async fn put(&self, m: Message) -> Result<Arc<Message>, StoreError> {
        let m = Arc::new(m);
        if let (Some(dir), true) = (&self.dir, m.accepted) {
            let (dir, msg) = (dir.clone(), m.clone());
            let written = tokio::task::spawn_blocking(move || write_files(&dir, &msg))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(source) = written {
                return Err(StoreError {
                    id: m.id.clone(),
                    dir: self
                        .dir
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string(),
                    source,
                });
            }
        }
        self.keep(m.clone());
        Ok(m)
    }

    fn keep(&self, m: Arc<Message>) {
        let mut k = self.lock();
        k.bytes += m.cost();
        k.messages.push_back(m);
        let mut evicted = 0;
        while k.bytes > self.max_bytes {
            let Some(old) = k.messages.pop_front() else {
                break;
            };
            k.bytes -= old.cost();
            evicted += 1;
        }
        drop(k);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every message kept, oldest first.
    pub fn all(&self) -> Vec<Arc<Message>> {
        self.lock().messages.iter().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Message>> {
        self.lock()
            .messages
            .iter()
            .rev()
            .find(|m| m.id == id)
            .cloned()
    }

    /// Matching messages, newest first, `offset` skipped, at most `limit`.
    pub fn list(&self, filter: &Filter, limit: usize, offset: usize) -> Page {
        // Filtered outside the lock: a filter may read subjects for the
        // first time, and sessions wait on this lock to keep a message.
        let all = self.all();
        let mut total = 0;
        let mut items = vec![];
        for m in all.iter().rev().filter(|m| filter.matches(m)) {
            if total >= offset && items.len() < limit {
                items.push(m.clone());
            }
            total += 1;
        }
        Page { total, items }
    }

    /// Forgets one message; false when it is not kept.
    pub fn delete(&self, id: &str) -> bool {
        let mut k = self.lock();
        let Some(at) = k.messages.iter().position(|m| m.id == id) else {
            return false;
        };
        if let Some(m) = k.messages.remove(at) {
            k.bytes -= m.cost();
        }
        drop(k);
        self.changed.send_modify(|n| *n += 1);
        true
    }

    /// Forgets every message; returns how many.
    pub fn clear(&self) -> usize {
        let mut k = self.lock();
        let n = k.messages.len();
        k.messages.clear();
        k.bytes = 0;
        drop(k);
        self.changed.send_modify(|n| *n += 1);
        n
    }

    /// (messages, bytes) kept now.
    pub fn size(&self) -> (usize, u64) {
        let k = self.lock();
        (k.messages.len(), k.bytes)
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Changes on every put, delete and clear.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The envelope written beside each `.eml`.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    message: &'a Message,
}

/// Writes `<id>.eml` and `<id>.json` through temporary names, fsyncs both,
/// renames them into place and fsyncs the folder, so a file under its final
/// name is complete and survives a crash (the rename is durable only once
/// the folder is synced).
fn write_files(dir: &Path, m: &Message) -> std::io::Result<()> {
    let json =
        serde_json::to_vec_pretty(&Envelope { message: m }).map_err(std::io::Error::other)?;
    write_synced(dir, &format!("{}.eml", m.id), &m.body)?;
    write_synced(dir, &format!("{}.json", m.id), &json)?;
    sync_dir(dir)
}

fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) -> std::io::Result<()> {
    // Windows cannot open a folder as a file; NTFS journals the rename.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_decoded_and_unfolded_whatever_headers_come_first() {
        let body = b"Date: not a date at all\r\nFrom: <<broken\r\n\
            Subject: =?UTF-8?B?w5xiZXI=?= the\r\n =?ISO-8859-1?Q?caf=E9?= report\r\n\
            Message-ID: x\r\n\r\nbody\r\n";
        assert_eq!(subject_of(body).as_deref(), Some("Über the café report"));
        assert_eq!(
            subject_of(b"From: a@b\r\n\r\nSubject: in the body\r\n"),
            None
        );
    }

    #[test]
    fn the_json_reads_the_subject_and_the_time_from_the_message() {
        let mut m = msg("J1", 3, "r@x");
        m.received_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["received"], "1970-01-01T00:00:01.500Z");
        assert_eq!(v["subject"], "s-J1");
        assert_eq!(m.subject(), Some("s-J1"));
        assert!(v.get("body").is_none() && v.get("received_at").is_none());
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"id":"J1","session":1,"listener":"l","scenario":"s","received":"1970-01-01T00:00:01.500Z","client":"127.0.0.1:1","mail_from":"a@b.test","rcpts":["r@x"],"subject":"s-J1","size":3,"tls":false,"chunked":false,"bare_lf":false,"bare_cr":false,"accepted":true,"reply_code":250}"#
        );
        let none = Message::new(
            Captured {
                body: b"From: a@b\r\n\r\nno subject\r\n".to_vec(),
                ..captured("J2", "r@x")
            },
            origin(),
            SystemTime::now(),
        );
        assert!(serde_json::to_value(&none)
            .unwrap()
            .get("subject")
            .is_none());
    }

    fn captured(id: &str, rcpt: &str) -> Captured {
        Captured {
            id: id.into(),
            client: "127.0.0.1:1".parse().unwrap(),
            helo: None,
            mail_from: "a@b.test".into(),
            rcpts: vec![rcpt.into()],
            body: Vec::new(),
            size: 0,
            tls: false,
            bare_lf: false,
            bare_cr: false,
            chunked: false,
            accepted: true,
            reply_code: Some(250),
        }
    }

    fn origin() -> Origin {
        Origin {
            session: 1,
            listener: "l".into(),
            scenario: "s".into(),
        }
    }

    fn msg(id: &str, body: usize, rcpt: &str) -> Message {
        let captured = Captured {
            body: format!("Subject: s-{id}\r\n\r\n{}", "x".repeat(body)).into_bytes(),
            size: body as u64,
            ..captured(id, rcpt)
        };
        Message::new(captured, origin(), SystemTime::now())
    }

    #[tokio::test]
    async fn oldest_go_first_when_over_the_byte_bound() {
        let one = msg("A", 1000, "x@y").cost();
        let store = Store::new(None, one * 3).unwrap();
        for id in ["A", "B", "C", "D", "E"] {
            store.put(msg(id, 1000, "x@y")).await.unwrap();
        }
        let ids: Vec<String> = store.all().iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, ["C", "D", "E"]);
        assert_eq!(store.size(), (3, one * 3));
        assert_eq!(store.evicted(), 2);
    }

    #[tokio::test]
    async fn filters_and_pages_newest_first() {
        let store = Store::new(None, DEFAULT_MAX_BYTES).unwrap();
        for (id, rcpt) in [("A", "one@x"), ("B", "two@x"), ("C", "ONE@y")] {
            store.put(msg(id, 10, rcpt)).await.unwrap();
        }
        let f = Filter {
            rcpt: Some("one@".into()),
            ..Filter::default()
        };
        let p = store.list(&f, 10, 0);
        assert_eq!(p.total, 2);
        assert_eq!(p.items[0].id, "C");
        let p = store.list(&Filter::default(), 1, 1);
        assert_eq!((p.total, p.items[0].id.as_str()), (3, "B"));
        let f = Filter {
            subject: Some("S-b".into()),
            ..Filter::default()
        };
        assert_eq!(store.list(&f, 10, 0).items[0].id, "B");
        assert!(store.delete("B"));
        assert!(!store.delete("B"));
        assert_eq!(store.clear(), 2);
        assert_eq!(store.size(), (0, 0));
    }

    #[tokio::test]
    async fn files_are_complete_under_their_final_names() {
        let dir = std::env::temp_dir().join(format!("mailfault-store-{}", std::process::id()));
        let store = Store::new(Some(&dir), DEFAULT_MAX_BYTES).unwrap();
        store.put(msg("F1", 5, "r@x")).await.unwrap();
        let eml = std::fs::read(dir.join("F1.eml")).unwrap();
        assert!(eml.starts_with(b"Subject: s-F1\r\n"));
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("F1.json")).unwrap()).unwrap();
        assert_eq!(env["rcpts"][0], "r@x");
        assert_eq!(env["session"], 1);
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_folder_that_cannot_be_written_keeps_nothing() {
        let file = std::env::temp_dir().join(format!("mailfault-notadir-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let store = Store::new(None, DEFAULT_MAX_BYTES).unwrap();
        // A "folder" that is a file: every write fails.
        let store = Store {
            dir: Some(file.clone()),
            ..store
        };
        assert!(store.put(msg("G1", 5, "r@x")).await.is_err());
        assert_eq!(store.size().0, 0);
        let _ = std::fs::remove_file(&file);
    }
}
