//! The live transcript behind `GET /api/v1/events`: events gathered for
//! [`GATHER`] and written as one chunk in the event-stream format (WHATWG
//! HTML §9.2.6). Streams of every session share one encoding: a [`Hub`]
//! reads the capture's live events, encodes each batch once and hands the
//! same bytes to all of them, so a second open tab costs next to nothing.
//! A stream of one session, or of some event types, reads the capture's
//! live events and encodes its own. All of it runs on the API's thread
//! (`api::spawn`): a session only sends each event to the capture's
//! channel, and never encodes for a reader.
//!
//! Beside it, the change feed behind `GET /api/v1/changes` ([`ChangeFeed`]):
//! no events at all, only the counts, whenever they moved. It is what the
//! web UI listens to, since it only needs to know when to look again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

use crate::capture::metrics::Totals;
use crate::capture::{Capture, Event, Live, LIVE_BACKLOG};

/// How long events are gathered before they are written. A reader sees
/// each event within this; a busy server wakes each reader, and writes to
/// it, once per period instead of once per event, which is what keeps an
/// open stream from slowing SMTP (docs/performance.md).
pub const GATHER: Duration = Duration::from_millis(25);

/// A quiet stream sends a comment this often, so proxies and browsers keep
/// it open (the interval axum's SSE uses too).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The keep-alive: a comment line, which readers ignore (WHATWG HTML
/// §9.2.6, lines starting with a colon).
pub const COMMENT: &[u8] = b":\n\n";

/// Batches a shared stream may fall behind before it is told it lagged:
/// 400 ms at full speed, and a bound on what the hub keeps (each batch is
/// one period's events).
const HUB_BACKLOG: usize = 16;

/// How often the change feed looks at the counters. The web UI re-renders
/// at most every 500 ms, so it misses nothing it would show.
pub const GLANCE: Duration = Duration::from_millis(250);

/// What the change feed sends: the capture's totals, and the store's
/// version, which moves on every message kept, deleted or cleared. These
/// field names are the feed's JSON (docs/api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Moved {
    sessions: u64,
    closed: u64,
    messages: u64,
    attempts: u64,
    store: u64,
}

impl Moved {
    fn of(totals: Totals, store: u64) -> Self {
        Self {
            sessions: totals.sessions,
            closed: totals.closed,
            messages: totals.messages,
            attempts: totals.attempts,
            store,
        }
    }
}

/// `GET /api/v1/changes`: the counts, as one `data:` line, whenever they
/// moved since the last look, every [`GLANCE`] at most; a keep-alive after
/// [`KEEP_ALIVE`] of quiet. It reads counters the sessions keep anyway
/// (for `/metrics`) and the store's version, so a reader (an open web UI)
/// costs SMTP nothing: no event is sent to it, whatever the rate
/// (docs/performance.md).
pub struct ChangeFeed {
    capture: Arc<Capture>,
    store: watch::Receiver<u64>,
    last: Option<Moved>,
    quiet: Duration,
}

impl ChangeFeed {
    pub fn new(capture: Arc<Capture>) -> Self {
        Self {
            store: capture.subscribe(),
            capture,
            last: None,
            quiet: Duration::ZERO,
        }
    }

    /// The next chunk: the counts at once for a new reader, then each time
    /// they move. Never ends by itself: the stream stops with the server.
    pub async fn next(mut self) -> Option<(Bytes, ChangeFeed)> {
        loop {
            if self.last.is_some() {
                tokio::time::sleep(GLANCE).await;
            }
            let now = Moved::of(self.capture.metrics().totals(), *self.store.borrow());
            if self.last != Some(now) {
                self.last = Some(now);
                self.quiet = Duration::ZERO;
                let mut out = b"data: ".to_vec();
                // A struct of numbers always serializes.
                let _ = serde_json::to_writer(&mut out, &now);
                out.extend_from_slice(b"\n\n");
                return Some((Bytes::from(out), self));
            }
            self.quiet += GLANCE;
            if self.quiet >= KEEP_ALIVE {
                self.quiet = Duration::ZERO;
                return Some((Bytes::from_static(COMMENT), self));
            }
        }
    }
}

/// Buffers a stream keeps for its next batches: usually one is being
/// written while the next fills (a batch comes back once every reader has
/// written it).
const POOLED: usize = 2;

