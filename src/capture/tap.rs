//! A tap on the events as they are recorded: each one encoded as JSON, in
//! a frame its one reader chose, appended to a buffer the reader takes in
//! batches. It is what a live stream of every session reads (the API's
//! event stream), and it exists because encoding an event on the thread
//! that recorded it, right away, is cheap: its strings are still in the
//! cache. Encoding the same events a batch later, on another thread,
//! cost SMTP several times more on a server whose heap had grown
//! scattered (docs/performance.md, the event-stream section).
//!
//! Off, the tap costs a recorded event one relaxed load.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::Event;

/// The most the buffer holds before events are counted as missed instead:
/// a reader that stopped taking must not grow the server without bound.
/// At a few hundred bytes an event, tens of thousands of events: far more
/// than a busy server records between two takes of a reader that keeps up.
pub const TAP_MAX_BYTES: usize = 8 << 20;

/// What a reader took: the encoded events, how many, and how many were
/// missed because the buffer was full.
#[derive(Debug, Default)]
pub struct Taken {
    pub bytes: Vec<u8>,
    pub count: u64,
    pub missed: u64,
}

#[derive(Default)]
struct Inner {
    prefix: &'static [u8],
    suffix: &'static [u8],
    taken: Taken,
}

/// See the module's documentation. One reader at a time.
#[derive(Default)]
pub struct Tap {
    on: AtomicBool,
    inner: Mutex<Inner>,
}

thread_local! {
    // Where an event is encoded before the lock is taken, so two threads
    // recording at once wait for a copy, not for an encoding.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Tap {
    /// Starts encoding every event recorded from now on, each written as
    /// `prefix`, its JSON (one line), `suffix`.
    pub fn open(&self, prefix: &'static [u8], suffix: &'static [u8]) {
        let mut inner = self.lock();
        *inner = Inner {
            prefix,
            suffix,
            taken: Taken::default(),
        };
        self.on.store(true, Ordering::Release);
    }

    /// Stops encoding and forgets what was not taken.
    pub fn close(&self) {
        self.on.store(false, Ordering::Release);
        *self.lock() = Inner::default();
    }

    /// Everything encoded since the last take; `spare` (emptied) collects
    /// the next.
    pub fn take(&self, mut spare: Vec<u8>) -> Taken {
        spare.clear();
        let mut inner = self.lock();
        std::mem::replace(
            &mut inner.taken,
            Taken {
                bytes: spare,
                count: 0,
                missed: 0,
            },
        )
    }

    /// Called for every event recorded: encodes it when the tap is open.
    pub(super) fn put(&self, event: &Event) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            event.write_json(&mut scratch);
            let mut inner = self.lock();
            let Inner {
                prefix,
                suffix,
                taken,
            } = &mut *inner;
            let len = prefix.len() + scratch.len() + suffix.len();
            if taken.bytes.len() + len > TAP_MAX_BYTES {
                taken.missed += 1;
                return;
            }
            taken.bytes.extend_from_slice(prefix);
            taken.bytes.extend_from_slice(&scratch);
            taken.bytes.extend_from_slice(suffix);
            taken.count += 1;
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Capture, EventKind};

    fn connect(n: u64) -> EventKind {
        EventKind::Connect {
            client: format!("192.0.2.{n}:25"),
        }
    }

    #[test]
    fn a_tap_encodes_only_while_open_and_in_its_frame() {
        let capture = Capture::in_memory();
        capture.record("l", "s", 1, connect(1));
        capture.tap().open(b"data: ", b"\n\n");
        capture.record("l", "s", 2, connect(2));
        capture.record("l", "s", 3, connect(3));
        let t = capture.tap().take(Vec::new());
        assert_eq!((t.count, t.missed), (2, 0));
        let text = String::from_utf8(t.bytes).unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(events.len(), 2, "{text}");
        assert!(events[0].starts_with("data: {\"ts\":"), "{text}");
        assert!(events[0].ends_with(r#""session":2,"type":"connect","client":"192.0.2.2:25"}"#));
        assert_eq!(capture.tap().take(Vec::new()).count, 0, "taken once");
        capture.tap().close();
        capture.record("l", "s", 4, connect(4));
        assert_eq!(capture.tap().take(Vec::new()).count, 0, "closed");
    }

    #[test]
    fn a_full_tap_counts_what_it_missed() {
        let capture = Capture::in_memory();
        capture.tap().open(b"", b"\n");
        let mut n = 0;
        while capture.tap().lock().taken.missed == 0 {
            capture.record("l", "s", n, connect(n % 250));
            n += 1;
        }
        capture.record("l", "s", n, connect(1));
        let t = capture.tap().take(Vec::new());
        assert!(t.bytes.len() <= TAP_MAX_BYTES);
        assert_eq!(t.count + t.missed, n + 1);
        assert_eq!(t.missed, 2);
        capture.record("l", "s", 0, connect(1));
        assert_eq!(capture.tap().take(Vec::new()).count, 1, "room again");
    }
}