/// A buffer larger than this (a burst of a full backlog) is freed rather
/// than kept, so a quiet stream does not hold on to a burst's memory.
const POOLED_BYTES: usize = 4 << 20;

/// The buffers a stream encodes its batches in, used again once written.
/// A fresh buffer every period cost the API thread a page fault for every
/// 4 KiB of a batch (the allocator gave the memory back to the kernel
/// between periods): about a sixth of its samples with every event
/// streamed (docs/performance.md).
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    /// An empty buffer, with room from earlier batches when there is one.
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// `buf` as the bytes of a chunk, back here once the last reader drops
    /// them.
    fn seal(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    /// Keeps `buf` for a later batch, emptied, unless enough are kept or it
    /// is too large to keep.
    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() > POOLED_BYTES {
            return;
        }
        buf.clear();
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED {
            pool.push(buf);
        }
    }
}

/// A chunk's buffer, on its way back to its [`Pool`].
struct Pooled {
    buf: Vec<u8>,
    pool: Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// `event: lagged` with how many events a reader missed.
fn lagged(missed: u64) -> Vec<u8> {
    format!("event: lagged\ndata: {missed}\n\n").into_bytes()
}

/// What a reader gathered.
enum Gathered {
    /// The chunk.
    Batch(Vec<u8>),
    /// Nothing came within the wait.
    Quiet,
    /// No more can come: the server stops.
    Closed,
}

/// Which events a stream of its own wants: one session's, some types, or
/// both (every event: the [`Hub`]'s shared stream instead).
#[derive(Debug, Default, Clone)]
pub struct Want {
    pub session: Option<u64>,
    /// Type names, from [`crate::capture::EVENT_TYPES`].
    pub types: Option<Vec<&'static str>>,
}

impl Want {
    fn takes(&self, ev: &Event) -> bool {
        self.session.is_none_or(|n| n == ev.session)
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&ev.kind.type_name()))
    }
}

/// A reader of the live events that a [`Want`] picks, encoding its own.
pub struct Feed {
    rx: Live,
    want: Want,
    pool: Pool,
}

impl Feed {
    pub fn new(capture: &Capture, want: Want) -> Self {
        // Only the types wanted are sent by the sessions at all.
        let rx = match &want.types {
            Some(types) => capture.live_of(types),
            None => capture.live(),
        };
        Self {
            rx,
            want,
            pool: Pool::default(),
        }
    }

    /// Waits for an event (at most `wait`), gathers for [`GATHER`], then
    /// takes everything that came meanwhile.
    async fn gather(&mut self, wait: Duration) -> Gathered {
        let Ok(first) = tokio::time::timeout(wait, self.rx.recv()).await else {
            return Gathered::Quiet;
        };
        let mut out = self.pool.take();
        match first {
            Ok(ev) if self.want.takes(&ev) => data(&mut out, &ev),
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => out.extend_from_slice(&lagged(n)),
            Err(RecvError::Closed) => return Gathered::Closed,
        }
        tokio::time::sleep(GATHER).await;
        drain(&mut self.rx, &mut out, &self.want);
        Gathered::Batch(out)
    }

    /// The next chunk of this reader's stream: a batch (empty when none of
    /// the events gathered were the session's), or a keep-alive after
    /// [`KEEP_ALIVE`] of quiet. None once no more can come.
    pub async fn next(mut self) -> Option<(Bytes, Feed)> {
        match self.gather(KEEP_ALIVE).await {
            Gathered::Quiet => Some((Bytes::from_static(COMMENT), self)),
            Gathered::Batch(out) => Some((self.pool.seal(out), self)),
            Gathered::Closed => None,
        }
    }
}

/// One encoded batch: `count` events numbered from `first`.
#[derive(Clone)]
struct Batch {
    bytes: Bytes,
    first: u64,
    count: u64,
}

/// The encoding shared by every stream of all sessions. Runs only while
/// one is open: the first starts it, and it stops at the first period that
/// finds nobody left to read. Every [`GATHER`] it takes what the capture's
/// channel holds (at most a backlog's worth), encodes it once and hands the
/// same bytes to every stream.
#[derive(Default)]
pub struct Hub {
    tx: Mutex<Option<broadcast::Sender<Batch>>>,
}

impl Hub {
    /// A new stream of every session's events, from now on.
    pub fn subscribe(self: &Arc<Self>, capture: &Capture) -> Shared {
        let mut slot = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let rx = match slot.as_ref() {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(HUB_BACKLOG);
                *slot = Some(tx.clone());
                tokio::spawn(self.clone().run(capture.live(), tx));
                rx
            }
        };
        Shared { rx, next: None }
    }

    async fn run(self: Arc<Self>, mut events: Live, tx: broadcast::Sender<Batch>) {
        let mut seq = 0;
        let mut tick = tokio::time::interval(GATHER);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pool = Pool::default();
        loop {
            tick.tick().await;
            if tx.receiver_count() == 0 && self.stop(&tx) {
                return;
            }
            let mut bytes = pool.take();
            let count = drain(&mut events, &mut bytes, &Want::default());
            if bytes.is_empty() {
                // A quiet period: the buffer waits for the next.
                pool.put(bytes);
                continue;
            }
            let batch = Batch {
                bytes: pool.seal(bytes),
                first: seq,
                count,
            };
            seq += count;
            // Nobody reads: stopped at the next period.
            let _ = tx.send(batch);
        }
    }

    /// Stops the hub unless a stream arrived meanwhile (under the lock a
    /// new stream takes to join).
    fn stop(&self, tx: &broadcast::Sender<Batch>) -> bool {
        let mut slot = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() > 0 {
            return false;
        }
        *slot = None;
        true
    }
}

/// Appends one event: its JSON (one line) as a `data:` field, then the
/// blank line that dispatches it.
fn data(out: &mut Vec<u8>, ev: &Event) {
    out.extend_from_slice(b"data: ");
    ev.write_json(out);
    out.extend_from_slice(b"\n\n");
}

/// Appends what `events` holds now (at most one backlog's worth, so a
/// reader never loops forever behind a server that produces faster than it
/// drains), those `want` takes, and a `lagged` event where some were
/// missed. Returns how many events it wrote.
fn drain(events: &mut broadcast::Receiver<Arc<Event>>, out: &mut Vec<u8>, want: &Want) -> u64 {
    let mut count = 0;
    for _ in 0..LIVE_BACKLOG {
        match events.try_recv() {
            Ok(ev) if want.takes(&ev) => {
                data(out, &ev);
                count += 1;
            }
            Ok(_) => {}
            Err(TryRecvError::Lagged(n)) => out.extend_from_slice(&lagged(n)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    count
}

/// A stream's side of the hub: the batches, and the number of the event it
/// expects next (to tell it how many it missed when it lags).
pub struct Shared {
    rx: broadcast::Receiver<Batch>,
    next: Option<u64>,
}

impl Shared {
    /// The next chunk: a batch (after a `lagged` event if batches were
    /// missed), or a keep-alive after [`KEEP_ALIVE`] of quiet. None once no
    /// more can come.
    pub async fn next(mut self) -> Option<(Bytes, Shared)> {
        loop {
            let batch = match tokio::time::timeout(KEEP_ALIVE, self.rx.recv()).await {
                Err(_quiet) => return Some((Bytes::from_static(COMMENT), self)),
                Ok(Ok(b)) => b,
                // Told at the next batch, which says how many events.
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => return None,
            };
            let missed = self.next.map_or(0, |n| batch.first.saturating_sub(n));
            self.next = Some(batch.first + batch.count);
            if missed == 0 {
                return Some((batch.bytes, self));
            }
            let mut out = lagged(missed);
            out.extend_from_slice(&batch.bytes);
            return Some((Bytes::from(out), self));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::EventKind;

    fn connect(n: u64) -> EventKind {
        EventKind::Connect {
            client: format!("192.0.2.{n}:25"),
        }
    }

    fn events(chunk: &Bytes) -> Vec<String> {
        String::from_utf8(chunk.to_vec())
            .unwrap()
            .split_terminator("\n\n")
            .map(String::from)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_keeps_alive_then_batches_one_sessions_events() {
        let capture = Capture::in_memory();
        let feed = Feed::new(
            &capture,
            Want {
                session: Some(3),
                types: None,
            },
        );
        let (chunk, feed) = feed.next().await.unwrap();
        assert_eq!(&chunk[..], COMMENT);
        capture.record("l", "s", 3, connect(1));
        capture.record("l", "s", 4, connect(2));
        capture.record("l", "s", 3, connect(3));
        let (chunk, _) = feed.next().await.unwrap();
        let got = events(&chunk);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("data: {\"ts\":"), "{got:?}");
        assert!(got[0].ends_with(r#""session":3,"type":"connect","client":"192.0.2.1:25"}"#));
        assert!(got[1].ends_with(r#""client":"192.0.2.3:25"}"#), "{got:?}");
    }

    #[test]
    fn a_batch_buffer_comes_back_with_its_room_once_every_reader_is_done() {
        let pool = Pool::default();
        let mut buf = pool.take();
        assert_eq!(buf.capacity(), 0, "an empty pool gives a new buffer");
        buf.extend_from_slice(&[b'x'; 1000]);
        let first = pool.seal(buf);
        let second = first.clone();
        drop(first);
        // Still being written by a reader: not back yet.
        assert_eq!(pool.take().capacity(), 0);
        drop(second);
        let again = pool.take();
        assert!(again.capacity() >= 1000, "{}", again.capacity());
        assert!(again.is_empty());
        // A burst's buffer is freed, not kept.
        pool.put(Vec::with_capacity(POOLED_BYTES + 1));
        assert_eq!(pool.take().capacity(), 0);
        // At most POOLED are kept.
        for _ in 0..POOLED + 2 {
            pool.put(Vec::with_capacity(10));
        }
        let kept = std::iter::from_fn(|| Some(pool.take()))
            .take_while(|b| b.capacity() > 0)
            .count();
        assert_eq!(kept, POOLED);
    }

    #[tokio::test(start_paused = true)]
    async fn the_change_feed_tells_counts_at_once_then_only_when_they_move() {
        let capture = Arc::new(Capture::in_memory());
        let feed = ChangeFeed::new(capture.clone());
        let (chunk, feed) = feed.next().await.unwrap();
        assert_eq!(
            &chunk[..],
            br#"data: {"sessions":0,"closed":0,"messages":0,"attempts":0,"store":0}"#
                .iter()
                .chain(b"\n\n")
                .copied()
                .collect::<Vec<u8>>()
        );
        // Nothing moves: a keep-alive, after KEEP_ALIVE and not before.
        let start = tokio::time::Instant::now();
        let (chunk, feed) = feed.next().await.unwrap();
        assert_eq!(&chunk[..], COMMENT);
        assert_eq!(start.elapsed(), KEEP_ALIVE);
        capture.record("l", "s", 1, connect(1));
        capture.record("l", "s", 2, connect(2));
        let start = tokio::time::Instant::now();
        let (chunk, _) = feed.next().await.unwrap();
        assert_eq!(start.elapsed(), GLANCE);
        assert!(
            chunk.starts_with(br#"data: {"sessions":2,"closed":0,"#),
            "{chunk:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn streams_share_one_encoding_and_a_slow_one_is_told_what_it_missed() {
        let capture = Arc::new(Capture::in_memory());
        let hub = Arc::new(Hub::default());
        let fast = hub.subscribe(&capture);
        let slow = hub.subscribe(&capture);
        // The hub takes its first (empty) batch when it first runs.
        tokio::task::yield_now().await;
        capture.record("l", "s", 1, connect(1));
        let (a, fast) = fast.next().await.unwrap();
        let (b, slow) = slow.next().await.unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, encoded once");
        assert_eq!(events(&a).len(), 1);
        // The fast stream reads every batch; the slow one none, until it
        // has fallen more than the backlog behind.
        let mut fast = fast;
        for n in 0..(HUB_BACKLOG as u64 + 4) {
            capture.record("l", "s", 1, connect(n));
            capture.record("l", "s", 1, connect(n));
            let (chunk, f) = fast.next().await.unwrap();
            assert_eq!(events(&chunk).len(), 2);
            fast = f;
        }
        let (chunk, _) = slow.next().await.unwrap();
        let got = events(&chunk);
        assert_eq!(got[0], "event: lagged\ndata: 8", "{got:?}");
        assert_eq!(got.len(), 3, "then the oldest batch still kept: {got:?}");
        // Everyone gone: the hub stops at the next batch.
        drop(fast);
        capture.record("l", "s", 1, connect(9));
        tokio::time::sleep(GATHER * 2).await;
        assert!(hub.tx.lock().unwrap().is_none());
    }
}
